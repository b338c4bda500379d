"""The kill switch: `qexec halt` rejects every new intent deployment-wide; `--flatten` also closes everything."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click
import redis

from qexec import alerts, constants, ids, logs
from qexec.config import Settings, get_settings
from qexec.errors import OrderRejected, VenueError
from qexec.models import OrderType, PositionRisk, Side, utcnow
from qexec.pipeline.risk import halt_record
from qexec.venue.rules import plain

if TYPE_CHECKING:
    from qexec.venue.base import Venue

log = logging.getLogger(__name__)

HALT_SET = "HALT_SET"
HALT_LIFTED = "HALT_LIFTED"
FLATTEN_CLOSE = "FLATTEN_CLOSE"
FLATTEN_CANCEL = "FLATTEN_CANCEL"
FLATTEN_FAILED = "FLATTEN_FAILED"
FLATTEN_ROUNDS = 3


def halt(
    r: redis.Redis,
    *,
    reason: str = "",
    flatten: bool = False,
    by: str | None = None,
    where: str | None = None,
    account: str | None = None,
) -> dict[str, Any]:
    """Set the halt flag every worker checks before placing, of every account or of `account`'s; returns the record
    stored. `by` (who) and `where` (from which host or process) are kept with it and logged."""
    record: dict[str, Any] = {"at": utcnow().isoformat(), "reason": reason, "flatten": flatten}
    record.update({key: value for key, value in (("by", by), ("where", where), ("account", account)) if value})
    r.set(constants.halt_key(account), json.dumps(record))
    logs.proof(
        HALT_SET, level=logging.WARNING, reason=reason or None, flatten=flatten, by=by, where=where, account=account
    )
    alerts.raise_alert(r, get_settings(), alerts.halted(record))
    return record


def resume(r: redis.Redis, *, by: str | None = None, where: str | None = None, account: str | None = None) -> bool:
    """Lift the halt flag (of every account, or `account`'s own); False when none was set. `by` (who) and `where`
    are logged with it."""
    lifted = bool(r.delete(constants.halt_key(account)))
    if lifted:
        logs.proof(HALT_LIFTED, level=logging.WARNING, by=by, where=where, account=account)
        alerts.raise_alert(r, get_settings(), alerts.resumed(by, where, account))
    return lifted


def check_account(settings: Settings, account: str | None) -> None:
    """ValueError unless `account` is None (every account) or one configured."""
    if account is not None and account not in settings.account_names:
        raise ValueError(f"no account {account!r}: the accounts are {', '.join(settings.account_names)}")


def wait_for_placements(r: redis.Redis, timeout_s: float) -> int:
    """Wait until no worker holds a place lock (a placement begun before the halt); returns how many are left."""
    pattern = constants.PLACE_LOCK_KEY.format(intent_id="*")
    deadline = time.monotonic() + timeout_s
    while True:
        held = sum(1 for _ in r.scan_iter(match=pattern, count=1000))
        if held == 0 or time.monotonic() >= deadline:
            return held
        time.sleep(0.2)


@dataclass
class Flattened:
    """What `flatten` did at the venue, and what it could not undo."""

    canceled_symbols: list[str] = field(default_factory=list)
    closed: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    positions_left: list[dict[str, str]] = field(default_factory=list)
    orders_left: int = 0
    failed: str | None = None  # the venue error that stopped it: what is left is not known

    @property
    def flat(self) -> bool:
        """True when no position and no open order is known to be left at the venue."""
        return self.failed is None and not self.positions_left and self.orders_left == 0

    def summary(self) -> dict[str, Any]:
        """What a caller reports: flat or not, what was closed and canceled, what is left, the errors."""
        return {
            "flat": self.flat,
            "closed": self.closed,
            "canceled_symbols": self.canceled_symbols,
            "positions_left": self.positions_left,
            "orders_left": self.orders_left,
            "errors": self.errors + ([self.failed] if self.failed else []),
        }


def flatten_accounts(
    settings: Settings, accounts: list[str], venue_of: Callable[[Settings], Venue]
) -> dict[str, Flattened]:
    """`flatten` each account in turn with its own venue client (`venue_of(its settings)`); one that fails at the
    venue (a 503, a revoked key) does not stop the others: its failure is kept, and it is not flat."""
    done: dict[str, Flattened] = {}
    for name in accounts:
        venue = venue_of(settings.for_account(name))
        try:
            done[name] = flatten(venue)
        except VenueError as exc:
            done[name] = Flattened(failed=f"flatten failed at the venue: {exc}")
            logs.proof(FLATTEN_FAILED, level=logging.ERROR, account=name, error=str(exc))
        finally:
            venue.close()
    return done


def flatten(venue: Venue) -> Flattened:
    """Cancel every open (and algo) order and close every position with reduce-only MARKET orders, then re-check."""
    done = Flattened()
    for _round in range(FLATTEN_ROUNDS):
        symbols = sorted({o.symbol for o in venue.open_orders()} | {a.symbol for a in venue.open_algo_orders()})
        for symbol in symbols:
            try:
                venue.cancel_all_orders(symbol)
                logs.proof(FLATTEN_CANCEL, level=logging.WARNING, symbol=symbol)
                if symbol not in done.canceled_symbols:
                    done.canceled_symbols.append(symbol)
            except VenueError as exc:
                done.errors.append(f"cancel {symbol}: {exc}")
        open_positions = [p for p in venue.positions() if p.positionAmt != 0]
        if not open_positions and not symbols:
            break
        for position in open_positions:
            try:
                done.closed.extend(_close(venue, position))
            except VenueError as exc:
                done.errors.append(f"close {position.symbol}: {exc}")
    done.positions_left = [
        {"symbol": p.symbol, "positionSide": p.positionSide, "positionAmt": plain(p.positionAmt)}
        for p in venue.positions()
        if p.positionAmt != 0
    ]
    done.orders_left = len(venue.open_orders()) + len(venue.open_algo_orders())
    return done


def _close(venue: Venue, position: PositionRisk) -> list[dict[str, str]]:
    """Close one position with reduce-only MARKET orders (several when it exceeds the market lot size)."""
    symbol = position.symbol
    amount = position.positionAmt
    side = Side.SELL if amount > 0 else Side.BUY
    position_side = position.positionSide
    hedge = position_side in ("LONG", "SHORT")
    rules = venue.rules().get(symbol)
    largest = rules.market_max_qty if rules is not None and rules.market_max_qty > 0 else abs(amount)
    left, closed = abs(amount), []
    while left > 0:
        quantity = min(left, largest)
        cid = ids.halt_close()
        try:
            order = venue.place_order(
                symbol=symbol,
                side=side,
                order_type=OrderType.MARKET,
                quantity=quantity,
                client_order_id=cid,
                reduce_only=not hedge,
                position_side=position_side if hedge else None,
            )
        except OrderRejected as exc:
            if exc.code == -2022:  # ReduceOnly rejected: nothing left to reduce (closed meanwhile)
                break
            raise
        logs.proof(
            FLATTEN_CLOSE,
            level=logging.WARNING,
            symbol=symbol,
            side=side.value,
            position_side=position_side,
            quantity=quantity,
            order_id=order.orderId,
            status=order.status.value,
        )
        closed.append({"symbol": symbol, "side": side.value, "quantity": str(quantity), "status": order.status.value})
        left -= quantity
    return closed


def _redis_and_settings() -> tuple[redis.Redis, Settings]:
    from qexec import redis_streams  # noqa: PLC0415 - the CLI imports commands lazily
    from qexec.ops.selftest import settings_or_fail  # noqa: PLC0415

    settings = settings_or_fail()
    return redis_streams.connect(settings.redis_url), settings


@click.command("halt", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--reason", default="", help="Why (stored with the flag, shown in each rejection).")
@click.option(
    "--flatten", "flatten_too", is_flag=True, help="Also cancel every open order and close every position at the venue."
)
@click.option("--wait", "wait_s", type=float, default=30.0, show_default=True, help="Wait for in-flight placements.")
@click.option("--account", default=None, help="Halt (and flatten) this account only (default: every account).")
def halt_command(reason: str, flatten_too: bool, wait_s: float, account: str | None) -> None:
    """Reject every new intent (reason `halted`) until `qexec resume`; `--flatten` also closes everything."""
    r, settings = _redis_and_settings()
    logs.configure("INFO", secrets=settings.log_secrets())
    try:
        check_account(settings, account)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    halt(r, reason=reason, flatten=flatten_too, account=account)
    whose = f"account {account}'s new intents are" if account else "new intents are"
    click.echo(f"HALTED {whose} rejected until `qexec resume`{f' ({reason})' if reason else ''}")
    if not flatten_too:
        return
    left = wait_for_placements(r, wait_s)
    if left:
        click.echo(f"warning: {left} placement(s) still in flight after {wait_s:g}s; flattening anyway", err=True)
    from qexec.venue.binance import BinanceVenue  # noqa: PLC0415 - python-binance only when the venue is needed

    names = [account] if account else list(settings.account_names)
    done = flatten_accounts(settings, names, lambda own: BinanceVenue(own, r))
    for name, flattened in done.items():
        _say_flattened(name if len(settings.account_names) > 1 else None, flattened)
    not_flat = [name for name, flattened in done.items() if not flattened.flat]
    if not_flat:
        raise click.ClickException(f"not flat: {', '.join(not_flat)} (see above)")


def _say_flattened(account: str | None, done: Flattened) -> None:
    """Print what flattening one account did, and what it left."""
    if account is not None:
        click.echo(f"account  {account}")
    for row in done.closed:
        click.echo(f"closed   {row['symbol']} {row['side']} {row['quantity']} ({row['status']})")
    for symbol in done.canceled_symbols:
        click.echo(f"canceled open orders and algo orders of {symbol}")
    for error in done.summary()["errors"]:
        click.echo(f"error    {error}", err=True)
    if done.flat:
        click.echo(f"FLAT positions closed={len(done.closed)} symbols canceled={len(done.canceled_symbols)}")
    elif done.failed is None:
        click.echo(
            f"NOT FLAT {len(done.positions_left)} position(s) and {done.orders_left} order(s) left: "
            f"{done.positions_left}",
            err=True,
        )


@click.command("resume", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--account", default=None, help="Lift the halt of this account (`qexec halt --account`) only.")
def resume_command(account: str | None) -> None:
    """Lift `qexec halt`: new intents are placed again."""
    r, settings = _redis_and_settings()
    try:
        check_account(settings, account)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    record = halt_record(r.get(constants.halt_key(account)))
    if resume(r, account=account):
        click.echo(f"RESUMED (halted since {record.get('at') if record else '?'})")
    else:
        click.echo("RESUMED (no halt was in force)")
