"""The exit monitor (qexec/positions/monitor.py): adopting positions qexec does not know, repairing and trailing
protection, and the exit events of positions closed by a stop, a target, a hand or the grace running out."""

from __future__ import annotations

import sys
import time
from decimal import Decimal

import pytest
from position_helpers import FlatSymbol, context, exits, intent, open_algos, position_amt, run, wait_exits
from stack_fixtures import Stack, stop_process, unique_id

from qexec import constants
from qexec.positions import monitor, store

pytestmark = pytest.mark.slow


def test_a_venue_position_qexec_does_not_know_is_adopted_and_protected(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """A position opened by hand is adopted (POSITION_ADOPTED) and gets the default SL/TP."""
    ctx = context(stack.settings, default_stop_loss_pct=2.0, default_take_profit_pct=4.0)
    symbol = "ETCUSDT"
    flat_symbol(ctx, symbol, "17.000")
    ctx.venue._client.futures_create_order(symbol=symbol, side="BUY", type="MARKET", quantity="5")
    report = monitor.watch(ctx, symbols={symbol})
    assert report["adopted"] == [f"{symbol}:LONG"]
    triggers = sorted(Decimal(a["triggerPrice"]) for a in open_algos(ctx, symbol))
    assert len(triggers) == 2
    assert triggers[0] == pytest.approx(Decimal("17") * Decimal("0.98"), abs=Decimal("0.02"))
    assert triggers[1] == pytest.approx(Decimal("17") * Decimal("1.04"), abs=Decimal("0.02"))
    assert monitor.watch(ctx, symbols={symbol}) == {k: [] for k in report}


def test_a_restart_with_positions_and_orders_at_the_venue_duplicates_nothing(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """Records intact or lost: the monitor keeps the venue's SL/TP (same algoIds), places no new order."""
    ctx = context(stack.settings)
    symbol = "INJUSDT"
    flat_symbol(ctx, symbol, "12.000000")
    _result, event = run(ctx, intent(unique_id("restart"), symbol, "BUY", 60, stop_loss=11.5, take_profit=13))
    ids = sorted([event["sl_order_id"], event["tp_order_id"]])
    placed = stack.paper.stats()["algo_orders_placed"]

    fresh = context(stack.settings)  # a new process: new venue client, same Redis
    assert not any(monitor.watch(fresh, symbols={symbol}).values()), "nothing to adopt, repair or close"

    # Redis lost qexec's records: the position is adopted with the orders it already has.
    fresh.redis.delete(constants.POSITION_KEY.format(symbol=symbol, direction="LONG"))
    fresh.redis.srem(constants.POSITIONS_KEY, f"{symbol}:LONG")
    report = monitor.watch(fresh, symbols={symbol})
    assert report["adopted"] == [f"{symbol}:LONG"]
    assert sorted(a["algoId"] for a in open_algos(ctx, symbol)) == ids
    assert stack.paper.stats()["algo_orders_placed"] == placed
    tracked = store.load(fresh.redis, fresh.account, symbol, "LONG")
    assert tracked is not None and tracked.stop_loss == Decimal("11.5") and tracked.take_profit == Decimal("13")


def test_a_position_closed_by_hand_is_closed_in_qexecs_records_with_an_exit_event(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """Tracked but gone at the venue: exit event `manual_or_liquidation`, protective orders cancelled."""
    ctx = context(stack.settings)
    symbol = "LINKUSDT"
    flat_symbol(ctx, symbol)
    iid = unique_id("manual")
    result, _ = run(ctx, intent(iid, symbol, "SELL", 60))
    ctx.venue._client.futures_create_order(
        symbol=symbol, side="BUY", type="MARKET", quantity=str(result.quantity), reduceOnly="true"
    )
    monitor.watch(ctx, symbols={symbol})
    [exit_event] = exits(ctx, symbol)
    assert (exit_event["reason"], exit_event["intent_ids"]) == ("manual_or_liquidation", [iid])
    assert open_algos(ctx, symbol) == []
    assert store.load(ctx.redis, ctx.account, symbol, "SHORT") is None


def test_beat_runs_the_exit_monitor_that_repairs_protection(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """A real `celery beat` schedules qexec.watch_positions; the worker re-places deleted SL/TP."""
    ctx = context(stack.settings)
    symbol = "NEARUSDT"
    flat_symbol(ctx, symbol)
    try:
        run(ctx, intent(unique_id("beat"), symbol, "BUY", 60))
        ctx.venue._client.futures_cancel_all_open_orders(symbol=symbol, conditional=True)
        stack.spawn(
            "beat-positions",
            [sys.executable, "-m", "celery", "-A", "qexec", "beat", "--loglevel", "INFO"],
            ready="beat: Starting",
            env={**stack.env, "QEXEC_EXIT_MONITOR_EVERY_S": "1"},
        )
        deadline = time.monotonic() + 20
        while len(open_algos(ctx, symbol)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(open_algos(ctx, symbol)) == 2
        assert "PROTECTION_REPAIRED" in stack.log("worker")
    finally:
        if "beat-positions" in stack.processes:
            stop_process(stack.processes.pop("beat-positions"))


def test_the_mark_through_the_stop_closes_the_position_reports_the_exit_and_cancels_the_target(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """A stop hit: the exit event carries the venue's realised PnL and reason stop_loss; the TP is cancelled."""
    ctx = context(stack.settings)
    symbol = "XRPUSDT"
    flat_symbol(ctx, symbol, "2.2000")
    iid = unique_id("sl")
    result, event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=2.1, take_profit=2.4))
    assert result.status.value == "filled" and event["status"] == "placed"

    stack.paper.set_price(symbol, "2.0900")  # through the stop: the venue closes the position now
    assert position_amt(ctx, symbol) == 0
    report = monitor.watch(ctx, symbols={symbol})

    # This pass closes it, unless the worker did from the stop's fill event (tests/test_fill_events.py) first.
    assert report["closed"] + report["busy"] in ([f"{symbol}:LONG"], [])
    [exit_event] = wait_exits(ctx, symbol)
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


def test_the_mark_through_the_target_closes_a_short_and_cancels_the_stop(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """A short's take-profit hit: exit reason take_profit with a profit; its stop-loss is cancelled."""
    ctx = context(stack.settings)
    symbol = "DOGEUSDT"
    flat_symbol(ctx, symbol, "0.320000")
    iid = unique_id("tp")
    result, event = run(ctx, intent(iid, symbol, "SELL", 100, stop_loss=0.34, take_profit=0.30))
    assert event["status"] == "placed" and position_amt(ctx, symbol) < 0
    stack.paper.set_price(symbol, "0.299000")
    monitor.watch(ctx, symbols={symbol})
    [exit_event] = wait_exits(ctx, symbol)
    assert (exit_event["reason"], exit_event["side"]) == ("take_profit", "SHORT")
    assert exit_event["realized_pnl"] > 0
    assert exit_event["exit_price"] < result.entry_price  # type: ignore[operator]
    assert ctx.venue.get_algo_order(client_algo_id=event["sl_client_algo_id"]).algoStatus == "CANCELED"


def test_a_trailing_stop_follows_a_favourable_move_and_closes_on_the_pull_back(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """The stop moves up behind the mark (next clientAlgoId, old one cancelled), then the pull-back closes it."""
    ctx = context(stack.settings)
    symbol = "ADAUSDT"
    flat_symbol(ctx, symbol, "0.90000")
    iid = unique_id("trail")
    _result, event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=0.85, take_profit=1.2, trailing_stop_pct=2.0))
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
    [exit_event] = wait_exits(ctx, symbol)
    assert exit_event["reason"] == "trailing_stop"
    assert exit_event["realized_pnl"] > 0, "the trailed stop locked in a profit"
    assert open_algos(ctx, symbol) == []


def test_protective_orders_deleted_behind_qexecs_back_are_placed_again_by_the_monitor(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """Someone cancels both orders at the venue; the next monitor pass re-places them with the next ids."""
    ctx = context(stack.settings)
    symbol = "TRXUSDT"
    flat_symbol(ctx, symbol, "0.25000")
    iid = unique_id("repair")
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


def test_a_position_unprotected_past_the_grace_is_closed_and_says_why(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """The venue still cannot take SL/TP after QEXEC_PROTECTION_GRACE_S: the emergency action closes the position,
    and a `failed` protection event names the grace."""
    ctx = context(stack.settings, protection_retries=0, protection_grace_s=1.0)
    symbol = "APTUSDT"
    flat_symbol(ctx, symbol, "5.00000")
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


def test_a_stop_out_then_an_opposite_entry_reports_the_stop_and_only_the_longs_fills(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """A long stopped out, and a SELL entry on the symbol a moment later: the long's exit says stop_loss, with the
    long's quantity and the stop's own order - not the new short's fill (attribution by order, not by time)."""
    ctx = context(stack.settings)
    symbol = "ADAUSDT"
    flat_symbol(ctx, symbol, "0.90000")
    opened = unique_id("slx")
    long_result, long_event = run(ctx, intent(opened, symbol, "BUY", 100, stop_loss=0.85, take_profit=1))
    stack.paper.set_price(symbol, "0.84000")  # through the stop
    short_result, _ = run(ctx, intent(unique_id("after"), symbol, "SELL", 100, stop_loss=0.9, take_profit=0.8))
    assert short_result.status.value == "filled"
    monitor.watch(ctx, symbols={symbol})
    [long_exit] = [e for e in wait_exits(ctx, symbol) if e["intent_ids"] == [opened]]
    stop = ctx.venue.get_algo_order(client_algo_id=long_event["sl_client_algo_id"])
    assert long_exit["reason"] == "stop_loss"
    assert long_exit["quantity"] == pytest.approx(long_result.quantity)
    assert long_exit["order_ids"] == [stop.actualOrderId]
    assert short_result.order_id not in long_exit["order_ids"]


def test_a_position_held_longer_than_seven_days_still_gets_its_exit_price(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """userTrades answers at most 7 days from a startTime: a position opened 8 days ago (its record says so) and
    closed by hand now is reported with the closing fill's price and quantity, read in 7-day windows."""
    ctx = context(stack.settings)
    symbol = "DOGEUSDT"
    flat_symbol(ctx, symbol, "0.320000")
    iid = unique_id("old")
    result, _event = run(ctx, intent(iid, symbol, "BUY", 100, stop_loss=0.3, take_profit=0.35))
    tracked = store.load(ctx.redis, ctx.account, symbol, "LONG")
    assert tracked is not None
    tracked.opened_ms -= 8 * 24 * 3600 * 1000
    tracked.as_of_ms = None  # a record from before qexec kept the state's time: walked from the open
    store.save(ctx.redis, ctx.account, tracked)
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
