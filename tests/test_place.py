"""Placing the entry (qexec/pipeline/place.py): refusals before sending, venue rejections, and submits whose
outcome is unknown."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from paper_fixtures import PaperExchange
from position_helpers import context, exits, first_entry_at_the_venue, intent, open_algos, position_amt, run
from stack_fixtures import (
    Stack,
    add_fault,
    assert_result_matches_venue,
    clean_env,
    seed_intent,
    unique_id,
    venue_orders,
)

from qexec import constants
from qexec.config import Settings
from qexec.models import ExecutionResult, Intent, client_order_id
from qexec.ops import halt
from qexec.pipeline import admission, place
from qexec.positions import monitor
from qexec.venue.binance import BinanceVenue

pytestmark = pytest.mark.slow


def test_unknown_error_after_execution_is_adopted_not_resent(stack: Stack) -> None:
    """A 503 "Unknown error" after the venue executed: the order is looked up and adopted, never sent twice."""
    iid = unique_id("unk")
    add_fault(
        stack, endpoint="POST /fapi/v1/order", kind="unknown_after", client_order_id=client_order_id(iid), count=1
    )
    stack.inject(seed_intent(iid))
    result = stack.wait_result(iid)
    assert result["status"] == "filled", result
    assert_result_matches_venue(stack, result)
    assert len(venue_orders(stack, iid)) == 1
    assert any("ORDER_LOOKUP outcome=found" in line and iid in line for line in stack.log("worker").splitlines())


def test_a_rerun_after_the_result_went_out_places_nothing_even_when_the_venue_forgot_the_order(stack: Stack) -> None:
    """The fill was published and the worker died before recording it (the intent still says `submitting`); the
    venue now answers -2013 for the order: the re-run returns the published fill and sends no order."""
    ctx = context(stack.settings)
    ticket = admission.new_ticket(Intent.from_fields(seed_intent(unique_id("rerun"))), entry_id=None)
    filled = place.place_entry(ticket, ctx)
    assert isinstance(filled, ExecutionResult) and filled.status.value == "filled", filled
    long_ago = str((datetime.now(UTC) - timedelta(minutes=10)).timestamp())
    state = {"phase": "submitting", "submitted_at": long_ago}
    stack.redis.hset(constants.ORDER_KEY.format(intent_id=ticket.intent_id), mapping=state)
    add_fault(stack, endpoint="GET /fapi/v1/order", kind="reject", code=-2013, msg="Order does not exist.", count=0)
    submits = stack.paper.stats()["requests"].get("POST /fapi/v1/order", 0)
    try:
        again = place.place_entry(ticket, ctx)
    finally:
        stack.paper.admin("DELETE", "/paper/v1/faults")
    assert again == filled
    assert stack.paper.stats()["requests"].get("POST /fapi/v1/order", 0) == submits
    assert len(venue_orders(stack, ticket.intent_id)) == 1
    assert [r["status"] for r in stack.results(ticket.intent_id)] == ["filled"]


def test_unknown_error_before_execution_is_sent_again_with_the_same_id(stack: Stack) -> None:
    """A 503 "Unknown error" where nothing executed: after the look-up window the order is sent once more."""
    iid = unique_id("unk0")
    add_fault(
        stack, endpoint="POST /fapi/v1/order", kind="unknown_before", client_order_id=client_order_id(iid), count=1
    )
    stack.inject(seed_intent(iid))
    result = stack.wait_result(iid)
    assert result["status"] == "filled", result
    assert len(venue_orders(stack, iid)) == 1
    assert any("ORDER_LOOKUP outcome=absent" in line and iid in line for line in stack.log("worker").splitlines())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"position_size_usd": 1.0}, "below"),
        ({"symbol": "NOSUCHUSDT"}, "unknown symbol"),
        ({"timestamp": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}, "stale"),
        ({"position_size_usd": 60000.0}, "per-order limit"),
        ({"leverage": 50}, "leverage"),
    ],
)
def test_intents_the_venue_or_the_limits_would_refuse_are_rejected_with_a_reason(
    stack: Stack, change: dict[str, Any], reason: str
) -> None:
    """Min notional, unknown symbol, stale and over-limit intents publish `rejected` and place nothing."""
    iid = unique_id("rej")
    stack.inject(seed_intent(iid, **change))
    result = stack.wait_result(iid)
    assert result["status"] == "rejected", result
    assert reason in result["reason"]
    assert result["entry_price"] is None
    assert venue_orders(stack, iid) == []


def test_a_venue_rejection_is_published_with_its_code_and_message(stack: Stack) -> None:
    """An order the venue refuses (-2019 insufficient margin) ends `rejected` with the venue's code."""
    iid = unique_id("margin")
    add_fault(
        stack,
        endpoint="POST /fapi/v1/order",
        kind="reject",
        code=-2019,
        msg="Margin is insufficient.",
        client_order_id=client_order_id(iid),
        count=1,
    )
    stack.inject(seed_intent(iid))
    result = stack.wait_result(iid)
    assert result["status"] == "rejected", result
    assert result["code"] == -2019
    assert "Margin is insufficient" in result["reason"]


def test_a_halt_set_while_an_entry_waits_stops_it(stack: Stack) -> None:
    """The kill switch is read again after waiting for an earlier entry: a halt set meanwhile rejects the intent."""
    symbol = "NEARUSDT"
    with first_entry_at_the_venue(stack, symbol) as (ctx, _first, _results):
        second = unique_id("halted")
        timer = threading.Timer(0.2, halt.halt, args=(ctx.redis,), kwargs={"reason": "test: halt mid-wait"})
        timer.start()
        try:
            result, _event = run(ctx, intent(second, symbol, "SELL", 60))
        finally:
            timer.join()
            halt.resume(ctx.redis)
        assert result.status.value == "rejected", result
        assert (result.reason or "").startswith("halted"), result.reason
        assert stack.paper.orders(clientOrderId=client_order_id(second)) == []


def test_the_position_mode_is_read_once_for_every_thread_and_worker_process(
    redis_url: str, start_paper_server: Callable[..., PaperExchange]
) -> None:
    """16 threads ask at once, then another process: the venue is asked its position mode (30 weight) once; after a
    -4061 (`forget_position_mode`) it is asked again."""
    exchange = start_paper_server("--tick-ms", "0")
    settings = Settings(exchange_url=exchange.url, redis_url=redis_url)
    r = redis.Redis.from_url(redis_url, decode_responses=True)

    def asked() -> int:
        return int(exchange.stats()["requests"].get("GET /fapi/v1/positionSide/dual", 0))

    venue = BinanceVenue(settings, r)
    with ThreadPoolExecutor(max_workers=16) as pool:
        assert set(pool.map(lambda _: venue.dual_side(), range(16))) == {False}
    elsewhere = "from qexec.config import Settings; from qexec.venue.binance import BinanceVenue; import redis, sys; "
    elsewhere += "s = Settings(); print(BinanceVenue(s, redis.Redis.from_url(s.redis_url)).dual_side())"
    other = subprocess.run(
        [sys.executable, "-c", elsewhere],
        env=clean_env({"QEXEC_EXCHANGE_URL": exchange.url, "QEXEC_REDIS_URL": redis_url}),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert other.stdout.strip() == "False"
    assert asked() == 1
    venue.forget_position_mode()
    assert venue.dual_side() is False
    assert asked() == 2


def test_a_hedge_mode_account_gets_position_sides_and_a_mode_change_is_noticed(
    stack: Stack, start_paper_server: Callable[..., PaperExchange]
) -> None:
    """Hedge mode: SELL opens SHORT with positionSide, SL/TP carry it; a cached one-way mode is corrected (-4061)."""
    exchange = start_paper_server("--tick-ms", "0")
    settings = stack.settings.model_copy(update={"exchange_url": exchange.url})
    ctx = context(settings)
    assert ctx.venue.dual_side() is False  # cached: one-way
    exchange.client().futures_change_position_mode(dualSidePosition="true")
    symbol = "SUIUSDT"
    exchange.set_price(symbol, "3.000000")
    iid = unique_id("hedge")
    result, event = run(ctx, intent(iid, symbol, "SELL", 60, stop_loss=3.2, take_profit=2.8))
    assert result.status.value == "filled", result
    assert position_amt(ctx, symbol, "SHORT") < 0
    assert event["position_side"] == "SHORT"
    algos = open_algos(ctx, symbol)
    assert {(a["orderType"], a["positionSide"], a["side"]) for a in algos} == {
        ("STOP_MARKET", "SHORT", "BUY"),
        ("TAKE_PROFIT_MARKET", "SHORT", "BUY"),
    }
    # A BUY in hedge mode is the other side: rejected by default, the short stays.
    reject_ctx = context(settings, same_side_policy="update_protection", opposite_side_policy="reject")
    other, _ = run(reject_ctx, intent(unique_id("hedge-buy"), symbol, "BUY", 60))
    assert other.status.value == "rejected"
    exchange.set_price(symbol, "3.300000")  # through the short's stop
    monitor.watch(ctx, symbols={symbol})
    [exit_event] = [e for e in exits(ctx, symbol) if iid in e["intent_ids"]]  # the stream is shared with other tests
    assert (exit_event["reason"], exit_event["position_side"]) == ("stop_loss", "SHORT")
    assert exit_event["realized_pnl"] < 0
    assert open_algos(ctx, symbol) == []
