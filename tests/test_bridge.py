"""The bridge against the real stack: a frozen bridge's entries, the intent accounting, trimming and consumer names,
dead letters, entries left pending by a dead bridge, several bridges on one stream.

The tests that freeze, kill and restart bridges with signals run their own Redis, paper exchange, worker and
`qexec bridge` processes (tests/private_stack.py); the others use the session's `stack`.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from paper_fixtures import PaperExchange
from position_helpers import FlatSymbol, context
from private_stack import private_stack
from prometheus_client import generate_latest
from stack_fixtures import (
    Stack,
    assert_result_matches_venue,
    seed_intent,
    stop_process,
    unique_id,
    venue_orders,
    wait_for_line,
)
from test_metrics import figure, parse

from qexec import metrics, redis_streams
from qexec.context import Context
from qexec.models import Ticket, utcnow
from qexec.pipeline.bridge import Bridge, reclaim_intents
from qexec.venue.binance import BinanceVenue
from qexec.worker.tasks import start_chain

pytestmark = pytest.mark.slow

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "LINKUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT"]
# Long enough that no worker message comes back while a burst queues on two busy cores.
BURST_ENV = {"QEXEC_VISIBILITY_TIMEOUT_S": "300", "QEXEC_BRIDGE_BATCH": "64"}


@pytest.fixture
def paper(start_paper_server: Callable[..., PaperExchange]) -> PaperExchange:
    """A paper exchange of the test's own that fills at once."""
    return start_paper_server("--tick-ms", "0", "--result-wait-ms", "0")


def intent(intent_id: str, symbol: str = "BTCUSDT") -> dict[str, Any]:
    """A fresh MARKET intent."""
    return {
        "intent_id": intent_id,
        "symbol": symbol,
        "side": "BUY",
        "position_size_usd": 60.0,
        "leverage": 2,
        "timestamp": utcnow().isoformat(),
    }


def bridge(stack: Stack, name: str, *, consumer: str | None = None) -> None:
    """Start a `qexec bridge` (named with `--consumer`, or left to take its default name)."""
    args = [sys.executable, "-m", "qexec.cli", "bridge"] + (["--consumer", consumer] if consumer else [])
    stack.spawn(name, args, ready="BRIDGE_CONSUMER")


def consumer_of(stack: Stack, name: str) -> str:
    """The consumer name a bridge process took (its BRIDGE_CONSUMER line)."""
    found = re.findall(r"BRIDGE_CONSUMER name=(\S+)", stack.log(name))
    assert found, stack.log(name)[-2000:]
    return found[-1]


def consumers(stack: Stack) -> dict[str, int]:
    """The intent group's consumers and their pending entries."""
    infos: Any = stack.redis.xinfo_consumers(stack.settings.intent_stream, stack.settings.consumer_group)
    return {info["name"]: int(info["pending"]) for info in infos}


def pending_of(stack: Stack, consumer: str) -> int:
    """Entries the group lists as pending for one consumer."""
    return consumers(stack).get(consumer, 0)


def published(stack: Stack) -> dict[str, int]:
    """How many results the result stream holds per intent id."""
    found: dict[str, int] = {}
    for _entry_id, fields in stack.redis.xrange(stack.settings.result_stream):
        found[fields["intent_id"]] = found.get(fields["intent_id"], 0) + 1
    return found


def wait_until(done: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll until `done()`; fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.25)


def chains_started(stack: Stack, worker: str = "worker") -> dict[str, int]:
    """Chains the worker was handed, per intent id: its place_order messages, less the retries it sent itself."""
    log = stack.log(worker)
    started: dict[str, int] = {}
    for iid in re.findall(r"Task qexec\.place_order\[(.+?):place\] received", log):
        started[iid] = started.get(iid, 0) + 1
    for iid in re.findall(r"Task qexec\.place_order\[(.+?):place\] retry", log):
        started[iid] -= 1
    return started


def accounts(stack: Stack) -> dict[str, float]:
    """The intent accounting from qexec's own metrics (read as the bridge's /metrics serves them)."""
    figures = parse(generate_latest(metrics.registry(stack.settings, stack.redis)).decode())
    results = sum(value for (name, _labels), value in figures.items() if name == "qexec_results_published_total")
    return {
        "received": figure(figures, "qexec_intents_received_total"),
        "results": results,
        "in_flight": figure(figures, "qexec_inflight_intents"),
        "dead_letters": figure(figures, "qexec_intents_dead_lettered_total"),
        "duplicates": figure(figures, "qexec_intents_duplicate_total"),
        "redelivered": figure(figures, "qexec_intents_redelivered_total"),
    }


@pytest.fixture
def burst_after_a_freeze(paper: PaperExchange, tmp_path: Path) -> Iterator[tuple[Stack, list[str]]]:
    """Three bridges after a burst of 200 intents (plus 5 duplicates and 3 malformed entries), one of which was
    SIGSTOPped holding a batch, for longer than QEXEC_CLAIM_IDLE_MS, while the other two reclaimed it, then
    SIGCONTed; every intent has its result."""
    with private_stack(paper, tmp_path, BURST_ENV, bridge=False) as stack:
        # Given a bridge that is working through a burst of 200 intents, sent before it started (so it reads batches)
        redis_streams.ensure_group(stack.redis, stack.settings.intent_stream, stack.settings.consumer_group)
        ids = [unique_id("burst") for _ in range(200)]
        for n, iid in enumerate(ids):
            stack.inject(intent(iid, SYMBOLS[n % len(SYMBOLS)]))
            if n % 40 == 0:
                stack.inject(intent(iid, SYMBOLS[n % len(SYMBOLS)]))  # the same intent id again: a duplicate
            if n % 70 == 0:
                stack.redis.xadd(stack.settings.intent_stream, {"payload": "{not json"})
        bridge(stack, "bridge-a", consumer="bridge-a")
        wait_for_line(stack.logs_dir / "bridge-a.log", "INTENT_RECEIVED", stack.processes["bridge-a"], 30)

        # When it is frozen holding a batch, two more bridges take its entries over, and it wakes up
        stack.processes["bridge-a"].send_signal(signal.SIGSTOP)
        try:
            assert pending_of(stack, "bridge-a") > 0, "the freeze should land while bridge-a holds a batch"
            bridge(stack, "bridge-b", consumer="bridge-b")
            bridge(stack, "bridge-c", consumer="bridge-c")
            wait_until(lambda: pending_of(stack, "bridge-a") == 0, 60, "bridge-a's entries to be reclaimed")
            time.sleep(stack.settings.claim_idle_ms / 1000)
        finally:
            stack.processes["bridge-a"].send_signal(signal.SIGCONT)
        wait_until(lambda: len(published(stack)) >= len(ids), 240, "a result for every intent")
        wait_until(lambda: stack.redis.xpending(stack.settings.intent_stream, "qexec")["pending"] == 0, 30, "acks")
        time.sleep(2)  # a second chain, were there one, would be handed to the worker by now
        yield stack, ids


@pytest.mark.timeout(420)
def test_a_bridge_frozen_while_others_reclaimed_its_batch_starts_none_of_those_chains_again(
    burst_after_a_freeze: tuple[Stack, list[str]],
) -> None:
    """After the freeze every intent's chain was started once, and has one result."""
    stack, ids = burst_after_a_freeze
    started = chains_started(stack)
    twice = {iid: n for iid, n in started.items() if n != 1}
    assert twice == {}, f"{len(twice)} chains started more than once"
    assert sorted(started) == sorted(ids)
    assert set(published(stack).values()) == {1}
    assert "INTENT_NOT_OWNED" in stack.log("bridge-a")


@pytest.mark.timeout(420)
def test_after_a_burst_with_a_frozen_bridge_received_equals_results_in_flight_dead_letters_and_duplicates(
    burst_after_a_freeze: tuple[Stack, list[str]],
) -> None:
    """Each entry is counted once as received, and ends once: received = results + in flight + dead letters +
    duplicates, whichever bridge handled it and however often it was delivered."""
    stack, ids = burst_after_a_freeze
    figures = accounts(stack)
    ended = figures["results"] + figures["in_flight"] + figures["dead_letters"] + figures["duplicates"]
    assert figures["received"] == ended, figures
    assert figures["received"] == len(ids) + 5 + 3, figures
    assert figures["duplicates"] == 5
    assert figures["dead_letters"] == 3
    assert "reclaimed intent entry" in stack.log("bridge-b") + stack.log("bridge-c")


@pytest.mark.timeout(240)
def test_the_intent_stream_and_the_dead_letters_are_trimmed_but_never_past_a_pending_entry(
    paper: PaperExchange, tmp_path: Path
) -> None:
    """Handled entries older than QEXEC_INTENT_RETENTION_S leave the stream (a 1 MB one included), the oldest
    pending entry and what follows it stay, and dead letters older than QEXEC_DLQ_RETENTION_S go."""
    extra = {
        "QEXEC_INTENT_RETENTION_S": "2",
        "QEXEC_DLQ_RETENTION_S": "4",
        "QEXEC_BRIDGE_SWEEP_EVERY_S": "0.5",
        "QEXEC_CLAIM_IDLE_MS": "600000",  # the pending entry stays pending for the whole test
    }
    with private_stack(paper, tmp_path, extra, bridge=False) as stack:
        s = stack.settings
        # Given a 1 MB entry (dead-lettered) and three intents handled by a bridge that then stopped
        redis_streams.ensure_group(stack.redis, s.intent_stream, s.consumer_group)
        huge = stack.redis.xadd(s.intent_stream, {"payload": "x" * 1_000_000})
        done = [unique_id("trim-done") for _ in range(3)]
        for iid in done:
            stack.inject(intent(iid))
        bridge(stack, "bridge-a", consumer="bridge-a")
        for iid in done:
            stack.wait_result(iid)
        assert len(stack.dead_letters()) == 1
        stop_process(stack.processes.pop("bridge-a"))
        # and an entry a consumer read and never acknowledged, then one nobody has read
        held = stack.inject(intent(unique_id("trim-held")))
        stack.redis.xreadgroup(s.consumer_group, "stuck", {s.intent_stream: ">"}, count=1)
        later = unique_id("trim-later")
        unread = stack.inject(intent(later))
        time.sleep(int(extra["QEXEC_INTENT_RETENTION_S"]) + 0.5)

        # When a bridge runs past the retention
        bridge(stack, "bridge-b", consumer="bridge-b")
        stack.wait_result(later)
        wait_until(lambda: not stack.redis.xrange(s.intent_stream, huge, huge), 15, "the 1 MB entry to be trimmed")

        # Then the pending entry and the one after it are still there, and the old dead letter is gone
        kept = [entry_id for entry_id, _fields in stack.redis.xrange(s.intent_stream)]
        assert held in kept and unread in kept
        assert stack.redis.xpending(s.intent_stream, s.consumer_group)["min"] == held
        wait_until(lambda: stack.dead_letters() == [], 15, "the dead letter to age out")
        assert "BRIDGE_SWEEP" in stack.log("bridge-b")


@pytest.mark.timeout(240)
def test_two_bridges_on_one_host_take_distinct_stable_names_and_a_restart_takes_its_name_and_entries_back(
    paper: PaperExchange, tmp_path: Path
) -> None:
    """Default names are `<host>-<slot>`: two bridges get slots 1 and 2; a SIGKILLed one restarted takes its slot
    again and its pending entries at once (no new consumer, no wait for QEXEC_CLAIM_IDLE_MS)."""
    extra = {"QEXEC_CLAIM_IDLE_MS": "600000"}  # only the restarted bridge's own PEL read can recover its entries
    host = socket.gethostname()
    with private_stack(paper, tmp_path, extra, bridge=False) as stack:
        # Given two bridges started on one host with the default name
        bridge(stack, "first")
        bridge(stack, "second")
        assert {consumer_of(stack, "first"), consumer_of(stack, "second")} == {f"{host}-1", f"{host}-2"}
        name = consumer_of(stack, "first")

        # When the first is frozen (its blocked read is handed an entry it never handles), SIGKILLed, started again
        stop_process(stack.processes.pop("second"))
        stack.processes["first"].send_signal(signal.SIGSTOP)
        ids = [unique_id("restart") for _ in range(20)]
        for n, iid in enumerate(ids):
            stack.inject(intent(iid, SYMBOLS[n % len(SYMBOLS)]))
        wait_until(lambda: pending_of(stack, name) > 0, 10, "the frozen bridge to hold an entry")
        stack.processes["first"].send_signal(signal.SIGKILL)
        stack.processes.pop("first").wait(10)
        bridge(stack, "restarted")

        # Then it is the same consumer again, and every intent has its result long before a reclaim could run
        assert consumer_of(stack, "restarted") == name
        wait_until(lambda: len(published(stack)) >= len(ids), 90, "a result for every intent")
        assert set(consumers(stack)) <= {f"{host}-1", f"{host}-2"}


@pytest.mark.timeout(180)
def test_a_bridge_deletes_consumers_idle_with_nothing_pending_and_keeps_one_with_entries(
    paper: PaperExchange, tmp_path: Path
) -> None:
    """Consumers idle longer than QEXEC_CONSUMER_DELETE_IDLE_S with nothing pending leave the group; one that still
    holds an entry stays (its entry is reclaimed, never dropped)."""
    extra = {
        "QEXEC_CONSUMER_DELETE_IDLE_S": "1",
        "QEXEC_BRIDGE_SWEEP_EVERY_S": "0.5",
        "QEXEC_CLAIM_IDLE_MS": "600000",
    }
    with private_stack(paper, tmp_path, extra, worker=False, bridge=False) as stack:
        # Given a consumer left by an old bridge with nothing pending, and one holding an entry
        s = stack.settings
        redis_streams.ensure_group(stack.redis, s.intent_stream, s.consumer_group)
        stack.redis.xgroup_createconsumer(s.intent_stream, s.consumer_group, "oldhost-4242")
        stack.inject(intent(unique_id("held")))
        stack.redis.xreadgroup(s.consumer_group, "oldhost-4343", {s.intent_stream: ">"}, count=1)

        # When a bridge has run for longer than the idle threshold
        bridge(stack, "bridge-a", consumer="bridge-a")
        wait_until(lambda: "oldhost-4242" not in consumers(stack), 15, "the idle consumer to be deleted")

        # Then only the bridge and the consumer with a pending entry remain
        assert consumers(stack) == {"bridge-a": 0, "oldhost-4343": 1}
        assert re.search(r"BRIDGE_SWEEP .*consumers_deleted=oldhost-4242", stack.log("bridge-a"))


def test_a_second_bridge_given_a_name_a_live_bridge_holds_refuses_to_start(
    paper: PaperExchange, tmp_path: Path
) -> None:
    """Two bridges never share a consumer name silently: the second one waits one lease TTL, then exits naming it."""
    with private_stack(paper, tmp_path, {"QEXEC_CONSUMER_NAME_TTL_S": "2"}, worker=False, bridge=False) as stack:
        bridge(stack, "bridge-a", consumer="same")
        args = [sys.executable, "-m", "qexec.cli", "bridge", "--consumer", "same"]
        second = stack.spawn("bridge-b", args, ready="ConsumerNameTaken")
        assert second.wait(30) != 0
        assert "consumer name held by another live bridge (same by" in stack.log("bridge-b")
        assert stack.processes["bridge-a"].poll() is None
        assert consumers(stack) == {"same": 0}


def test_seed_intent_as_flat_fields_is_filled(stack: Stack) -> None:
    """The same shape as flat string fields (no intent id: the entry id is used) is filled too."""
    intent = seed_intent("unused")
    del intent["intent_id"]
    entry_id = stack.inject(intent, flat=True)
    result = stack.wait_result(entry_id)
    assert result["status"] == "filled", result
    assert result["entry_id"] == entry_id
    assert_result_matches_venue(stack, result)


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


def test_beat_reclaims_an_entry_a_dead_bridge_left_pending(stack: Stack) -> None:
    """An entry read but never acknowledged by a vanished consumer is re-dispatched and acknowledged."""
    settings = stack.settings.model_copy(update={"intent_stream": f"test:intents:{unique_id()}", "claim_idle_ms": 100})
    r = redis_streams.connect(settings.redis_url)
    redis_streams.ensure_group(r, settings.intent_stream, settings.consumer_group)
    entry_id = r.xadd(
        settings.intent_stream, {"payload": json.dumps({"symbol": "BTCUSDT", "side": "BUY", "position_size_usd": 150})}
    )
    r.xreadgroup(settings.consumer_group, "vanished", {settings.intent_stream: ">"}, count=1)
    time.sleep(0.2)
    dispatched: list[Ticket] = []
    handled = reclaim_intents(Context(settings, r, BinanceVenue(settings)), dispatched.append)
    assert handled == 1
    assert [t.entry_id for t in dispatched] == [entry_id]
    assert r.xpending(settings.intent_stream, settings.consumer_group)["pending"] == 0


def wait_dead_letter(stack: Stack, intent_id: str, timeout_s: float = 15) -> dict[str, str]:
    """The dead letter whose original names this intent id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for fields in stack.dead_letters():
            if intent_id in fields.get("original", ""):
                return fields
        time.sleep(0.1)
    raise AssertionError(f"no dead letter for {intent_id}")


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("position_size_usd", True, "not a boolean"),
        ("stop_loss", True, "not a boolean"),
        ("reduce_only", "yes", "reduce_only must be true or false"),
        ("reduce_only", 1, "reduce_only must be true or false"),
        ("time_in_force", "IOC", "time_in_force applies to LIMIT intents only"),
        ("time_in_force", "DAY", "time_in_force"),
    ],
)
def test_a_boolean_for_a_number_or_a_loose_flag_is_dead_lettered_not_traded(
    stack: Stack, field: str, value: Any, error: str
) -> None:
    """`position_size_usd: true` is no 1-USDT order and `"reduce_only": "yes"` closes nothing: both dead-lettered."""
    iid = unique_id("strict")
    body = {"intent_id": iid, "symbol": "NEARUSDT", "side": "BUY", "position_size_usd": 50, field: value}
    stack.inject(body)
    dead = wait_dead_letter(stack, iid)
    assert error in dead["error"], dead
    assert stack.results(iid) == []


def test_flat_fields_say_reduce_only_as_true_or_false_text(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """Flat stream fields are text: `reduce_only=false` and `leverage=` absent are an ordinary opening intent."""
    symbol = "NEARUSDT"
    ctx = context(stack.settings)
    flat_symbol(ctx, symbol)
    iid = unique_id("flat")
    stack.inject(flat=True, intent_id=iid, symbol=symbol, side="BUY", position_size_usd=50, reduce_only="false")
    result = stack.wait_result(iid)
    assert result["status"] == "filled", result["reason"]
