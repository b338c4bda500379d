"""The proof lines the steps share: the ids every line of a ticket carries, the venue's answer, the fill."""

from __future__ import annotations

from typing import Any

from qexec import logs
from qexec.context import Context
from qexec.models import (
    OrderState,
    Ticket,
)


def ticket_ids(ticket: Ticket, ctx: Context, order: OrderState | None = None) -> dict[str, Any]:
    known = order or ticket.order
    ids = {
        "intent_id": ticket.intent_id,
        "entry_id": ticket.entry_id,
        "client_order_id": ticket.client_order_id,
        "order_id": known.orderId if known else None,
        "symbol": ticket.intent.symbol,
        "mode": ctx.venue.mode,
        "venue": ctx.venue.host,
    }
    if ticket.intent.account is not None:  # an intent for a named account: every proof line says which
        ids["account"] = ticket.intent.account
    return ids


def log_response(ticket: Ticket, ctx: Context, order: OrderState) -> None:
    logs.proof(
        logs.ORDER_RESPONSE,
        status=order.status.value,
        executed_qty=order.executedQty,
        avg_price=order.avgPrice,
        **ticket_ids(ticket, ctx, order),
    )


def log_fill(ticket: Ticket, ctx: Context, order: OrderState, **extra: Any) -> None:
    fill = order.fill
    if fill is not None:
        logs.proof(
            logs.FILL_CONFIRMED,
            status=order.status.value,
            executed_qty=fill.quantity,
            avg_price=fill.price,
            **extra,
            **ticket_ids(ticket, ctx, order),
        )
