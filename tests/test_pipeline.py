"""The execution pipeline end to end: intent stream → bridge → Celery chain → paper venue → result stream.

Every test here runs a real Redis, a real Celery worker and bridge (subprocesses) and the paper exchange
over HTTP through python-binance.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from position_helpers import context
from private_stack import private_stack
from stack_fixtures import ROOT, Stack, unique_id, wait_for_line

from qexec import constants, redis_streams
from qexec.models import ExecutionResult, Intent, Ticket, client_order_id
from qexec.pipeline import admission, place
from qexec.pipeline.bridge import Bridge
from qexec.venue import feed
from qexec.worker.tasks import start_chain

pytestmark = pytest.mark.slow


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def seed_intent(intent_id: str, **change: Any) -> dict[str, Any]:
    """The seed producer's shape, fresh."""
    return {
        "intent_id": intent_id,
        "symbol": "AVAXUSDT",
        "side": "BUY",
        "position_size_usd": 100.0,
        "leverage": 2.0,
        "entry_price": 12.77,
        "stop_loss": 12.45075,
        "take_profit": 13.1531,
        "confidence": 0.72,
        "timestamp": now_iso(),
    } | change


def venue_orders(stack: Stack, intent_id: str) -> list[dict[str, Any]]:
    """Every order the paper venue ever accepted under this intent's client order id."""
    answer = stack.paper.admin("GET", f"/paper/v1/orders?clientOrderId={client_order_id(intent_id)}")
    return list(answer)


def add_fault(stack: Stack, **spec: Any) -> None:
    """Script one venue fault (see the paper exchange's admin API)."""
    stack.paper.admin("POST", "/paper/v1/faults", json=spec)


def assert_result_matches_venue(stack: Stack, result: dict[str, Any]) -> dict[str, Any]:
    """A fill result's price and quantity are the venue's own avgPrice and executedQty for that order."""
    order = stack.paper.client().futures_get_order(symbol=result["symbol"], orderId=result["order_id"])
    assert Decimal(str(result["entry_price"])) == Decimal(order["avgPrice"])
    assert Decimal(str(result["quantity"])) == Decimal(order["executedQty"])
    assert result["entry_price"] > 0 and result["quantity"] > 0
    return dict(order)


def test_seed_intent_as_json_payload_is_filled_at_the_venues_own_price(stack: Stack) -> None:
    """The seed's intent as a JSON field ends `filled` with the venue's avgPrice and executedQty."""
    iid = unique_id("seed")
    stack.inject(seed_intent(iid))
    result = stack.wait_result(iid)
    assert result["status"] == "filled", result
    order = assert_result_matches_venue(stack, result)
    assert order["status"] == "FILLED"
    assert result["client_order_id"] == client_order_id(iid) == order["clientOrderId"]
    assert result["mode"] == "paper"


def test_seed_intent_as_flat_fields_is_filled(stack: Stack) -> None:
    """The same shape as flat string fields (no intent id: the entry id is used) is filled too."""
    intent = seed_intent("unused")
    del intent["intent_id"]
    entry_id = stack.inject(intent, flat=True)
    result = stack.wait_result(entry_id)
    assert result["status"] == "filled", result
    assert result["entry_id"] == entry_id
    assert_result_matches_venue(stack, result)


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


def test_the_same_intent_injected_twice_places_one_order_and_publishes_one_result(stack: Stack) -> None:
    """A second entry with the same intent id is dropped as a duplicate: one order, one result."""
    iid = unique_id("dup")
    stack.inject(seed_intent(iid))
    stack.inject(seed_intent(iid))
    result = stack.wait_result(iid)
    assert result["status"] == "filled"
    time.sleep(1.0)  # give a wrongly dispatched second chain time to show itself
    assert len(venue_orders(stack, iid)) == 1
    assert len(stack.results(iid)) == 1
    assert "INTENT_DUPLICATE" in stack.log("bridge")


class BridgeDied(BaseException):
    """Stands for the bridge process dying between enqueueing a chain and acknowledging the entry."""


def test_a_bridge_killed_after_enqueue_and_before_ack_loses_nothing_and_duplicates_nothing(stack: Stack) -> None:
    """The entry stays pending, another bridge reclaims it and re-dispatches: still one order and one result."""
    settings = stack.settings.model_copy(
        update={"intent_stream": f"test:intents:{unique_id()}", "claim_idle_ms": 300, "bridge_block_ms": 100}
    )
    r = redis_streams.connect(stack.settings.redis_url)
    iid = unique_id("crash")

    def dispatch_then_die(ticket: Ticket) -> None:
        start_chain(ticket)
        raise BridgeDied

    first = Bridge(settings, r, dispatch_then_die, consumer="doomed")
    first.start()
    entry_id = r.xadd(settings.intent_stream, {"payload": json.dumps(seed_intent(iid))})
    with pytest.raises(BridgeDied):
        first.step()
    first.release()  # its consumer name lapses, as a dead bridge's does (this process, its holder, lives on)
    assert r.xpending(settings.intent_stream, settings.consumer_group)["pending"] == 1

    time.sleep(0.4)
    second = Bridge(settings, r, start_chain, consumer="heir")
    second.start()
    assert second.step() >= 1
    result = stack.wait_result(iid)
    assert result["status"] == "filled"
    assert result["entry_id"] == entry_id
    time.sleep(1.0)
    assert len(venue_orders(stack, iid)) == 1
    assert len(stack.results(iid)) == 1
    assert r.xpending(settings.intent_stream, settings.consumer_group)["pending"] == 0


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


@pytest.mark.parametrize(
    "entry",
    [
        {"payload": "{not json"},
        {"payload": json.dumps(["a", "list"])},
        {"symbol": "BTCUSDT"},
        {"payload": json.dumps({"symbol": "BTCUSDT", "side": "BUY", "position_size_usd": "NaN"})},
        {"payload": json.dumps({"symbol": "BTCUSDT", "side": "SIDEWAYS", "position_size_usd": 10})},
    ],
)
def test_malformed_entries_are_dead_lettered_and_the_bridge_keeps_going(stack: Stack, entry: dict[str, str]) -> None:
    """A malformed entry lands in the dead-letter stream with its error; the next valid intent still fills."""
    before = len(stack.dead_letters())
    bad_id = stack.redis.xadd(stack.settings.intent_stream, entry)
    iid = unique_id("after-bad")
    stack.inject(seed_intent(iid))
    assert stack.wait_result(iid)["status"] == "filled"
    letters = stack.dead_letters()
    assert len(letters) == before + 1
    assert letters[-1]["entry_id"] == bad_id
    assert letters[-1]["error"]
    pending = stack.redis.xpending(stack.settings.intent_stream, stack.settings.consumer_group)
    assert pending["pending"] == 0


def celery_call(stack: Stack, *options: str) -> str:
    """`celery -A qexec call qexec.submit_intent OPTIONS`: the task id it prints."""
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "qexec", "call", "qexec.submit_intent", *options],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_celery_call_submit_intent_leads_to_a_result(stack: Stack) -> None:
    """`celery -A qexec call qexec.submit_intent --kwargs …` validates the intent and starts the chain."""
    iid = unique_id("call")
    assert celery_call(stack, "--kwargs", json.dumps(seed_intent(iid, symbol="LINKUSDT")))
    result = stack.wait_result(iid)
    assert result["status"] == "filled", result
    assert result["entry_id"] is None


def dead_letter_of(stack: Stack, task_id: str, timeout_s: float = 15) -> dict[str, str]:
    """The dead letter a `submit_intent` task wrote."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [d for d in stack.dead_letters() if d.get("source") == f"task:{task_id}"]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no dead letter from task {task_id}")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--kwargs", json.dumps({"symbol": "ETHUSDT", "side": "UP", "position_size_usd": 50})], "side"),
        (["--kwargs", json.dumps({"symbol": "ETHUSDT", "side": "BUY", "position_size_usd": -5})], "position_size_usd"),
        (["--args", json.dumps(["ETHUSDT", "BUY", 50])], "keyword arguments"),
    ],
)
def test_celery_call_with_a_bad_intent_says_so_in_the_worker_log_and_dead_letters_it_as_given(
    stack: Stack, options: list[str], error: str
) -> None:
    """A bad side, a negative size, positional `--args`: each refused call is dead-lettered with its values intact
    (numbers stay numbers), and the worker logs INTENT_DEAD_LETTER at ERROR naming the task id."""
    task_id = celery_call(stack, *options)
    letter = dead_letter_of(stack, task_id)
    assert error in letter["error"], letter
    original = json.loads(letter["original"])
    given = json.loads(options[1])
    if options[0] == "--args":
        assert original["args"] == given
    else:
        assert original == given  # 50 and -5 are numbers, not "50" and "-5"
    wait_for_line(stack.logs_dir / "worker.log", f"task_id={task_id}", stack.processes["worker"], 15)
    [line] = [line for line in stack.log("worker").splitlines() if f"task_id={task_id}" in line]
    assert "ERROR" in line and "INTENT_DEAD_LETTER" in line


def test_qexec_inject_writes_an_intent_and_waits_for_its_result(stack: Stack) -> None:
    """`qexec inject --symbol … --wait` prints the entry id and then the filled result."""
    iid = unique_id("inject")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "qexec.cli",
            "inject",
            "--symbol",
            "NEARUSDT",
            "--side",
            "SELL",
            "--size-usd",
            "60",
            "--intent-id",
            iid,
            "--wait",
            "30",
        ],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    assert printed["intent_id"] == iid
    assert printed["status"] == "filled"
    assert printed["action"] == "SELL"


def test_several_bridges_side_by_side_share_the_stream_without_duplicates(stack: Stack) -> None:
    """Two more bridges join the group; twenty intents end with twenty results and one order each."""
    settings = stack.settings
    stop = threading.Event()
    extra = [
        Bridge(settings, redis_streams.connect(settings.redis_url), start_chain, consumer=f"extra-{n}")
        for n in range(2)
    ]
    threads = [threading.Thread(target=b.run, args=(stop,), daemon=True) for b in extra]
    for thread in threads:
        thread.start()
    try:
        ids = [unique_id("many") for _ in range(20)]
        for iid in ids:
            stack.inject(seed_intent(iid, symbol="LINKUSDT", position_size_usd=50.0))
        results = [stack.wait_result(iid, timeout_s=60) for iid in ids]
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert all(r["status"] == "filled" for r in results)
    assert all(len(venue_orders(stack, iid)) == 1 for iid in ids)
    assert all(len(stack.results(iid)) == 1 for iid in ids)


# -- confirmation: the RESULT answer, the venue's stream, REST polling ---------------------------------------


def order_queries(paper: Any) -> int:
    """How many `GET /fapi/v1/order` requests a paper exchange has served."""
    return int(paper.stats()["requests"].get("GET /fapi/v1/order", 0))


def test_an_immediately_filled_market_order_needs_no_confirmation_step(stack: Stack) -> None:
    """The RESULT answer FILLED is the confirmation: one task places, publishes and protects; nothing else runs."""
    iid = unique_id("fast")
    queried = order_queries(stack.paper)
    stack.inject(seed_intent(iid))
    result = stack.wait_result(iid)
    queried_after = order_queries(stack.paper)
    assert result["status"] == "filled", result
    assert_result_matches_venue(stack, result)
    assert queried_after == queried, "nothing asked the venue about the order"
    wait_for_line(stack.logs_dir / "worker.log", f"place_order[{iid}:place] succeeded", stack.processes["worker"], 30)
    [event] = stack.protection_events(iid)
    assert event["status"] == "placed", event
    log = stack.log("worker")
    assert f"qexec.confirm_fill[{iid}:confirm]" not in log
    assert f"qexec.publish_execution[{iid}:publish]" not in log
    assert f"qexec.protect_position[{iid}:protect]" not in log


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
