"""A dead worker's work taken over in seconds: the node beat, the lock takeover, and the recovery bench's targets.

The stack-level tests run bench/recovery.py (production recovery settings: the 120 s visibility timeout, the 45 s
place lock, beat's default schedule) and hold it to the issue's target: every result and every stop-loss and
take-profit at the venue within 10 s of a worker's SIGKILL, or of Redis answering again after a restart.
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
from stack_fixtures import Stack, run_bench, seed_intent, stack_on, start_beat, unique_id, wait_for_line

from qexec import constants, liveness, locks
from qexec.models import client_order_id
from qexec.ops.redisserver import LocalRedis

TARGET_S = 10.0


@pytest.fixture
def as_node() -> Any:
    """This test process beating as a node of its own (forgotten after)."""
    yield liveness.become("test")
    liveness.forget()


def test_a_node_is_dead_only_after_its_beat_has_been_missing_for_two_beats(redis_client: redis.Redis) -> None:
    # Given a node that beat once with a short TTL, and one that never beat
    liveness.beat(redis_client, "alive#1", ttl_s=5)
    liveness.beat(redis_client, "dying#1", ttl_s=0.05)
    time.sleep(0.1)

    # When a reader first finds the dying node's beat missing, it is not dead yet (a Redis restart can do that)
    assert liveness.dead(redis_client, {"alive#1", "dying#1"}, beat_s=0.1) == set()
    # Then two beats later it is, and the live one never is
    time.sleep(0.25)
    assert liveness.dead(redis_client, {"alive#1", "dying#1"}, beat_s=0.1) == {"dying#1"}

    # And a node that beats again is alive again, its mark gone
    liveness.beat(redis_client, "dying#1", ttl_s=5)
    assert liveness.dead(redis_client, {"dying#1"}, beat_s=0.1) == set()
    assert not redis_client.exists(constants.NODE_MISSING_KEY.format(node="dying#1"))


def test_a_lock_whose_holder_died_is_taken_over_and_a_live_or_unnamed_holders_is_not(
    redis_client: redis.Redis, as_node: str
) -> None:
    # Given three locks: held by a dead node, by a live node, and by a process that does not beat
    liveness.beat(redis_client, "live#1", ttl_s=30)
    redis_client.set("lock:dead", "gone#1|abc", px=60_000)
    redis_client.set("lock:live", "live#1|def", px=60_000)
    redis_client.set("lock:plain", "0123456789abcdef", px=60_000)
    mine = locks.new_token()
    assert liveness.node_of(mine) == as_node

    # When this node tries to take each (the dead node's beat seen missing once, then two beats later)
    for key in ("lock:dead", "lock:live", "lock:plain"):
        assert not locks.take_over(redis_client, key, mine, 60_000, beat_s=0.05)
    time.sleep(0.15)
    taken = {key: locks.take_over(redis_client, key, mine, 60_000, beat_s=0.05) for key in ("lock:dead", "lock:live")}

    # Then only the dead node's lock is ours, with a fresh expiry; the others keep their holders
    assert taken == {"lock:dead": True, "lock:live": False}
    assert redis_client.get("lock:dead") == mine
    assert redis_client.pttl("lock:dead") > 50_000
    assert redis_client.get("lock:live") == "live#1|def"
    assert not locks.take_over(redis_client, "lock:plain", mine, 60_000, beat_s=0.05)
    assert redis_client.get("lock:plain") == "0123456789abcdef"


def test_a_lock_left_by_an_ended_run_of_this_process_is_taken_over_and_a_running_ones_is_not(
    redis_client: redis.Redis, as_node: str
) -> None:
    """A step whose release failed (Redis went away while it ran) leaves its lock behind in a live process: the
    step's retry in the same process takes it, instead of waiting out its TTL; a run still going on keeps its own."""
    # Given a lock taken by a run that ended without releasing it, and one held by a run still going on
    with locks.running_token() as ended:
        redis_client.set("lock:ended", ended, px=60_000)
    with locks.running_token() as going_on, locks.running_token() as retry:
        redis_client.set("lock:going-on", going_on, px=60_000)

        # When another run of this process tries both
        taken = {
            key: locks.take_over(redis_client, key, retry, 60_000, beat_s=1) for key in ("lock:ended", "lock:going-on")
        }

    # Then the ended run's lock is the retry's, and the running one's stays its own
    assert taken == {"lock:ended": True, "lock:going-on": False}
    assert redis_client.get("lock:ended") == retry
    assert redis_client.get("lock:going-on") == going_on


def recovery(tmp_path: Path, broker: str, fault: str) -> dict[str, Any]:
    """Run bench/recovery.py for one broker and fault (one round, eight intents); its figures."""
    report_path = tmp_path / "recovery.json"
    run = run_bench(
        "recovery.py", "--broker", broker, "--fault", fault, "--rounds", "1", "--json", str(report_path), timeout_s=400
    )
    if not report_path.exists():
        pytest.fail(f"bench/recovery.py wrote no report: {run.stdout[-4000:]} {run.stderr[-4000:]}")
    (row,) = json.loads(report_path.read_text())
    if "skipped" in row:
        pytest.skip(row["skipped"])
    row["output"] = run.stdout[-4000:] + run.stderr[-2000:]
    assert row["intents"] == 8, row
    return row


def assert_within_target(row: dict[str, Any]) -> None:
    """One result and one entry order per intent, and results and guards within the target."""
    assert row["problems"] == [], row["output"]
    assert row["result_max_s"] is not None and row["result_max_s"] <= TARGET_S, row["output"]
    assert row["protected_max_s"] is not None and row["protected_max_s"] <= TARGET_S, row["output"]
    assert row["ok"], row["output"]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_sigkilled_worker_mid_confirmation_is_taken_over_within_10_s_on_the_redis_broker(tmp_path: Path) -> None:
    """Eight late fills, one of two workers SIGKILLed 1 s in: beat's takeover queues its messages again at once
    (not after the 120 s visibility timeout), so every result and every SL/TP is there within 10 s."""
    assert_within_target(recovery(tmp_path, "redis", "kill"))


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_redis_restart_mid_confirmation_is_recovered_within_10_s(tmp_path: Path) -> None:
    """Redis stopped for 5 s while eight fills are late: every result and SL/TP within 10 s of Redis answering."""
    assert_within_target(recovery(tmp_path, "redis", "redis-restart"))


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_sigkilled_worker_mid_confirmation_recovers_within_10_s_on_rabbitmq(tmp_path: Path) -> None:
    """RabbitMQ redelivers a lost consumer's messages when its connection drops; the dead node's place and position
    locks are taken over, not waited out."""
    assert_within_target(recovery(tmp_path, "rabbitmq", "kill"))


@pytest.fixture
def production_stack(tmp_path: Path, start_paper_server: Callable[..., PaperExchange]) -> Iterator[Stack]:
    """A Redis and a paper exchange of the test's own, and settings left at their production defaults; the test
    starts the processes."""
    server = LocalRedis(data_dir=tmp_path / "redis", appendonly=True).start()
    paper = start_paper_server("--tick-ms", "0", "--result-wait-ms", "0")
    with stack_on(server, paper, tmp_path / "logs", {"QEXEC_MODE": "paper", "QEXEC_METRICS_PORT": "0"}) as running:
        yield running


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_confirmation_whose_message_was_lost_is_sent_again_within_seconds(production_stack: Stack) -> None:
    """A worker killed after the broker handed it a confirm_fill retry but before it recorded it (kombu's Redis
    transport pops the message, then records it): the message is nowhere. Beat's takeover sees the order's next
    confirmation overdue and sends one, instead of reconcile finding the order a minute later."""
    # Given an order the venue fills 6 s late, its confirm_fill counting down in a worker
    stack = production_stack
    stack.start_worker("worker-a", concurrency=4)
    stack.start_bridge()
    start_beat(stack, "beat")
    iid = unique_id("lost-confirm")
    stack.paper.add_fault(kind="fill_delay", delay_ms=6000, client_order_id=client_order_id(iid))
    stack.inject(seed_intent(iid, symbol="LINKUSDT", entry_price=None, stop_loss=None, take_profit=None))
    pending = re.compile(rf"FILL_PENDING status=NEW .*intent_id={iid} ")
    wait_for_line(stack.logs_dir / "worker-a.log", pending, stack.processes["worker-a"], 20)

    # When the worker dies and its messages vanish with it (what the kill between pop and record does)
    stack.processes["worker-a"].send_signal(signal.SIGKILL)
    stack.processes["worker-a"].wait(10)
    killed = time.monotonic()
    stack.redis.delete("unacked", "unacked_index", constants.BROKER_HOLDERS_KEY)
    stack.start_worker("worker", concurrency=4)

    # Then the order is confirmed again, once, within seconds: one result, one order, SL and TP placed
    result = stack.wait_result(iid, timeout_s=30)
    recovered_s = time.monotonic() - killed
    assert result["status"] == "filled", result
    assert recovered_s <= 6 + TARGET_S, f"{recovered_s:.1f} s: reconcile's minute, not the takeover"
    assert f"CONFIRM_RESUMED intent_id={iid}" in stack.log("worker")
    deadline = time.monotonic() + 10
    while not any(e["status"] == "placed" for e in stack.protection_events(iid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [e["status"] for e in stack.protection_events(iid)] == ["placed"]
    time.sleep(1)
    assert len(stack.results(iid)) == 1
    assert len(stack.paper.orders(clientOrderId=client_order_id(iid))) == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_intent_whose_place_order_message_was_lost_is_dispatched_again(production_stack: Stack) -> None:
    """The bridge dispatched the intent, and its place_order message vanished from the broker (a worker killed
    between kombu's pop and its record): nothing else would ever place it. Beat's takeover dispatches it again once
    its placement is overdue (here 3 s; 60 s by default, so that a long backlog is not taken for a loss)."""
    # Given an intent dispatched while no worker runs, and its message then lost
    stack = production_stack
    stack.env = dict(stack.env, QEXEC_PLACE_OVERDUE_S="3")
    stack.start_bridge()
    iid = unique_id("lost-place")
    stack.inject(seed_intent(iid, symbol="ADAUSDT", entry_price=None, stop_loss=None, take_profit=None))
    _wait_for(lambda: stack.redis.llen("qexec") == 1, 20, "the place_order message is queued")
    assert stack.redis.delete("qexec") == 1

    # When a worker and beat run
    stack.start_worker("worker", concurrency=4)
    start_beat(stack, "beat")

    # Then the intent is placed once, filled and protected
    result = stack.wait_result(iid, timeout_s=30)
    assert result["status"] == "filled", result
    assert f"PLACE_RESUMED intent_id={iid}" in stack.log("worker")
    time.sleep(1)
    assert len(stack.results(iid)) == 1
    assert len(stack.paper.orders(clientOrderId=client_order_id(iid))) == 1
    assert not stack.redis.zscore(constants.PLACE_DUE_KEY, iid), "placed: no longer expected"


def _wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
        time.sleep(0.05)
