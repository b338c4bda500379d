"""The publish step: the intent's one result, built from the venue's own figures, written once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from qexec import alerts, constants, logs, metrics, redis_streams
from qexec.context import Context
from qexec.models import (
    ExecutionResult,
    OrderStatus,
    ResultStatus,
    Ticket,
)
from qexec.pipeline.order_record import Placement
from qexec.pipeline.trace import ticket_ids
from qexec.venue.rules import plain

log = logging.getLogger(__name__)


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
        "account": intent.account_name,
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
    placement: Placement | None = None,
    log_after_result: Callable[[], None] | None = None,
) -> ExecutionResult:
    """Publish the intent's one terminal result (a second call publishes nothing); the result readers got (see
    `publish_first`)."""
    return publish_first(ticket, ctx, attempt, placement=placement, log_after_result=log_after_result)[0]


def publish_first(
    ticket: Ticket,
    ctx: Context,
    attempt: int = 0,
    *,
    placement: Placement | None = None,
    log_after_result: Callable[[], None] | None = None,
) -> tuple[ExecutionResult, bool]:
    """Publish the intent's one terminal result unless it is out already; the result readers got, and True when this
    call wrote it.

    The bookkeeping comes after the result, in one round trip: the intent leaves the in-flight list, the figures are
    counted, and - for an order placed by this very run (`placement`) - the order is recorded and the place lock
    released. `log_after_result` logs the caller's proof lines once the result is out (before `EXECUTION_PUBLISHED`).
    """
    result = build_result(ticket, ctx)
    written, entry_id = redis_streams.publish_once(ctx.redis, ctx.settings, ticket.intent_id, result.stream_fields())
    if not written:
        # A re-run: what goes on down the chain (protection) is the result readers got, whatever this run concluded.
        result = published_result(ctx, entry_id) or result
    else:
        alerts.raise_alert(ctx.redis, ctx.settings, alerts.for_result(result))
    if log_after_result is not None:
        log_after_result()
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.zrem(constants.INFLIGHT_KEY, ticket.intent_id)
    pipe.zrem(constants.CONFIRM_DUE_KEY, ticket.intent_id)
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
        **ticket_ids(ticket, ctx),
    )
    return result, written


def published_result(ctx: Context, entry_id: str) -> ExecutionResult | None:
    """The result published at `entry_id` on the result stream, or None when the stream no longer holds it."""
    entries: Any = ctx.redis.xrange(ctx.settings.result_stream, entry_id, entry_id)
    if not entries:
        log.warning("result entry %s is no longer on %s", entry_id, ctx.settings.result_stream)
        return None
    return ExecutionResult.model_validate_json(entries[0][1]["payload"])
