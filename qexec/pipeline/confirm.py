"""The confirm step: wait (by `Pending`) until the venue says the order is final, cancelling it at the deadline."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta

from qexec import constants, logs
from qexec.config import Settings
from qexec.context import Context, Pending
from qexec.errors import (
    OrderNotFound,
    RateLimited,
    TemporaryVenueError,
    UnknownOutcome,
)
from qexec.models import (
    ExecutionResult,
    OrderState,
    ResultStatus,
    Ticket,
)
from qexec.pipeline.publish import build_result, published_result
from qexec.pipeline.trace import log_fill, ticket_ids
from qexec.positions import protection, store
from qexec.venue import view

log = logging.getLogger(__name__)


STREAM_POLL_FACTOR = 1.5  # confirm_fill's countdown grows by this while the stream vouches for the order


STREAM_VERIFY_EVERY = 8  # ...and every this many attempts it asks the venue over REST all the same


def poll_delay_s(settings: Settings, attempt: int) -> float:
    """The confirmation poll countdown: short first, growing by `poll_factor`, capped at `poll_max_s`."""
    return float(min(settings.poll_max_s, settings.poll_initial_s * settings.poll_factor ** min(attempt, 32)))


def finished(ticket: Ticket) -> bool:
    """True when nothing is left to confirm: a verdict, or an order the venue reported terminal and priced."""
    return ticket.verdict is not None or (ticket.order is not None and ticket.order.settled)


def stream_delay_s(settings: Settings, attempt: int) -> float:
    """confirm_fill's countdown while the venue's stream vouches: short (a look in memory), growing to `poll_max_s`."""
    return float(min(settings.poll_max_s, settings.stream_poll_s * STREAM_POLL_FACTOR ** min(attempt, 32)))


def fill_deadline(ticket: Ticket, settings: Settings) -> datetime:
    """When an order still working is canceled: `fill_timeout_s` after it was placed."""
    return (ticket.placed_at or ticket.received_at) + timedelta(seconds=settings.fill_timeout_s)


def confirm_step(ticket: Ticket, ctx: Context, attempt: int = 0) -> Ticket | ExecutionResult:
    """The `qexec.confirm_fill` task's body: the intent's result when it is out already - the venue's fill event
    published it (qexec/pipeline/fill_events.py), and the venue is not asked - else `confirm`."""
    if ticket.verdict is None and ticket.order is not None:
        entry_id = ctx.redis.get(constants.PUBLISHED_KEY.format(intent_id=ticket.intent_id))
        done = published_result(ctx, str(entry_id)) if entry_id else None
        if done is not None:
            return done
    return confirm(ticket, ctx, attempt)


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
        now = ctx.now()
        deadline = fill_deadline(ticket, ctx.settings)
        streamed = view.streamed_order(ctx.venue, ticket.client_order_id, order, ticket.placed_at or ticket.received_at)
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
                    **ticket_ids(ticket, ctx, streamed),
                )
            raise Pending(stream_delay_s(ctx.settings, attempt), f"order is {streamed.status.value} (stream)")
        else:
            return _confirm_by_rest(ticket, ctx, order, attempt, now=now, deadline=deadline)
        ticket = ticket.model_copy(update={"order": order})
    log_fill(ticket, ctx, order)
    return ticket


def _confirm_by_rest(
    ticket: Ticket, ctx: Context, order: OrderState, attempt: int, *, now: datetime, deadline: datetime
) -> Ticket:
    """Ask the venue over REST for the order, cancelling it at the deadline: the ticket with the final order, or a
    `failed` verdict when the venue no longer knows it; `Pending` while it is working or cannot be asked."""
    try:
        order = ctx.venue.get_order(ticket.intent.symbol, order_id=order.orderId)
        if not order.settled and now >= deadline:
            order = _cancel_rest(ticket, ctx, order)
            ticket = ticket.model_copy(update={"canceled_at_deadline": True})
    except OrderNotFound as exc:
        if now >= deadline + timedelta(seconds=ctx.settings.fill_timeout_s):
            # The venue says it has no such order: it cannot fill any more, whatever it did before.
            reason = f"the venue no longer knows order {order.orderId}: {exc}"
            logs.proof(logs.ORDER_ERROR, level=logging.ERROR, reason=reason, **ticket_ids(ticket, ctx, order))
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
                **ticket_ids(ticket, ctx, order),
            )
        raise Pending(poll_delay_s(ctx.settings, attempt), f"confirming: {exc}") from exc
    if not order.settled:
        _protect_early(ticket, ctx, order)
        logs.proof(
            logs.FILL_PENDING,
            status=order.status.value,
            executed_qty=order.executedQty,
            attempt=attempt,
            **ticket_ids(ticket, ctx, order),
        )
        raise Pending(poll_delay_s(ctx.settings, attempt), f"order is {order.status.value}")
    ticket = ticket.model_copy(update={"order": order})
    log_fill(ticket, ctx, order)
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
        **ticket_ids(ticket, ctx, order),
    )
    try:
        protection.protect_step(partial.model_dump(mode="json"), ticket.model_dump(mode="json"), ctx)
    except store.PositionBusy:
        log.info("position of intent %s busy: its executed part is protected on a later attempt", ticket.intent_id)
    except Exception:  # the chain's own protection step still runs after the result: never fail the confirmation
        log.exception("protecting the executed part of intent %s failed; tried again later", ticket.intent_id)


def _cancel_rest(ticket: Ticket, ctx: Context, order: OrderState) -> OrderState:
    logs.proof(
        logs.ORDER_CANCEL,
        reason="fill deadline passed",
        status=order.status.value,
        executed_qty=order.executedQty,
        **ticket_ids(ticket, ctx, order),
    )
    with contextlib.suppress(OrderNotFound):  # -2011: it finished between our look and our cancel
        ctx.venue.cancel_order(ticket.intent.symbol, order_id=order.orderId)
    # The cancel response carries no avgPrice (reference §1.3): read the final state back.
    return ctx.venue.get_order(ticket.intent.symbol, order_id=order.orderId)
