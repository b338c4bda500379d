"""Leverage: a position opens at the intent's leverage or not at all, closing never changes it, and the result says
the leverage the venue applied - checked through a real worker (with its streams) on the paper exchange."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from position_helpers import FlatSymbol, context, flatten
from private_stack import private_stack
from stack_fixtures import Stack, unique_id

pytestmark = pytest.mark.slow

SET_LEVERAGE = "POST /fapi/v1/leverage"


def leverage_calls(stack: Stack) -> int:
    """How many times the paper exchange was asked to change a leverage."""
    return int(stack.paper.stats()["requests"].get(SET_LEVERAGE, 0))


def venue_leverage(stack: Stack, symbol: str) -> int:
    """The symbol's leverage as the venue holds it (positionRisk v2)."""
    return int(stack.paper.client().futures_position_information(symbol=symbol, version=2)[0]["leverage"])


def set_outside(stack: Stack, symbol: str, leverage: int) -> None:
    """Change a symbol's leverage from outside qexec (as the venue's UI would), and wait until the worker's user
    stream has had time to hear of it."""
    stack.paper.client().futures_change_leverage(symbol=symbol, leverage=leverage)
    time.sleep(0.5)


def entry(symbol: str, side: str = "BUY", size_usd: float = 60, **fields: Any) -> dict[str, Any]:
    """A MARKET intent without protection levels."""
    body = {"intent_id": unique_id("lev"), "symbol": symbol, "side": side, "position_size_usd": size_usd}
    return body | {"timestamp": datetime.now(UTC).isoformat()} | fields


def execute(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    """Send an intent through the bridge and wait for its one result."""
    stack.inject(body)
    return stack.wait_result(body["intent_id"])


def test_a_leverage_changed_outside_qexec_is_set_again_for_the_next_entry(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """5x, then 10x set at the venue by someone else, then another 5x intent: the position opens at 5x (the worker's
    knowledge is corrected by the stream's ACCOUNT_CONFIG_UPDATE, not a stale cache), and the result says 5."""
    symbol = "LTCUSDT"
    flat_symbol(context(stack.settings), symbol)
    first = execute(stack, entry(symbol, leverage=5))
    assert (first["status"], first["leverage"], venue_leverage(stack, symbol)) == ("filled", 5, 5)
    set_outside(stack, symbol, 10)
    calls = leverage_calls(stack)
    second = execute(stack, entry(symbol, leverage=5))
    assert second["status"] == "filled", second
    assert venue_leverage(stack, symbol) == 5
    assert second["leverage"] == 5
    assert leverage_calls(stack) == calls + 1


def test_an_entry_at_the_leverage_the_stream_vouches_for_makes_no_leverage_call(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """Once the venue said 4x (and nothing changed since), the next 4x entries cost no `POST /fapi/v1/leverage`."""
    symbol = "DOTUSDT"
    flat_symbol(context(stack.settings), symbol)
    execute(stack, entry(symbol, leverage=4))
    calls = leverage_calls(stack)
    for _ in range(3):
        result = execute(stack, entry(symbol, leverage=4, client_tag="again"))
        assert (result["status"], result["leverage"]) == ("filled", 4), result
    assert leverage_calls(stack) == calls
    assert venue_leverage(stack, symbol) == 4


def test_a_reduce_only_intent_without_leverage_leaves_the_positions_leverage_alone(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """A 5x long reduced by a reduce-only SELL that names no leverage: still 5x, and no leverage call at all."""
    symbol = "BCHUSDT"
    flat_symbol(context(stack.settings), symbol)
    opened = execute(stack, entry(symbol, size_usd=100, leverage=5))
    assert opened["status"] == "filled", opened
    calls = leverage_calls(stack)
    reduced = execute(stack, entry(symbol, side="SELL", size_usd=50, reduce_only=True))
    assert reduced["status"] == "filled", reduced
    assert venue_leverage(stack, symbol) == 5
    assert leverage_calls(stack) == calls


def test_an_opening_intent_without_leverage_keeps_the_symbols_leverage_and_says_which(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """7x set at the venue; an intent without `leverage` opens at 7x, changes nothing, and its result says 7."""
    symbol = "ATOMUSDT"
    flat_symbol(context(stack.settings), symbol)
    set_outside(stack, symbol, 7)
    calls = leverage_calls(stack)
    result = execute(stack, entry(symbol))
    assert (result["status"], result["leverage"]) == ("filled", 7), result
    assert venue_leverage(stack, symbol) == 7
    assert leverage_calls(stack) == calls


def test_an_intent_without_leverage_is_rejected_when_the_symbol_is_above_the_limit(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """A symbol at 50x (over QEXEC_MAX_LEVERAGE=20) and an intent naming no leverage: rejected, no order."""
    symbol = "TRXUSDT"
    flat_symbol(context(stack.settings), symbol)
    try:
        set_outside(stack, symbol, 50)
        orders = stack.paper.stats()["orders_placed"]
        result = execute(stack, entry(symbol))
        assert result["status"] == "rejected", result
        assert "leverage 50" in result["reason"] and "limit 20" in result["reason"]
        assert stack.paper.stats()["orders_placed"] == orders
    finally:
        stack.paper.client().futures_change_leverage(symbol=symbol, leverage=20)


def test_a_reduce_only_intent_under_the_minimum_notional_closes_the_leftover(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """The venue waives MIN_NOTIONAL for reduce-only orders, so must qexec: a 3-USDT leftover of ETH is closed."""
    symbol = "ETHUSDT"  # minimum notional 20 USDT, step 0.001 (3.3 USDT)
    ctx = context(stack.settings)
    flat_symbol(ctx, symbol, "3300.00")
    opened = execute(stack, entry(symbol, size_usd=40, leverage=2))
    assert opened["status"] == "filled", opened
    left = execute(stack, entry(symbol, side="SELL", size_usd=3.4, reduce_only=True))
    assert left["status"] == "filled", left
    assert left["quantity"] == pytest.approx(0.001)


def test_a_leverage_change_the_venue_refuses_rejects_the_intent_with_its_code(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """A big long at 20x, then an intent asking 1x on the symbol: the venue refuses the change (-2028, margin
    short), the intent is `rejected` with that code and places no order, and the position keeps its 20x."""
    symbol = "ETHUSDT"
    ctx = context(stack.settings)
    flat_symbol(ctx, symbol, "3300.00")
    opened = execute(stack, entry(symbol, size_usd=16000, leverage=20))
    assert opened["status"] == "filled", opened
    orders = stack.paper.stats()["orders_placed"]
    refused = execute(stack, entry(symbol, size_usd=100, leverage=1))
    assert (refused["status"], refused["code"]) == ("rejected", -2028), refused
    assert "venue refused the set-up" in refused["reason"]
    assert stack.paper.stats()["orders_placed"] == orders
    assert venue_leverage(stack, symbol) == 20


def test_two_workers_never_open_a_position_at_the_other_ones_leverage(stack: Stack, tmp_path: Path) -> None:
    """Two workers (two machines in a deployment) take 5x, 10x, 5x, 10x intents in turn on one symbol: after each,
    the position is at the leverage that intent asked for and its result says so - neither worker trusts a value
    the other one changed."""
    symbol = "XRPUSDT"
    with private_stack(stack.paper, tmp_path, {}, worker=False) as own:
        own.start_worker("worker-1", concurrency=2)
        own.start_worker("worker-2", concurrency=2)
        flatten(context(own.settings), symbol)
        try:
            for leverage in (5, 10, 5, 10, 5):
                body = entry(symbol, size_usd=30, leverage=leverage)
                own.inject(body)
                result = own.wait_result(body["intent_id"])
                assert (result["status"], result["leverage"]) == ("filled", leverage), result
                assert venue_leverage(stack, symbol) == leverage
        finally:
            flatten(context(own.settings), symbol)


def test_leverage_null_means_not_given(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """`"leverage": null` is an intent that names no leverage (the symbol keeps its own), not a dead letter."""
    symbol = "NEARUSDT"
    ctx = context(stack.settings)
    flat_symbol(ctx, symbol)
    iid = unique_id("nolev")
    stack.inject({"intent_id": iid, "symbol": symbol, "side": "BUY", "position_size_usd": 50, "leverage": None})
    result = stack.wait_result(iid)
    assert result["status"] == "filled", result["reason"]
    assert result["leverage"] == int(ctx.venue.leverage(symbol))
