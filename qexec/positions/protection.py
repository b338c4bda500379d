"""Stop-loss and take-profit as algo orders: deterministic ids, checked levels, idempotent (re-)placement.

`protect_entry` is the chain's last step (`qexec.protect_position`); `ensure` is what every caller (the
chain, the exit monitor's repair and trailing stop, adoption) uses to make the venue hold what a tracked
position wants.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from qexec import alerts, constants, ids, logs, redis_streams
from qexec.errors import (
    OrderNotFound,
    OrderRejected,
    PositionModeChanged,
    TemporaryVenueError,
    UnknownOutcome,
    VenueError,
)
from qexec.models import (
    AlgoOrder,
    ExecutionResult,
    OrderType,
    PositionRisk,
    ProtectionEvent,
    ResultStatus,
    Ticket,
    utcnow,
)
from qexec.positions import entries, levels, policy, store
from qexec.positions.store import LONG, Guard, Tracked
from qexec.venue import view

if TYPE_CHECKING:
    from qexec.context import Context

log = logging.getLogger(__name__)

PROTECTION_PLACED = "PROTECTION_PLACED"
PROTECTION_REFUSED = "PROTECTION_REFUSED"
PROTECTION_FAILED = "PROTECTION_FAILED"
POSITION_UNPROTECTED = "POSITION_UNPROTECTED"  # alert-grade: a position without its stop-loss or take-profit
POSITION_PROTECTED = "POSITION_PROTECTED"  # ...and the moment it has them again
CLOSE_POSITION_EXISTS = -4130  # "An open stop or take profit order with GTE and closePosition in the direction..."

SL, TP = "sl", "tp"
LOCK_WAIT_S = 1.0  # how long the chain's protection step waits for a busy position before retrying later
_TYPES = {SL: "STOP_MARKET", TP: "TAKE_PROFIT_MARKET"}
_MINT = {SL: ids.stop_loss, TP: ids.take_profit}


def client_algo_id(kind: str, owner: str, generation: int) -> str:
    """A protective order's `clientAlgoId` (`qs-`/`qt-`, qexec/ids.py)."""
    return _MINT[kind](owner, generation)


def _rounded(ctx: Context, tracked: Tracked, kind: str, level: Decimal) -> Decimal:
    rules = ctx.venue.rules().get(tracked.symbol)
    if rules is None:
        return level
    # Round away from the position's favour for stops, towards it for targets: never tighter than asked.
    long = tracked.direction == LONG
    return rules.round_price(level, down=long if kind == SL else not long)


def _place(ctx: Context, tracked: Tracked, kind: str, guard: Guard) -> AlgoOrder:
    def send() -> AlgoOrder:
        return ctx.venue.place_algo_order(
            symbol=tracked.symbol,
            side=store.closing_side(tracked.direction),
            order_type=_TYPES[kind],
            trigger_price=guard.trigger,
            client_algo_id=guard.client_algo_id,
            position_side=tracked.position_side if tracked.position_side != "BOTH" else None,
        )

    try:
        return send()
    except OrderRejected as exc:
        if exc.code != CLOSE_POSITION_EXISTS:
            raise
    # -4130: the venue holds one closePosition order of this type per side, and another one is open (an older
    # generation the view missed, or one placed by hand): a state qexec repairs, never a reason to close.
    _cancel_rivals(ctx, tracked, kind, keep=guard.client_algo_id)
    return send()


def _cancel_rivals(ctx: Context, tracked: Tracked, kind: str, *, keep: str) -> None:
    closing = store.closing_side(tracked.direction)
    for algo in ctx.venue.open_algo_orders(tracked.symbol):
        rival = algo.closePosition and algo.orderType == _TYPES[kind] and algo.side is closing
        if rival and algo.positionSide == tracked.position_side and algo.clientAlgoId != keep:
            log.warning(
                "PROTECTION_RIVAL_CANCELED symbol=%s client_algo_id=%s type=%s (-4130: one closePosition order per "
                "type and side)",
                tracked.symbol,
                algo.clientAlgoId,
                algo.orderType,
            )
            cancel_quietly(ctx, algo.clientAlgoId)


def cancel_quietly(ctx: Context, cid: str) -> None:
    """Cancel a protective order unless it has already triggered or gone."""
    with contextlib.suppress(OrderNotFound):
        ctx.venue.cancel_algo_order(client_algo_id=cid)


def ensure_guard(ctx: Context, tracked: Tracked, kind: str, level: Decimal, open_ids: dict[str, AlgoOrder]) -> bool:
    """Make the venue hold this protective order at `level`; True when something was (re-)placed.

    The id is looked up before anything is sent, so a re-run after a crash or unknown outcome adopts what an
    earlier run placed; a change of level, or an order gone from the venue, moves to the next generation's id
    (cancelling the old one first: the venue allows one closePosition order of a type per position side).
    """
    level = _rounded(ctx, tracked, kind, level)
    guard: Guard | None = getattr(tracked, kind)
    if guard is not None and guard.trigger == level:
        found = open_ids.get(guard.client_algo_id)
        if found is None:
            try:
                found = ctx.venue.get_algo_order(client_algo_id=guard.client_algo_id)
            except OrderNotFound:
                found = None
            if found is None:  # recorded but never placed (a crash between the two): place it now
                found = _place(ctx, tracked, kind, guard)
                setattr(tracked, kind, guard.model_copy(update={"algo_id": found.algoId}))
                store.save(ctx.redis, ctx.account, tracked)
                return True
        if found.live:
            if guard.algo_id != found.algoId:
                setattr(tracked, kind, guard.model_copy(update={"algo_id": found.algoId}))
                store.save(ctx.redis, ctx.account, tracked)
            return False
    generation = guard.generation + 1 if guard is not None else 1
    fresh = Guard(client_algo_id=client_algo_id(kind, tracked.owner, generation), trigger=level, generation=generation)
    setattr(tracked, kind, fresh)
    store.save(ctx.redis, ctx.account, tracked)  # before sending: a re-run looks this id up instead of sending again
    if guard is not None and guard.client_algo_id in open_ids:
        cancel_quietly(ctx, guard.client_algo_id)
    placed = _place(ctx, tracked, kind, fresh)
    setattr(tracked, kind, fresh.model_copy(update={"algo_id": placed.algoId}))
    store.save(ctx.redis, ctx.account, tracked)
    return True


def ensure(ctx: Context, tracked: Tracked, *, rest: bool = False) -> bool:
    """Make the venue hold the tracked position's stop-loss and take-profit; True when anything was placed.

    Its protective orders are looked up in the venue's stream when it vouches for every one of them (it saw them
    placed, and everything since), else - or always, with `rest` - over REST (openAlgoOrders).
    """
    guards = [g.client_algo_id for g in (tracked.sl, tracked.tp) if g is not None]
    open_ids = view.live_algo_orders(ctx.venue, tracked.symbol, guards, rest=rest)  # a fresh position: none
    changed = False
    for kind, level in ((SL, tracked.stop_loss), (TP, tracked.take_profit)):
        if level is not None:
            changed |= ensure_guard(ctx, tracked, kind, level, open_ids)
    if changed:
        logs.proof(
            PROTECTION_PLACED,
            symbol=tracked.symbol,
            direction=tracked.direction,
            position_id=tracked.position_id,
            sl=tracked.sl.trigger if tracked.sl else None,
            sl_algo_id=tracked.sl.algo_id if tracked.sl else None,
            sl_client_algo_id=tracked.sl.client_algo_id if tracked.sl else None,
            tp=tracked.tp.trigger if tracked.tp else None,
            tp_algo_id=tracked.tp.algo_id if tracked.tp else None,
            tp_client_algo_id=tracked.tp.client_algo_id if tracked.tp else None,
        )
    return changed


@dataclass(frozen=True)
class Failure:
    """Why protection is not in place: `temporary` when the venue could not be reached or answer (it is tried
    again, for up to QEXEC_PROTECTION_GRACE_S), else the venue refused it (the emergency action runs at once)."""

    reason: str
    temporary: bool


def ensure_with_retries(ctx: Context, tracked: Tracked, attempts: int) -> Failure | None:
    """`ensure`, retrying temporary failures in place; None on success, else why protection is not in place."""
    for attempt in range(attempts + 1):
        try:
            ensure(ctx, tracked)
        except OrderRejected as exc:
            if isinstance(exc, PositionModeChanged) and attempt < attempts:
                # The account changed mode (the venue seam forgot the old one): resend with the new side.
                tracked.position_side = tracked.direction if ctx.venue.dual_side() else "BOTH"
                continue
            return Failure(f"the venue refused a protective order: {exc}", temporary=False)
        except (TemporaryVenueError, UnknownOutcome) as exc:
            if attempt >= attempts:
                return Failure(f"protective orders could not be placed after {attempts + 1} attempts: {exc}", True)
            time.sleep(min(0.2 * 2**attempt, 2.0))
        else:
            return None
    return Failure("protective orders could not be placed", temporary=False)


def unprotected(ctx: Context, tracked: Tracked, reason: str) -> float:
    """Record that the position lacks protection the venue could not take yet (from now, unless already known);
    logs POSITION_UNPROTECTED at ERROR; returns for how long it has been unprotected, in seconds."""
    now_ms = int(time.time() * 1000)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.zadd(store.unprotected_key(ctx.account), {tracked.key: now_ms}, nx=True)
    pipe.zscore(store.unprotected_key(ctx.account), tracked.key)
    added, since = pipe.execute()
    first, repeat_s = bool(added), ctx.settings.alert_repeat_s
    unprotected_s = (now_ms - int(since or now_ms)) / 1000
    logs.proof(
        POSITION_UNPROTECTED,
        level=logging.ERROR if first else logging.WARNING,
        symbol=tracked.symbol,
        direction=tracked.direction,
        position_id=tracked.position_id,
        unprotected_s=f"{unprotected_s:.1f}",
        grace_s=ctx.settings.protection_grace_s,
        reason=reason,
        first=first or None,
    )
    named = constants.account_named(tracked.key, ctx.account)  # as the lasting alert names it (alerts.py)
    spell = alerts.position_unprotected(named, tracked.position_id, int(since or now_ms), reason, repeat_s)
    alerts.raise_alert(ctx.redis, ctx.settings, spell)
    return unprotected_s


def protected_again(ctx: Context, tracked: Tracked) -> None:
    """The position has its protective orders again: clear the record, log it, publish the protection event."""
    since_ms = store.unprotected_since_ms(ctx.redis, ctx.account, tracked)
    if since_ms is None:
        return
    ctx.redis.zrem(store.unprotected_key(ctx.account), tracked.key)
    unprotected_s = (int(time.time() * 1000) - since_ms) / 1000
    logs.proof(
        POSITION_PROTECTED,
        level=logging.WARNING,
        symbol=tracked.symbol,
        direction=tracked.direction,
        position_id=tracked.position_id,
        unprotected_s=f"{unprotected_s:.1f}",
    )
    event = tracked_event(ctx, tracked, "repaired", reason=f"protected after {unprotected_s:.1f} s without")
    publish_event(ctx, event, marker=ctx.key(constants.PROTECTION_SPELL_KEY, key=tracked.key, since_ms=since_ms))


def emergency(ctx: Context, tracked: Tracked, reason: str) -> str:
    """The configured action for a position that cannot be protected; returns what was done."""
    action = ctx.settings.protection_failure_action
    logs.proof(
        PROTECTION_FAILED,
        level=logging.CRITICAL,
        symbol=tracked.symbol,
        direction=tracked.direction,
        position_id=tracked.position_id,
        action=action,
        reason=reason,
    )
    if action != "close":
        return "alerted"
    cid = ids.emergency_close(tracked.position_id)
    venue = ctx.venue
    with contextlib.suppress(OrderNotFound):
        venue.get_order(tracked.symbol, client_order_id=cid)
        return "closed"  # an earlier run already sent it
    positions_now = view.open_positions(ctx.venue, tracked.symbol, rest=True)  # the close's size: the venue's own
    live = positions_now.get((tracked.symbol, tracked.direction))
    if live is None:
        return "already_flat"
    try:
        venue.place_order(
            symbol=tracked.symbol,
            side=store.closing_side(tracked.direction),
            order_type=OrderType.MARKET,
            quantity=abs(live.positionAmt),
            client_order_id=cid,
            reduce_only=tracked.position_side == "BOTH",
            position_side=tracked.position_side if tracked.position_side != "BOTH" else None,
        )
    except VenueError as exc:
        logs.proof(PROTECTION_FAILED, level=logging.CRITICAL, symbol=tracked.symbol, action="close_failed", error=exc)
        _alert_emergency(ctx, tracked, f"close_failed: {exc}", reason)
        return f"close_failed: {exc}"
    _alert_emergency(ctx, tracked, "closed", reason)
    return "closed"


def _alert_emergency(ctx: Context, tracked: Tracked, outcome: str, reason: str) -> None:
    closing = alerts.emergency_close(tracked.symbol, tracked.direction, tracked.position_id, outcome, reason)
    alerts.raise_alert(ctx.redis, ctx.settings, closing)


def protect_entry(result: ExecutionResult, ticket: Ticket, ctx: Context) -> ProtectionEvent | None:
    """After an entry: track the position and place its stop-loss and take-profit; the event to publish.

    Raises `store.PositionBusy` when another step holds the position (the task retries).
    """
    intent = ticket.intent
    chosen = policy.recorded_policy(ctx, ticket.intent_id)
    if result.status not in (ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED, ResultStatus.PROTECTION_UPDATED):
        entries.done_entering(ctx, ticket)
        return None
    direction = store.direction_of(intent.side)
    if result.status.is_fill and (intent.reduce_only or chosen == "close"):
        entries.done_entering(ctx, ticket)
        why = "the intent reduced or closed a position: nothing to protect (the exit monitor reports the exit)"
        return _event(ctx, ticket, "BOTH", "not_needed", reason=why, entry_order_id=result.order_id)
    # Protection holds the lock for a few Redis round trips (or venue calls): worth waiting for rather than a retry.
    with store.locked(ctx.redis, ctx.account, intent.symbol, direction, wait_s=LOCK_WAIT_S):
        return _protect_locked(result, ticket, ctx, direction)


def _protect_locked(result: ExecutionResult, ticket: Ticket, ctx: Context, direction: str) -> ProtectionEvent:
    """`protect_entry` under the position's lock: track the venue's position, then place its protection."""
    intent = ticket.intent
    # After a fill, the position as of that fill at least (the stream's, once it has reported the fill).
    filled_ms = int(result.filled_at.timestamp() * 1000) if result.filled_at else None
    venue_position = view.open_positions(ctx.venue, intent.symbol, after_ms=filled_ms).get((intent.symbol, direction))
    entries.done_entering(ctx, ticket)
    if venue_position is None:
        why = f"no {direction} position is open any more"
        return _event(ctx, ticket, "BOTH", "not_needed", reason=why, entry_order_id=result.order_id)
    tracked = store.load(ctx.redis, ctx.account, intent.symbol, direction)
    dual = ctx.venue.dual_side()
    mark = view.mark_price(ctx.venue, intent.symbol)
    entry = venue_position.entryPrice if venue_position.entryPrice > 0 else mark
    sl, tp, notes = _entry_levels(result, ticket, ctx, direction, tracked, mark=mark)
    tracked = _track(
        ticket, ctx, direction, tracked, venue_position, entry=entry, dual=dual, chosen=(sl, tp), notes=notes
    )
    return _guard_entry(result, ticket, ctx, tracked, notes)


def _entry_levels(
    result: ExecutionResult, ticket: Ticket, ctx: Context, direction: str, tracked: Tracked | None, *, mark: Decimal
) -> tuple[Decimal, Decimal, list[str]]:
    """The levels an entry asks for, checked: against its fill, or (updating protection) the mark; with notes."""
    intent = ticket.intent
    wanted = (
        Decimal(str(intent.stop_loss)) if intent.stop_loss is not None else None,
        Decimal(str(intent.take_profit)) if intent.take_profit is not None else None,
    )
    if result.status.is_fill:
        assert result.entry_price is not None
        fill_price = Decimal(str(result.entry_price))
        return levels.choose_levels(ctx, direction, wanted, entry=fill_price, mark=mark)
    return levels.choose_levels(
        ctx,
        direction,
        (
            wanted[0] or (tracked.stop_loss if tracked else None),
            wanted[1] or (tracked.take_profit if tracked else None),
        ),
        entry=mark,
        mark=mark,
    )


def _track(
    ticket: Ticket,
    ctx: Context,
    direction: str,
    tracked: Tracked | None,
    venue_position: PositionRisk,
    *,
    entry: Decimal,
    dual: bool,
    chosen: tuple[Decimal, Decimal],
    notes: list[str],
) -> Tracked:
    """Track the entry's position (new, or the one it adds to), with its levels; saved, logged, and returned.

    Appends to `notes` when a later intent's levels are kept.
    """
    intent = ticket.intent
    if tracked is None:
        tracked = store.Tracked(
            position_id=constants.account_named(
                f"{intent.symbol}-{direction}-{venue_position.updateTime or int(time.time() * 1000)}", ctx.account
            ),
            symbol=intent.symbol,
            direction=direction,
            position_side=direction if dual else "BOTH",
            owner=ticket.intent_id,
            entry_price=entry,
            quantity=abs(venue_position.positionAmt),
            opened_ms=int(ticket.received_at.timestamp() * 1000),
        )
    if ticket.intent_id not in tracked.intent_ids:
        tracked.intent_ids.append(ticket.intent_id)
    tracked.entry_price, tracked.quantity = entry, abs(venue_position.positionAmt)
    tracked.as_of_ms = venue_position.updateTime or tracked.as_of_ms
    newer = tracked.levels_arrival
    if newer is not None and tuple(newer) > ticket.arrival and tracked.stop_loss is not None:
        # A later intent already set this position's levels: this one (redelivered, or protecting late) keeps them.
        notes.append(f"a later intent's levels ({tracked.stop_loss}, {tracked.take_profit}) are kept")
    else:
        tracked.owner = ticket.intent_id
        tracked.stop_loss, tracked.take_profit = chosen
        tracked.levels_arrival = ticket.arrival
    trailing = intent.trailing_stop_pct or ctx.settings.trailing_stop_pct or None
    tracked.trailing_stop_pct = trailing
    tracked.best_price = tracked.best_price or entry
    store.save(ctx.redis, ctx.account, tracked)
    logs.proof(
        store.POSITION_TRACKED,
        intent_id=ticket.intent_id,
        symbol=intent.symbol,
        direction=direction,
        position_id=tracked.position_id,
        qty=tracked.quantity,
        entry=tracked.entry_price,
    )
    for note in notes:
        logs.proof(PROTECTION_REFUSED, level=logging.WARNING, intent_id=ticket.intent_id, reason=note)
    return tracked


def _guard_entry(
    result: ExecutionResult, ticket: Ticket, ctx: Context, tracked: Tracked, notes: list[str]
) -> ProtectionEvent:
    """Place the tracked position's protection (else record it unprotected, or run the emergency); the event."""
    failure = ensure_with_retries(ctx, tracked, ctx.settings.protection_retries)
    status = "updated" if result.status is ResultStatus.PROTECTION_UPDATED else "placed"
    action = None
    if failure is not None and failure.temporary:
        # The venue is unreachable or answering 503s: closing at market for a blip costs two taker fees and the
        # spread. The exit monitor keeps trying; the emergency action waits for QEXEC_PROTECTION_GRACE_S.
        unprotected(ctx, tracked, failure.reason)
        status = "unprotected"
        notes.append(failure.reason)
    elif failure is not None:
        action = emergency(ctx, tracked, failure.reason)
        status = "failed"
        notes.append(failure.reason)
    else:
        protected_again(ctx, tracked)  # an earlier run (or the monitor) had found it unprotected
    return _event(
        ctx,
        ticket,
        tracked.position_side,
        status,
        tracked=tracked,
        reason="; ".join(notes) or None,
        action=action,
        entry_order_id=result.order_id,
    )


def protect_step(result_data: dict[str, Any], ticket_data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The `qexec.protect_position` task's body: protect, publish the event once; the event (or `{}`)."""
    result = ExecutionResult.model_validate(result_data)
    event = protect_entry(result, Ticket.model_validate(ticket_data), ctx)
    if event is None:
        return {}
    if publish_event(ctx, event):
        late = alerts.protection_late(event, result.filled_at, ctx.settings.alert_protection_late_s)
        alerts.raise_alert(ctx.redis, ctx.settings, late)
    return dict(event.model_dump(mode="json"))


def _event(
    ctx: Context,
    ticket: Ticket,
    position_side: str,
    status: str,
    *,
    tracked: Tracked | None = None,
    reason: str | None = None,
    action: str | None = None,
    entry_order_id: int | None = None,
) -> ProtectionEvent:
    return ProtectionEvent(
        intent_id=ticket.intent_id,
        symbol=ticket.intent.symbol,
        position_side=position_side,
        status=status,
        entry_order_id=ticket.order.orderId if ticket.order is not None else entry_order_id,
        reason=reason,
        action=action,
        account=ticket.intent.account_name,
        mode=ctx.venue.mode,
        venue=ctx.venue.host,
        published_at=utcnow(),
        **(_guards_of(tracked) if tracked is not None else {}),
    )


def _guards_of(tracked: Tracked) -> dict[str, Any]:
    """A protection event's fields for the tracked position's stop-loss and take-profit."""
    sl, tp = tracked.sl, tracked.tp
    return {
        "stop_loss": float(sl.trigger) if sl else None,
        "take_profit": float(tp.trigger) if tp else None,
        "sl_order_id": sl.algo_id if sl else None,
        "tp_order_id": tp.algo_id if tp else None,
        "sl_client_algo_id": sl.client_algo_id if sl else None,
        "tp_client_algo_id": tp.client_algo_id if tp else None,
        "trailing_stop_pct": tracked.trailing_stop_pct,
    }


def publish_failure(ctx: Context, tracked: Tracked, reason: str, action: str) -> None:
    """Publish a `failed` protection event for a tracked position after its entry (once per unprotected spell)."""
    event = tracked_event(ctx, tracked, "failed", reason=reason, action=action)
    since_ms = store.unprotected_since_ms(ctx.redis, ctx.account, tracked) or int(time.time() * 1000)
    publish_event(ctx, event, marker=ctx.key(constants.PROTECTION_SPELL_KEY, key=tracked.key, since_ms=since_ms))


def tracked_event(
    ctx: Context, tracked: Tracked, status: str, *, reason: str | None = None, action: str | None = None
) -> ProtectionEvent:
    """A protection event about a tracked position after its entry (repaired, failed later), for its latest intent."""
    return ProtectionEvent(
        intent_id=tracked.intent_ids[-1] if tracked.intent_ids else tracked.owner,
        symbol=tracked.symbol,
        position_side=tracked.position_side,
        status=status,
        reason=reason,
        action=action,
        account=ctx.account,
        mode=ctx.venue.mode,
        venue=ctx.venue.host,
        published_at=utcnow(),
        **_guards_of(tracked),
    )


def publish_event(ctx: Context, event: ProtectionEvent, *, marker: str | None = None) -> bool:
    """Publish a protection event on the protection stream once (per intent, or per `marker`); True when written
    now."""
    marker = marker or constants.PROTECTION_PUBLISHED_KEY.format(intent_id=event.intent_id)
    written, entry_id = redis_streams.publish_once_at(
        ctx.redis,
        marker,
        ctx.settings.protection_stream,
        event.stream_fields(),
        ttl_s=ctx.settings.intent_state_ttl_s,
        maxlen=ctx.settings.protection_maxlen,
    )
    logs.proof(
        "PROTECTION_PUBLISHED",
        level=logging.ERROR if event.status == "failed" else logging.INFO,
        intent_id=event.intent_id,
        symbol=event.symbol,
        status=event.status,
        sl_order_id=event.sl_order_id,
        tp_order_id=event.tp_order_id,
        event_id=entry_id,
        already=None if written else "true",
    )
    if written:
        alerts.raise_alert(ctx.redis, ctx.settings, alerts.for_protection(event))
    return written
