"""Stop-loss and take-profit as algo orders after a fill (qexec/positions/protection.py): placed once, never rolled
back to older levels, and what happens when the venue will not take them."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from paper_fixtures import start_paper
from position_helpers import FlatSymbol, context, exits, intent, open_algos, policy_context, position_amt, run
from private_stack import private_stack
from stack_fixtures import Stack, seed_intent, unique_id, wait_for_line

from qexec import constants
from qexec.models import client_order_id
from qexec.pipeline.admission import new_ticket
from qexec.positions import monitor, protection

pytestmark = pytest.mark.slow


def test_a_fill_through_the_worker_leaves_one_stop_loss_and_one_take_profit_at_the_venue(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """The chain's last step places a STOP_MARKET and a TAKE_PROFIT_MARKET (closePosition, mark price)."""
    ctx = context(stack.settings)
    symbol = "SOLUSDT"
    flat_symbol(ctx, symbol, "180.00")
    iid = unique_id("prot")
    stack.inject(
        seed_intent(iid, symbol=symbol, position_size_usd=200.0, stop_loss=170.0, take_profit=195.0, leverage=2)
    )
    result = stack.wait_result(iid)
    assert result["status"] == "filled", result
    deadline = time.monotonic() + 15
    while not stack.protection_events(iid) and time.monotonic() < deadline:
        time.sleep(0.1)
    [event] = stack.protection_events(iid)
    algos = open_algos(ctx, symbol)
    assert event["status"] == "placed", event
    assert sorted(a["orderType"] for a in algos) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    by_type = {a["orderType"]: a for a in algos}
    assert by_type["STOP_MARKET"]["clientAlgoId"] == event["sl_client_algo_id"]
    assert by_type["TAKE_PROFIT_MARKET"]["clientAlgoId"] == event["tp_client_algo_id"]
    assert by_type["STOP_MARKET"]["algoId"] == event["sl_order_id"]
    assert by_type["TAKE_PROFIT_MARKET"]["algoId"] == event["tp_order_id"]
    # The event names the entry it protects: no guessing which result it belongs to.
    assert (event["intent_id"], event["entry_order_id"]) == (iid, result["order_id"])
    assert Decimal(by_type["STOP_MARKET"]["triggerPrice"]) == Decimal("170")
    assert Decimal(by_type["TAKE_PROFIT_MARKET"]["triggerPrice"]) == Decimal("195")
    assert all(a["closePosition"] and a["workingType"] == "MARK_PRICE" for a in algos)
    assert all(a["side"] == "SELL" for a in algos)
    # The result stream holds the one result, and nothing else for this intent: the event has its own stream.
    assert [r["status"] for r in stack.results(iid)] == ["filled"]


def test_a_position_busy_when_the_entry_is_placed_is_protected_by_the_chains_last_step(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """The entry's task cannot take the position's lock: protect_position protects the fill once the lock is free."""
    ctx = context(stack.settings)
    symbol = "UNIUSDT"
    flat_symbol(ctx, symbol, "8.0000")
    iid = unique_id("busy")
    lock = constants.POSITION_LOCK_KEY.format(symbol=symbol, direction="SHORT")
    stack.redis.set(lock, "held-by-the-test", px=30_000)
    try:
        stack.inject(
            seed_intent(iid, symbol=symbol, side="SELL", position_size_usd=80.0, stop_loss=8.4, take_profit=7.6)
        )
        assert stack.wait_result(iid)["status"] == "filled"
        wait_for_line(stack.logs_dir / "worker.log", f"position of intent {iid} busy", stack.processes["worker"], 15)
        assert stack.protection_events(iid) == [], "nothing is protected while the lock is held"
        stack.redis.delete(lock)
        wait_for_line(
            stack.logs_dir / "worker.log", f"protect_position[{iid}:protect] succeeded", stack.processes["worker"], 30
        )
        [event] = stack.protection_events(iid)
        assert event["status"] == "placed", event
        assert sorted(a["orderType"] for a in open_algos(ctx, symbol)) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    finally:
        stack.redis.delete(lock)


def test_protecting_the_same_fill_twice_places_nothing_new(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """A redelivered protect step looks its clientAlgoIds up first: still one stop-loss and one take-profit."""
    ctx = context(stack.settings)
    symbol = "DOTUSDT"
    flat_symbol(ctx, symbol, "4.000")
    iid = unique_id("twice")
    the_intent = intent(iid, symbol, "BUY", 60, stop_loss=3.8, take_profit=4.4)
    result, first = run(ctx, the_intent)
    placed_before = stack.paper.stats()["algo_orders_placed"]
    again = protection.protect_step(
        result.model_dump(mode="json"), new_ticket(the_intent, entry_id=None).model_dump(mode="json"), ctx
    )
    assert stack.paper.stats()["algo_orders_placed"] == placed_before
    assert (again["sl_order_id"], again["tp_order_id"]) == (first["sl_order_id"], first["tp_order_id"])
    assert len(open_algos(ctx, symbol)) == 2
    assert len(stack.paper.orders(clientOrderId=client_order_id(iid))) == 1


def test_levels_on_the_wrong_side_of_the_fill_are_refused_and_defaults_protect_the_position(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """A long's stop above its entry is not sent: the reason is published and the default stop is placed."""
    ctx = context(stack.settings, default_stop_loss_pct=2.0, default_take_profit_pct=4.0)
    symbol = "LTCUSDT"
    flat_symbol(ctx, symbol, "90.00")
    iid = unique_id("bad")
    result, event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=95.0, take_profit=99.0))
    assert event["status"] == "placed"
    assert "stop_loss 95.0 is not below the entry" in event["reason"]
    entry = Decimal(str(result.entry_price))
    assert Decimal(str(event["stop_loss"])) < entry
    assert Decimal(str(event["stop_loss"])) == pytest.approx(entry * Decimal("0.98"), abs=Decimal("0.02"))
    assert Decimal(str(event["take_profit"])) == Decimal("99")
    triggers = sorted(Decimal(a["triggerPrice"]) for a in open_algos(ctx, symbol))
    assert triggers == [Decimal(str(event["stop_loss"])), Decimal("99")]


def test_protection_that_cannot_be_placed_closes_the_position_and_says_so(
    stack: Stack, caplog: pytest.LogCaptureFixture, flat_symbol: FlatSymbol
) -> None:
    """The venue refuses every algo order: PROTECTION_FAILED at CRITICAL, the position closed at market."""
    ctx = context(stack.settings, protection_retries=1)
    symbol = "ATOMUSDT"
    flat_symbol(ctx, symbol, "4.500")
    iid = unique_id("fail")
    stack.paper.add_fault(kind="reject", endpoint="POST /fapi/v1/algoOrder", symbol=symbol, count=0)
    try:
        with caplog.at_level(logging.INFO):
            _result, event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=4.3, take_profit=4.8))
        assert (event["status"], event["action"]) == ("failed", "closed")
        assert position_amt(ctx, symbol) == 0
        assert any(r.levelno == logging.CRITICAL and "PROTECTION_FAILED" in r.getMessage() for r in caplog.records)
        monitor.watch(ctx, symbols={symbol})
        [exit_event] = exits(ctx, symbol)
        assert exit_event["reason"] == "protection_failed"
    finally:
        stack.paper.admin("DELETE", "/paper/v1/faults")


def unprotected_series(stack: Stack, symbol: str) -> list[str]:
    """The `qexec_position_unprotected_seconds` samples of a symbol on the bridge's /metrics."""
    text = requests.get(stack.metrics_url, timeout=10).text
    return [
        line for line in text.splitlines() if line.startswith("qexec_position_unprotected_seconds{") and symbol in line
    ]


def test_a_blip_on_the_algo_endpoint_keeps_the_position_and_the_monitor_protects_it_after(
    stack: Stack, caplog: pytest.LogCaptureFixture, flat_symbol: FlatSymbol
) -> None:
    """503s on `POST /fapi/v1/algoOrder` for longer than the in-place retries: no market close (two fees and the
    spread for a blip), POSITION_UNPROTECTED at once and the unprotected time as a metric; once the venue takes
    orders again, the exit monitor places SL/TP and publishes a `repaired` event."""
    ctx = context(stack.settings, protection_retries=1, protection_grace_s=60.0)
    symbol = "FILUSDT"
    flat_symbol(ctx, symbol, "2.500")
    iid = unique_id("blip")
    stack.paper.add_fault(kind="unavailable", endpoint="POST /fapi/v1/algoOrder", symbol=symbol, count=0)
    try:
        with caplog.at_level(logging.INFO):
            result, event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=2.4, take_profit=2.7))
        assert result.status.value == "filled"
        assert event["status"] == "unprotected" and event["action"] is None, event
        assert position_amt(ctx, symbol) > 0, "a 503 blip must not close the position at market"
        assert any(r.levelno == logging.ERROR and "POSITION_UNPROTECTED" in r.getMessage() for r in caplog.records)
        assert unprotected_series(stack, symbol), "the unprotected time is exported"
        monitor.watch(ctx, symbols={symbol})  # still failing, well within the grace: nothing is closed
        assert position_amt(ctx, symbol) > 0
        # When the venue takes orders again, the monitor's next pass protects the position.
        stack.paper.admin("DELETE", "/paper/v1/faults")
        assert monitor.watch(ctx, symbols={symbol})["repaired"] == [f"{symbol}:LONG"]
        triggers = {a["orderType"]: Decimal(a["triggerPrice"]) for a in open_algos(ctx, symbol)}
        assert triggers == {"STOP_MARKET": Decimal("2.4"), "TAKE_PROFIT_MARKET": Decimal("2.7")}
        repaired = [e for e in stack.protection_events(iid) if e["status"] == "repaired"]
        assert len(repaired) == 1 and repaired[0]["sl_order_id"] is not None, stack.protection_events(iid)
        assert unprotected_series(stack, symbol) == []
    finally:
        stack.paper.admin("DELETE", "/paper/v1/faults")


def test_a_rival_close_position_stop_is_replaced_not_answered_with_a_market_close(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """A closePosition STOP_MARKET placed by hand on the symbol makes the venue answer -4130 to qexec's own: qexec
    cancels the rival and places its stop-loss; the position stays open and protected."""
    ctx = context(stack.settings, protection_retries=1)
    symbol = "OPUSDT"
    flat_symbol(ctx, symbol, "0.7000000")
    client = stack.paper.client()
    client.futures_create_order(
        symbol=symbol, side="SELL", type="STOP_MARKET", stopPrice="0.5000000", closePosition="true"
    )
    iid = unique_id("rival")
    _result, event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=0.65, take_profit=0.8))
    assert event["status"] == "placed", event
    assert position_amt(ctx, symbol) > 0
    stops = [a for a in open_algos(ctx, symbol) if a["orderType"] == "STOP_MARKET"]
    assert [a["clientAlgoId"] for a in stops] == [event["sl_client_algo_id"]]


def test_an_older_intents_late_protection_never_rolls_back_a_newer_ones_levels(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """X opens a long (SL 430 / TP 480), Y updates its protection (440 / 470); X's protection step then runs again
    (a redelivery, or a frozen bridge's re-dispatch): the venue keeps Y's levels, X's older ones do not come back."""
    ctx = policy_context(stack)
    symbol = "BCHUSDT"
    flat_symbol(ctx, symbol, "450.00")
    x = intent(unique_id("older"), symbol, "BUY", 100, stop_loss=430, take_profit=480)
    x_ticket = new_ticket(x, entry_id=None)
    x_result, _ = run(ctx, x, ticket=x_ticket)
    updated, _ = run(ctx, intent(unique_id("newer"), symbol, "BUY", 100, stop_loss=440, take_profit=470))
    assert updated.status.value == "protection_updated"
    protection.protect_step(x_result.model_dump(mode="json"), x_ticket.model_dump(mode="json"), ctx)
    triggers = {a["orderType"]: Decimal(a["triggerPrice"]) for a in open_algos(ctx, symbol)}
    assert triggers == {"STOP_MARKET": Decimal(440), "TAKE_PROFIT_MARKET": Decimal(470)}


def test_a_protect_step_the_venue_keeps_telling_later_waits_instead_of_giving_up(tmp_path: Path) -> None:
    """The venue answers 503 to the position read protection needs, five times in a row: the protect step waits and
    tries again (a temporary refusal is not a failure of the step), and the position gets its SL/TP; it never gives up
    after its three unexpected-error retries, leaving the position bare until the exit monitor."""
    paper = start_paper("--tick-ms", "0")
    try:
        with private_stack(paper, tmp_path, {"QEXEC_USE_STREAMS": "false"}) as own:
            symbol = "FILUSDT"
            paper.set_price(symbol, "5.000")
            iid = unique_id("later")
            paper.add_fault(kind="slow", delay_ms=1500, client_order_id=client_order_id(iid))
            own.inject(seed_intent(iid, symbol=symbol, entry_price=5.0, stop_loss=4.8, take_profit=5.4))
            wait_for_line(own.logs_dir / "worker.log", "ORDER_SUBMIT", own.processes["worker"], 20)
            paper.add_fault(kind="unavailable", endpoint="GET /fapi/v3/positionRisk", symbol=symbol, count=5)
            assert own.wait_result(iid)["status"] == "filled"
            deadline = time.monotonic() + 30
            while not (events := own.protection_events(iid)) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert [e["status"] for e in events] == ["placed"], own.log("worker")[-3000:]
            assert paper.stats()["faults_fired"].get("unavailable") == 5
    finally:
        paper.stop()
