"""Acting on the venue's order events (qexec/pipeline/fill_events.py) through the real worker: a late fill's result
and protection go out from its ORDER_TRADE_UPDATE, once, whatever confirm_fill does; a triggered stop reports the
exit and cancels the take-profit without beat."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from position_helpers import FlatSymbol, context, exits, open_algos
from stack_fixtures import Stack, add_fault, order_queries, seed_intent, unique_id, wait_for_line

from qexec.models import client_order_id
from qexec.venue import feed

pytestmark = pytest.mark.slow


@pytest.fixture
def answers_new(stack: Stack) -> Iterator[None]:
    """The session stack's exchange answers RESULT at once (NEW, while a fill is delayed), for the test; its worker's
    user-data stream is up and vouches for what follows."""
    wait_for_line(stack.logs_dir / "worker.log", "FEED_LIVE stream=user", stack.processes["worker"], 30)
    time.sleep(feed.VOUCH_MARGIN_S)
    config = stack.paper.admin("GET", "/paper/v1/config")
    stack.paper.admin("POST", "/paper/v1/config", json={"result_wait_ms": 0})
    try:
        yield
    finally:
        stack.paper.admin("POST", "/paper/v1/config", json={"result_wait_ms": config["result_wait_ms"]})


def late_intent(stack: Stack, symbol: str, delay_ms: int, **change: Any) -> str:
    """Inject a BUY whose fill the venue delays by `delay_ms` (its RESULT answer says NEW); its intent id."""
    iid = unique_id("event")
    add_fault(
        stack,
        endpoint="POST /fapi/v1/order",
        kind="fill_delay",
        delay_ms=delay_ms,
        client_order_id=client_order_id(iid),
    )
    stack.inject(seed_intent(iid, symbol=symbol, position_size_usd=100.0, **change))
    return iid


def lines_of(stack: Stack, iid: str, *words: str) -> list[str]:
    """The worker's log lines for an intent that contain each of `words`."""
    return [line for line in stack.log("worker").splitlines() if iid in line and all(w in line for w in words)]


def wait_protected(stack: Stack, iid: str, timeout_s: float = 10) -> list[dict[str, Any]]:
    """The intent's protection events, once there is one."""
    deadline = time.monotonic() + timeout_s
    while not (found := stack.protection_events(iid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_a_late_fill_is_published_from_its_fill_event_and_confirm_fill_asks_the_venue_nothing(
    stack: Stack, answers_new: None, flat_symbol: FlatSymbol
) -> None:
    """RESULT answers NEW, the fill comes 600 ms later: the result goes out from the fill's ORDER_TRADE_UPDATE, once;
    confirm_fill, waking after it, finds it out, sends no order query and leaves publish and protect out."""
    symbol = "ARBUSDT"
    ctx = context(stack.settings)
    flat_symbol(ctx, symbol, "0.400000")
    iid = late_intent(stack, symbol, 600, entry_price=0.4, stop_loss=0.38, take_profit=0.43)
    result = stack.wait_result(iid)
    queries_at_result = order_queries(stack.paper)
    [event] = wait_protected(stack, iid)
    time.sleep(1.5)  # confirm_fill's next countdown (at most QEXEC_POLL_MAX_S) has run out

    assert result["status"] == "filled" and result["entry_price"] > 0, result
    assert len(stack.results(iid)) == 1
    assert lines_of(stack, iid, "ORDER_RESPONSE status=NEW"), "the venue first answered NEW"
    assert lines_of(stack, iid, "FILL_CONFIRMED status=FILLED", "source=event"), "published from the fill event"
    assert len(lines_of(stack, iid, "EXECUTION_PUBLISHED")) == 1, "publish_execution did not run after the event"
    assert order_queries(stack.paper) == queries_at_result, "no GET /fapi/v1/order after the fill"
    assert event["status"] == "placed"
    assert len(lines_of(stack, iid, "PROTECTION_PUBLISHED")) == 1, "protect_position did not run after the event"
    assert sorted(a["orderType"] for a in open_algos(ctx, symbol)) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]


# From place_order's answer to confirm_fill's first look is ~10 ms: fills in that window are final when place_order
# registers the order (the registration itself hands it to the event's pool) while confirm_fill starts; later ones
# land between confirm_fill's countdowns.
@pytest.mark.parametrize("delay_ms", [1, 2, 4, 6, 9, 14, 25, 60])
def test_the_fill_event_and_confirm_fill_racing_publish_one_result_and_protect_once(
    stack: Stack, answers_new: None, flat_symbol: FlatSymbol, delay_ms: int
) -> None:
    """Fills that land as place_order returns, while the chain's confirm_fill starts reading the stream: both may see
    the order final and publish; one result goes out, one protection event, one stop-loss and one take-profit."""
    symbol = "OPUSDT"
    ctx = context(stack.settings)
    flat_symbol(ctx, symbol, "0.7000000")
    placed_before = stack.paper.stats()["algo_orders_placed"]
    iid = late_intent(stack, symbol, delay_ms, entry_price=0.7, stop_loss=0.68, take_profit=0.73)
    result = stack.wait_result(iid)
    events = wait_protected(stack, iid)
    time.sleep(1.0)  # whatever of the chain still runs has run

    assert result["status"] == "filled", result
    assert lines_of(stack, iid, "ORDER_RESPONSE status=NEW"), "the venue first answered NEW"
    assert len(stack.results(iid)) == 1
    assert [e["status"] for e in stack.protection_events(iid)] == ["placed"] == [e["status"] for e in events]
    assert sorted(a["orderType"] for a in open_algos(ctx, symbol)) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    assert stack.paper.stats()["algo_orders_placed"] - placed_before == 2
    written = [line for line in lines_of(stack, iid, "EXECUTION_PUBLISHED") if "already=true" not in line]
    assert len(written) == 1
    assert lines_of(stack, iid, "FILL_CONFIRMED", "source=event"), "the fill event acted on the order too"


def test_a_triggered_stop_reports_the_exit_and_cancels_the_target_without_beat(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """The mark through the stop-loss: from the venue's events the worker reports the exit (stop_loss) and cancels
    the take-profit; no beat runs, so no exit-monitor pass did it."""
    assert not any("beat" in name and proc.poll() is None for name, proc in stack.processes.items())
    symbol = "UNIUSDT"
    ctx = context(stack.settings)
    flat_symbol(ctx, symbol, "8.0000")
    iid = unique_id("exit")
    stack.inject(
        seed_intent(iid, symbol=symbol, position_size_usd=100.0, entry_price=8.0, stop_loss=7.8, take_profit=8.4)
    )
    assert stack.wait_result(iid)["status"] == "filled"
    [placed] = wait_protected(stack, iid)
    assert placed["status"] == "placed"

    stack.paper.set_price(symbol, "7.7000")  # through the stop: the venue closes the position now
    deadline = time.monotonic() + 10
    while not (found := [e for e in exits(ctx, symbol) if iid in e["intent_ids"]]) and time.monotonic() < deadline:
        time.sleep(0.05)

    [exit_event] = found
    assert (exit_event["reason"], exit_event["intent_ids"]) == ("stop_loss", [iid])
    assert exit_event["realized_pnl"] < 0
    assert ctx.venue.get_algo_order(client_algo_id=placed["tp_client_algo_id"]).algoStatus == "CANCELED"
    assert open_algos(ctx, symbol) == []
    assert any("EXIT_EVENT" in line and f"closed={symbol}:LONG" in line for line in stack.log("worker").splitlines())
