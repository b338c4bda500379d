"""The open-position policy: what an intent does to a position already open on its symbol."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from qexec import constants, ids, logs
from qexec.context import Context
from qexec.errors import OrderNotFound
from qexec.models import OrderState, OrderStatus, OrderType, PositionRisk, ResultStatus, Ticket
from qexec.positions import levels
from qexec.positions.entries import OnTheWay
from qexec.positions.store import LONG, SHORT, closing_side, direction_of
from qexec.venue import view
from qexec.venue.rules import plain
from qexec.venue.view import open_positions

POSITION_POLICY = "POSITION_POLICY"


def position_side_for(dual: bool, direction: str) -> str | None:
    """`positionSide` to send for a position in `direction` (None in one-way mode)."""
    return direction if dual else None


def entry_plan(
    ticket: Ticket, ctx: Context, *, quantity: Decimal, dual: bool, on_the_way: OnTheWay
) -> tuple[Ticket, Decimal]:
    """Apply the same-side / opposite-side policy: the ticket (with a verdict when no order is to go) and quantity.

    `on_the_way`: other intents' entries on the symbol, from this entry's registration, after `wait_for_earlier`.
    Raises `Pending` while a reversing close is still working at the venue.
    """
    intent = ticket.intent
    if intent.reduce_only:
        return ticket, quantity
    wanted = direction_of(intent.side)
    other = LONG if wanted == SHORT else SHORT
    positions, resting = _exposure(ticket, ctx, wanted, other, dual=dual, on_the_way=on_the_way)
    same = positions.get((intent.symbol, wanted))
    opposite = positions.get((intent.symbol, other))
    fields: dict[str, Any] = {"intent_id": ticket.intent_id, "symbol": intent.symbol, "side": intent.side.value}
    if ctx.settings.opposite_side_policy == "hedge" and dual and (opposite is not None or resting.get(other)):
        # Hedge mode holds a long and a short at once: the other side does not stand in this intent's way.
        logs.proof(POSITION_POLICY, decision="hedge", existing=other, intent_id=ticket.intent_id, symbol=intent.symbol)
        opposite = None
        resting.pop(other, None)
    refused = _resting_verdict(ticket, ctx, wanted, other, resting, held_open=(same, opposite), fields=fields)
    if refused is not None:
        return refused, quantity
    if same is not None:
        return _same_side(ticket, ctx, wanted, same, quantity=quantity, fields=fields)
    if opposite is not None:
        return _opposite_side(ticket, ctx, opposite, quantity=quantity, dual=dual, fields=fields)
    return ticket, quantity


def _exposure(
    ticket: Ticket, ctx: Context, wanted: str, other: str, *, dual: bool, on_the_way: OnTheWay
) -> tuple[dict[tuple[str, str], PositionRisk], dict[str, list[str]]]:
    """The symbol's open positions, and its resting entry orders by direction (looked up only when they matter)."""
    intent = ticket.intent
    positions = open_positions(ctx.venue, intent.symbol)
    # Another entry on the symbol may have filled a moment ago, before the stream could say so: then only the venue
    # itself can tell whether there is a position.
    opposite_may_be = (intent.symbol, other) in positions or other in on_the_way.directions
    same_may_be = (intent.symbol, wanted) in positions or wanted in on_the_way.directions
    resting: dict[str, list[str]] = {}
    if opposite_may_be or (same_may_be and ctx.settings.same_side_policy != "add"):
        # The position decides whether an order goes out, or how big it is: confirm it with the venue itself
        # (with `add`, a position on the intent's own side changes neither). An entry order resting at the venue (a
        # LIMIT not filled yet) is exposure too: it is counted like a position.
        positions = open_positions(ctx.venue, intent.symbol, rest=True)
        resting = resting_entries(ctx, intent.symbol, dual=dual, own=ticket.client_order_id)
    return positions, resting


def _resting_verdict(
    ticket: Ticket,
    ctx: Context,
    wanted: str,
    other: str,
    resting: dict[str, list[str]],
    *,
    held_open: tuple[PositionRisk | None, PositionRisk | None],
    fields: dict[str, Any],
) -> Ticket | None:
    """The ticket's verdict when only resting entry orders stand in its way (None when they do not)."""
    same, opposite = held_open
    same_side_policy = ctx.settings.same_side_policy
    if same is None and opposite is None and resting.get(other):
        reason = (
            f"{', '.join(resting[other])} resting at the venue would open a {other} position, and this intent is on "
            "the other side: refused while it rests (cancel it first)"
        )
        logs.proof(POSITION_POLICY, decision="reject", existing=f"resting {other}", **fields)
        return ticket.decide(ResultStatus.REJECTED, reason)
    if same is None and resting.get(wanted) and same_side_policy != "add":
        held = f"{', '.join(resting[wanted])} resting at the venue will open a {wanted} position"
        logs.proof(POSITION_POLICY, decision=same_side_policy, existing=f"resting {wanted}", **fields)
        if same_side_policy == "skip":
            return ticket.decide(ResultStatus.SKIPPED, f"{held} (QEXEC_SAME_SIDE_POLICY=skip)")
        reason = f"{held}; its own intent protects it when it fills (QEXEC_SAME_SIDE_POLICY=update_protection)"
        return ticket.decide(ResultStatus.REJECTED, reason)
    return None


def _same_side(
    ticket: Ticket, ctx: Context, wanted: str, same: PositionRisk, *, quantity: Decimal, fields: dict[str, Any]
) -> tuple[Ticket, Decimal]:
    """QEXEC_SAME_SIDE_POLICY for a position already open on the intent's side."""
    same_policy = ctx.settings.same_side_policy
    held = f"a {wanted} position of {abs(same.positionAmt)} {ticket.intent.symbol} is already open"
    _record_policy(ctx, ticket, same_policy)
    logs.proof(POSITION_POLICY, decision=same_policy, existing=wanted, existing_qty=abs(same.positionAmt), **fields)
    if same_policy == "skip":
        return ticket.decide(ResultStatus.SKIPPED, f"{held} (QEXEC_SAME_SIDE_POLICY=skip)"), quantity
    if same_policy == "update_protection":
        problem = _update_problem(ticket, ctx, wanted, same)
        if problem:
            return ticket.decide(ResultStatus.REJECTED, f"{held}; protection not updated: {problem}"), quantity
        return ticket.decide(ResultStatus.PROTECTION_UPDATED, f"{held}: stop-loss and take-profit re-placed"), quantity
    return ticket, quantity  # add: scale in; protection is re-placed for the whole position


def _opposite_side(
    ticket: Ticket, ctx: Context, opposite: PositionRisk, *, quantity: Decimal, dual: bool, fields: dict[str, Any]
) -> tuple[Ticket, Decimal]:
    """QEXEC_OPPOSITE_SIDE_POLICY for a position open on the other side (that hedge mode does not keep apart)."""
    intent = ticket.intent
    policy = ctx.settings.opposite_side_policy
    other = opposite.direction
    held = f"a {other} position of {abs(opposite.positionAmt)} {intent.symbol} is open"
    _record_policy(ctx, ticket, policy)
    logs.proof(POSITION_POLICY, decision=policy, existing=other, existing_qty=abs(opposite.positionAmt), **fields)
    if policy == "reject":
        reason = f"{held} and this intent is on the other side (QEXEC_OPPOSITE_SIDE_POLICY=reject)"
        return ticket.decide(ResultStatus.REJECTED, reason), quantity
    if policy == "hedge":  # here only on a one-way account: it cannot hold both sides
        reason = (
            f"{held} and this intent is on the other side: QEXEC_OPPOSITE_SIDE_POLICY=hedge holds both only on a "
            "hedge-mode account, and this one is one-way"
        )
        return ticket.decide(ResultStatus.REJECTED, reason), quantity
    if policy == "close":
        # The entry order itself closes the position: reduce-only (one-way) / positionSide of the old side.
        closing = ticket.model_copy(update={"intent": intent.model_copy(update={"reduce_only": True})})
        return closing, abs(opposite.positionAmt)
    closed = _close_first(ticket, ctx, opposite, dual)
    note = (
        f"reverse: closed the {other} position of {plain(closed.executedQty)} {intent.symbol} first "
        f"(order {closed.orderId} {closed.clientOrderId}, {closed.status.value})"
    )
    return ticket.model_copy(update={"closed_first": note}), quantity


def resting_entries(ctx: Context, symbol: str, *, dual: bool, own: str) -> dict[str, list[str]]:
    """The symbol's open orders that would open (or add to) a position when they fill, by direction, described
    (`BUY LIMIT 0.5 (order 123)`); reduce-only and closing orders, and the intent's own order `own`, left out."""
    found: dict[str, list[str]] = {}
    for order in ctx.venue.open_orders(symbol):
        if order.clientOrderId == own or order.reduceOnly or order.closePosition:
            continue
        side, position_side = order.side, order.positionSide
        if dual and position_side in (LONG, SHORT):
            if closing_side(position_side) is side:
                continue  # a hedge-mode order on the closing side of its position side
            direction = position_side
        else:
            direction = direction_of(side)
        left = order.origQty - order.executedQty
        found.setdefault(direction, []).append(f"{side.value} {order.type} {plain(left)} (order {order.orderId})")
    return found


def _record_policy(ctx: Context, ticket: Ticket, policy: str) -> None:
    key = constants.ORDER_KEY.format(intent_id=ticket.intent_id)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.hset(key, "policy", policy)
    pipe.expire(key, ctx.settings.intent_state_ttl_s)
    pipe.execute()


def recorded_policy(ctx: Context, intent_id: str) -> str | None:
    """The policy decision `entry_plan` recorded for an intent, if a position was open."""
    value: Any = ctx.redis.hget(constants.ORDER_KEY.format(intent_id=intent_id), "policy")
    return str(value) if value else None


def _update_problem(ticket: Ticket, ctx: Context, direction: str, position: PositionRisk) -> str | None:
    """Why the intent's levels cannot protect the open position (None when they can)."""

    intent = ticket.intent
    if intent.stop_loss is None and intent.take_profit is None:
        return "the intent carries neither stop_loss nor take_profit"
    mark = view.mark_price(ctx.venue, intent.symbol)
    sl = Decimal(str(intent.stop_loss)) if intent.stop_loss is not None else None
    tp = Decimal(str(intent.take_profit)) if intent.take_profit is not None else None
    problems = levels.level_problems(direction, sl, tp, reference=mark, what="the mark")
    return "; ".join(problems) or None


def _close_first(ticket: Ticket, ctx: Context, opposite: PositionRisk, dual: bool) -> OrderState:
    """Reverse: close the opposite position with a closing market order (looked up first); the order, once ended."""
    from qexec.context import Pending  # noqa: PLC0415 - execution imports this module

    intent, venue = ticket.intent, ctx.venue
    cid = ids.reverse_close(ticket.intent_id)
    try:
        order = venue.get_order(intent.symbol, client_order_id=cid)
    except OrderNotFound:
        logs.proof(
            POSITION_POLICY,
            decision="reverse",
            step="close_opposite",
            client_order_id=cid,
            quantity=abs(opposite.positionAmt),
            intent_id=ticket.intent_id,
            symbol=intent.symbol,
        )
        order = venue.place_order(
            symbol=intent.symbol,
            side=closing_side(opposite.direction),
            order_type=OrderType.MARKET,
            quantity=abs(opposite.positionAmt),
            client_order_id=cid,
            reduce_only=not dual,
            position_side=opposite.direction if dual else None,
        )
    if order.status is not OrderStatus.FILLED and not order.status.terminal:
        raise Pending(0.5, f"closing the {opposite.direction} position before reversing: {order.status.value}")
    return order
