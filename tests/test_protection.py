"""Stop-loss and take-profit as algo orders after a fill; stops, targets and trailing stops closing positions."""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import pytest
import requests
from position_helpers import context, exits, flatten, intent, open_algos, position_amt, run
from stack_fixtures import Stack, seed_intent, unique_id, wait_for_line

from qexec import constants
from qexec.models import ExecutionResult, ResultStatus, client_order_id
from qexec.ops import halt
from qexec.pipeline.admission import new_ticket
from qexec.pipeline.place import place_entry
from qexec.pipeline.publish import publish
from qexec.positions import monitor, protection, store

pytestmark = pytest.mark.slow


def test_a_fill_through_the_worker_leaves_one_stop_loss_and_one_take_profit_at_the_venue(stack: Stack) -> None:
    """The chain's last step places a STOP_MARKET and a TAKE_PROFIT_MARKET (closePosition, mark price)."""
    ctx = context(stack.settings)
    symbol = "SOLUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "180.00")
    iid = unique_id("prot")
    try:
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
    finally:
        flatten(ctx, symbol)


def test_a_position_busy_when_the_entry_is_placed_is_protected_by_the_chains_last_step(stack: Stack) -> None:
    """The entry's task cannot take the position's lock: protect_position protects the fill once the lock is free."""
    ctx = context(stack.settings)
    symbol = "UNIUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "8.0000")
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
        flatten(ctx, symbol)


def test_the_mark_through_the_stop_closes_the_position_reports_the_exit_and_cancels_the_target(stack: Stack) -> None:
    """A stop hit: the exit event carries the venue's realised PnL and reason stop_loss; the TP is cancelled."""
    ctx = context(stack.settings)
    symbol = "XRPUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "2.2000")
    iid = unique_id("sl")
    try:
        result, event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=2.1, take_profit=2.4))
        assert result.status.value == "filled" and event["status"] == "placed"

        stack.paper.set_price(symbol, "2.0900")  # through the stop: the venue closes the position now
        assert position_amt(ctx, symbol) == 0
        report = monitor.watch(ctx, symbols={symbol})

        assert report["closed"] == [f"{symbol}:LONG"]
        [exit_event] = exits(ctx, symbol)
        trades = ctx.venue.user_trades(symbol)
        closing = [t for t in trades if t.orderId in exit_event["order_ids"]]
        assert exit_event["reason"] == "stop_loss"
        assert exit_event["intent_ids"] == [iid]
        assert exit_event["quantity"] == pytest.approx(result.quantity)
        assert Decimal(str(exit_event["realized_pnl"])) == sum(t.realizedPnl for t in closing)
        expected = (exit_event["exit_price"] - result.entry_price) * result.quantity  # type: ignore[operator]
        assert exit_event["realized_pnl"] == pytest.approx(expected, abs=1e-6)
        assert exit_event["realized_pnl"] < 0
        tp = ctx.venue.get_algo_order(client_algo_id=event["tp_client_algo_id"])
        assert tp.algoStatus == "CANCELED"
        assert open_algos(ctx, symbol) == []
        assert monitor.watch(ctx, symbols={symbol})["closed"] == [], "one exit per closed position"
        assert len(exits(ctx, symbol)) == 1
    finally:
        flatten(ctx, symbol)


def test_the_mark_through_the_target_closes_a_short_and_cancels_the_stop(stack: Stack) -> None:
    """A short's take-profit hit: exit reason take_profit with a profit; its stop-loss is cancelled."""
    ctx = context(stack.settings)
    symbol = "DOGEUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "0.320000")
    iid = unique_id("tp")
    try:
        result, event = run(ctx, intent(iid, symbol, "SELL", 100, stop_loss=0.34, take_profit=0.30))
        assert event["status"] == "placed" and position_amt(ctx, symbol) < 0
        stack.paper.set_price(symbol, "0.299000")
        monitor.watch(ctx, symbols={symbol})
        [exit_event] = exits(ctx, symbol)
        assert (exit_event["reason"], exit_event["side"]) == ("take_profit", "SHORT")
        assert exit_event["realized_pnl"] > 0
        assert exit_event["exit_price"] < result.entry_price  # type: ignore[operator]
        assert ctx.venue.get_algo_order(client_algo_id=event["sl_client_algo_id"]).algoStatus == "CANCELED"
    finally:
        flatten(ctx, symbol)


def test_protecting_the_same_fill_twice_places_nothing_new(stack: Stack) -> None:
    """A redelivered protect step looks its clientAlgoIds up first: still one stop-loss and one take-profit."""
    ctx = context(stack.settings)
    symbol = "DOTUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "4.000")
    iid = unique_id("twice")
    the_intent = intent(iid, symbol, "BUY", 60, stop_loss=3.8, take_profit=4.4)
    try:
        result, first = run(ctx, the_intent)
        placed_before = stack.paper.stats()["algo_orders_placed"]
        again = protection.protect_step(
            result.model_dump(mode="json"), new_ticket(the_intent, entry_id=None).model_dump(mode="json"), ctx
        )
        assert stack.paper.stats()["algo_orders_placed"] == placed_before
        assert (again["sl_order_id"], again["tp_order_id"]) == (first["sl_order_id"], first["tp_order_id"])
        assert len(open_algos(ctx, symbol)) == 2
        assert len(stack.paper.orders(clientOrderId=client_order_id(iid))) == 1
    finally:
        flatten(ctx, symbol)


def test_a_rerun_that_gives_up_after_the_fill_was_published_still_protects_the_fill(stack: Stack) -> None:
    """The fill went out, then the step failed past its retries and concluded `failed`: publishing that publishes
    nothing and hands on the published fill, so protection still places the stop-loss and the take-profit."""
    ctx = context(stack.settings)
    symbol = "DOTUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "4.000")
    the_intent = intent(unique_id("gave-up"), symbol, "BUY", 60, stop_loss=3.8, take_profit=4.4)
    ticket = new_ticket(the_intent, entry_id=None)
    try:
        filled = place_entry(ticket, ctx)
        assert isinstance(filled, ExecutionResult) and filled.status is ResultStatus.FILLED, filled

        handed_on = publish(ticket.decide(ResultStatus.FAILED, "place_order failed: RuntimeError()"), ctx)
        event = protection.protect_step(handed_on.model_dump(mode="json"), ticket.model_dump(mode="json"), ctx)

        assert handed_on == filled
        assert [r["status"] for r in stack.results(the_intent.id)] == ["filled"]
        assert event["status"] == "placed", event
        assert len(open_algos(ctx, symbol)) == 2
    finally:
        flatten(ctx, symbol)


def test_levels_on_the_wrong_side_of_the_fill_are_refused_and_defaults_protect_the_position(stack: Stack) -> None:
    """A long's stop above its entry is not sent: the reason is published and the default stop is placed."""
    ctx = context(stack.settings, default_stop_loss_pct=2.0, default_take_profit_pct=4.0)
    symbol = "LTCUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "90.00")
    iid = unique_id("bad")
    try:
        result, event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=95.0, take_profit=99.0))
        assert event["status"] == "placed"
        assert "stop_loss 95.0 is not below the entry" in event["reason"]
        entry = Decimal(str(result.entry_price))
        assert Decimal(str(event["stop_loss"])) < entry
        assert Decimal(str(event["stop_loss"])) == pytest.approx(entry * Decimal("0.98"), abs=Decimal("0.02"))
        assert Decimal(str(event["take_profit"])) == Decimal("99")
        triggers = sorted(Decimal(a["triggerPrice"]) for a in open_algos(ctx, symbol))
        assert triggers == [Decimal(str(event["stop_loss"])), Decimal("99")]
    finally:
        flatten(ctx, symbol)


def test_a_trailing_stop_follows_a_favourable_move_and_closes_on_the_pull_back(stack: Stack) -> None:
    """The stop moves up behind the mark (next clientAlgoId, old one cancelled), then the pull-back closes it."""
    ctx = context(stack.settings)
    symbol = "ADAUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "0.90000")
    iid = unique_id("trail")
    try:
        _result, event = run(
            ctx, intent(iid, symbol, "BUY", 100, stop_loss=0.85, take_profit=1.2, trailing_stop_pct=2.0)
        )
        first_sl = event["sl_client_algo_id"]
        stack.paper.set_price(symbol, "1.00000")
        report = monitor.watch(ctx, symbols={symbol})
        assert report["trailed"] == [f"{symbol}:LONG"]
        stops = [a for a in open_algos(ctx, symbol) if a["orderType"] == "STOP_MARKET"]
        assert [Decimal(a["triggerPrice"]) for a in stops] == [Decimal("0.98")]
        assert stops[0]["clientAlgoId"] != first_sl and stops[0]["clientAlgoId"].endswith("-2")
        assert ctx.venue.get_algo_order(client_algo_id=first_sl).algoStatus == "CANCELED"

        stack.paper.set_price(symbol, "0.99000")  # a smaller move back: never loosened
        monitor.watch(ctx, symbols={symbol})
        stops = [a for a in open_algos(ctx, symbol) if a["orderType"] == "STOP_MARKET"]
        assert [Decimal(a["triggerPrice"]) for a in stops] == [Decimal("0.98")]

        stack.paper.set_price(symbol, "0.97500")  # the pull-back through the trailed stop
        monitor.watch(ctx, symbols={symbol})
        [exit_event] = exits(ctx, symbol)
        assert exit_event["reason"] == "trailing_stop"
        assert exit_event["realized_pnl"] > 0, "the trailed stop locked in a profit"
        assert open_algos(ctx, symbol) == []
    finally:
        flatten(ctx, symbol)


def test_protective_orders_deleted_behind_qexecs_back_are_placed_again_by_the_monitor(stack: Stack) -> None:
    """Someone cancels both orders at the venue; the next monitor pass re-places them with the next ids."""
    ctx = context(stack.settings)
    symbol = "TRXUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "0.25000")
    iid = unique_id("repair")
    try:
        _result, event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=0.24, take_profit=0.27))
        ctx.venue._client.futures_cancel_all_open_orders(symbol=symbol, conditional=True)
        assert open_algos(ctx, symbol) == []
        report = monitor.watch(ctx, symbols={symbol})
        assert report["repaired"] == [f"{symbol}:LONG"]
        algos = {a["orderType"]: a for a in open_algos(ctx, symbol)}
        assert sorted(algos) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
        assert algos["STOP_MARKET"]["clientAlgoId"] == event["sl_client_algo_id"][:-1] + "2"
        assert Decimal(algos["STOP_MARKET"]["triggerPrice"]) == Decimal("0.24")
        assert monitor.watch(ctx, symbols={symbol})["repaired"] == [], "nothing more to repair"
        assert len(open_algos(ctx, symbol)) == 2
    finally:
        flatten(ctx, symbol)


def test_protection_that_cannot_be_placed_closes_the_position_and_says_so(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """The venue refuses every algo order: PROTECTION_FAILED at CRITICAL, the position closed at market."""
    ctx = context(stack.settings, protection_retries=1)
    symbol = "ATOMUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "4.500")
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
        flatten(ctx, symbol)


def unprotected_series(stack: Stack, symbol: str) -> list[str]:
    """The `qexec_position_unprotected_seconds` samples of a symbol on the bridge's /metrics."""
    text = requests.get(stack.metrics_url, timeout=10).text
    return [
        line for line in text.splitlines() if line.startswith("qexec_position_unprotected_seconds{") and symbol in line
    ]


def test_a_blip_on_the_algo_endpoint_keeps_the_position_and_the_monitor_protects_it_after(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """503s on `POST /fapi/v1/algoOrder` for longer than the in-place retries: no market close (two fees and the
    spread for a blip), POSITION_UNPROTECTED at once and the unprotected time as a metric; once the venue takes
    orders again, the exit monitor places SL/TP and publishes a `repaired` event."""
    ctx = context(stack.settings, protection_retries=1, protection_grace_s=60.0)
    symbol = "FILUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "2.500")
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
        flatten(ctx, symbol)


def test_a_position_unprotected_past_the_grace_is_closed_and_says_why(stack: Stack) -> None:
    """The venue still cannot take SL/TP after QEXEC_PROTECTION_GRACE_S: the emergency action closes the position,
    and a `failed` protection event names the grace."""
    ctx = context(stack.settings, protection_retries=0, protection_grace_s=1.0)
    symbol = "APTUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "5.00000")
    iid = unique_id("grace")
    stack.paper.add_fault(kind="unavailable", endpoint="POST /fapi/v1/algoOrder", symbol=symbol, count=0)
    try:
        _result, event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=4.8, take_profit=5.4))
        assert event["status"] == "unprotected"
        time.sleep(1.2)
        monitor.watch(ctx, symbols={symbol})
        assert position_amt(ctx, symbol) == 0
        [failed] = [e for e in stack.protection_events(iid) if e["status"] == "failed"]
        assert failed["action"] == "closed" and "QEXEC_PROTECTION_GRACE_S" in failed["reason"]
    finally:
        stack.paper.admin("DELETE", "/paper/v1/faults")
        flatten(ctx, symbol)


def test_a_rival_close_position_stop_is_replaced_not_answered_with_a_market_close(stack: Stack) -> None:
    """A closePosition STOP_MARKET placed by hand on the symbol makes the venue answer -4130 to qexec's own: qexec
    cancels the rival and places its stop-loss; the position stays open and protected."""
    ctx = context(stack.settings, protection_retries=1)
    symbol = "OPUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "0.7000000")
    client = stack.paper.client()
    client.futures_create_order(
        symbol=symbol, side="SELL", type="STOP_MARKET", stopPrice="0.5000000", closePosition="true"
    )
    iid = unique_id("rival")
    try:
        _result, event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=0.65, take_profit=0.8))
        assert event["status"] == "placed", event
        assert position_amt(ctx, symbol) > 0
        stops = [a for a in open_algos(ctx, symbol) if a["orderType"] == "STOP_MARKET"]
        assert [a["clientAlgoId"] for a in stops] == [event["sl_client_algo_id"]]
    finally:
        flatten(ctx, symbol)


def test_a_stop_out_then_an_opposite_entry_reports_the_stop_and_only_the_longs_fills(stack: Stack) -> None:
    """A long stopped out, and a SELL entry on the symbol a moment later: the long's exit says stop_loss, with the
    long's quantity and the stop's own order - not the new short's fill (attribution by order, not by time)."""
    ctx = context(stack.settings)
    symbol = "ADAUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "0.90000")
    try:
        opened = unique_id("slx")
        long_result, long_event = run(ctx, intent(opened, symbol, "BUY", 100, stop_loss=0.85, take_profit=1))
        stack.paper.set_price(symbol, "0.84000")  # through the stop
        short_result, _ = run(ctx, intent(unique_id("after"), symbol, "SELL", 100, stop_loss=0.9, take_profit=0.8))
        assert short_result.status.value == "filled"
        monitor.watch(ctx, symbols={symbol})
        [long_exit] = [e for e in exits(ctx, symbol) if e["intent_ids"] == [opened]]
        stop = ctx.venue.get_algo_order(client_algo_id=long_event["sl_client_algo_id"])
        assert long_exit["reason"] == "stop_loss"
        assert long_exit["quantity"] == pytest.approx(long_result.quantity)
        assert long_exit["order_ids"] == [stop.actualOrderId]
        assert short_result.order_id not in long_exit["order_ids"]
    finally:
        flatten(ctx, symbol)


def test_a_position_closed_by_halt_flatten_exits_with_reason_halt(stack: Stack) -> None:
    """`qexec halt --flatten` closes a tracked long: its exit says `halt`, not `signal`."""
    ctx = context(stack.settings)
    symbol = "ETCUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "17.000")
    try:
        opened = unique_id("halted")
        result, _event = run(ctx, intent(opened, symbol, "BUY", 100, stop_loss=16, take_profit=18))
        for position in ctx.venue.positions(symbol):
            if position.positionAmt:
                halt._close(ctx.venue, position)  # what `halt --flatten` does, on this symbol alone
        monitor.watch(ctx, symbols={symbol})
        [exit_event] = [e for e in exits(ctx, symbol) if e["intent_ids"] == [opened]]
        assert exit_event["reason"] == "halt"
        assert exit_event["quantity"] == pytest.approx(result.quantity)
    finally:
        flatten(ctx, symbol)


def test_a_position_held_longer_than_seven_days_still_gets_its_exit_price(stack: Stack) -> None:
    """userTrades answers at most 7 days from a startTime: a position opened 8 days ago (its record says so) and
    closed by hand now is reported with the closing fill's price and quantity, read in 7-day windows."""
    ctx = context(stack.settings)
    symbol = "DOGEUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "0.320000")
    iid = unique_id("old")
    try:
        result, _event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=0.3, take_profit=0.35))
        tracked = store.load(ctx.redis, symbol, "LONG")
        assert tracked is not None
        tracked.opened_ms -= 8 * 24 * 3600 * 1000
        tracked.as_of_ms = None  # a record from before qexec kept the state's time: walked from the open
        store.save(ctx.redis, tracked)
        closed = stack.paper.client().futures_create_order(
            symbol=symbol,
            side="SELL",
            type="MARKET",
            quantity=str(result.quantity),
            reduceOnly="true",
            newOrderRespType="RESULT",
        )
        monitor.watch(ctx, symbols={symbol})
        [exit_event] = [e for e in exits(ctx, symbol) if e["intent_ids"] == [iid]]
        assert exit_event["order_ids"] == [closed["orderId"]]
        assert exit_event["exit_price"] == pytest.approx(float(closed["avgPrice"]))
        assert exit_event["quantity"] == pytest.approx(result.quantity)
    finally:
        flatten(ctx, symbol)
