"""The steps of an execution as plain functions: place the entry, confirm the fill, publish the result.

Each takes the ticket and a `Context` (settings, Redis, venue) and returns the ticket for the next step,
or raises `Pending` to be run again later. Celery wiring lives in `tasks.py`.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import redis

from qexec import constants, logs, metrics, redis_streams
from qexec.config import Settings
from qexec.errors import (
    OrderNotFound,
    OrderRejected,
    RateLimited,
    TemporaryVenueError,
    UnknownOutcome,
    VenueError,
)
from qexec.models import (
    ExecutionResult,
    Intent,
    OrderState,
    OrderStatus,
    OrderType,
    ResultStatus,
    Side,
    Ticket,
    client_order_id,
    utcnow,
)
from qexec.pipeline import risk
from qexec.positions import protection, store
from qexec.venue.binance import Venue
from qexec.venue.rules import plain

log = logging.getLogger(__name__)

POSITION_SIDE_MISMATCH = -4061  # "Order's position side does not match user's setting."
STREAM_POLL_FACTOR = 1.5  # confirm_fill's countdown grows by this while the stream vouches for the order
STREAM_VERIFY_EVERY = 8  # ...and every this many attempts it asks the venue over REST all the same
_RELEASE_LOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Pending(Exception):
    """Raised when a step must run again after `countdown_s` seconds."""

    def __init__(self, countdown_s: float, reason: str) -> None:
        super().__init__(reason)
        self.countdown_s = countdown_s
        self.reason = reason


@dataclass
class Context:
    """What a step works with: settings, qexec's Redis, the venue, and a clock."""

    settings: Settings
    redis: redis.Redis
    venue: Venue
    now: Callable[[], datetime] = field(default=utcnow)


def new_ticket(intent: Intent, *, entry_id: str | None, received_at: datetime | None = None) -> Ticket:
    """A fresh ticket for an intent that has just been read."""
    return Ticket(
        intent=intent,
        entry_id=entry_id,
        received_at=received_at or utcnow(),
        client_order_id=client_order_id(intent.id),
    )


def poll_delay_s(settings: Settings, attempt: int) -> float:
    """The confirmation poll countdown: short first, growing by `poll_factor`, capped at `poll_max_s`."""
    return float(min(settings.poll_max_s, settings.poll_initial_s * settings.poll_factor ** min(attempt, 32)))


def _ids(ticket: Ticket, ctx: Context, order: OrderState | None = None) -> dict[str, Any]:
    known = order or ticket.order
    return {
        "intent_id": ticket.intent_id,
        "entry_id": ticket.entry_id,
        "client_order_id": ticket.client_order_id,
        "order_id": known.orderId if known else None,
        "symbol": ticket.intent.symbol,
        "mode": ctx.venue.mode,
        "venue": ctx.venue.host,
    }


# -- place_order --------------------------------------------------------------------------------------


def place_entry(ticket: Ticket, ctx: Context, attempt: int = 0) -> Ticket | ExecutionResult:
    """Place the intent's entry order exactly once, adopting an earlier submit whatever its outcome.

    Returns the ticket with its order (or a verdict) for the next step - or, when the venue's answer is already
    final, the published result itself (nothing is left to confirm).
    """
    if ticket.verdict is not None or ticket.order is not None:
        return ticket
    r = ctx.redis
    lock_key = constants.PLACE_LOCK_KEY.format(intent_id=ticket.intent_id)
    token = uuid.uuid4().hex
    # Held across at most ~6 venue calls (rules, mark, leverage, mode, submit, look-up), each bounded by the
    # request timeout; expiring early would let a duplicate execution run beside this one.
    lock_ms = int((ctx.settings.request_timeout_s * 8 + 5) * 1000)
    # One round trip: the lock, the intent's state, its result if published, the kill switch (read in order, used
    # only with the lock) and the symbol's entries on their way.
    pipe = r.pipeline(transaction=False)
    pipe.set(lock_key, token, nx=True, px=lock_ms)
    pipe.hgetall(_order_key(ticket))
    pipe.get(constants.PUBLISHED_KEY.format(intent_id=ticket.intent_id))
    pipe.get(constants.HALT_KEY)
    if not ticket.intent.reduce_only:
        store.queue_entry_registration(ctx, ticket, pipe, token)
    locked, state, published_id, halt, *entries = pipe.execute()
    if not locked:
        raise Pending(0.5, "another execution is placing this intent")
    lock = _PlaceLock(lock_key, token)
    try:
        # A re-run after the result went out (a crash before the bookkeeping that follows it): the intent is done,
        # whatever the venue says of its order now.
        done = _published(ctx, published_id) if published_id else None
        if done is not None:
            return done
        phase = state.get("phase")
        if phase == "rejected":
            code = state.get("code")
            return ticket.decide(ResultStatus.REJECTED, state.get("reason") or "rejected", int(code) if code else None)
        if phase in ("submitting", "placed"):
            return _adopt(ticket, ctx, state, attempt, lock)
        on_the_way = store.on_the_way_from(entries[0], ticket) if entries else None
        return _check_and_submit(ticket, ctx, attempt, lock, halt=risk.halt_record(halt), on_the_way=on_the_way)
    finally:
        if lock.held:
            r.eval(_RELEASE_LOCK, 1, lock_key, token)


@dataclass
class _Placement:
    """An order the venue acknowledged to this run, which still holds the intent's place lock."""

    lock: _PlaceLock
    first: bool  # this run is the first to learn of the order: it counts it (a re-run adopting it does not)

    def record(self, pipe: redis.client.Pipeline, ticket: Ticket, ctx: Context, *, in_flight: bool) -> None:
        """Queue the record of the order (phase `placed`) and the lock's release in `pipe`.

        `in_flight`: the result is still to come; the intent is listed (with its ticket) so that beat's reconcile
        can finish it should its chain die.
        """
        assert ticket.order is not None and ticket.placed_at is not None
        key = _order_key(ticket)
        state = {"phase": "placed", "order_id": ticket.order.orderId, "placed_at": ticket.placed_at.timestamp()}
        if in_flight:
            pipe.zadd(constants.INFLIGHT_KEY, {ticket.intent_id: ticket.placed_at.timestamp()})
            state["ticket_json"] = ticket.model_dump_json()
        pipe.hset(key, mapping={k: str(v) for k, v in state.items()})
        pipe.expire(key, ctx.settings.intent_state_ttl_s)
        self.lock.release(pipe)


@dataclass
class _PlaceLock:
    """The intent's place lock (our token in Redis): released once, with the placement's last writes or at the end."""

    key: str
    token: str
    held: bool = True

    def release(self, pipe: redis.client.Pipeline) -> None:
        """Queue the release in `pipe`."""
        pipe.eval(_RELEASE_LOCK, 1, self.key, self.token)
        self.held = False


def _order_key(ticket: Ticket) -> str:
    return constants.ORDER_KEY.format(intent_id=ticket.intent_id)


def _save_state(ticket: Ticket, ctx: Context, **fields: Any) -> None:
    """Record the intent's order state."""
    key = _order_key(ticket)
    pipe = ctx.redis.pipeline()
    pipe.hset(key, mapping={k: str(v) for k, v in fields.items()})
    pipe.expire(key, ctx.settings.intent_state_ttl_s)
    pipe.execute()


def _reject(ticket: Ticket, ctx: Context, reason: str, code: int | None = None) -> Ticket:
    if ticket.closed_first and not reason.startswith(ticket.closed_first):
        reason = f"{ticket.closed_first}; then the entry was refused: {reason}"  # say all that happened
    _save_state(ticket, ctx, phase="rejected", reason=reason, code=code if code is not None else "")
    logs.proof(logs.INTENT_REJECTED, level=logging.WARNING, reason=reason, code=code, **_ids(ticket, ctx))
    metrics.intent_rejected(ctx.redis, reason)
    return ticket.decide(ResultStatus.REJECTED, reason, code)


def _give_up_at(ticket: Ticket, ctx: Context) -> datetime:
    s = ctx.settings
    return ticket.received_at + timedelta(seconds=s.unknown_lookup_s + s.fill_timeout_s + 60)


def _retry_or_fail(ticket: Ticket, ctx: Context, exc: VenueError, attempt: int, what: str) -> Ticket:
    """Pause and retry after a temporary venue failure, or give up with a `failed` verdict."""
    # A rate limit never fails an intent: it waits (a stale one is rejected by the checks when it runs again).
    if ctx.now() >= _give_up_at(ticket, ctx) and not isinstance(exc, RateLimited):
        reason = f"{what}: gave up after repeated venue failures, last: {exc}"
        logs.proof(logs.ORDER_ERROR, level=logging.ERROR, reason=reason, **_ids(ticket, ctx))
        return ticket.decide(ResultStatus.FAILED, reason, exc.code)
    countdown = exc.retry_after_s if isinstance(exc, RateLimited) else poll_delay_s(ctx.settings, attempt + 2)
    raise Pending(countdown, f"{what}: {exc}")


def _check_and_submit(
    ticket: Ticket,
    ctx: Context,
    attempt: int,
    lock: _PlaceLock,
    *,
    halt: risk.Halt = risk.UNREAD,
    on_the_way: store.OnTheWay | None = None,
) -> Ticket | ExecutionResult:
    intent, s, venue = ticket.intent, ctx.settings, ctx.venue
    if on_the_way is None and not intent.reduce_only:
        on_the_way = store.register_entry(ctx, ticket, lock.token)  # deciding again: a fresh place
    if on_the_way is not None and store.wait_for_earlier(ctx, ticket, on_the_way):
        halt = risk.UNREAD  # waited for an earlier entry: the kill switch is read again, like everything below
    now = ctx.now()
    try:
        # The kill switch, then every risk limit.
        breach = risk.breach(intent, s, ctx.redis, venue, now, halt=halt, entry_id=ticket.entry_id)
        if breach:
            return _reject(ticket, ctx, breach)
        rules = venue.rules().get(intent.symbol)
        if rules is None:
            return _reject(ticket, ctx, f"unknown symbol {intent.symbol}: the venue does not list it")
        market = intent.order_type is OrderType.MARKET
        mark = venue.mark_price(intent.symbol)
        if market:
            price, limit_price = mark, None
        else:
            assert intent.entry_price is not None
            limit_price = rules.round_price(Decimal(str(intent.entry_price)), down=intent.side is Side.BUY)
            band = rules.limit_price_problem(intent.side is Side.BUY, limit_price, mark)
            if band:
                return _reject(ticket, ctx, band)
            # Sized from what the order will really cost, so it never fills at more than position_size_usd: a BUY
            # never fills above its limit; a SELL below the mark (marketable) fills near the mark, not at its limit.
            price = limit_price if intent.side is Side.BUY else max(limit_price, mark)
        quantity = rules.quantity_for(Decimal(str(intent.position_size_usd)), price, market=market)
        problem = rules.problem(quantity, price, market=market, reduce_only=intent.reduce_only)
        if problem:
            return _reject(ticket, ctx, problem)
        dual = venue.dual_side()
        # An open position on the symbol: the configured policy decides (skip, update protection, add, ...).
        plan_with = on_the_way or store.OnTheWay()  # reduce-only: nothing to plan around
        ticket, quantity = store.entry_plan(ticket, ctx, quantity=quantity, dual=dual, on_the_way=plan_with)
        if ticket.verdict is None and not ticket.intent.reduce_only:  # closing and reducing never touch leverage
            ticket = _with_leverage(ticket, ctx)
    except OrderRejected as exc:
        return _reject(ticket, ctx, f"venue refused the set-up: {exc.message}", exc.code)
    except (TemporaryVenueError, UnknownOutcome) as exc:
        return _retry_or_fail(ticket, ctx, exc, attempt, "preparing the order")
    if ticket.verdict is not None:
        if ticket.verdict.status is ResultStatus.REJECTED:
            return _reject(ticket, ctx, ticket.verdict.reason)
        return ticket
    intent = ticket.intent
    position_side = None
    if dual:
        opens_long = (intent.side is Side.BUY) != intent.reduce_only
        position_side = "LONG" if opens_long else "SHORT"
    ticket = ticket.model_copy(update={"quantity": quantity})
    # One round trip before the order goes out: the submit is recorded (a re-run looks the order up instead of
    # sending again), and the order's rate budget is spent.
    pipe = ctx.redis.pipeline(transaction=False)
    if not intent.reduce_only:
        store.mark_entering(ctx, ticket, pipe)  # our own position-to-be: not a stranger's to adopt
    key = _order_key(ticket)
    state = {"phase": "submitting", "submitted_at": now.timestamp(), "client_order_id": ticket.client_order_id}
    if ticket.leverage is not None:
        state["leverage"] = ticket.leverage  # a re-run adopting the order reports it too
    pipe.hset(key, mapping={k: str(v) for k, v in state.items()})
    pipe.expire(key, ctx.settings.intent_state_ttl_s)
    recorded = len(pipe)
    spending = venue.spend_order_budget(pipe)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies[:recorded]:
        if isinstance(reply, Exception):
            raise reply
    spent = replies[recorded] if spending else None
    logs.proof(
        logs.ORDER_SUBMIT,
        side=intent.side.value,
        type=intent.order_type.value,
        quantity=quantity,
        price=limit_price,
        position_side=position_side,
        **_ids(ticket, ctx),
    )
    try:
        order = venue.place_order(
            symbol=intent.symbol,
            side=intent.side,
            order_type=intent.order_type,
            quantity=quantity,
            client_order_id=ticket.client_order_id,
            price=limit_price,
            reduce_only=intent.reduce_only,
            position_side=position_side,
            time_in_force=intent.time_in_force.value,
            spent=spent,
        )
    except OrderRejected as exc:
        if exc.code == POSITION_SIDE_MISMATCH and attempt < 3:
            # -4061: the account changed position mode since we cached it. Nothing executed: ask again, resend.
            venue.forget_position_mode()
            ctx.redis.delete(_order_key(ticket))
            raise Pending(0.1, f"position mode changed: {exc}") from exc
        return _reject(ticket, ctx, f"venue rejected the order: {exc.message}", exc.code)
    except TemporaryVenueError as exc:
        # Surely not executed: forget the submit so the next run goes through the checks again.
        ctx.redis.delete(_order_key(ticket))
        logs.proof(logs.ORDER_ERROR, level=logging.WARNING, outcome="not_executed", error=exc, **_ids(ticket, ctx))
        return _retry_or_fail(ticket, ctx, exc, attempt, "submitting the order")
    except UnknownOutcome as exc:
        logs.proof(logs.ORDER_ERROR, level=logging.WARNING, outcome="unknown", error=exc, **_ids(ticket, ctx))
        return _adopt(ticket, ctx, {"phase": "submitting", "submitted_at": str(now.timestamp())}, attempt, lock)
    return _placed(ticket, ctx, order, placed_at=now, lock=lock, first=True)


def _with_leverage(ticket: Ticket, ctx: Context) -> Ticket:
    """The ticket with the leverage its entry opens at: the intent's, set at the venue when it differs, or the
    symbol's own when the intent names none; with a rejection when that is not allowed or not what the venue did."""
    intent, limit = ticket.intent, ctx.settings.max_leverage
    if intent.leverage is None:
        current = ctx.venue.current_leverage(intent.symbol)
        ticket = ticket.model_copy(update={"leverage": current})
        if current > limit:
            reason = (
                f"{intent.symbol} is at leverage {current} at the venue, above the limit {limit}, and the intent "
                "names none"
            )
            return ticket.decide(ResultStatus.REJECTED, reason)
        return ticket
    applied = ctx.venue.ensure_leverage(intent.symbol, intent.leverage)
    ticket = ticket.model_copy(update={"leverage": applied})
    if applied != intent.leverage:
        reason = f"the venue set leverage {applied}, not the {intent.leverage} asked"
        return ticket.decide(ResultStatus.REJECTED, reason)
    return ticket


def _placed(
    ticket: Ticket, ctx: Context, order: OrderState, *, placed_at: datetime, lock: _PlaceLock, first: bool
) -> Ticket | ExecutionResult:
    """Record the order the venue acknowledged, and release the place lock, in one round trip; or, when the venue's
    answer is final, publish its result first and do the bookkeeping after it.

    `first`: this run is the first to learn of the order (it is counted once, not again by a re-run adopting it).
    """
    ticket = ticket.model_copy(update={"order": order, "placed_at": placed_at})
    placement = _Placement(lock, first)
    if order.settled:
        # The result is what a reader waits for: it goes out before anything else, the steps' own proof lines (the
        # venue's answer, the fill) right after it. A crash in between leaves the submit recorded (`submitting`);
        # a re-run looks the order up and publishes nothing twice.
        def trail() -> None:
            _log_response(ticket, ctx, order)
            _log_fill(ticket, ctx, order)

        return publish(ticket, ctx, placement=placement, trail=trail)
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
    _log_response(ticket, ctx, order)
    return ticket


def _log_response(ticket: Ticket, ctx: Context, order: OrderState) -> None:
    logs.proof(
        logs.ORDER_RESPONSE,
        status=order.status.value,
        executed_qty=order.executedQty,
        avg_price=order.avgPrice,
        **_ids(ticket, ctx, order),
    )


def _adopt(
    ticket: Ticket, ctx: Context, state: dict[str, str], attempt: int, lock: _PlaceLock
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
            logs.proof(logs.ORDER_LOOKUP, outcome="not_found_yet", waited_s=f"{waited_s:.1f}", **_ids(ticket, ctx))
            raise Pending(0.5, "order not visible at the venue yet") from None
        logs.proof(logs.ORDER_LOOKUP, outcome="absent", waited_s=f"{waited_s:.1f}", **_ids(ticket, ctx))
        ctx.redis.delete(_order_key(ticket))
        return _check_and_submit(ticket, ctx, attempt, lock)
    except (TemporaryVenueError, UnknownOutcome) as exc:
        return _retry_or_fail(ticket, ctx, exc, attempt, "looking the order up")
    logs.proof(logs.ORDER_LOOKUP, outcome="found", status=order.status.value, **_ids(ticket, ctx, order))
    return _placed(ticket, ctx, order, placed_at=placed_at, lock=lock, first=state.get("phase") != "placed")


# -- confirm_fill -------------------------------------------------------------------------------------


def finished(ticket: Ticket) -> bool:
    """True when nothing is left to confirm: a verdict, or an order the venue reported terminal and priced."""
    return ticket.verdict is not None or (ticket.order is not None and ticket.order.settled)


def stream_delay_s(settings: Settings, attempt: int) -> float:
    """confirm_fill's countdown while the venue's stream vouches: short (a look in memory), growing to `poll_max_s`."""
    return float(min(settings.poll_max_s, settings.stream_poll_s * STREAM_POLL_FACTOR ** min(attempt, 32)))


def confirm(ticket: Ticket, ctx: Context, attempt: int = 0) -> Ticket:
    """Wait (by `Pending`) until the order is terminal with a priced fill, cancelling it at the deadline.

    While the venue's user-data stream vouches for the order (qexec/venue/feed.py), its state comes from the stream and
    the venue is asked over REST only every `STREAM_VERIFY_EVERY` attempts and at the deadline; otherwise every
    attempt asks the venue.
    """
    if ticket.verdict is not None or ticket.order is None:
        return ticket
    order = ticket.order
    if not order.settled:
        venue, now = ctx.venue, ctx.now()
        deadline = (ticket.placed_at or ticket.received_at) + timedelta(seconds=ctx.settings.fill_timeout_s)
        streamed = _streamed(ticket, ctx, order)
        if streamed is not None and streamed.settled:
            order = streamed
        elif streamed is not None and now < deadline and attempt % STREAM_VERIFY_EVERY != STREAM_VERIFY_EVERY - 1:
            _protect_early(ticket, ctx, streamed)
            if attempt == 0:
                logs.proof(
                    logs.FILL_PENDING,
                    status=streamed.status.value,
                    executed_qty=streamed.executedQty,
                    source="stream",
                    **_ids(ticket, ctx, streamed),
                )
            raise Pending(stream_delay_s(ctx.settings, attempt), f"order is {streamed.status.value} (stream)")
        else:
            try:
                order = venue.get_order(ticket.intent.symbol, order_id=order.orderId)
                if not order.settled and now >= deadline:
                    order = _cancel_rest(ticket, ctx, order)
                    ticket = ticket.model_copy(update={"canceled_at_deadline": True})
            except OrderNotFound as exc:
                if now >= deadline + timedelta(seconds=ctx.settings.fill_timeout_s):
                    # The venue says it has no such order: it cannot fill any more, whatever it did before.
                    reason = f"the venue no longer knows order {order.orderId}: {exc}"
                    logs.proof(logs.ORDER_ERROR, level=logging.ERROR, reason=reason, **_ids(ticket, ctx, order))
                    return ticket.decide(ResultStatus.FAILED, reason, exc.code)
                raise Pending(poll_delay_s(ctx.settings, attempt), f"confirming: {exc}") from exc
            except (TemporaryVenueError, UnknownOutcome) as exc:
                if isinstance(exc, RateLimited):  # the order stands either way: wait for the venue to answer again
                    raise Pending(exc.retry_after_s, f"confirming: {exc}") from exc
                if now >= deadline:
                    # The order may still be live (a failed cancel leaves it resting, and it can fill later): no
                    # terminal result goes out until the venue says it is final. The intent stays in flight.
                    logs.proof(
                        logs.ORDER_ERROR,
                        level=logging.ERROR if attempt % STREAM_VERIFY_EVERY == 0 else logging.WARNING,
                        reason="past the fill deadline and the venue cannot say the order is final: trying again",
                        error=exc,
                        attempt=attempt,
                        **_ids(ticket, ctx, order),
                    )
                raise Pending(poll_delay_s(ctx.settings, attempt), f"confirming: {exc}") from exc
            if not order.settled:
                _protect_early(ticket, ctx, order)
                logs.proof(
                    logs.FILL_PENDING,
                    status=order.status.value,
                    executed_qty=order.executedQty,
                    attempt=attempt,
                    **_ids(ticket, ctx, order),
                )
                raise Pending(poll_delay_s(ctx.settings, attempt), f"order is {order.status.value}")
        ticket = ticket.model_copy(update={"order": order})
    _log_fill(ticket, ctx, order)
    return ticket


def _protect_early(ticket: Ticket, ctx: Context, order: OrderState) -> None:
    """Protect what an order still working has executed already (a partly filled LIMIT), once: the stop-loss and
    take-profit are closePosition orders, so they cover the position as later fills grow it."""
    published = constants.PROTECTION_PUBLISHED_KEY.format(intent_id=ticket.intent_id)
    if order.executedQty <= 0 or ctx.redis.exists(published):
        return
    partial = build_result(ticket.model_copy(update={"order": order}), ctx)
    logs.proof(
        logs.FILL_PENDING,
        status=order.status.value,
        executed_qty=order.executedQty,
        action="protecting what executed",
        **_ids(ticket, ctx, order),
    )
    try:
        protection.protect_step(partial.model_dump(mode="json"), ticket.model_dump(mode="json"), ctx)
    except store.PositionBusy:
        log.info("position of intent %s busy: its executed part is protected on a later attempt", ticket.intent_id)
    except Exception:  # the chain's own protection step still runs after the result: never fail the confirmation
        log.exception("protecting the executed part of intent %s failed; tried again later", ticket.intent_id)


def _log_fill(ticket: Ticket, ctx: Context, order: OrderState) -> None:
    fill = order.fill
    if fill is not None:
        logs.proof(
            logs.FILL_CONFIRMED,
            status=order.status.value,
            executed_qty=fill.quantity,
            avg_price=fill.price,
            **_ids(ticket, ctx, order),
        )


def _streamed(ticket: Ticket, ctx: Context, placed: OrderState) -> OrderState | None:
    """The order as the venue's stream last reported it: a final state whenever the stream has one; a pending state
    (the stream's, or the one we know) only when the stream has been up since before the order was placed."""
    live = ctx.venue.feed
    if live is None:
        return None
    seen = live.order(ticket.client_order_id)
    if seen is not None and seen.orderId != placed.orderId:
        seen = None  # the id was used again after an order the venue had forgotten: ask the venue
    if seen is not None and seen.settled:
        return seen
    if live.vouches_for(ticket.placed_at or ticket.received_at):
        return seen or placed
    return None


def _cancel_rest(ticket: Ticket, ctx: Context, order: OrderState) -> OrderState:
    logs.proof(
        logs.ORDER_CANCEL,
        reason="fill deadline passed",
        status=order.status.value,
        executed_qty=order.executedQty,
        **_ids(ticket, ctx, order),
    )
    with contextlib.suppress(OrderNotFound):  # -2011: it finished between our look and our cancel
        ctx.venue.cancel_order(ticket.intent.symbol, order_id=order.orderId)
    # The cancel response carries no avgPrice (reference §1.3): read the final state back.
    return ctx.venue.get_order(ticket.intent.symbol, order_id=order.orderId)


# -- publish_execution --------------------------------------------------------------------------------

_TERMINAL_STATUS = {
    OrderStatus.CANCELED: ResultStatus.CANCELED,
    OrderStatus.EXPIRED: ResultStatus.EXPIRED,
    OrderStatus.EXPIRED_IN_MATCH: ResultStatus.EXPIRED,
    OrderStatus.REJECTED: ResultStatus.REJECTED,
}


def _deadline_note(ctx: Context) -> str:
    return f"; qexec canceled it at the fill deadline (QEXEC_FILL_TIMEOUT_S={ctx.settings.fill_timeout_s:g})"


def build_result(ticket: Ticket, ctx: Context) -> ExecutionResult:
    """The execution result for a finished ticket: the venue's own price and quantity for any fill."""
    intent, order, verdict = ticket.intent, ticket.order, ticket.verdict
    fields: dict[str, Any] = {
        "intent_id": ticket.intent_id,
        "entry_id": ticket.entry_id,
        "symbol": intent.symbol,
        "action": intent.side,
        "client_order_id": ticket.client_order_id,
        "leverage": ticket.leverage if ticket.leverage is not None else intent.leverage,
        "stop_loss": intent.stop_loss,
        "take_profit": intent.take_profit,
        "position_size_usd": intent.position_size_usd,
        "mode": ctx.venue.mode,
        "venue": ctx.venue.host,
        "received_at": ticket.received_at,
        "published_at": ctx.now(),
    }
    if order is not None:
        fields["order_id"] = order.orderId
        fields["order_status"] = order.status
    fill = order.fill if order is not None else None
    if fill is not None and order is not None:
        complete = order.status is OrderStatus.FILLED
        fields.update(
            status=ResultStatus.FILLED if complete else ResultStatus.PARTIALLY_FILLED,
            entry_price=float(fill.price),
            quantity=float(fill.quantity),
            position_size_usd=float(fill.quote),
            filled_at=datetime.fromtimestamp(order.updateTime / 1000, tz=UTC) if order.updateTime else ctx.now(),
        )
        if not complete:
            fields["reason"] = (
                f"{plain(fill.quantity)} of {plain(order.origQty)} executed; order ended {order.status.value}"
                + (_deadline_note(ctx) if ticket.canceled_at_deadline else "")
            )
        elif ticket.closed_first:
            fields["reason"] = ticket.closed_first
        if verdict is not None:
            fields["reason"] = verdict.reason
    elif verdict is not None:
        fields.update(status=verdict.status, reason=verdict.reason, code=verdict.code)
    elif order is not None and order.status in _TERMINAL_STATUS:
        ended = f"order ended {order.status.value} with nothing executed"
        if ticket.canceled_at_deadline and order.status is OrderStatus.CANCELED:
            ended = "nothing executed" + _deadline_note(ctx)
        fields.update(status=_TERMINAL_STATUS[order.status], reason=ended)
    else:
        state = order.status.value if order is not None else "no order"
        fields.update(status=ResultStatus.FAILED, reason=f"execution ended without a terminal order ({state})")
    return ExecutionResult.model_validate(fields)


def publish(
    ticket: Ticket,
    ctx: Context,
    attempt: int = 0,
    *,
    placement: _Placement | None = None,
    trail: Callable[[], None] | None = None,
) -> ExecutionResult:
    """Publish the intent's one terminal result (a second call publishes nothing).

    The bookkeeping comes after the result, in one round trip: the intent leaves the in-flight list, the figures are
    counted, and - for an order placed by this very run (`placement`) - the order is recorded and the place lock
    released. `trail` logs the caller's proof lines once the result is out (before `EXECUTION_PUBLISHED`).
    """
    result = build_result(ticket, ctx)
    written, entry_id = redis_streams.publish_once(ctx.redis, ctx.settings, ticket.intent_id, result.stream_fields())
    if not written:
        # A re-run: what goes on down the chain (protection) is the result readers got, whatever this run concluded.
        result = _published(ctx, entry_id) or result
    if trail is not None:
        trail()
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.zrem(constants.INFLIGHT_KEY, ticket.intent_id)
    if placement is not None:
        placement.record(pipe, ticket, ctx, in_flight=False)
    counts_from = len(pipe)
    if placement is not None and placement.first:
        metrics.queue_placed(pipe)
    if written:
        metrics.queue_result(
            pipe,
            status=result.status.value,
            received_at=result.received_at,
            published_at=result.published_at,
            placed_at=ticket.placed_at,
        )
    replies = pipe.execute(raise_on_error=False)
    if any(isinstance(reply, Exception) for reply in replies[:counts_from]):
        # Harmless now that the result is out: reconcile drops a published intent from the list, a lock expires,
        # and a re-run finds the order `submitting`, looks it up and publishes nothing twice.
        log.warning(
            "after publishing %s: %s", ticket.intent_id, [r for r in replies[:counts_from] if isinstance(r, Exception)]
        )
    metrics.dropped(replies[counts_from:])
    logs.proof(
        logs.EXECUTION_PUBLISHED,
        status=result.status.value,
        result_id=entry_id,
        already=None if written else "true",
        entry_price=result.entry_price,
        quantity=result.quantity,
        reason=result.reason,
        **_ids(ticket, ctx),
    )
    return result


def _published(ctx: Context, entry_id: str) -> ExecutionResult | None:
    """The result published at `entry_id` on the result stream, or None when the stream no longer holds it."""
    entries: Any = ctx.redis.xrange(ctx.settings.result_stream, entry_id, entry_id)
    if not entries:
        log.warning("result entry %s is no longer on %s", entry_id, ctx.settings.result_stream)
        return None
    return ExecutionResult.model_validate_json(entries[0][1]["payload"])


# -- admission (bridge and submit_intent) ---------------------------------------------------------------


# Proof-log names of admissions that take nothing in: a redelivery, and a delivery that is not this consumer's to end.
INTENT_REDELIVERED = "INTENT_REDELIVERED"
INTENT_NOT_OWNED = "INTENT_NOT_OWNED"

Settle = Callable[[redis.client.Pipeline], None]


def admit(
    intent: Intent,
    *,
    entry_id: str | None,
    owner: str,
    r: redis.Redis,
    settings: Settings,
    dispatch: Callable[[Ticket], None],
    received_at: datetime | None = None,
    lease: redis_streams.Lease | None = None,
    settle: Settle | None = None,
) -> bool:
    """Start the chain for a valid intent unless another entry holds its id or this entry's chain was started;
    True when dispatched. `settle` queues what ends the delivery (the bridge's XACK): with the started mark after a
    dispatch, alone when there is nothing to start, never when the delivery is not the caller's to end (`lease` lost
    the entry to another consumer, or another live bridge is starting its chain)."""
    ids: dict[str, Any] = {"intent_id": intent.id, "entry_id": entry_id, "symbol": intent.symbol, "owner": owner}
    claim, holder = redis_streams.claim_dispatch(r, settings, intent.id, owner, lease=lease, entry_id=entry_id)
    if claim in (redis_streams.Claim.LOST, redis_streams.Claim.BUSY):
        reason = (
            "another consumer owns the entry now" if claim is redis_streams.Claim.LOST else f"{holder} is starting it"
        )
        logs.proof(INTENT_NOT_OWNED, reason=reason, consumer=lease.consumer if lease else None, **ids)
        return False
    if claim is redis_streams.Claim.NEW:
        logs.proof(logs.INTENT_RECEIVED, side=intent.side.value, size_usd=intent.position_size_usd, **ids)
    elif claim is redis_streams.Claim.DUPLICATE:
        logs.proof(logs.INTENT_RECEIVED, side=intent.side.value, size_usd=intent.position_size_usd, **ids)
        logs.proof(
            logs.INTENT_DUPLICATE,
            level=logging.WARNING,
            reason=f"this intent id was already dispatched by another entry ({holder})",
            **ids,
        )
    else:
        started = claim is redis_streams.Claim.STARTED
        logs.proof(
            INTENT_REDELIVERED,
            level=logging.INFO if started else logging.WARNING,
            action="none: its chain was started" if started else "start its chain again: it was never started",
            **ids,
        )
    pipe = r.pipeline(transaction=False)
    dispatched = claim in (redis_streams.Claim.NEW, redis_streams.Claim.AGAIN)
    if dispatched:
        dispatch(new_ticket(intent, entry_id=entry_id, received_at=received_at))
        redis_streams.mark_started(pipe, intent.id, owner)
    if settle is not None:
        settle(pipe)
    if len(pipe):
        pipe.execute()
    return dispatched
