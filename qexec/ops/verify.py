"""`qexec verify`: the end-to-end proof - test intents in, their results out, each order looked up at the venue."""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import redis

from qexec import constants, ids, redis_streams
from qexec.config import Mode, Settings
from qexec.errors import OrderNotFound, VenueError, VenueUnavailable
from qexec.models import OrderStatus, OrderType, ResultStatus, Side, utcnow
from qexec.ops.redisserver import redacted
from qexec.ops.selftest import EXIT_VENUE_UNAVAILABLE, fatal_line, settings_or_fail, venue_for
from qexec.venue.rules import SymbolRules, plain

if TYPE_CHECKING:
    from qexec.venue.base import Venue

EXIT_NOT_VERIFIED = 1
CLIENT_TAG = "qexec-verify"
# How far above the symbol's minimum a probe's notional is, so a small move of the mark cannot push it under.
NOTIONAL_MARGIN = Decimal("1.2")
STREAM_ID = re.compile(r"^\d+-\d+$")

# The venue order statuses that agree with a result's status.
AGREEING_STATUSES = {
    ResultStatus.FILLED.value: {OrderStatus.FILLED},
    ResultStatus.PARTIALLY_FILLED.value: {
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.CANCELED,
        OrderStatus.EXPIRED,
        OrderStatus.EXPIRED_IN_MATCH,
    },
}


@dataclass(frozen=True)
class Published:
    """One entry of the result stream: its id and its JSON payload (numbers read as Decimals)."""

    message_id: str
    payload: dict[str, Any]
    kind: str = "execution"  # the entry's flat `kind`

    @classmethod
    def from_entry(cls, message_id: str, fields: dict[str, str]) -> Published:
        """Read a result stream entry (JSON `payload`, else the flat fields)."""
        try:
            payload = json.loads(fields["payload"], parse_float=Decimal)
        except (KeyError, ValueError):
            payload = dict(fields)
        kind = fields.get("kind") or "execution"
        return cls(message_id=message_id, payload=payload if isinstance(payload, dict) else {}, kind=kind)

    @property
    def intent_id(self) -> str:
        """The intent the result is for."""
        return str(self.payload.get("intent_id", ""))

    @property
    def is_result(self) -> bool:
        """False for a protection event that a qexec before the protection stream wrote on the result stream."""
        return self.kind != "protection"


def probe_size_usd(rules: SymbolRules, mark: Decimal) -> Decimal:
    """A small notional that still clears the symbol's minimum notional and quantity after rounding down."""
    floor = max(rules.min_notional, rules.market_min_qty * mark)
    size = floor * NOTIONAL_MARGIN + rules.market_step_size * mark
    return size.quantize(Decimal("0.01"), rounding=ROUND_CEILING)


def probe_intents(
    venue: Venue, *, count: int, symbols: list[str], size_usd: Decimal | None, leverage: int
) -> list[dict[str, Any]]:
    """`count` fresh market intents: on each symbol in turn a BUY, then a reduce-only SELL that closes it again."""
    rules = venue.rules(refresh=True)
    sizes: dict[str, Decimal] = {}
    for symbol in symbols:
        symbol_rules = rules.get(symbol)
        if symbol_rules is None:
            raise click.UsageError(f"the venue does not list {symbol}")
        sizes[symbol] = size_usd or probe_size_usd(symbol_rules, venue.mark_price(symbol))
    run = uuid.uuid4().hex[:12]
    intents = []
    for number in range(count):
        symbol = symbols[(number // 2) % len(symbols)]
        intents.append(
            {
                "intent_id": f"verify-{run}-{number + 1}",
                "symbol": symbol,
                "side": "BUY" if number % 2 == 0 else "SELL",
                # The closing leg is reduce-only, so the existing-position policies never turn it into a rejection.
                "reduce_only": number % 2 == 1,
                "position_size_usd": float(sizes[symbol]),
                "leverage": leverage,
                "timestamp": utcnow().isoformat(),
                "client_tag": CLIENT_TAG,
            }
        )
    return intents


def last_result_id(r: redis.Redis, settings: Settings) -> str:
    """The newest entry id on the result stream (`0-0` when it is empty)."""
    last: Any = r.xrevrange(settings.result_stream, count=1)
    return str(last[0][0]) if last else "0-0"


def wait_results(
    r: redis.Redis, settings: Settings, since: str, intent_ids: Iterable[str], timeout_s: float
) -> dict[str, Published]:
    """The results published after `since` for these intent ids, waiting up to `timeout_s` for them."""
    waiting = set(intent_ids)
    found: dict[str, Published] = {}
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        block_ms = max(1, int(min(1.0, deadline - time.monotonic()) * 1000))
        answer: Any = r.xread({settings.result_stream: since}, block=block_ms, count=100)
        for _stream, entries in answer or []:
            for message_id, fields in entries:
                since = message_id
                published = Published.from_entry(message_id, fields)
                if published.is_result and published.intent_id in waiting:
                    waiting.discard(published.intent_id)
                    found[published.intent_id] = published
    return found


def refs_from(value: str) -> list[tuple[str | None, str | None]]:
    """(message id, intent id) pairs named by a proof file or a comma-separated list of either."""
    path = Path(value)
    if path.is_file():
        try:
            proof = json.loads(path.read_text())
            items = [*proof["verified_orders"], *proof["problems"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise click.UsageError(f"{path} is not a proof written by qexec verify: {exc}") from None
        return [(item.get("message_id") or None, item.get("intent_id") or None) for item in items]
    names = [name.strip() for name in value.split(",") if name.strip()]
    return [(name, None) if STREAM_ID.match(name) else (None, name) for name in names]


def read_results(
    r: redis.Redis, settings: Settings, refs: list[tuple[str | None, str | None]]
) -> tuple[list[Published], list[dict[str, Any]]]:
    """The result entries named by message id, or by intent id (through its published marker)."""
    found: list[Published] = []
    problems: list[dict[str, Any]] = []
    for named_id, intent_id in refs:
        message_id = named_id
        if message_id is None and intent_id is not None:
            marker: Any = r.get(constants.PUBLISHED_KEY.format(intent_id=intent_id))
            message_id = str(marker) if marker else None
        if message_id is None:
            problems.append(_problem(intent_id=intent_id, problem=f"no result was published for intent {intent_id}"))
            continue
        entries: Any = r.xrange(settings.result_stream, message_id, message_id, count=1)
        if not entries:
            text = f"result {message_id} is not on {settings.result_stream} (trimmed, or another stream)"
            problems.append(_problem(message_id=message_id, intent_id=intent_id, problem=text))
            continue
        found.append(Published.from_entry(*entries[0]))
    return found, problems


def _problem(
    *,
    problem: str,
    intent_id: str | None = None,
    message_id: str | None = None,
    symbol: str | None = None,
    order_id: Any = None,
) -> dict[str, Any]:
    return {
        "intent_id": intent_id,
        "message_id": message_id,
        "symbol": symbol,
        "orderId": order_id,
        "problem": problem,
    }


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except ArithmeticError:
        return None


def check_result(venue: Venue, published: Published) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Look the result's order up at the venue by order id: (the verified order, None) or (None, the problem)."""
    result = published.payload
    symbol, order_id, status = result.get("symbol"), result.get("order_id"), result.get("status")

    def problem(text: str) -> tuple[None, dict[str, Any]]:
        where = dict(intent_id=published.intent_id, message_id=published.message_id, symbol=symbol, order_id=order_id)
        return None, _problem(problem=text, **where)

    if status not in AGREEING_STATUSES:
        return problem(f"the result is {status!r}, not a fill: {result.get('reason') or 'no reason given'}")
    if not symbol or order_id is None:
        return problem("the result names no symbol or order id")
    try:
        order = venue.get_order(str(symbol), order_id=int(order_id))
    except OrderNotFound as exc:
        return problem(f"order {order_id} ({symbol}) is not at the venue: {exc}")
    except VenueError as exc:
        return problem(f"order {order_id} ({symbol}) could not be looked up: {exc}")
    differences = []
    if order.status not in AGREEING_STATUSES[status]:
        differences.append(f"status: result {status}, venue {order.status.value}")
    if _decimal(result.get("entry_price")) != order.avgPrice:
        differences.append(f"price: result entry_price {result.get('entry_price')}, venue avgPrice {order.avgPrice}")
    if _decimal(result.get("quantity")) != order.executedQty:
        differences.append(f"quantity: result {result.get('quantity')}, venue executedQty {order.executedQty}")
    if result.get("action") != order.side.value:
        differences.append(f"side: result {result.get('action')}, venue {order.side.value}")
    if result.get("client_order_id") not in (None, order.clientOrderId):
        differences.append(f"client order id: result {result.get('client_order_id')}, venue {order.clientOrderId}")
    if differences:
        return problem(f"order {order_id} ({symbol}) differs at the venue: " + "; ".join(differences))
    verified = {
        "symbol": order.symbol,
        "orderId": order.orderId,
        "clientOrderId": order.clientOrderId,
        "side": order.side.value,
        "status": order.status.value,
        "avgPrice": str(order.avgPrice),
        "executedQty": str(order.executedQty),
        "message_id": published.message_id,
        "intent_id": published.intent_id,
    }
    return verified, None


def build_proof(settings: Settings, verified: list[dict[str, Any]], problems: list[dict[str, Any]]) -> dict[str, Any]:
    """The proof document."""
    return {
        "timestamp": utcnow().isoformat(),
        "mode": settings.venue.name,
        "endpoint": settings.venue_url,
        "stream": settings.result_stream,
        "verified_orders": verified,
        "problems": problems,
    }


def _say(text: str) -> None:
    click.echo(text, err=True)


@click.command("verify", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--count", default=3, show_default=True, type=click.IntRange(1, 100), help="Test intents to send.")
@click.option(
    "--symbol",
    "symbols",
    multiple=True,
    default=["ETHUSDT"],
    show_default=True,
    help="Symbol for the test intents (repeatable; BUY/SELL pairs go to each in turn).",
)
@click.option("--size-usd", type=click.FloatRange(min=0, min_open=True), help="Notional of each test intent.")
@click.option("--leverage", default=1, show_default=True, type=click.IntRange(1, 125))
@click.option("--timeout-s", default=60.0, show_default=True, type=float, help="How long to wait for the results.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the proof JSON here (default: standard output; progress goes to standard error).",
)
@click.option(
    "--check-only",
    metavar="PROOF_OR_IDS",
    help="Send nothing: verify the results named by an earlier proof file, or by comma-separated result "
    "stream entry ids or intent ids.",
)
@click.option("--allow-mainnet", is_flag=True, help="Allow test orders with real money in mainnet mode.")
@click.option("--keep", is_flag=True, help="Leave open the position the test intents leave (by default it is closed).")
def verify_command(
    *,
    count: int,
    symbols: tuple[str, ...],
    size_usd: float | None,
    leverage: int,
    timeout_s: float,
    out: Path | None,
    check_only: str | None,
    allow_mainnet: bool,
    keep: bool,
) -> None:
    """Send test intents, wait for their results, and look each order up at the venue by its id."""
    settings = settings_or_fail()
    if check_only is None and (settings.venue.real_money or settings.mode is Mode.MAINNET) and not allow_mainnet:
        raise click.UsageError("verify sends real orders on mainnet: add --allow-mainnet if that is what you want")
    venue = _checked_venue(settings)
    r = redis_streams.connect(settings.redis_url)
    try:
        if check_only is not None:
            results, problems = read_results(r, settings, refs_from(check_only))
        else:
            results, problems = _send_and_wait(
                r=r,
                settings=settings,
                venue=venue,
                count=count,
                symbols=symbols,
                size_usd=size_usd,
                leverage=leverage,
                timeout_s=timeout_s,
            )
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis at {redacted(settings.redis_url)}: {exc}") from None
    verified = _verify_results(venue, results, problems)
    closed: list[dict[str, Any]] = []
    if check_only is None and not keep:
        closed, left = close_leftovers(venue, [symbol.upper() for symbol in symbols], uuid.uuid4().hex[:12])
        problems += left
    for problem in problems:
        named = " ".join(f"{key}={problem[key]}" for key in ("intent_id", "message_id") if problem[key])
        _say(f"PROBLEM {named} {problem['problem']}")
    proof = build_proof(settings, verified, problems)
    if check_only is None:
        proof["closed"] = closed
    _write_proof(proof, out)
    checked = len(verified) + len(problems)
    where = f"proof in {out}" if out else "proof on standard output"
    _say(f"verify: {len(verified)} of {checked} results match their orders at {settings.venue_url}; {where}")
    if problems:
        sys.exit(EXIT_NOT_VERIFIED)


def _checked_venue(settings: Settings) -> Venue:
    """A venue client of verify's own, apart from the worker's, that passed the start-up check (else exit 3)."""
    venue = venue_for(settings)
    try:
        venue.check()
    except VenueUnavailable as exc:
        _say(fatal_line(settings, exc))
        sys.exit(EXIT_VENUE_UNAVAILABLE)
    return venue


def _verify_results(venue: Venue, results: list[Published], problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Look each result's order up at the venue; the verified orders (what does not match goes into `problems`)."""
    verified: list[dict[str, Any]] = []
    for published in results:
        if not published.is_result:
            _say(
                f"NOTE {published.message_id} is a protection event for intent {published.intent_id} (status "
                f"{published.payload.get('status')}), written on the result stream by an older qexec: not a result, "
                "nothing to verify"
            )
            continue
        order, problem = check_result(venue, published)
        if order is not None:
            verified.append(order)
            fields = ("intent_id", "orderId", "symbol", "side", "status", "avgPrice", "executedQty", "message_id")
            _say("VERIFIED " + " ".join(f"{name}={order[name]}" for name in fields))
        if problem is not None:
            problems.append(problem)
    return verified


def _write_proof(proof: dict[str, Any], out: Path | None) -> None:
    """The proof as indented JSON: to `out`, else to standard output."""
    text = json.dumps(proof, indent=2)
    if out is None:
        click.echo(text)
    else:
        out.write_text(text + "\n")


def close_leftovers(venue: Venue, symbols: list[str], run: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Close what the test intents left open on their symbols (they held no position before): the venue's own
    remaining quantity, with a reduce-only MARKET order; (what was closed, problems)."""
    closed: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    dual = venue.dual_side()
    for n, symbol in enumerate(dict.fromkeys(symbols)):
        for position in venue.positions(symbol):
            amount = position.positionAmt
            if amount == 0:
                continue
            side = Side.SELL if amount > 0 else Side.BUY
            try:
                order = venue.place_order(
                    symbol=symbol,
                    side=side,
                    order_type=OrderType.MARKET,
                    quantity=abs(amount),
                    client_order_id=ids.verify_close(run, n),
                    reduce_only=not dual,
                    position_side=position.positionSide if dual else None,
                )
            except VenueError as exc:
                problems.append(_problem(symbol=symbol, problem=f"the test position of {amount} is left open: {exc}"))
                continue
            entry = {"symbol": symbol, "quantity": plain(abs(amount)), "orderId": order.orderId}
            closed.append(entry | {"status": order.status.value})
            _say(f"CLOSED the test position: {side.value} {plain(abs(amount))} {symbol} order={order.orderId}")
    return closed, problems


def _send_and_wait(
    *,
    r: redis.Redis,
    settings: Settings,
    venue: Venue,
    count: int,
    symbols: tuple[str, ...],
    size_usd: float | None,
    leverage: int,
    timeout_s: float,
) -> tuple[list[Published], list[dict[str, Any]]]:
    size = Decimal(str(size_usd)) if size_usd else None
    wanted = [symbol.upper() for symbol in symbols]
    try:
        intents = probe_intents(venue, count=count, symbols=wanted, size_usd=size, leverage=leverage)
    except VenueError as exc:
        _say(fatal_line(settings, exc))
        sys.exit(EXIT_VENUE_UNAVAILABLE)
    held = [symbol for symbol in wanted if any(p.positionAmt != 0 for p in venue.positions(symbol))]
    if held:
        raise click.UsageError(
            f"{', '.join(held)} already holds a position: verify opens and closes positions of its own and does not "
            "touch yours. Close it, or pass --symbol with a symbol that has none."
        )
    # Each closing leg goes only after its opening leg has a result: a reduce-only order needs the position.
    deadline = time.monotonic() + timeout_s
    results: list[Published] = []
    problems: list[dict[str, Any]] = []
    for intent in intents:
        since = last_result_id(r, settings)
        entry_id = str(r.xadd(settings.intent_stream, {"payload": json.dumps(intent)}))
        _say(
            f"SENT intent_id={intent['intent_id']} {intent['side']} {intent['symbol']} "
            f"{intent['position_size_usd']} USDT entry={entry_id}"
        )
        found = wait_results(r, settings, since, [intent["intent_id"]], max(0.0, deadline - time.monotonic()))
        published = found.get(intent["intent_id"])
        if published is None:
            text = f"no result on {settings.result_stream} within {timeout_s:g} s"
            problems.append(_problem(intent_id=intent["intent_id"], symbol=intent["symbol"], problem=text))
            break
        results.append(published)
    return results, problems
