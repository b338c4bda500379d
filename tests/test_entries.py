"""The entry-ordering registry (qexec/positions/entries.py): entries on one symbol in arrival order, and an entry
waiting for the venue's answer to an earlier one."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from position_helpers import first_entry_at_the_venue, intent, policy_context, position_amt, run
from stack_fixtures import Stack, unique_id

from qexec import constants
from qexec.context import Context
from qexec.models import Ticket, client_order_id
from qexec.pipeline.admission import new_ticket
from qexec.positions import entries

pytestmark = pytest.mark.slow


def register(ctx: Context, ticket: Ticket, *, deciding: bool = False) -> entries.OnTheWay:
    """Register an entry on its symbol as place_order's first round trip does (`deciding`: holding its place lock,
    nothing submitted yet); the others it sees."""
    lock = constants.PLACE_LOCK_KEY.format(intent_id=ticket.intent_id)
    if deciding:
        ctx.redis.set(lock, "token", px=5000)
    on_the_way = entries.register_entry(ctx, ticket, "token" if deciding else "")
    ctx.redis.delete(lock)
    return on_the_way


def entry_ticket(symbol: str, side: str, name: str) -> Ticket:
    return new_ticket(intent(unique_id(name), symbol, side, 60), entry_id=None)


def test_of_two_entries_on_a_symbol_the_second_sees_the_first_and_a_rerun_keeps_its_place(stack: Stack) -> None:
    """Registration orders entries by the Redis server's clock; a re-run of the first is still first."""
    ctx = policy_context(stack)
    symbol = f"REG{uuid.uuid4().hex[:8].upper()}USDT"
    first, second = entry_ticket(symbol, "BUY", "reg1"), entry_ticket(symbol, "SELL", "reg2")
    try:
        seen_by_first = register(ctx, first)
        seen_by_second = register(ctx, second)
        seen_again_by_first = register(ctx, first)
        assert seen_by_first == entries.OnTheWay(frozenset(), ())
        assert seen_by_second == entries.OnTheWay(frozenset({"LONG"}), (("LONG", first.intent_id),))
        assert seen_again_by_first == entries.OnTheWay(frozenset({"SHORT"}), ()), "the second is not earlier"
        entries.done_entering(ctx, first)
        assert register(ctx, second) == entries.OnTheWay(frozenset(), ()), "the first is protected: not on its way"
    finally:
        entries.done_entering(ctx, first)
        entries.done_entering(ctx, second)


def test_an_entry_that_retries_before_submitting_goes_behind_those_that_went_ahead_meanwhile(stack: Stack) -> None:
    """The first entry had to retry before its order went out; the second decided meanwhile: on its next attempt
    the first takes a fresh place, behind the second, and waits for it rather than the other way round."""
    ctx = policy_context(stack)
    symbol = f"REG{uuid.uuid4().hex[:8].upper()}USDT"
    first, second = entry_ticket(symbol, "BUY", "retry1"), entry_ticket(symbol, "SELL", "retry2")
    try:
        register(ctx, first, deciding=True)
        assert register(ctx, second, deciding=True).earlier == (("LONG", first.intent_id),)
        assert register(ctx, first, deciding=True).earlier == (("SHORT", second.intent_id),)
    finally:
        entries.done_entering(ctx, first)
        entries.done_entering(ctx, second)


def test_an_entry_sees_the_nearest_earlier_entries_when_there_are_many(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With more entries than are read, the ones read are those registered just before, not the oldest."""
    monkeypatch.setattr(entries, "EARLIER_READ", 2)
    ctx = policy_context(stack)
    symbol = f"REG{uuid.uuid4().hex[:8].upper()}USDT"
    longs = [entry_ticket(symbol, "BUY", f"many{n}") for n in range(4)]
    short = entry_ticket(symbol, "SELL", "many-short")
    try:
        for ticket in longs:
            register(ctx, ticket)
        seen = register(ctx, short)
        assert seen.earlier == (("LONG", longs[3].intent_id), ("LONG", longs[2].intent_id))
    finally:
        for ticket in [*longs, short]:
            entries.done_entering(ctx, ticket)


@pytest.mark.parametrize(("side", "verdict"), [("BUY", "protection_updated"), ("SELL", "rejected")])
def test_an_entry_waits_for_the_venues_answer_to_an_earlier_entry_on_its_symbol(
    stack: Stack, side: str, verdict: str
) -> None:
    """The first entry's order is still at the venue (answered 800 ms late) when a second intent on the symbol is
    checked: the second waits for that answer, meets the open LONG, and places no order (default policies)."""
    symbol = "NEARUSDT"
    with first_entry_at_the_venue(stack, symbol) as (ctx, first, _results):
        second = unique_id("wait2")
        levels = {"stop_loss": 2.3, "take_profit": 2.8} if side == "BUY" else {}
        result, _event = run(ctx, intent(second, symbol, side, 60, **levels))
        assert result.status.value == verdict, result
        assert stack.paper.orders(clientOrderId=client_order_id(second)) == [], "no second entry order"
        [first_order] = stack.paper.orders(clientOrderId=client_order_id(first))
        assert position_amt(ctx, symbol) == Decimal(first_order["executedQty"]), "the first entry's position only"
