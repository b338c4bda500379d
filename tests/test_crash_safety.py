"""Crash safety, one fault at a time: workers and bridges SIGKILLed mid-step, Redis restarted under the stack.

Each test builds its own stack (its own Redis with AOF, paper exchange, worker and bridge processes), so its
kills never touch the session's `stack` fixture. Recovery rides on the settings tuned for it: a visibility timeout
of ceil((request_timeout + limit_max_wait) * 4 + unknown_lookup + entry_wait + broker_wait + retry_countdown_max +
visibility_margin) = 20 s and kombu's unacked-restore sweep every second.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from paper_fixtures import PaperExchange
from stack_fixtures import PIPELINE_ENV, Stack, stack_on, unique_id, wait_for_line

from qexec.config import Settings
from qexec.models import client_order_id, utcnow
from qexec.ops.redisserver import LocalRedis, free_port
from qexec.worker.celeryconf import celery_config

pytestmark = pytest.mark.slow

CRASH_ENV = {
    **PIPELINE_ENV,
    "QEXEC_REQUEST_TIMEOUT_S": "1",
    "QEXEC_FILL_TIMEOUT_S": "30",
    "QEXEC_VISIBILITY_TIMEOUT_S": "1",
    "QEXEC_VISIBILITY_MARGIN_S": "2",
    "QEXEC_RETRY_COUNTDOWN_MAX_S": "2",
    "QEXEC_LIMIT_MAX_WAIT_S": "0.25",
    "QEXEC_ENTRY_WAIT_S": "0.5",
    "QEXEC_BRIDGE_BATCH": "16",
    "QEXEC_BROKER_WAIT_S": "8",  # a step waits this long for Redis to come back before leaving it to the sweep
}
RECOVERY_S = 60  # visibility (20 s) + the place lock a dead worker left (13 s) + worker start-up, with room


class CrashStack(Stack):
    """A stack of our own: its Redis server can be stopped and started again on the same port and data."""

    server: LocalRedis


@pytest.fixture
def crash_stack(tmp_path: Path, start_paper_server: Callable[..., PaperExchange]) -> Iterator[CrashStack]:
    """A private Redis (AOF, fixed port and directory), paper exchange and settings; processes started by the test."""
    # A fixed port and directory, so that it can be stopped and started again as the same server
    server = LocalRedis(port=free_port(), data_dir=tmp_path / "redis", appendonly=True).start()
    paper = start_paper_server("--tick-ms", "0", "--result-wait-ms", "0")
    with stack_on(server, paper, tmp_path / "logs", CRASH_ENV, CrashStack) as running:
        assert isinstance(running, CrashStack)
        running.server = server
        yield running


def market_intent(intent_id: str, symbol: str = "BTCUSDT", size_usd: float = 300.0) -> dict[str, Any]:
    """A fresh MARKET intent."""
    return {
        "intent_id": intent_id,
        "symbol": symbol,
        "side": "BUY",
        "position_size_usd": size_usd,
        "leverage": 2,
        "timestamp": utcnow().isoformat(),
    }


def venue_orders(stack: Stack, intent_id: str) -> list[dict[str, Any]]:
    """Every order the venue ever accepted under the intent's client order id."""
    return list(stack.paper.orders(clientOrderId=client_order_id(intent_id)))


def kill(stack: Stack, name: str) -> None:
    """SIGKILL one of the stack's processes and reap it."""
    proc = stack.processes[name]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def assert_one_order_and_one_fill(stack: Stack, intent_id: str, timeout_s: float = RECOVERY_S) -> dict[str, Any]:
    """The intent ends with exactly one result, filled at the venue's own price, and one order at the venue."""
    result = stack.wait_result(intent_id, timeout_s=timeout_s)
    time.sleep(0.5)  # a second result, were there one, would be published right behind the first
    assert len(stack.results(intent_id)) == 1
    orders = venue_orders(stack, intent_id)
    assert len(orders) == 1, orders
    assert result["status"] == "filled", result
    assert result["order_id"] == orders[0]["orderId"]
    assert result["entry_price"] == float(orders[0]["avgPrice"]) > 0
    assert result["quantity"] == float(orders[0]["executedQty"]) > 0
    return result


def test_the_visibility_timeout_is_tuned_from_the_settings() -> None:
    """The visibility timeout covers the longest task and countdown plus the margin, and restores sweep every second."""
    settings = Settings(**{k.removeprefix("QEXEC_").lower(): v for k, v in CRASH_ENV.items()})
    transport = celery_config(settings)["broker_transport_options"]
    # (1 + 0.25) * 4 + 2 lookups + 0.5 entry wait + 8 broker wait + 2 countdown + 2 margin
    assert transport["visibility_timeout"] == 20
    assert (transport["unacked_restore_interval"], transport["unacked_restore_throttle"]) == (1, 1)
    assert celery_config(Settings())["broker_transport_options"]["visibility_timeout"] == 120


@pytest.mark.parametrize("fault", ["slow", "latency"])
def test_a_worker_killed_during_place_order_leaves_one_order_and_one_result(
    crash_stack: CrashStack, fault: str
) -> None:
    """SIGKILL while the submit is at the venue (executed before the kill, or after): another worker adopts it."""
    # Given a worker whose submit for this intent is held up at the venue for 3 s
    stack = crash_stack
    stack.start_worker("worker-a", concurrency=4)
    stack.start_bridge()
    iid = unique_id(f"kill-place-{fault}")
    stack.paper.add_fault(kind=fault, delay_ms=3000, client_order_id=client_order_id(iid))
    stack.inject(market_intent(iid))
    wait_for_line(stack.logs_dir / "worker-a.log", f"intent_id={iid}", stack.processes["worker-a"], 20)
    wait_for_line(stack.logs_dir / "worker-a.log", "ORDER_SUBMIT", stack.processes["worker-a"], 20)

    # When the worker is killed in the middle of that call and another one starts
    kill(stack, "worker-a")
    assert stack.results(iid) == []
    stack.start_worker("worker", concurrency=4)

    # Then the second worker finds the order by its client id: one order, one filled result
    assert_one_order_and_one_fill(stack, iid)
    assert f"ORDER_LOOKUP outcome=found status=FILLED intent_id={iid}" in stack.log("worker")


def test_a_worker_killed_while_confirm_fill_polls_leaves_one_order_and_one_result(crash_stack: CrashStack) -> None:
    """SIGKILL while confirm_fill waits for a delayed fill: another worker resumes the polling and publishes."""
    # Given a worker polling an order the venue fills only after 4 s
    stack = crash_stack
    stack.start_worker("worker-a", concurrency=4)
    stack.start_bridge()
    iid = unique_id("kill-confirm")
    stack.paper.add_fault(kind="fill_delay", delay_ms=4000, client_order_id=client_order_id(iid))
    stack.inject(market_intent(iid))
    wait_for_line(stack.logs_dir / "worker-a.log", fill_pending(iid), stack.processes["worker-a"], 20)

    # When it is killed between two polls and another worker starts
    kill(stack, "worker-a")
    assert stack.results(iid) == []
    stack.start_worker("worker", concurrency=4)

    # Then the other worker confirms the fill and publishes it once
    assert_one_order_and_one_fill(stack, iid)
    confirmed = [line for line in stack.log("worker").splitlines() if "FILL_CONFIRMED" in line and iid in line]
    assert confirmed, "the second worker confirmed the fill"


def test_a_bridge_killed_in_the_middle_of_a_burst_loses_nothing(crash_stack: CrashStack) -> None:
    """Entries a SIGKILLed bridge read but never acknowledged are reclaimed by another bridge: one result each."""
    # Given a bridge frozen in the middle of a burst of 90 intents, with entries it read and never acknowledged
    stack = crash_stack
    stack.start_worker("worker", concurrency=8)
    stack.start_bridge("bridge-a")
    symbols = ["ETHUSDT", "BNBUSDT", "LINKUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT"]
    ids = [unique_id("burst") for _ in range(90)]
    for n, iid in enumerate(ids):
        stack.inject(market_intent(iid, symbol=symbols[n % len(symbols)], size_usd=60))
    wait_for_line(stack.logs_dir / "bridge-a.log", "INTENT_RECEIVED", stack.processes["bridge-a"], 20)
    stack.processes["bridge-a"].send_signal(signal.SIGSTOP)
    group = stack.settings.consumer_group
    pending: Any = stack.redis.xpending_range(stack.settings.intent_stream, group, "-", "+", 1000, "bridge-a")
    unread = len(ids) - int(stack.redis.xinfo_groups(stack.settings.intent_stream)[0]["entries-read"] or 0)

    # When it is SIGKILLed there and another bridge starts
    kill(stack, "bridge-a")
    assert pending or unread, "the kill should land with entries still in the burst"
    stack.start_bridge("bridge-b")

    # Then every intent ends with one result and one order at the venue
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(published(stack)) < len(ids):
        time.sleep(0.5)
    by_intent = published(stack)
    assert sorted(by_intent) == sorted(ids)
    assert [r for r in by_intent.values() if len(r) != 1] == []
    assert {r[0]["status"] for r in by_intent.values()} == {"filled"}, [r[0]["reason"] for r in by_intent.values()]
    for iid in ids:
        assert len(venue_orders(stack, iid)) == 1, iid
    assert stack.redis.xpending(stack.settings.intent_stream, group)["pending"] == 0


def fill_pending(intent_id: str) -> re.Pattern[str]:
    """confirm_fill's line for an order still `NEW`, whether the worker's stream or a REST look reported it."""
    return re.compile(rf"FILL_PENDING status=NEW executed_qty=0 (?:attempt=\d+|source=stream) intent_id={intent_id} ")


def published(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    """Every entry on the stack's result stream, by intent id (each one a result: the stream holds nothing else)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for _entry_id, fields in stack.redis.xrange(stack.settings.result_stream):
        found.setdefault(fields["intent_id"], []).append(json.loads(fields["payload"]))
    return found


def test_redis_restarting_under_the_stack_loses_nothing_and_every_process_reconnects(crash_stack: CrashStack) -> None:
    """Redis stopped for 5 s and started again (AOF): in-flight intents end once, later ones are served."""
    # Given a worker and a bridge, with intents in flight (fills delayed past the outage) and done before it
    stack = crash_stack
    stack.start_worker("worker", concurrency=4)
    stack.start_bridge()
    before = [unique_id("before") for _ in range(3)]
    for iid in before:
        stack.inject(market_intent(iid))
    for iid in before:
        stack.wait_result(iid)
    in_flight = [unique_id("inflight") for _ in range(3)]
    for iid in in_flight:
        stack.paper.add_fault(kind="fill_delay", delay_ms=6000, client_order_id=client_order_id(iid))
        stack.inject(market_intent(iid, symbol="ETHUSDT", size_usd=100))
    for iid in in_flight:
        wait_for_line(stack.logs_dir / "worker.log", fill_pending(iid), stack.processes["worker"], 20)

    # When Redis goes away for 5 s and comes back on the same port with its data
    stack.server.stop()
    time.sleep(5)
    stack.server.start()
    after = [unique_id("after") for _ in range(3)]
    for iid in after:
        stack.inject(market_intent(iid, symbol="BNBUSDT", size_usd=100))

    # Then every intent, before, during and after, has exactly one result and one order; no process died
    for iid in before + in_flight + after:
        assert_one_order_and_one_fill(stack, iid, timeout_s=90)
    assert all(proc.poll() is None for proc in stack.processes.values())


def test_a_redis_restart_mid_confirmation_is_waited_out_in_seconds_not_after_the_visibility_timeout(
    crash_stack: CrashStack,
) -> None:
    """With the production visibility timeout (120 s), Redis down for 6 s while fills are delayed: the messages the
    worker held when its connection broke are queued again as soon as it is back, so every result is out seconds
    after, not after the visibility timeout hands them to the sweep (the old path took ~2 minutes)."""
    stack = crash_stack
    stack.env = dict(stack.env, QEXEC_VISIBILITY_TIMEOUT_S="120")
    stack.start_worker("worker", concurrency=4)
    stack.start_bridge()
    in_flight = [unique_id("blip") for _ in range(3)]
    for iid in in_flight:
        stack.paper.add_fault(kind="fill_delay", delay_ms=4000, client_order_id=client_order_id(iid))
        stack.inject(market_intent(iid, symbol="ETHUSDT", size_usd=100))
    for iid in in_flight:
        wait_for_line(stack.logs_dir / "worker.log", fill_pending(iid), stack.processes["worker"], 20)
    stack.server.stop()
    time.sleep(6)
    stack.server.start()
    back = time.monotonic()
    for iid in in_flight:
        assert_one_order_and_one_fill(stack, iid, timeout_s=60)
    recovered_s = time.monotonic() - back
    assert recovered_s < 30, f"results {recovered_s:.0f} s after Redis came back: the visibility sweep, not a wait"
    # The results may come first from the fills' own events (qexec/pipeline/fill_events.py). Whatever the worker held
    # when its connection broke is settled once it is back (Celery's reconnect back-off: 2, 4, 6 s): queued again, or
    # acknowledged when it ran meanwhile; it may also have held nothing. Either way nothing is left in the broker's
    # unacked hash for the visibility sweep to hand out again two minutes later.
    deadline = time.monotonic() + 30
    while stack.redis.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.redis.hlen("unacked") == 0, stack.redis.hkeys("unacked")


def test_an_outage_of_qexecs_own_redis_during_place_order_is_waited_out_not_failed(
    crash_stack: CrashStack, tmp_path: Path
) -> None:
    """With the state Redis apart from the broker, a 10 s outage mid-place ends in the adopted fill, not `failed`."""
    # Given a worker whose submit is held up at the venue, with qexec's Redis apart from the broker's
    state = LocalRedis(port=free_port(), data_dir=tmp_path / "state", appendonly=True).start()
    try:
        broker_url = crash_stack.server.url
        settings = crash_stack.settings.model_copy(update={"redis_url": state.url, "broker_url": broker_url})
        stack = Stack(
            env=dict(crash_stack.env, QEXEC_REDIS_URL=state.url, QEXEC_BROKER_URL=broker_url),
            settings=settings,
            redis=redis.Redis.from_url(state.url, decode_responses=True),
            paper=crash_stack.paper,
            logs_dir=crash_stack.logs_dir,
            processes=crash_stack.processes,
        )
        stack.start_worker(concurrency=4)
        stack.start_bridge()
        iid = unique_id("state-outage")
        stack.paper.add_fault(kind="slow", delay_ms=3000, client_order_id=client_order_id(iid))
        stack.inject(market_intent(iid))
        wait_for_line(stack.logs_dir / "worker.log", f"intent_id={iid}", stack.processes["worker"], 20)
        wait_for_line(stack.logs_dir / "worker.log", "ORDER_SUBMIT", stack.processes["worker"], 20)

        # When qexec's Redis goes away for longer than the unexpected-error retries (1 + 2 + 4 s) and comes back
        state.stop()
        time.sleep(10)
        state.start()

        # Then the order placed before the outage is adopted and reported as the fill it is
        assert_one_order_and_one_fill(stack, iid)
    finally:
        state.stop()
