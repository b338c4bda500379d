"""Confirming the fill (qexec/pipeline/confirm.py) through the real worker: polling, the venue's stream, the
deadline."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from private_stack import private_stack
from stack_fixtures import (
    Stack,
    add_fault,
    assert_result_matches_venue,
    order_queries,
    seed_intent,
    unique_id,
    wait_for_line,
)

from qexec.models import client_order_id
from qexec.venue import feed

pytestmark = pytest.mark.slow


def test_a_late_fill_is_polled_until_filled_and_reports_the_real_price(stack: Stack) -> None:
    """The original bug: the venue answers NEW with 0 executed; confirm_fill polls and reports the real fill."""
    iid = unique_id("late")
    config = stack.paper.admin("GET", "/paper/v1/config")
    stack.paper.admin("POST", "/paper/v1/config", json={"result_wait_ms": 0})
    try:
        add_fault(
            stack,
            endpoint="POST /fapi/v1/order",
            kind="fill_delay",
            delay_ms=1500,
            client_order_id=client_order_id(iid),
            count=1,
        )
        stack.inject(seed_intent(iid, symbol="BTCUSDT", position_size_usd=300.0))
        result = stack.wait_result(iid)
    finally:
        stack.paper.admin("POST", "/paper/v1/config", json={"result_wait_ms": config["result_wait_ms"]})
    assert result["status"] == "filled", result
    assert_result_matches_venue(stack, result)
    lines = [line for line in stack.log("worker").splitlines() if iid in line]
    assert any("ORDER_RESPONSE status=NEW" in line for line in lines), "the venue first answered NEW"
    assert any("FILL_PENDING" in line for line in lines), "confirm_fill polled before the fill"


def test_a_limit_order_that_never_fills_is_canceled_at_the_deadline(stack: Stack) -> None:
    """A resting limit far from the mark is canceled when the fill deadline passes and published `canceled`."""
    iid = unique_id("dead")
    mark = float(stack.paper.client().futures_mark_price(symbol="ETHUSDT")["markPrice"])
    stack.inject(
        seed_intent(
            iid, symbol="ETHUSDT", order_type="LIMIT", entry_price=round(mark * 0.5, 2), position_size_usd=200.0
        )
    )
    result = stack.wait_result(iid, timeout_s=30)
    assert result["status"] == "canceled", result
    assert result["entry_price"] is None and result["quantity"] is None
    order = stack.paper.client().futures_get_order(symbol="ETHUSDT", orderId=result["order_id"])
    assert order["status"] == "CANCELED"


def test_a_partial_fill_at_the_deadline_publishes_what_executed(stack: Stack) -> None:
    """Half filled when the deadline passes: the rest is canceled and the result is `partially_filled`."""
    iid = unique_id("part")
    add_fault(
        stack,
        endpoint="POST /fapi/v1/order",
        kind="partial_fill",
        ratio=0.5,
        client_order_id=client_order_id(iid),
        count=1,
    )
    stack.inject(seed_intent(iid, symbol="BTCUSDT", position_size_usd=500.0))
    result = stack.wait_result(iid, timeout_s=30)
    assert result["status"] == "partially_filled", result
    order = assert_result_matches_venue(stack, result)
    assert Decimal(order["executedQty"]) < Decimal(order["origQty"])


def late_fill_stack(start_paper_server: Any, tmp_path: Path, extra: dict[str, str]) -> Any:
    """A paper exchange that fills MARKET orders 300 ms after accepting them (RESULT answers NEW), with a stack."""
    paper = start_paper_server("--tick-ms", "0", "--fill-delay-ms", "300", "--result-wait-ms", "0")
    return paper, private_stack(paper, tmp_path, extra)


def test_a_late_fill_is_confirmed_from_the_venues_stream_without_asking_the_venue(
    start_paper_server: Any, tmp_path: Path
) -> None:
    """RESULT answers NEW; confirm_fill learns of the fill from the user-data stream and sends no order query."""
    paper, running = late_fill_stack(start_paper_server, tmp_path, {})
    with running as stack:
        wait_for_line(stack.logs_dir / "worker.log", "FEED_LIVE stream=user", stack.processes["worker"], 30)
        time.sleep(feed.VOUCH_MARGIN_S)  # the feed vouches for orders placed a moment after it came up
        iid = unique_id("late-stream")
        stack.inject(seed_intent(iid, symbol="BTCUSDT", position_size_usd=300.0))
        result = stack.wait_result(iid)
        assert result["status"] == "filled", result
        assert order_queries(paper) == 0
        assert_result_matches_venue(stack, result)
        lines = [line for line in stack.log("worker").splitlines() if iid in line]
    assert any("ORDER_RESPONSE status=NEW" in line for line in lines), "the venue first answered NEW"
    assert any("FILL_PENDING" in line and "source=stream" in line for line in lines)
    assert any("FILL_CONFIRMED status=FILLED" in line for line in lines)


def test_with_streams_turned_off_a_late_fill_is_confirmed_by_asking_the_venue(
    start_paper_server: Any, tmp_path: Path
) -> None:
    """QEXEC_USE_STREAMS=false: confirm_fill polls GET /fapi/v1/order until the venue reports the fill."""
    paper, running = late_fill_stack(start_paper_server, tmp_path, {"QEXEC_USE_STREAMS": "false"})
    with running as stack:
        iid = unique_id("late-rest")
        stack.inject(seed_intent(iid, symbol="BTCUSDT", position_size_usd=300.0))
        result = stack.wait_result(iid)
        assert result["status"] == "filled", result
        assert order_queries(paper) >= 1
        assert_result_matches_venue(stack, result)
        assert "FEED_LIVE" not in stack.log("worker")


def test_an_order_answer_without_avg_price_is_priced_from_the_stream_with_no_order_look_up(stack: Stack) -> None:
    """Binance's 2026 SDK spec drops `avgPrice`/`cumQuote` from the order answer: with the paper exchange answering
    so, the result's price comes from the user-data stream's ORDER_TRADE_UPDATE (`ap`, `z`) - and no
    `GET /fapi/v1/order` is made while the stream is up - and it equals the venue's own average price."""
    stack.paper.admin("POST", "/paper/v1/config", {"order_answer_without_price": True})
    try:
        time.sleep(1.5)  # the worker's stream vouches for orders placed a second after it came up: long since true
        look_ups = order_queries(stack.paper)
        iid = unique_id("noavg")
        stack.inject(seed_intent(iid, symbol="LINKUSDT", position_size_usd=60.0))
        result = stack.wait_result(iid)
        assert result["status"] == "filled", result
        assert order_queries(stack.paper) == look_ups
    finally:
        stack.paper.admin("POST", "/paper/v1/config", {"order_answer_without_price": False})
    order = stack.paper.client().futures_get_order(symbol="LINKUSDT", orderId=result["order_id"])
    assert Decimal(str(result["entry_price"])) == Decimal(order["avgPrice"]) > 0
    assert Decimal(str(result["quantity"])) == Decimal(order["executedQty"])
