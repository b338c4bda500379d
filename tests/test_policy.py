"""The position policy (qexec/positions/policy.py): what an intent does to a position already open on its symbol, on
one-way and hedge-mode accounts."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from paper_fixtures import PaperExchange
from position_helpers import FlatSymbol, context, exits, intent, open_algos, policy_context, position_amt, run
from stack_fixtures import Stack, unique_id, venue_orders

from qexec.models import client_order_id
from qexec.positions import monitor, store
from qexec.venue.rules import plain

pytestmark = pytest.mark.slow


def test_a_same_side_intent_by_default_updates_the_protection_and_places_no_order(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """update_protection: result `protection_updated`, no entry order, SL/TP re-placed at the new levels."""
    ctx = policy_context(stack)
    symbol = "BCHUSDT"
    flat_symbol(ctx, symbol, "450.00")
    first, second = unique_id("upd1"), unique_id("upd2")
    run(ctx, intent(first, symbol, "BUY", 100, stop_loss=430, take_profit=480))
    amt = position_amt(ctx, symbol)
    result, event = run(ctx, intent(second, symbol, "BUY", 100, stop_loss=440, take_profit=470))
    assert result.status.value == "protection_updated", result
    assert "already open" in (result.reason or "")
    assert venue_orders(stack, second) == []
    assert position_amt(ctx, symbol) == amt
    assert event["status"] == "updated"
    triggers = {a["orderType"]: Decimal(a["triggerPrice"]) for a in open_algos(ctx, symbol)}
    assert triggers == {"STOP_MARKET": Decimal(440), "TAKE_PROFIT_MARKET": Decimal(470)}


def test_a_same_side_intent_with_levels_through_the_mark_is_rejected_and_keeps_the_old_protection(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """update_protection with a stop above a long's mark: `rejected` with the reason; the old SL/TP stay."""
    ctx = policy_context(stack)
    symbol = "BCHUSDT"
    flat_symbol(ctx, symbol, "450.00")
    run(ctx, intent(unique_id("keep1"), symbol, "BUY", 100, stop_loss=430, take_profit=480))
    result, event = run(ctx, intent(unique_id("keep2"), symbol, "BUY", 100, stop_loss=460, take_profit=480))
    assert result.status.value == "rejected" and "stop_loss 460" in (result.reason or "")
    assert event == {}
    triggers = {a["orderType"]: Decimal(a["triggerPrice"]) for a in open_algos(ctx, symbol)}
    assert triggers == {"STOP_MARKET": Decimal(430), "TAKE_PROFIT_MARKET": Decimal(480)}


def test_a_same_side_intent_is_skipped_with_its_reason_when_the_policy_says_skip(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """skip: result `skipped` with the reason, no order, the protection unchanged."""
    ctx = policy_context(stack, same_side_policy="skip")
    symbol = "UNIUSDT"
    flat_symbol(ctx, symbol, "8.0000")
    second = unique_id("skip2")
    _r, first_event = run(ctx, intent(unique_id("skip1"), symbol, "BUY", 60, stop_loss=7.5, take_profit=9))
    result, event = run(ctx, intent(second, symbol, "BUY", 60, stop_loss=7.7, take_profit=8.5))
    assert result.status.value == "skipped"
    assert "QEXEC_SAME_SIDE_POLICY=skip" in (result.reason or "")
    assert event == {}
    assert venue_orders(stack, second) == []
    ids = sorted(a["algoId"] for a in open_algos(ctx, symbol))
    assert ids == sorted([first_event["sl_order_id"], first_event["tp_order_id"]])


def test_a_same_side_intent_scales_in_when_the_policy_says_add(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """add: a second fill grows the position; still exactly one SL and one TP, covering all of it."""
    ctx = policy_context(stack, same_side_policy="add")
    symbol = "FILUSDT"
    flat_symbol(ctx, symbol, "2.500")
    first, _ = run(ctx, intent(unique_id("add1"), symbol, "BUY", 60, stop_loss=2.3, take_profit=2.8))
    second, event = run(ctx, intent(unique_id("add2"), symbol, "BUY", 60, stop_loss=2.35, take_profit=2.75))
    assert second.status.value == "filled"
    assert position_amt(ctx, symbol) == Decimal(str(first.quantity)) + Decimal(str(second.quantity))
    algos = open_algos(ctx, symbol)
    assert sorted(a["orderType"] for a in algos) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    assert all(a["closePosition"] for a in algos)
    assert {Decimal(a["triggerPrice"]) for a in algos} == {Decimal("2.35"), Decimal("2.75")}
    tracked = store.load(ctx.redis, ctx.account, symbol, "LONG")
    assert tracked is not None and len(tracked.intent_ids) == 2
    assert event["status"] == "placed"


def test_an_opposite_intent_is_rejected_by_default_and_the_position_stays_protected(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """reject (the default): `rejected` with the reason, no order, the long and its SL/TP untouched."""
    ctx = policy_context(stack)
    symbol = "APTUSDT"
    flat_symbol(ctx, symbol, "5.00000")
    sell = unique_id("rej")
    run(ctx, intent(unique_id("long"), symbol, "BUY", 60, stop_loss=4.7, take_profit=5.5))
    amt = position_amt(ctx, symbol)
    result, event = run(ctx, intent(sell, symbol, "SELL", 60))
    assert result.status.value == "rejected"
    assert "QEXEC_OPPOSITE_SIDE_POLICY=reject" in (result.reason or "")
    assert event == {} and venue_orders(stack, sell) == []
    assert position_amt(ctx, symbol) == amt and len(open_algos(ctx, symbol)) == 2


def test_an_opposite_intent_closes_the_position_when_the_policy_says_close(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """close: the entry order is a reduce-only close of the whole long; the exit is reported, SL/TP cancelled."""
    ctx = policy_context(stack, opposite_side_policy="close")
    symbol = "ARBUSDT"
    flat_symbol(ctx, symbol, "0.400000")
    opener, closer = unique_id("open"), unique_id("close")
    run(ctx, intent(opener, symbol, "BUY", 60, stop_loss=0.38, take_profit=0.44))
    amt = position_amt(ctx, symbol)
    result, event = run(ctx, intent(closer, symbol, "SELL", 200))
    assert result.status.value == "filled" and Decimal(str(result.quantity)) == amt
    [order] = venue_orders(stack, closer)
    assert order["reduceOnly"] is True
    assert position_amt(ctx, symbol) == 0
    assert event["status"] == "not_needed"
    monitor.watch(ctx, symbols={symbol})
    [exit_event] = exits(ctx, symbol)
    assert (exit_event["reason"], exit_event["intent_ids"]) == ("signal", [opener])
    assert open_algos(ctx, symbol) == []


def test_an_opposite_intent_reverses_the_position_when_the_policy_says_reverse(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """reverse: a closing order for the long, then the short entry, protected as a short."""
    ctx = policy_context(stack, opposite_side_policy="reverse")
    symbol = "OPUSDT"
    flat_symbol(ctx, symbol, "0.7000000")
    run(ctx, intent(unique_id("long"), symbol, "BUY", 60, stop_loss=0.65, take_profit=0.8))
    result, event = run(ctx, intent(unique_id("rev"), symbol, "SELL", 70, stop_loss=0.75, take_profit=0.6))
    assert result.status.value == "filled"
    assert position_amt(ctx, symbol) == -Decimal(str(result.quantity))
    monitor.watch(ctx, symbols={symbol})
    [exit_event] = exits(ctx, symbol)
    assert (exit_event["side"], exit_event["reason"]) == ("LONG", "signal")
    algos = open_algos(ctx, symbol)
    assert {(a["orderType"], a["side"]) for a in algos} == {("STOP_MARKET", "BUY"), ("TAKE_PROFIT_MARKET", "BUY")}
    assert event["status"] == "placed"


def test_a_reverse_whose_entry_is_refused_says_the_position_was_closed(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """reverse closes the long, then the venue refuses the short (margin): the one result says both, and the exit
    monitor reports the long's exit."""
    ctx = policy_context(stack, opposite_side_policy="reverse")
    symbol = "SUIUSDT"
    flat_symbol(ctx, symbol, "3.000000")
    try:
        opened = unique_id("long")
        run(ctx, intent(opened, symbol, "BUY", 60, stop_loss=2.8, take_profit=3.3))
        held = position_amt(ctx, symbol)
        rev = unique_id("revno")
        stack.paper.add_fault(
            kind="reject", client_order_id=client_order_id(rev), code=-2019, msg="Margin is insufficient.", count=1
        )
        result, _event = run(ctx, intent(rev, symbol, "SELL", 70, stop_loss=3.2, take_profit=2.7))
        assert (result.status.value, result.code) == ("rejected", -2019)
        reason = result.reason or ""
        assert reason.startswith(f"reverse: closed the LONG position of {plain(held)} {symbol} first"), reason
        assert reason.endswith("then the entry was refused: venue rejected the order: Margin is insufficient."), reason
        assert position_amt(ctx, symbol) == 0
        monitor.watch(ctx, symbols={symbol})
        [exit_event] = [e for e in exits(ctx, symbol) if e["intent_ids"] == [opened]]
        assert (exit_event["side"], exit_event["reason"], exit_event["quantity"]) == ("LONG", "signal", float(held))
    finally:
        stack.paper.admin("DELETE", "/paper/v1/faults")


def test_the_hedge_policy_holds_a_long_and_a_short_on_a_hedge_mode_account(
    stack: Stack, start_paper_server: Callable[..., PaperExchange]
) -> None:
    """QEXEC_OPPOSITE_SIDE_POLICY=hedge on a hedge-mode account: a BUY opens LONG, the SELL after it opens SHORT
    beside it, each with its own stop-loss and take-profit on its position side."""
    exchange = start_paper_server("--tick-ms", "0")
    exchange.client().futures_change_position_mode(dualSidePosition="true")
    settings = stack.settings.model_copy(update={"exchange_url": exchange.url})
    ctx = context(settings, opposite_side_policy="hedge")
    symbol = "DOTUSDT"
    exchange.set_price(symbol, "4.000")
    long_result, _ = run(ctx, intent(unique_id("hl"), symbol, "BUY", 60, stop_loss=3.8, take_profit=4.4))
    short_result, event = run(ctx, intent(unique_id("hs"), symbol, "SELL", 60, stop_loss=4.2, take_profit=3.6))
    assert (long_result.status.value, short_result.status.value) == ("filled", "filled"), short_result
    assert position_amt(ctx, symbol, "LONG") > 0 > position_amt(ctx, symbol, "SHORT")
    assert event["position_side"] == "SHORT"
    sides = {(a["orderType"], a["positionSide"]) for a in open_algos(ctx, symbol)}
    assert sides == {(t, s) for t in ("STOP_MARKET", "TAKE_PROFIT_MARKET") for s in ("LONG", "SHORT")}


def test_the_hedge_policy_on_a_one_way_account_rejects_and_says_why(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """A one-way account cannot hold both sides: under `hedge` an opposite intent is rejected with the reason."""
    ctx = policy_context(stack, opposite_side_policy="hedge")
    symbol = "TRXUSDT"
    flat_symbol(ctx, symbol, "0.25000")
    run(ctx, intent(unique_id("ow"), symbol, "BUY", 60, stop_loss=0.24, take_profit=0.27))
    result, _ = run(ctx, intent(unique_id("ow2"), symbol, "SELL", 60))
    assert result.status.value == "rejected"
    assert "hedge-mode account, and this one is one-way" in (result.reason or "")
