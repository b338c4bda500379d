"""LIMIT entries through the real worker: never a terminal result while the order may still be live, and a result
that says what qexec did to the order."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from position_helpers import FlatSymbol, context, flatten, intent, position_amt, run
from stack_fixtures import Stack, unique_id

from qexec.models import client_order_id

pytestmark = pytest.mark.slow


def limit_intent(symbol: str, side: str, price: float, size_usd: float, **fields: Any) -> dict[str, Any]:
    """A fresh LIMIT intent without protection levels."""
    body = {
        "intent_id": unique_id("lim"),
        "symbol": symbol,
        "side": side,
        "order_type": "LIMIT",
        "entry_price": price,
        "position_size_usd": size_usd,
        "leverage": 2,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    return body | fields


def test_a_limit_whose_cancel_fails_at_the_deadline_stays_in_flight_and_reports_its_later_fill(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """`DELETE /fapi/v1/order` down at the fill deadline: no `failed` result while the order rests; when the price
    then crosses and it fills, the one result says `filled` with the venue's price."""
    symbol = "LTCUSDT"
    ctx = context(stack.settings)
    flat_symbol(ctx, symbol, "90.00")
    body = limit_intent(symbol, "BUY", 80.0, 100)
    stack.paper.add_fault(kind="unavailable", endpoint="DELETE /fapi/v1/order", symbol=symbol, count=0)
    try:
        stack.inject(body)
        # Twice the fill deadline (4 s here): the old code gave up with `failed, order_status=NEW` at this point.
        time.sleep(stack.settings.fill_timeout_s * 2 + 3)
        assert stack.results(body["intent_id"]) == [], "no terminal result while the order may still fill"
        stack.paper.set_price(symbol, "79.50")  # the limit is crossed: the resting order fills
        result = stack.wait_result(body["intent_id"], timeout_s=30)
        assert result["status"] == "filled", result
        order = stack.paper.client().futures_get_order(symbol=symbol, orderId=result["order_id"])
        assert Decimal(str(result["entry_price"])) == Decimal(order["avgPrice"])
    finally:
        stack.paper.admin("DELETE", "/paper/v1/faults")


def test_a_limit_canceled_at_the_deadline_says_qexec_canceled_it(stack: Stack) -> None:
    """A resting LIMIT that the deadline ends: `canceled`, and the reason says qexec canceled it at the deadline."""
    symbol = "LTCUSDT"
    stack.paper.set_price(symbol, "90.00")
    body = limit_intent(symbol, "BUY", 60.0, 100)
    stack.inject(body)
    result = stack.wait_result(body["intent_id"], timeout_s=30)
    assert result["status"] == "canceled", result
    assert "qexec canceled it at the fill deadline (QEXEC_FILL_TIMEOUT_S=4)" in result["reason"], result["reason"]


def wait_resting(stack: Stack, symbol: str, client_order_id: str, timeout_s: float = 10) -> None:
    """Wait until the intent's LIMIT order rests at the venue."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(
            o["clientOrderId"] == client_order_id for o in stack.paper.client().futures_get_open_orders(symbol=symbol)
        ):
            return
        time.sleep(0.05)
    raise AssertionError(
        f"{client_order_id} is not resting on {symbol}: {stack.paper.orders(clientOrderId=client_order_id)}"
    )


@pytest.mark.parametrize(
    ("resting", "policy", "status", "words"),
    [
        (("BUY", 85.0), "update_protection", "rejected", "will open a LONG position"),
        (("BUY", 85.0), "skip", "skipped", "will open a LONG position"),
        (
            ("SELL", 95.0),
            "update_protection",
            "rejected",
            "would open a SHORT position, and this intent is on the other",
        ),
    ],
)
def test_a_resting_limit_entry_counts_as_exposure_for_the_next_intent(
    stack: Stack, resting: tuple[str, float], policy: str, status: str, words: str
) -> None:
    """A LIMIT entry resting at the venue, then a MARKET BUY on the symbol: the policy sees the resting order as it
    would see a position (no doubled long, no short that later fills against the long); no second order goes out."""
    symbol = "BNBUSDT"
    ctx = context(stack.settings, same_side_policy=policy, opposite_side_policy="reject")
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "90.000")
    first = limit_intent(symbol, resting[0], resting[1], 100)
    try:
        stack.inject(first)  # through the stack's worker: it rests until its fill deadline
        wait_resting(stack, symbol, client_order_id(first["intent_id"]))
        later = intent(unique_id("after"), symbol, "BUY", 100)
        result, _event = run(ctx, later)
        assert result.status.value == status, result
        assert words in (result.reason or ""), result.reason
        assert stack.paper.orders(clientOrderId=client_order_id(later.id)) == []
    finally:
        flatten(ctx, symbol)


def test_a_partly_filled_limit_is_protected_at_once_not_at_the_deadline(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """Half of a LIMIT fills at once and the rest rests: its stop-loss and take-profit are at the venue within a
    moment (not after the fill deadline's cancel), and the protection event names the entry."""
    symbol = "LINKUSDT"
    ctx = context(stack.settings)
    flat_symbol(ctx, symbol, "14.000")
    body = limit_intent(symbol, "BUY", 14.0, 200, stop_loss=13.0, take_profit=15.5)
    stack.paper.add_fault(kind="partial_fill", ratio=0.5, client_order_id=client_order_id(body["intent_id"]), count=1)
    stack.inject(body)
    deadline = time.monotonic() + stack.settings.fill_timeout_s - 1  # before the deadline's cancel
    algos: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(algos) < 2:
        algos = stack.paper.client().futures_get_open_orders(symbol=symbol, conditional=True)
        time.sleep(0.1)
    assert sorted(a["orderType"] for a in algos) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"], algos
    assert stack.results(body["intent_id"]) == [], "the order is still working"
    result = stack.wait_result(body["intent_id"], timeout_s=30)
    assert result["status"] == "partially_filled", result
    [event] = stack.protection_events(body["intent_id"])
    assert event["entry_order_id"] == result["order_id"] and event["status"] == "placed"


def test_a_marketable_sell_limit_is_sized_from_the_mark_not_from_its_limit(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """A SELL LIMIT under the mark fills near the mark: its quantity comes from the mark, so the fill's notional is
    at most `position_size_usd` (sized from the limit it was ~5 % more; at half the mark, twice as much)."""
    symbol = "BCHUSDT"
    ctx = context(stack.settings)
    flat_symbol(ctx, symbol, "450.00")
    body = limit_intent(symbol, "SELL", 430.0, 200)
    stack.inject(body)
    result = stack.wait_result(body["intent_id"])
    assert result["status"] == "filled", result
    assert result["position_size_usd"] <= 200.0, result


def test_a_limit_outside_the_percent_price_band_is_rejected_before_any_order(stack: Stack) -> None:
    """A SELL LIMIT at half the mark is outside PERCENT_PRICE: `rejected` with the band, no order at the venue."""
    symbol = "BCHUSDT"
    stack.paper.set_price(symbol, "450.00")
    body = limit_intent(symbol, "SELL", 225.0, 100)
    stack.inject(body)
    result = stack.wait_result(body["intent_id"])
    assert result["status"] == "rejected", result
    assert "is below BCHUSDT's band" in result["reason"] and "multiplierDown" in result["reason"]
    assert stack.paper.orders(clientOrderId=client_order_id(body["intent_id"])) == []


def test_a_post_only_limit_that_would_take_is_refused_by_the_venue(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """`time_in_force: GTX` (post-only) on a BUY above the mark would take liquidity: the venue refuses it (-5022),
    the result says so, and no position opens."""
    symbol = "BCHUSDT"
    ctx = context(stack.settings)
    flat_symbol(ctx, symbol, "450.00")
    body = limit_intent(symbol, "BUY", 460.0, 100, time_in_force="GTX")
    stack.inject(body)
    result = stack.wait_result(body["intent_id"])
    assert result["status"] in ("rejected", "expired"), result
    assert result["quantity"] is None
    assert position_amt(ctx, symbol) == 0
