"""LIMIT entries through the real worker: never a terminal result while the order may still be live, and a result
that says what qexec did to the order."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from position_helpers import context, flatten
from stack_fixtures import Stack, unique_id

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


def test_a_limit_whose_cancel_fails_at_the_deadline_stays_in_flight_and_reports_its_later_fill(stack: Stack) -> None:
    """`DELETE /fapi/v1/order` down at the fill deadline: no `failed` result while the order rests; when the price
    then crosses and it fills, the one result says `filled` with the venue's price."""
    symbol = "LTCUSDT"
    ctx = context(stack.settings)
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "90.00")
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
        flatten(ctx, symbol)


def test_a_limit_canceled_at_the_deadline_says_qexec_canceled_it(stack: Stack) -> None:
    """A resting LIMIT that the deadline ends: `canceled`, and the reason says qexec canceled it at the deadline."""
    symbol = "LTCUSDT"
    stack.paper.set_price(symbol, "90.00")
    body = limit_intent(symbol, "BUY", 60.0, 100)
    stack.inject(body)
    result = stack.wait_result(body["intent_id"], timeout_s=30)
    assert result["status"] == "canceled", result
    assert "qexec canceled it at the fill deadline (QEXEC_FILL_TIMEOUT_S=4)" in result["reason"], result["reason"]
