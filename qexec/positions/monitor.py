"""The exit monitor: reconcile tracked positions with the venue, repair protection, trail stops, report exits.

`watch` runs from beat every `QEXEC_EXIT_MONITOR_EVERY_S` (and so also right after beat starts). Each position
is handled under its Redis lock, and every step is idempotent, so two runs at once do no harm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from qexec import alerts, constants, ids, logs, redis_streams
from qexec.context import each_account
from qexec.errors import (
    OrderNotFound,
    OrderRejected,
    PositionModeChanged,
    TemporaryVenueError,
    UnknownOutcome,
    VenueError,
)
from qexec.models import ExitEvent, ExitReason, PositionRisk, Trade, utcnow
from qexec.positions import entries, levels, protection, store
from qexec.positions.store import LONG, Guard, Tracked
from qexec.venue import view

if TYPE_CHECKING:
    from qexec.context import Context

log = logging.getLogger(__name__)

POSITION_CLOSED = "POSITION_CLOSED"
PROTECTION_REPAIRED = "PROTECTION_REPAIRED"
TRAILING_STOP_MOVED = "TRAILING_STOP_MOVED"


def watch_all(contexts: list[Context]) -> dict[str, list[str]]:
    """Beat's pass over every account (one context each), what was done by action; an account whose pass fails (its
    venue down, its key revoked) is logged and the others' passes still run."""
    return each_account(contexts, _watch_and_say, "EXIT_MONITOR_ERROR")


def _watch_and_say(ctx: Context) -> dict[str, list[str]]:
    report = watch(ctx)
    acted = {kind: names for kind, names in report.items() if names and kind != "busy"}
    if acted:
        where = "" if ctx.account == constants.DEFAULT_ACCOUNT else f"account={ctx.account} "
        log.info("EXIT_MONITOR %s%s", where, " ".join(f"{kind}={','.join(names)}" for kind, names in acted.items()))
    return report


def watch(ctx: Context, symbols: Collection[str] | None = None) -> dict[str, list[str]]:
    """One pass over every tracked or venue position (of `symbols`, when given); what was done, by action."""
    report: dict[str, list[str]] = {"closed": [], "adopted": [], "repaired": [], "trailed": [], "busy": []}
    venue_positions = view.open_positions(ctx.venue)
    keys = store.tracked_keys(ctx.redis, ctx.account) | set(venue_positions)
    if symbols is not None:
        keys = {key for key in keys if key[0] in symbols}
    for symbol, direction in sorted(keys):
        name = f"{symbol}:{direction}"
        try:
            with store.locked(ctx.redis, ctx.account, symbol, direction):
                done = _watch_one(ctx, symbol, direction, venue_positions.get((symbol, direction)))
        except store.PositionBusy:
            report["busy"].append(name)
            continue
        except VenueError as exc:
            log.warning("EXIT_MONITOR_ERROR position=%s error=%s", name, exc)
            continue
        for action in done:
            report[action].append(name)
    return report


def _watch_one(ctx: Context, symbol: str, direction: str, position: PositionRisk | None) -> list[str]:
    tracked = store.load(ctx.redis, ctx.account, symbol, direction)
    if tracked is not None and position is None:
        # A close cancels the position's protection: the venue itself must say it is gone, not only the stream.
        position = view.open_positions(ctx.venue, symbol, rest=True).get((symbol, direction))
    if tracked is not None and position is None:
        close_out(ctx, tracked)
        return ["closed"]
    if position is None:
        return []
    done = []
    if tracked is None:
        if entries.entering(ctx, symbol):
            return []  # our own entry, between its fill and its protection step
        age_s = time.time() - position.updateTime / 1000 if position.updateTime else 1e9
        if age_s < ctx.settings.adopt_grace_s:
            return []
        tracked = adopt(ctx, position)
        done.append("adopted")
    else:
        tracked.quantity = abs(position.positionAmt)
        tracked.as_of_ms = position.updateTime or tracked.as_of_ms
        if position.entryPrice > 0:
            tracked.entry_price = position.entryPrice
    mark = position.markPrice if position.markPrice > 0 else view.mark_price(ctx.venue, symbol)
    if _trail(ctx, tracked, mark):
        done.append("trailed")
    return _repair(ctx, tracked, position, done)


def _repair(ctx: Context, tracked: Tracked, position: PositionRisk, done: list[str]) -> list[str]:
    """Make the venue hold the tracked position's protection, or act on why it cannot; `done`, with what was."""
    failure = None
    try:
        repaired = protection.ensure(ctx, tracked, rest=True)  # the safety net asks the venue itself
    except OrderRejected as exc:
        if isinstance(exc, PositionModeChanged):  # the account changed mode: the next pass sends the new side
            tracked.position_side = position.positionSide
            store.save(ctx.redis, ctx.account, tracked)
            return done
        repaired, failure = False, str(exc)
    except (TemporaryVenueError, UnknownOutcome) as exc:
        if store.unprotected_since_ms(ctx.redis, ctx.account, tracked) is None:
            raise  # nothing is known to be missing (maybe only the look-up failed): the next pass tries again
        # Known to lack protection, and the venue still cannot take it: wait out the grace, then the emergency.
        if protection.unprotected(ctx, tracked, str(exc)) < ctx.settings.protection_grace_s:
            return done
        reason = f"unprotected for longer than QEXEC_PROTECTION_GRACE_S={ctx.settings.protection_grace_s:g}: {exc}"
        action = protection.emergency(ctx, tracked, reason)
        protection.publish_failure(ctx, tracked, reason, action)
        return done
    store.save(ctx.redis, ctx.account, tracked)
    if failure is not None:
        # A level the mark has already passed (-2021) or a refusal: the position cannot be protected as asked.
        reason = f"repairing protection failed: {failure}"
        action = protection.emergency(ctx, tracked, reason)
        protection.publish_failure(ctx, tracked, reason, action)
    elif store.unprotected_since_ms(ctx.redis, ctx.account, tracked) is not None:
        protection.protected_again(ctx, tracked)
        done.append("repaired")
    elif repaired and "trailed" not in done and "adopted" not in done:
        logs.proof(
            PROTECTION_REPAIRED,
            level=logging.WARNING,
            symbol=tracked.symbol,
            direction=tracked.direction,
            position_id=tracked.position_id,
            detail=store.describe(tracked),
        )
        done.append("repaired")
    return done


def adopt(ctx: Context, position: PositionRisk) -> Tracked:
    """Track a venue position qexec did not know, keeping protective orders it already has."""
    direction = position.direction
    entry = position.entryPrice if position.entryPrice > 0 else view.mark_price(ctx.venue, position.symbol)
    owner = constants.account_named(f"adopted-{position.symbol}-{direction}-{position.updateTime}", ctx.account)
    tracked = Tracked(
        position_id=owner,
        symbol=position.symbol,
        direction=direction,
        position_side=position.positionSide,
        owner=owner,
        entry_price=entry,
        quantity=abs(position.positionAmt),
        opened_ms=position.updateTime or int(time.time() * 1000),
        as_of_ms=position.updateTime or None,
        adopted=True,
        trailing_stop_pct=ctx.settings.trailing_stop_pct or None,
        best_price=entry,
    )
    closing = store.closing_side(direction)
    for algo in ctx.venue.open_algo_orders(position.symbol):
        if algo.side is not closing or algo.positionSide != position.positionSide:
            continue
        kind = {"STOP_MARKET": protection.SL, "TAKE_PROFIT_MARKET": protection.TP}.get(algo.orderType)
        if kind is None or getattr(tracked, kind) is not None:
            continue
        generation = ids.generation_of(algo.clientAlgoId)
        guard = Guard(
            client_algo_id=algo.clientAlgoId, trigger=algo.triggerPrice, generation=generation, algo_id=algo.algoId
        )
        setattr(tracked, kind, guard)
        setattr(tracked, "stop_loss" if kind == protection.SL else "take_profit", algo.triggerPrice)
    mark = position.markPrice if position.markPrice > 0 else view.mark_price(ctx.venue, position.symbol)
    sl, tp = levels.default_levels(ctx, direction, entry)
    # Defaults are taken from the entry; one the mark has already passed is taken from the mark instead.
    if levels.level_problems(direction, sl, tp, reference=mark, what="the mark"):
        sl, tp = levels.default_levels(ctx, direction, mark)
    tracked.stop_loss = tracked.stop_loss or sl
    tracked.take_profit = tracked.take_profit or tp
    store.save(ctx.redis, ctx.account, tracked)
    logs.proof(
        store.POSITION_ADOPTED,
        level=logging.WARNING,
        symbol=position.symbol,
        direction=direction,
        qty=tracked.quantity,
        entry=entry,
        kept_sl=tracked.sl.client_algo_id if tracked.sl else None,
        kept_tp=tracked.tp.client_algo_id if tracked.tp else None,
        position_id=tracked.position_id,
    )
    return tracked


def _trail(ctx: Context, tracked: Tracked, mark: Decimal) -> bool:
    """Move the wanted stop after a favourable move (never loosening it); True when it moved."""
    pct = tracked.trailing_stop_pct
    if not pct or tracked.stop_loss is None:
        return False
    long = tracked.direction == LONG
    best = tracked.best_price or tracked.entry_price
    best = max(best, mark) if long else min(best, mark)
    tracked.best_price = best
    rate = Decimal(str(pct)) / 100
    candidate = best * (1 - rate) if long else best * (1 + rate)
    tighter = candidate > tracked.stop_loss if long else candidate < tracked.stop_loss
    behind_mark = candidate < mark if long else candidate > mark
    if not (tighter and behind_mark):
        return False
    rules = ctx.venue.rules().get(tracked.symbol)
    if rules is not None:
        candidate = rules.round_price(candidate, down=long)
        if candidate == tracked.stop_loss or not (
            candidate > tracked.stop_loss if long else candidate < tracked.stop_loss
        ):
            return False
    logs.proof(
        TRAILING_STOP_MOVED,
        symbol=tracked.symbol,
        direction=tracked.direction,
        position_id=tracked.position_id,
        best=best,
        old=tracked.stop_loss,
        new=candidate,
    )
    tracked.stop_loss = candidate
    tracked.trailed = True
    return True


# -- exits ----------------------------------------------------------------------------------------------


def close_out(ctx: Context, tracked: Tracked) -> ExitEvent:
    """A tracked position the venue no longer has: cancel its leftover orders, publish its exit, forget it."""
    triggered = _settle_guards(ctx, tracked)
    trades, reason = closing_fills(ctx, tracked, triggered)
    event = _exit_event(ctx, tracked, trades, reason)
    written, entry_id = redis_streams.publish_once_at(
        ctx.redis,
        ctx.key(constants.EXIT_PUBLISHED_KEY, position_id=tracked.position_id),
        ctx.settings.exit_stream,
        event.stream_fields(),
        ttl_s=ctx.settings.intent_state_ttl_s,
        maxlen=ctx.settings.exit_maxlen,
    )
    store.forget(ctx.redis, ctx.account, tracked)
    if written:
        alerts.raise_alert(ctx.redis, ctx.settings, alerts.for_exit(event))
    logs.proof(
        POSITION_CLOSED,
        symbol=tracked.symbol,
        direction=tracked.direction,
        reason=reason.value,
        exit_price=event.exit_price,
        qty=event.quantity,
        realized_pnl=event.realized_pnl,
        intent_ids=",".join(tracked.intent_ids),
        exit_id=entry_id,
        already=None if written else "true",
    )
    return event


def _settle_guards(ctx: Context, tracked: Tracked) -> dict[int, str]:
    """Cancel a closed position's protective orders still open; the triggered ones, by the order they sent."""
    venue = ctx.venue
    triggered: dict[int, str] = {}
    for kind in (protection.SL, protection.TP):
        guard: Guard | None = getattr(tracked, kind)
        if guard is None:
            continue
        try:
            algo = venue.get_algo_order(client_algo_id=guard.client_algo_id)
        except OrderNotFound:
            continue
        if algo.live:
            protection.cancel_quietly(ctx, guard.client_algo_id)  # the sibling left behind
            logs.proof(
                "PROTECTION_CANCELED",
                symbol=tracked.symbol,
                client_algo_id=guard.client_algo_id,
                algo_id=algo.algoId,
                reason="position closed",
            )
        elif algo.actualOrderId is not None:
            triggered[algo.actualOrderId] = kind
    return triggered


def _exit_event(ctx: Context, tracked: Tracked, trades: list[Trade], reason: ExitReason) -> ExitEvent:
    """The exit event of a closed position, from the fills that closed it."""
    venue = ctx.venue
    quantity = sum((t.qty for t in trades), Decimal(0))
    exit_price = sum((t.qty * t.price for t in trades), Decimal(0)) / quantity if quantity > 0 else None
    return ExitEvent(
        position_id=tracked.position_id,
        symbol=tracked.symbol,
        side=tracked.direction,
        position_side=tracked.position_side,
        reason=reason,
        entry_price=float(tracked.entry_price),
        exit_price=float(exit_price) if exit_price is not None else None,
        quantity=float(quantity) if quantity > 0 else float(tracked.quantity),
        realized_pnl=float(sum((t.realizedPnl for t in trades), Decimal(0))),
        commission=float(sum((t.commission for t in trades), Decimal(0))),
        intent_ids=tracked.intent_ids,
        order_ids=sorted({t.orderId for t in trades}),
        opened_at=datetime.fromtimestamp(tracked.opened_ms / 1000, tz=UTC),
        closed_at=datetime.fromtimestamp(trades[-1].time / 1000, tz=UTC) if trades else utcnow(),
        account=ctx.account,
        mode=venue.mode,
        venue=venue.host,
    )


def closing_fills(ctx: Context, tracked: Tracked, triggered: dict[int, str]) -> tuple[list[Trade], ExitReason]:
    """The fills that closed a tracked position, and why it closed - found by the orders that closed it, never by a
    time window alone (a later entry on the symbol, or a reverse, must not be counted in the exit)."""
    venue = ctx.venue
    # A stop-loss or take-profit that triggered (closePosition: it closed all of it): its own order's fills.
    for order_id, kind in triggered.items():
        fills = venue.user_trades(tracked.symbol, order_id=order_id)
        if fills:
            if kind == protection.SL:
                return fills, ExitReason.TRAILING_STOP if tracked.trailed else ExitReason.STOP_LOSS
            return fills, ExitReason.TAKE_PROFIT
    # Otherwise: the fills since the state qexec last saw, walked until the position is flat; the order that made
    # it flat says who closed it.
    fills = _fills_to_flat(tracked, _fills_since(ctx, tracked))
    if not fills:
        return [], ExitReason.MANUAL_OR_LIQUIDATION
    last = fills[-1].orderId
    try:
        client_id = venue.get_order(tracked.symbol, order_id=last).clientOrderId or ""
    except VenueError:
        client_id = ""
    return fills, exit_reason_of(client_id, trailed=tracked.trailed)


def exit_reason_of(client_id: str, *, trailed: bool = False) -> ExitReason:
    """Why a position closed, from the client order id of the order that closed it (qexec/ids.py)."""
    sender = ids.sender_of(client_id)
    if sender is ids.Sender.STOP_LOSS and trailed:
        return ExitReason.TRAILING_STOP
    return _EXIT_REASONS.get(sender, ExitReason.MANUAL_OR_LIQUIDATION)


_EXIT_REASONS = {
    ids.Sender.STOP_LOSS: ExitReason.STOP_LOSS,
    ids.Sender.TAKE_PROFIT: ExitReason.TAKE_PROFIT,
    ids.Sender.EMERGENCY_CLOSE: ExitReason.PROTECTION_FAILED,
    ids.Sender.HALT_CLOSE: ExitReason.HALT,
    ids.Sender.ENTRY: ExitReason.SIGNAL,
    ids.Sender.REVERSE_CLOSE: ExitReason.SIGNAL,
}


# The venue answers userTrades for at most 7 days between startTime and endTime.
TRADES_WINDOW_MS = 7 * 24 * 3600 * 1000 - 60_000


def _fills_since(ctx: Context, tracked: Tracked) -> list[Trade]:
    """The symbol's fills after the position state qexec last saw (or since it opened), 7-day windows at a time."""
    now_ms = int(time.time() * 1000) + ctx.venue.clock_offset_ms()
    start_ms = tracked.as_of_ms + 1 if tracked.as_of_ms else max(tracked.opened_ms - 5000, 0)
    fills: dict[int, Trade] = {}
    while start_ms <= now_ms:
        end_ms = min(start_ms + TRADES_WINDOW_MS, now_ms)
        for trade in ctx.venue.user_trades(tracked.symbol, start_ms=start_ms, end_ms=end_ms):
            fills[trade.id] = trade
        start_ms = end_ms + 1
    return sorted(fills.values(), key=lambda t: (t.time, t.id))


def _fills_to_flat(tracked: Tracked, trades: list[Trade]) -> list[Trade]:
    """Of `trades`, the closing ones (a crossing fill's closing part only) that take the position from the state
    qexec last saw (or from flat, without one) to flat."""
    opening, closing = store.opening_side(tracked.direction), store.closing_side(tracked.direction)
    held = tracked.quantity if tracked.as_of_ms else Decimal(0)
    closed: list[Trade] = []
    for trade in trades:
        if tracked.position_side not in ("BOTH", trade.positionSide):
            continue
        if trade.side is opening:
            held += trade.qty
            continue
        if trade.side is not closing or held <= 0:
            continue
        part = min(trade.qty, held)
        # One-way: a fill bigger than the position closed it and opened the other side; only the closing part counts.
        share = trade.model_copy(update={"qty": part, "commission": trade.commission * part / trade.qty})
        closed.append(trade if part == trade.qty else share)
        held -= part
        if held <= 0:
            break
    return closed
