"""Intents meeting open positions (each policy), hedge and one-way accounts, reconciliation and adoption."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from paper_fixtures import PaperExchange
from position_helpers import context, exits, flatten, intent, open_algos, position_amt, run
from stack_fixtures import Stack, stop_process, unique_id, venue_orders

from qexec import constants
from qexec.context import Context
from qexec.models import ExecutionResult, Ticket, client_order_id
from qexec.ops import halt
from qexec.pipeline.admission import new_ticket
from qexec.positions import entries, monitor, protection, store
from qexec.venue.rules import plain

pytestmark = pytest.mark.slow


def policy_context(stack: Stack, **change: str) -> Context:
    """A context with the default policies unless `change` says otherwise."""
    defaults = {"same_side_policy": "update_protection", "opposite_side_policy": "reject"}
    return context(stack.settings, **(defaults | change))


def test_a_same_side_intent_by_default_updates_the_protection_and_places_no_order(stack: Stack) -> None:
    """update_protection: result `protection_updated`, no entry order, SL/TP re-placed at the new levels."""
    ctx = policy_context(stack)
    symbol = "BCHUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "450.00")
    first, second = unique_id("upd1"), unique_id("upd2")
    try:
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
    finally:
        flatten(ctx, symbol)


def test_a_same_side_intent_with_levels_through_the_mark_is_rejected_and_keeps_the_old_protection(
    stack: Stack,
) -> None:
    """update_protection with a stop above a long's mark: `rejected` with the reason; the old SL/TP stay."""
    ctx = policy_context(stack)
    symbol = "BCHUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "450.00")
    try:
        run(ctx, intent(unique_id("keep1"), symbol, "BUY", 100, stop_loss=430, take_profit=480))
        result, event = run(ctx, intent(unique_id("keep2"), symbol, "BUY", 100, stop_loss=460, take_profit=480))
        assert result.status.value == "rejected" and "stop_loss 460" in (result.reason or "")
        assert event == {}
        triggers = {a["orderType"]: Decimal(a["triggerPrice"]) for a in open_algos(ctx, symbol)}
        assert triggers == {"STOP_MARKET": Decimal(430), "TAKE_PROFIT_MARKET": Decimal(480)}
    finally:
        flatten(ctx, symbol)


def test_a_same_side_intent_is_skipped_with_its_reason_when_the_policy_says_skip(stack: Stack) -> None:
    """skip: result `skipped` with the reason, no order, the protection unchanged."""
    ctx = policy_context(stack, same_side_policy="skip")
    symbol = "UNIUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "8.0000")
    second = unique_id("skip2")
    try:
        _r, first_event = run(ctx, intent(unique_id("skip1"), symbol, "BUY", 60, stop_loss=7.5, take_profit=9))
        result, event = run(ctx, intent(second, symbol, "BUY", 60, stop_loss=7.7, take_profit=8.5))
        assert result.status.value == "skipped"
        assert "QEXEC_SAME_SIDE_POLICY=skip" in (result.reason or "")
        assert event == {}
        assert venue_orders(stack, second) == []
        ids = sorted(a["algoId"] for a in open_algos(ctx, symbol))
        assert ids == sorted([first_event["sl_order_id"], first_event["tp_order_id"]])
    finally:
        flatten(ctx, symbol)


def test_a_same_side_intent_scales_in_when_the_policy_says_add(stack: Stack) -> None:
    """add: a second fill grows the position; still exactly one SL and one TP, covering all of it."""
    ctx = policy_context(stack, same_side_policy="add")
    symbol = "FILUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "2.500")
    try:
        first, _ = run(ctx, intent(unique_id("add1"), symbol, "BUY", 60, stop_loss=2.3, take_profit=2.8))
        second, event = run(ctx, intent(unique_id("add2"), symbol, "BUY", 60, stop_loss=2.35, take_profit=2.75))
        assert second.status.value == "filled"
        assert position_amt(ctx, symbol) == Decimal(str(first.quantity)) + Decimal(str(second.quantity))
        algos = open_algos(ctx, symbol)
        assert sorted(a["orderType"] for a in algos) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
        assert all(a["closePosition"] for a in algos)
        assert {Decimal(a["triggerPrice"]) for a in algos} == {Decimal("2.35"), Decimal("2.75")}
        tracked = store.load(ctx.redis, symbol, "LONG")
        assert tracked is not None and len(tracked.intent_ids) == 2
        assert event["status"] == "placed"
    finally:
        flatten(ctx, symbol)


def test_an_opposite_intent_is_rejected_by_default_and_the_position_stays_protected(stack: Stack) -> None:
    """reject (the default): `rejected` with the reason, no order, the long and its SL/TP untouched."""
    ctx = policy_context(stack)
    symbol = "APTUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "5.00000")
    sell = unique_id("rej")
    try:
        run(ctx, intent(unique_id("long"), symbol, "BUY", 60, stop_loss=4.7, take_profit=5.5))
        amt = position_amt(ctx, symbol)
        result, event = run(ctx, intent(sell, symbol, "SELL", 60))
        assert result.status.value == "rejected"
        assert "QEXEC_OPPOSITE_SIDE_POLICY=reject" in (result.reason or "")
        assert event == {} and venue_orders(stack, sell) == []
        assert position_amt(ctx, symbol) == amt and len(open_algos(ctx, symbol)) == 2
    finally:
        flatten(ctx, symbol)


def test_an_opposite_intent_closes_the_position_when_the_policy_says_close(stack: Stack) -> None:
    """close: the entry order is a reduce-only close of the whole long; the exit is reported, SL/TP cancelled."""
    ctx = policy_context(stack, opposite_side_policy="close")
    symbol = "ARBUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "0.400000")
    opener, closer = unique_id("open"), unique_id("close")
    try:
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
    finally:
        flatten(ctx, symbol)


def test_an_opposite_intent_reverses_the_position_when_the_policy_says_reverse(stack: Stack) -> None:
    """reverse: a closing order for the long, then the short entry, protected as a short."""
    ctx = policy_context(stack, opposite_side_policy="reverse")
    symbol = "OPUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "0.7000000")
    try:
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
    finally:
        flatten(ctx, symbol)


def test_a_reverse_whose_entry_is_refused_says_the_position_was_closed(stack: Stack) -> None:
    """reverse closes the long, then the venue refuses the short (margin): the one result says both, and the exit
    monitor reports the long's exit."""
    ctx = policy_context(stack, opposite_side_policy="reverse")
    symbol = "SUIUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "3.000000")
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
        flatten(ctx, symbol)


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


@contextlib.contextmanager
def first_entry_at_the_venue(stack: Stack, symbol: str) -> Iterator[tuple[Context, str, dict[str, ExecutionResult]]]:
    """A first BUY on `symbol` whose order the venue answers 800 ms late, run in a thread, on its way when this
    yields (a context for the test, its intent id, and where its result lands); the symbol is flattened after."""
    first_ctx, ctx = policy_context(stack), policy_context(stack)
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "2.5000")
    first = unique_id("wait1")
    stack.paper.add_fault(kind="latency", delay_ms=800, client_order_id=client_order_id(first))
    results: dict[str, ExecutionResult] = {}

    def place_first() -> None:
        results["first"], _ = run(first_ctx, intent(first, symbol, "BUY", 60, stop_loss=2.3, take_profit=2.8))

    thread = threading.Thread(target=place_first)
    try:
        thread.start()
        state = constants.ORDER_KEY.format(intent_id=first)
        deadline = time.monotonic() + 10
        while ctx.redis.hget(state, "phase") != "submitting" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ctx.redis.hget(state, "phase") == "submitting", "the first order is on its way to the venue"
        yield ctx, first, results
        thread.join(30)
        assert results["first"].status.value == "filled", results["first"]
    finally:
        thread.join(30)
        flatten(ctx, symbol)


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


def test_a_venue_position_qexec_does_not_know_is_adopted_and_protected(stack: Stack) -> None:
    """A position opened by hand is adopted (POSITION_ADOPTED) and gets the default SL/TP."""
    ctx = context(stack.settings, default_stop_loss_pct=2.0, default_take_profit_pct=4.0)
    symbol = "ETCUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "17.000")
    try:
        ctx.venue._client.futures_create_order(symbol=symbol, side="BUY", type="MARKET", quantity="5")
        report = monitor.watch(ctx, symbols={symbol})
        assert report["adopted"] == [f"{symbol}:LONG"]
        triggers = sorted(Decimal(a["triggerPrice"]) for a in open_algos(ctx, symbol))
        assert len(triggers) == 2
        assert triggers[0] == pytest.approx(Decimal("17") * Decimal("0.98"), abs=Decimal("0.02"))
        assert triggers[1] == pytest.approx(Decimal("17") * Decimal("1.04"), abs=Decimal("0.02"))
        assert monitor.watch(ctx, symbols={symbol}) == {k: [] for k in report}
    finally:
        flatten(ctx, symbol)


def test_a_restart_with_positions_and_orders_at_the_venue_duplicates_nothing(stack: Stack) -> None:
    """Records intact or lost: the monitor keeps the venue's SL/TP (same algoIds), places no new order."""
    ctx = context(stack.settings)
    symbol = "INJUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "12.000000")
    try:
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
        tracked = store.load(fresh.redis, symbol, "LONG")
        assert tracked is not None and tracked.stop_loss == Decimal("11.5") and tracked.take_profit == Decimal("13")
    finally:
        flatten(ctx, symbol)


def test_a_position_closed_by_hand_is_closed_in_qexecs_records_with_an_exit_event(stack: Stack) -> None:
    """Tracked but gone at the venue: exit event `manual_or_liquidation`, protective orders cancelled."""
    ctx = context(stack.settings)
    symbol = "LINKUSDT"
    flatten(ctx, symbol)
    iid = unique_id("manual")
    try:
        result, _ = run(ctx, intent(iid, symbol, "SELL", 60))
        ctx.venue._client.futures_create_order(
            symbol=symbol, side="BUY", type="MARKET", quantity=str(result.quantity), reduceOnly="true"
        )
        monitor.watch(ctx, symbols={symbol})
        [exit_event] = exits(ctx, symbol)
        assert (exit_event["reason"], exit_event["intent_ids"]) == ("manual_or_liquidation", [iid])
        assert open_algos(ctx, symbol) == []
        assert store.load(ctx.redis, symbol, "SHORT") is None
    finally:
        flatten(ctx, symbol)


def test_beat_runs_the_exit_monitor_that_repairs_protection(stack: Stack) -> None:
    """A real `celery beat` schedules qexec.watch_positions; the worker re-places deleted SL/TP."""
    ctx = context(stack.settings)
    symbol = "NEARUSDT"
    flatten(ctx, symbol)
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
        flatten(ctx, symbol)


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


def test_the_hedge_policy_on_a_one_way_account_rejects_and_says_why(stack: Stack) -> None:
    """A one-way account cannot hold both sides: under `hedge` an opposite intent is rejected with the reason."""
    ctx = policy_context(stack, opposite_side_policy="hedge")
    symbol = "TRXUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "0.25000")
    try:
        run(ctx, intent(unique_id("ow"), symbol, "BUY", 60, stop_loss=0.24, take_profit=0.27))
        result, _ = run(ctx, intent(unique_id("ow2"), symbol, "SELL", 60))
        assert result.status.value == "rejected"
        assert "hedge-mode account, and this one is one-way" in (result.reason or "")
    finally:
        flatten(ctx, symbol)


def test_an_older_intents_late_protection_never_rolls_back_a_newer_ones_levels(stack: Stack) -> None:
    """X opens a long (SL 430 / TP 480), Y updates its protection (440 / 470); X's protection step then runs again
    (a redelivery, or a frozen bridge's re-dispatch): the venue keeps Y's levels, X's older ones do not come back."""
    ctx = policy_context(stack)
    symbol = "BCHUSDT"
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "450.00")
    x = intent(unique_id("older"), symbol, "BUY", 100, stop_loss=430, take_profit=480)
    x_ticket = new_ticket(x, entry_id=None)
    try:
        x_result, _ = run(ctx, x, ticket=x_ticket)
        updated, _ = run(ctx, intent(unique_id("newer"), symbol, "BUY", 100, stop_loss=440, take_profit=470))
        assert updated.status.value == "protection_updated"
        protection.protect_step(x_result.model_dump(mode="json"), x_ticket.model_dump(mode="json"), ctx)
        triggers = {a["orderType"]: Decimal(a["triggerPrice"]) for a in open_algos(ctx, symbol)}
        assert triggers == {"STOP_MARKET": Decimal(440), "TAKE_PROFIT_MARKET": Decimal(470)}
    finally:
        flatten(ctx, symbol)
