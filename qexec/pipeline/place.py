"""The place step: the entry order sent exactly once, after the kill switch, risk, rules, policy and leverage."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from qexec import constants, locks, logs, metrics
from qexec.context import Context, Pending
from qexec.errors import (
    OrderNotFound,
    OrderRejected,
    PositionModeChanged,
    RateLimited,
    TemporaryVenueError,
    UnknownAccount,
    UnknownOutcome,
    VenueError,
)
from qexec.models import (
    ExecutionResult,
    Intent,
    OrderState,
    OrderType,
    Refusal,
    RejectKind,
    ResultStatus,
    Side,
    Ticket,
)
from qexec.pipeline import risk
from qexec.pipeline.confirm import poll_delay_s
from qexec.pipeline.order_record import PlaceLock, Placement, order_key, save_state
from qexec.pipeline.publish import publish, published_result
from qexec.pipeline.trace import log_fill, log_response, ticket_ids
from qexec.positions import entries, policy
from qexec.venue import limiter, view
from qexec.venue.rules import SymbolRules


def place_entry(ticket: Ticket, ctx: Context, attempt: int = 0) -> Ticket | ExecutionResult:
    """Place the intent's entry order exactly once, adopting an earlier submit whatever its outcome.

    Returns the ticket with its order (or a verdict) for the next step - or, when the venue's answer is already
    final, the published result itself (nothing is left to confirm).
    """
    if ticket.verdict is not None or ticket.order is not None:
        return ticket
    with locks.running_token() as token:
        return _place_holding(ticket, ctx, attempt, token)


def _place_holding(ticket: Ticket, ctx: Context, attempt: int, token: str) -> Ticket | ExecutionResult:
    """`place_entry` with this run's lock token: take the place lock, then adopt or submit."""
    r = ctx.redis
    lock_key = constants.PLACE_LOCK_KEY.format(intent_id=ticket.intent_id)
    # Held across at most ~6 venue calls (rules, mark, leverage, mode, submit, look-up), each bounded by the
    # request timeout; expiring early would let a duplicate execution run beside this one.
    lock_ms = int((ctx.settings.request_timeout_s * 8 + 5) * 1000)
    # One round trip: the lock, the intent's state, its result if published, the kill switch (read in order, used
    # only with the lock) and the symbol's entries on their way.
    pipe = r.pipeline(transaction=False)
    pipe.set(lock_key, token, nx=True, px=lock_ms)
    pipe.hgetall(order_key(ticket))
    pipe.get(constants.PUBLISHED_KEY.format(intent_id=ticket.intent_id))
    pipe.mget(constants.halt_key(None), constants.halt_key(ctx.account))
    pipe.zrem(constants.PLACE_DUE_KEY, ticket.intent_id)  # it has started: nothing for beat's takeover to send again
    pipe.hdel(constants.PLACE_DUE_TICKETS_KEY, ticket.intent_id)
    if not ticket.intent.reduce_only:
        entries.queue_entry_registration(ctx, ticket, pipe, token)
    locked, state, published_id, halt, _due, _ticket, *registered = pipe.execute()
    if not locked and not locks.take_over(r, lock_key, token, lock_ms, ctx.settings.node_beat_s):
        raise Pending(0.5, "another execution is placing this intent")
    lock = PlaceLock(lock_key, token)
    try:
        # A re-run after the result went out (a crash before the bookkeeping that follows it): the intent is done,
        # whatever the venue says of its order now.
        done = published_result(ctx, published_id) if published_id else None
        if done is not None:
            return done
        phase = state.get("phase")
        if phase in ("submitting", "placed") and ticket.intent.account_name != ctx.account:
            # Another worker, which has the account, sent its order: only one that has it may look it up.
            raise UnknownAccount(f"account {ticket.intent.account_name!r} is not one of this worker's accounts")
        if phase == "rejected":
            code = state.get("code")
            return ticket.decide(ResultStatus.REJECTED, state.get("reason") or "rejected", int(code) if code else None)
        if phase in ("submitting", "placed"):
            return _look_up_submit(ticket, ctx, state, attempt, lock)
        on_the_way = entries.on_the_way_from(registered[0], ticket) if registered else None
        return _check_and_submit(ticket, ctx, attempt, lock, halt=risk.halt_record(*halt), on_the_way=on_the_way)
    finally:
        if lock.held:
            locks.release(r, lock_key, token)


def _reject(
    ticket: Ticket, ctx: Context, reason: str, code: int | None = None, *, kind: RejectKind = RejectKind.OTHER
) -> Ticket:
    if ticket.closed_first and not reason.startswith(ticket.closed_first):
        reason = f"{ticket.closed_first}; then the entry was refused: {reason}"  # say all that happened
    save_state(ticket, ctx, phase="rejected", reason=reason, code=code if code is not None else "")
    logs.proof(logs.INTENT_REJECTED, level=logging.WARNING, reason=reason, code=code, **ticket_ids(ticket, ctx))
    metrics.intent_rejected(ctx.redis, kind)
    return ticket.decide(ResultStatus.REJECTED, reason, code, kind=kind)


def _give_up_at(ticket: Ticket, ctx: Context) -> datetime:
    s = ctx.settings
    return ticket.received_at + timedelta(seconds=s.unknown_lookup_s + s.fill_timeout_s + 60)


def _retry_or_fail(ticket: Ticket, ctx: Context, exc: VenueError, attempt: int, what: str) -> Ticket:
    """Pause and retry after a temporary venue failure, or give up with a `failed` verdict."""
    # A rate limit never fails an intent: it waits (a stale one is rejected by the checks when it runs again).
    if ctx.now() >= _give_up_at(ticket, ctx) and not isinstance(exc, RateLimited):
        reason = f"{what}: gave up after repeated venue failures, last: {exc}"
        logs.proof(logs.ORDER_ERROR, level=logging.ERROR, reason=reason, **ticket_ids(ticket, ctx))
        return ticket.decide(ResultStatus.FAILED, reason, exc.code)
    countdown = exc.retry_after_s if isinstance(exc, RateLimited) else poll_delay_s(ctx.settings, attempt + 2)
    raise Pending(countdown, f"{what}: {exc}")


@dataclass(frozen=True)
class _Entry:
    """The entry order the checks decided: its ticket (quantity set), limit price and hedge-mode position side."""

    ticket: Ticket
    quantity: Decimal
    limit_price: Decimal | None
    position_side: str | None


def _check_and_submit(
    ticket: Ticket,
    ctx: Context,
    attempt: int,
    lock: PlaceLock,
    *,
    halt: risk.Halt = risk.UNREAD,
    on_the_way: entries.OnTheWay | None = None,
) -> Ticket | ExecutionResult:
    """Wait for the symbol's earlier entries, decide the order, record its submit and send it."""
    if on_the_way is None and not ticket.intent.reduce_only:
        on_the_way = entries.register_entry(ctx, ticket, lock.token)  # deciding again: a fresh place
    if on_the_way is not None and entries.wait_for_earlier(ctx, ticket, on_the_way):
        halt = risk.UNREAD  # waited for an earlier entry: the kill switch is read again, like everything below
    now = ctx.now()
    entry = _prepare(ticket, ctx, attempt, now, halt=halt, on_the_way=on_the_way)
    if isinstance(entry, Ticket):
        return entry  # refused, failed or decided by the policy: no order goes out
    spent = _record_submit(entry.ticket, ctx, now)
    return _submit(entry, ctx, attempt, lock, now=now, spent=spent)


def _prepare(
    ticket: Ticket, ctx: Context, attempt: int, now: datetime, *, halt: risk.Halt, on_the_way: entries.OnTheWay | None
) -> _Entry | Ticket:
    """Decide the entry order (kill switch and risk, rules, price, quantity, policy, leverage), or the ticket's verdict
    when none is to go."""
    intent, s, venue = ticket.intent, ctx.settings, ctx.venue
    try:
        # The kill switch, then every risk limit.
        breach = risk.breach(intent, s, ctx.redis, venue, now, halt=halt, entry_id=ticket.entry_id)
        if breach:
            return _reject(ticket, ctx, breach.reason, kind=breach.kind)
        rules = venue.rules().get(intent.symbol)
        if rules is None:
            reason = f"unknown symbol {intent.symbol}: the venue does not list it"
            return _reject(ticket, ctx, reason, kind=RejectKind.UNKNOWN_SYMBOL)
        market = intent.order_type is OrderType.MARKET
        priced = _entry_price(intent, rules, view.mark_price(venue, intent.symbol))
        if isinstance(priced, Refusal):
            return _reject(ticket, ctx, priced.reason, kind=priced.kind)
        price, limit_price = priced
        quantity = rules.quantity_for(Decimal(str(intent.position_size_usd)), price, market=market)
        problem = rules.problem(quantity, price, market=market, reduce_only=intent.reduce_only)
        if problem:
            return _reject(ticket, ctx, problem.reason, kind=problem.kind)
        dual = venue.dual_side()
        # An open position on the symbol: the configured policy decides (skip, update protection, add, ...).
        plan_with = on_the_way or entries.OnTheWay()  # reduce-only: nothing to plan around
        ticket, quantity = policy.entry_plan(ticket, ctx, quantity=quantity, dual=dual, on_the_way=plan_with)
        if ticket.verdict is None and not ticket.intent.reduce_only:  # closing and reducing never touch leverage
            ticket = _with_leverage(ticket, ctx)
    except OrderRejected as exc:
        return _reject(ticket, ctx, f"venue refused the set-up: {exc.message}", exc.code, kind=RejectKind.VENUE)
    except (TemporaryVenueError, UnknownOutcome) as exc:
        return _retry_or_fail(ticket, ctx, exc, attempt, "preparing the order")
    if ticket.verdict is not None:
        if ticket.verdict.status is ResultStatus.REJECTED:
            return _reject(ticket, ctx, ticket.verdict.reason, kind=ticket.verdict.kind or RejectKind.OTHER)
        return ticket
    intent = ticket.intent
    position_side = None
    if dual:
        opens_long = (intent.side is Side.BUY) != intent.reduce_only
        position_side = "LONG" if opens_long else "SHORT"
    ticket = ticket.model_copy(update={"quantity": quantity})
    return _Entry(ticket, quantity, limit_price, position_side)


def _entry_price(intent: Intent, rules: SymbolRules, mark: Decimal) -> tuple[Decimal, Decimal | None] | Refusal:
    """The price the order is sized at and its limit price (None for MARKET), or why the venue refuses the limit."""
    if intent.order_type is OrderType.MARKET:
        return mark, None
    assert intent.entry_price is not None
    limit_price = rules.round_price(Decimal(str(intent.entry_price)), down=intent.side is Side.BUY)
    band = rules.limit_price_problem(intent.side is Side.BUY, limit_price, mark)
    if band:
        return band
    # Sized from what the order will really cost, so it never fills at more than position_size_usd: a BUY never
    # fills above its limit; a SELL below the mark (marketable) fills near the mark, not at its limit.
    return (limit_price if intent.side is Side.BUY else max(limit_price, mark)), limit_price


def _record_submit(ticket: Ticket, ctx: Context, now: datetime) -> object:
    """Record the submit and spend the order's rate budget in one round trip; returns the budget's reply, if any."""
    # Before the order goes out: a re-run looks the order up instead of sending again.
    pipe = ctx.redis.pipeline(transaction=False)
    if not ticket.intent.reduce_only:
        entries.mark_entering(ctx, ticket, pipe)  # our own position-to-be: not a stranger's to adopt
    key = order_key(ticket)
    state = {"phase": "submitting", "submitted_at": now.timestamp(), "client_order_id": ticket.client_order_id}
    if ticket.leverage is not None:
        state["leverage"] = ticket.leverage  # a re-run adopting the order reports it too
    pipe.hset(key, mapping={k: str(v) for k, v in state.items()})
    pipe.expire(key, ctx.settings.intent_state_ttl_s)
    recorded = len(pipe)
    spending = ctx.venue.limiter is not None
    if ctx.venue.limiter is not None:
        ctx.venue.limiter.spend_in(pipe, limiter.ORDER)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies[:recorded]:
        if isinstance(reply, Exception):
            raise reply
    return replies[recorded] if spending else None


def _submit(
    entry: _Entry, ctx: Context, attempt: int, lock: PlaceLock, *, now: datetime, spent: object
) -> Ticket | ExecutionResult:
    """Send the recorded order to the venue: placed, rejected, retried (surely not executed) or looked up (unknown)."""
    ticket, quantity, limit_price = entry.ticket, entry.quantity, entry.limit_price
    intent = ticket.intent
    logs.proof(
        logs.ORDER_SUBMIT,
        side=intent.side.value,
        type=intent.order_type.value,
        quantity=quantity,
        price=limit_price,
        position_side=entry.position_side,
        **ticket_ids(ticket, ctx),
    )
    try:
        order = ctx.venue.place_order(
            symbol=intent.symbol,
            side=intent.side,
            order_type=intent.order_type,
            quantity=quantity,
            client_order_id=ticket.client_order_id,
            price=limit_price,
            reduce_only=intent.reduce_only,
            position_side=entry.position_side,
            time_in_force=intent.time_in_force.value,
            spent=spent,
        )
    except OrderRejected as exc:
        if isinstance(exc, PositionModeChanged) and attempt < 3:
            # Nothing executed, and the venue seam forgot the mode it knew: decide again with the account's own mode.
            ctx.redis.delete(order_key(ticket))
            raise Pending(0.1, f"position mode changed: {exc}") from exc
        return _reject(ticket, ctx, f"venue rejected the order: {exc.message}", exc.code, kind=RejectKind.VENUE)
    except TemporaryVenueError as exc:
        # Surely not executed: forget the submit so the next run goes through the checks again.
        ctx.redis.delete(order_key(ticket))
        logs.proof(
            logs.ORDER_ERROR, level=logging.WARNING, outcome="not_executed", error=exc, **ticket_ids(ticket, ctx)
        )
        return _retry_or_fail(ticket, ctx, exc, attempt, "submitting the order")
    except UnknownOutcome as exc:
        logs.proof(logs.ORDER_ERROR, level=logging.WARNING, outcome="unknown", error=exc, **ticket_ids(ticket, ctx))
        return _look_up_submit(
            ticket, ctx, {"phase": "submitting", "submitted_at": str(now.timestamp())}, attempt, lock
        )
    return _placed(ticket, ctx, order, placed_at=now, lock=lock, first=True)


def _with_leverage(ticket: Ticket, ctx: Context) -> Ticket:
    """The ticket with the leverage its entry opens at: the intent's, set at the venue when it differs, or the
    symbol's own when the intent names none; with a rejection when that is not allowed or not what the venue did."""
    intent, limit = ticket.intent, ctx.settings.max_leverage
    if intent.leverage is None:
        current = view.current_leverage(ctx.venue, intent.symbol)
        ticket = ticket.model_copy(update={"leverage": current})
        if current > limit:
            reason = (
                f"{intent.symbol} is at leverage {current} at the venue, above the limit {limit}, and the intent "
                "names none"
            )
            return ticket.decide(ResultStatus.REJECTED, reason, kind=RejectKind.RISK)
        return ticket
    applied = view.ensure_leverage(ctx.venue, intent.symbol, intent.leverage)
    ticket = ticket.model_copy(update={"leverage": applied})
    if applied != intent.leverage:
        reason = f"the venue set leverage {applied}, not the {intent.leverage} asked"
        return ticket.decide(ResultStatus.REJECTED, reason)
    return ticket


def _placed(
    ticket: Ticket, ctx: Context, order: OrderState, *, placed_at: datetime, lock: PlaceLock, first: bool
) -> Ticket | ExecutionResult:
    """Record the order the venue acknowledged, and release the place lock, in one round trip; or, when the venue's
    answer is final, publish its result first and do the bookkeeping after it.

    `first`: this run is the first to learn of the order (it is counted once, not again by a re-run adopting it).
    """
    ticket = ticket.model_copy(update={"order": order, "placed_at": placed_at})
    placement = Placement(lock, first)
    if order.settled:
        # The result is what a reader waits for: it goes out before anything else, the steps' own proof lines (the
        # venue's answer, the fill) right after it. A crash in between leaves the submit recorded (`submitting`);
        # a re-run looks the order up and publishes nothing twice.
        def log_after_result() -> None:
            log_response(ticket, ctx, order)
            log_fill(ticket, ctx, order)

        return publish(ticket, ctx, placement=placement, log_after_result=log_after_result)
    pipe = ctx.redis.pipeline(transaction=False)
    placement.record(pipe, ticket, ctx, in_flight=True)
    counts_from = len(pipe)
    if first:
        metrics.queue_placed(pipe)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies[:counts_from]:
        if isinstance(reply, Exception):
            raise reply
    metrics.dropped(replies[counts_from:])
    log_response(ticket, ctx, order)
    return ticket


def _look_up_submit(
    ticket: Ticket, ctx: Context, state: dict[str, str], attempt: int, lock: PlaceLock
) -> Ticket | ExecutionResult:
    """Find out what an earlier submit did by asking the venue for our client order id."""
    venue = ctx.venue
    if ticket.leverage is None and (state.get("leverage") or "").isdigit():
        ticket = ticket.model_copy(update={"leverage": int(state["leverage"])})
    submitted_at = datetime.fromtimestamp(float(state.get("submitted_at") or 0), tz=UTC)
    placed_at_text = state.get("placed_at")
    placed_at = datetime.fromtimestamp(float(placed_at_text), tz=UTC) if placed_at_text else submitted_at
    try:
        order = venue.get_order(ticket.intent.symbol, client_order_id=ticket.client_order_id)
    except OrderNotFound:
        waited_s = (ctx.now() - submitted_at).total_seconds()
        if state.get("phase") == "placed":
            reason = "the venue no longer knows an order it acknowledged"
            return ticket.decide(ResultStatus.FAILED, reason, -2013)
        # Never conclude "absent" while the first submit's own request could still be in flight.
        window_s = max(ctx.settings.unknown_lookup_s, ctx.settings.request_timeout_s * 2 + 1)
        if waited_s < window_s:
            # -2013 right after a submit is ambiguous: ask again a few times before concluding.
            logs.proof(
                logs.ORDER_LOOKUP, outcome="not_found_yet", waited_s=f"{waited_s:.1f}", **ticket_ids(ticket, ctx)
            )
            raise Pending(0.5, "order not visible at the venue yet") from None
        logs.proof(logs.ORDER_LOOKUP, outcome="absent", waited_s=f"{waited_s:.1f}", **ticket_ids(ticket, ctx))
        ctx.redis.delete(order_key(ticket))
        return _check_and_submit(ticket, ctx, attempt, lock)
    except (TemporaryVenueError, UnknownOutcome) as exc:
        return _retry_or_fail(ticket, ctx, exc, attempt, "looking the order up")
    logs.proof(logs.ORDER_LOOKUP, outcome="found", status=order.status.value, **ticket_ids(ticket, ctx, order))
    return _placed(ticket, ctx, order, placed_at=placed_at, lock=lock, first=state.get("phase") != "placed")
