"""`qexec status`: one screen on a deployment — streams, consumers, dead letters, workers, beat, venue."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
import redis
from pydantic import ValidationError

from qexec import constants, metrics, redis_streams
from qexec.config import Settings, get_settings
from qexec.errors import VenueError
from qexec.models import AlgoOrder, OrderState, PositionRisk, utcnow
from qexec.ops.redisserver import redacted
from qexec.pipeline.risk import halted, halted_accounts
from qexec.venue.rules import plain

EXIT_REDIS_UNAVAILABLE = 1
EXIT_VENUE_UNAVAILABLE = 3  # the code every qexec command uses for a venue that does not answer
LAST_DEAD_LETTERS = 5
LAST_PROTECTION_EVENTS = 5
PING_TIMEOUT_S = 1.0

Report = dict[str, Any]


def redis_report(settings: Settings, r: redis.Redis, now: datetime, last_dead_letters: int) -> Report:
    """Streams, the consumer group and its consumers, dead letters, beat's heartbeat and in-flight intents."""
    s = settings
    pipe = r.pipeline(transaction=False)
    for stream in (s.intent_stream, s.result_stream, s.dlq_stream, s.protection_stream, s.exit_stream):
        pipe.xlen(stream)
    pipe.xrevrange(s.dlq_stream, count=last_dead_letters)
    pipe.xrevrange(s.protection_stream, count=LAST_PROTECTION_EVENTS)
    pipe.hgetall(constants.HEARTBEAT_KEY)
    pipe.zcard(constants.INFLIGHT_KEY)
    pipe.zrange(constants.INFLIGHT_KEY, 0, 0, withscores=True)
    intent_len, result_len, dlq_len, protection_len, exit_len, letters, guards, heartbeat, inflight, oldest = (
        pipe.execute()
    )
    oldest_age_s = round((now.timestamp() - float(oldest[0][1])), 1) if oldest else None
    return {
        "streams": {
            "intent": {"name": s.intent_stream, "length": intent_len},
            "result": {"name": s.result_stream, "length": result_len},
            "dlq": {"name": s.dlq_stream, "length": dlq_len},
            "protection": {"name": s.protection_stream, "length": protection_len},
            "exit": {"name": s.exit_stream, "length": exit_len},
        },
        # The newest protection events: which entry (intent, order) got which stop-loss and take-profit.
        "protection": [_protection_row(entry_id, f) for entry_id, f in guards],
        "group": _group(settings, r),
        "dead_letters": {
            "count": dlq_len,
            "last": [
                {"id": entry_id, "entry_id": f.get("entry_id"), "source": f.get("source"), "error": f.get("error")}
                for entry_id, f in letters
            ],
        },
        "heartbeat": _heartbeat(heartbeat, now),
        "inflight": {"count": metrics.without_result(r), "placed": inflight, "oldest_age_s": oldest_age_s},
        "accounts": list(settings.account_names),
        # `qexec halt` (every account) and `qexec halt --account` (one), with their records
        "kill_switch": {"all": halted(r), "accounts": halted_accounts(r, settings.account_names)},
    }


def _protection_row(entry_id: str, fields: dict[str, str]) -> Report:
    try:
        event = json.loads(fields.get("payload") or "{}")
    except ValueError:
        event = {}
    keys = ("intent_id", "symbol", "status", "entry_order_id", "sl_order_id", "tp_order_id", "reason")
    return {"id": entry_id} | {key: event.get(key) for key in keys}


def _group(settings: Settings, r: redis.Redis) -> Report:
    name = settings.consumer_group
    try:
        groups: Any = r.xinfo_groups(settings.intent_stream)
        consumers: Any = (
            r.xinfo_consumers(settings.intent_stream, name) if any(g["name"] == name for g in groups) else []
        )
    except redis.ResponseError:  # the stream does not exist yet
        groups, consumers = [], []
    group = next((g for g in groups if g["name"] == name), None)
    return {
        "name": name,
        "exists": group is not None,
        "pending": int(group["pending"]) if group else 0,
        "lag": group.get("lag") if group else None,  # Redis >= 7 only; nil when Redis cannot tell
        "consumers": [
            {"name": c["name"], "pending": int(c["pending"]), "idle_s": round(int(c["idle"]) / 1000, 1)}
            for c in consumers
        ],
    }


def _heartbeat(record: dict[str, str], now: datetime) -> Report | None:
    if not record.get("at"):
        return None
    try:
        age_s: float | None = round((now - datetime.fromisoformat(record["at"])).total_seconds(), 1)
    except ValueError:
        age_s = None
    return {"at": record["at"], "age_s": age_s, "ok": record.get("ok") == "1", "error": record.get("error") or None}


def worker_report(timeout_s: float = PING_TIMEOUT_S) -> Report:
    """The Celery workers that answer a ping on the broker."""
    from qexec.worker.app import app  # noqa: PLC0415 - `qexec paper` must not pay Celery's import cost

    try:
        replies = app.control.ping(timeout=timeout_s) or []
    except Exception as exc:  # the broker is down or refuses us: say so, and show the rest
        return {"ok": False, "names": [], "error": f"{type(exc).__name__}: {exc}"}
    names = sorted(name for reply in replies for name in reply)
    return {"ok": bool(names), "names": names, "error": None}


def position_row(p: PositionRisk) -> Report:
    """One open position at the venue as a report row (the venue's own decimals as plain strings)."""
    return {
        "symbol": p.symbol,
        "side": p.positionSide,
        "amount": plain(p.positionAmt),
        "entry_price": plain(p.entryPrice),
        "mark_price": plain(p.markPrice),
        "unrealized_pnl": plain(p.unRealizedProfit),
    }


def _order_row(o: OrderState) -> Report:
    return {
        "symbol": o.symbol,
        "id": o.orderId,
        "client_id": o.clientOrderId,
        "side": o.side.value,
        "type": o.type,
        "status": o.status.value,
        "quantity": plain(o.origQty),
        "price": plain(o.price),
    }


def _algo_row(o: AlgoOrder) -> Report:
    return {
        "symbol": o.symbol,
        "id": o.algoId,
        "client_id": o.clientAlgoId,
        "side": o.side.value,
        "type": o.orderType,
        "status": o.algoStatus,
        "quantity": plain(o.quantity),
        "trigger_price": plain(o.triggerPrice),
    }


def venue_report(settings: Settings) -> Report:
    """Open positions, open orders and open algo orders at the venue, or why the venue did not answer."""
    from qexec.venue.binance import BinanceVenue  # noqa: PLC0415 - nor python-binance's

    venue = BinanceVenue(
        settings, redis_streams.connect(settings.redis_url)
    )  # ~85 weight: spent from the shared budget
    report: Report = {"label": venue.label, "url": venue.url, "ok": False}
    try:
        positions = [p for p in venue.positions() if p.positionAmt != 0]
        orders = venue.open_orders()
        algos = venue.open_algo_orders()
    except VenueError as exc:
        report["error"] = str(exc)
        return report
    report.update(
        ok=True,
        error=None,
        positions=[position_row(p) for p in positions],
        open_orders=[_order_row(o) for o in orders],
        open_algo_orders=[_algo_row(o) for o in algos],
    )
    return report


def gather(
    settings: Settings,
    r: redis.Redis,
    *,
    workers: Callable[[], Report] = worker_report,
    venue: Callable[[Settings], Report] = venue_report,
    now: Callable[[], datetime] = utcnow,
    last_dead_letters: int = LAST_DEAD_LETTERS,
) -> Report:
    """The whole status report: every part that answers, and the error of every part that does not."""
    report: Report = {"mode": settings.venue.name, "redis": {"url": redacted(settings.redis_url), "ok": True}}
    try:
        report.update(redis_report(settings, r, now(), last_dead_letters))
    except redis.RedisError as exc:
        report["redis"].update(ok=False, error=f"{type(exc).__name__}: {exc}")
    report["workers"] = workers()
    report["venue"] = venue(settings)
    return report


def exit_code(report: Report) -> int:
    """0 when Redis and the venue answered; which one did not, otherwise."""
    if not report["redis"]["ok"]:
        return EXIT_REDIS_UNAVAILABLE
    if not report["venue"]["ok"]:
        return EXIT_VENUE_UNAVAILABLE
    return 0


def _table(rows: list[Report], columns: list[str], indent: str = "    ") -> list[str]:
    if not rows:
        return [f"{indent}(none)"]
    cells = [[str(row.get(c) if row.get(c) is not None else "-") for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = [indent + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += [indent + "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    return lines


def _redis_lines(report: Report) -> list[str]:
    lines = ["streams"]
    for role, stream in report["streams"].items():
        lines.append(f"  {role:<7} {stream['name']:<44} {stream['length']:>8} entries")
    group = report["group"]
    if not group["exists"]:
        lines.append(f"consumer group {group['name']}: not created yet (no bridge has run)")
    else:
        lag = "unknown" if group["lag"] is None else group["lag"]
        lines.append(f"consumer group {group['name']}: {group['pending']} pending, lag {lag}")
        lines += _table(group["consumers"], ["name", "pending", "idle_s"], indent="  ")
    letters = report["dead_letters"]
    lines.append(f"dead letters: {letters['count']}" + (f" (last {len(letters['last'])})" if letters["last"] else ""))
    for letter in letters["last"]:
        error = (letter["error"] or "").replace("\n", " ")
        lines.append(f"  {letter['id']}  entry {letter['entry_id'] or '-'}  {error[:100]}")
    heartbeat = report["heartbeat"]
    if heartbeat is None:
        lines.append("beat heartbeat: none recorded (is beat running?)")
    else:
        state = "ok" if heartbeat["ok"] else f"ERROR {heartbeat['error']}"
        lines.append(f"beat heartbeat: {heartbeat['age_s']}s ago, {state}")
    guards = report["protection"]
    lines.append(f"protection: last {len(guards)} events" if guards else "protection: no events yet")
    if guards:
        lines += _table(guards, ["intent_id", "symbol", "status", "entry_order_id", "sl_order_id", "tp_order_id"], "  ")
    kill = report["kill_switch"]
    if kill["all"] is not None:
        lines.append(f"kill switch: HALTED, every account ({kill['all'].get('reason') or 'no reason given'})")
    for name, record in kill["accounts"].items():
        lines.append(f"kill switch: HALTED, account {name} ({record.get('reason') or 'no reason given'})")
    if kill["all"] is None and not kill["accounts"]:
        lines.append("kill switch: trading")
    if len(report["accounts"]) > 1:
        lines.append(f"accounts: {', '.join(report['accounts'])} (the venue's side below is default's)")
    inflight = report["inflight"]
    oldest = f", oldest placed {inflight['oldest_age_s']}s ago" if inflight["oldest_age_s"] is not None else ""
    placed = f"{inflight['placed']} with an order placed{oldest}"
    lines.append(f"in flight: {max(inflight['count'], 0)} without a result yet ({placed})")
    return lines


def render(report: Report) -> str:
    """The report as one screen of text."""
    redis_part = report["redis"]
    lines = [f"qexec status · mode {report['mode']} · redis {redis_part['url']}", ""]
    if redis_part["ok"]:
        lines += _redis_lines(report)
    else:
        lines.append(f"redis: NOT ANSWERING ({redis_part['error']})")
    workers = report["workers"]
    if workers["error"]:
        lines.append(f"workers: no answer ({workers['error']})")
    else:
        lines.append(f"workers: {len(workers['names'])} answered" + ("" if workers["names"] else " — none running?"))
        lines += [f"  {name}" for name in workers["names"]]
    venue = report["venue"]
    lines.append("")
    if not venue["ok"]:
        lines.append(f"venue {venue['label']}: NOT ANSWERING ({venue['error']})")
    else:
        lines.append(f"venue {venue['label']}: ok")
        lines.append(f"  positions ({len(venue['positions'])})")
        cols = ["symbol", "side", "amount", "entry_price", "mark_price", "unrealized_pnl"]
        lines += _table(venue["positions"], cols)
        lines.append(f"  open orders ({len(venue['open_orders'])})")
        lines += _table(
            venue["open_orders"], ["symbol", "id", "client_id", "side", "type", "status", "quantity", "price"]
        )
        lines.append(f"  open algo orders ({len(venue['open_algo_orders'])})")
        cols = ["symbol", "id", "client_id", "side", "type", "status", "quantity", "trigger_price"]
        lines += _table(venue["open_algo_orders"], cols)
    return "\n".join(lines)


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--dead-letters", "last_dead_letters", type=click.IntRange(0), default=LAST_DEAD_LETTERS, show_default=True
)
def status_command(as_json: bool, last_dead_letters: int) -> None:
    """Show streams, consumers, dead letters, workers, beat and the venue; non-zero when Redis or venue is down."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid QEXEC_* settings:\n{exc}") from exc
    report = gather(settings, redis_streams.connect(settings.redis_url), last_dead_letters=last_dead_letters)
    click.echo(json.dumps(report, indent=2, default=str) if as_json else render(report))
    sys.exit(exit_code(report))


if __name__ == "__main__":
    status_command()
