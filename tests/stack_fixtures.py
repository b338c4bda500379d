"""Pytest fixtures for the pipeline: a real Celery worker and a real bridge, as subprocesses, on our own Redis
and the paper exchange over HTTP; and the helpers the tests drive them with (the seed intent, faults, beat)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from paper_fixtures import PaperExchange, free_port, start_paper

from qexec.config import Settings
from qexec.models import ExecutionResult, client_order_id
from qexec.ops.redisserver import LocalRedis
from qexec.worker.app import app, configure
from qexec.worker.command import WITHOUT_PEERS, worker_argv

ROOT = Path(__file__).resolve().parent.parent

# Short deadlines so the deadline paths run in seconds.
PIPELINE_ENV = {
    "QEXEC_MODE": "paper",
    "QEXEC_FILL_TIMEOUT_S": "4",
    "QEXEC_POLL_INITIAL_S": "0.1",
    "QEXEC_POLL_MAX_S": "0.5",
    "QEXEC_UNKNOWN_LOOKUP_S": "2",
    "QEXEC_CLAIM_IDLE_MS": "1500",
    "QEXEC_REQUEST_TIMEOUT_S": "2",
    "QEXEC_VISIBILITY_TIMEOUT_S": "30",
    "QEXEC_METRICS_PORT": "0",  # never the machine's 9464; the `stack` fixture picks a free port for its bridge
    # The pipeline tests send many intents on a few symbols and expect each to be filled: scale in, and reverse.
    # tests/test_policy.py covers every policy, the defaults included.
    "QEXEC_SAME_SIDE_POLICY": "add",
    "QEXEC_OPPOSITE_SIDE_POLICY": "reverse",
}


# The session stack's weight budget (its paper exchange's, and its worker's limiter set to match): the tests call
# that exchange directly too, back to back (`qexec status` alone spends ~85 weight), beside the worker and the monitor.
STACK_WEIGHT_PER_MIN = 24_000


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The test process's environment without any QEXEC_* of the developer's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QEXEC_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def wait_for_line(path: Path, needle: str | re.Pattern[str], proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait until `needle` (text, or a pattern searched for) appears in a process's log file; fail with the log's
    tail if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle.search(text) if isinstance(needle, re.Pattern) else needle in text:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"
    raise RuntimeError(f"{proc.args!r} did not log {needle!r} (exit {proc.poll()}):\n{tail}")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 15) -> None:
    """Stop a child process, escalating to SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Stack:
    """The running pipeline: worker and bridge processes, their Redis and venue, and helpers to drive them."""

    env: dict[str, str]
    settings: Settings
    redis: redis.Redis
    paper: Any
    logs_dir: Path
    metrics_url: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def spawn(
        self, name: str, args: list[str], ready: str, timeout_s: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a child process with the stack's environment and wait for its readiness line."""
        log_path = self.logs_dir / f"{name}.log"
        handle = log_path.open("ab")
        proc = subprocess.Popen(args, cwd=ROOT, env=env or self.env, stdout=handle, stderr=subprocess.STDOUT)
        handle.close()
        self.processes[name] = proc
        wait_for_line(log_path, ready, proc, timeout_s)
        return proc

    def start_worker(self, name: str = "worker", concurrency: int = 8) -> subprocess.Popen[bytes]:
        """A real `celery -A qexec worker` on the threads pool."""
        node_name = f"{name}-{uuid.uuid4().hex[:6]}@%h"
        argv = worker_argv(concurrency=concurrency, node_name=node_name, extra=WITHOUT_PEERS)
        return self.spawn(name, argv, ready="ready.")

    def start_bridge(self, name: str = "bridge") -> subprocess.Popen[bytes]:
        """A real `qexec bridge`."""
        return self.spawn(name, [sys.executable, "-m", "qexec.cli", "bridge", "--consumer", name], ready="reading")

    def log(self, name: str) -> str:
        """Everything a child process has logged so far."""
        return (self.logs_dir / f"{name}.log").read_text(errors="replace")

    def inject(self, intent: dict[str, Any] | None = None, *, flat: bool = False, **fields: Any) -> str:
        """XADD an intent (JSON `payload`, or flat fields) to the intent stream; returns the entry id."""
        body = dict(intent or {}, **fields)
        entry = {k: str(v) for k, v in body.items()} if flat else {"payload": json.dumps(body)}
        return str(self.redis.xadd(self.settings.intent_stream, entry))

    def results(self, intent_id: str) -> list[dict[str, Any]]:
        """Every entry of the result stream for an intent id (the contract: exactly one, its result)."""
        found = []
        for _entry_id, fields in self.redis.xrange(self.settings.result_stream):
            if fields.get("intent_id") == intent_id:
                found.append(json.loads(fields["payload"]))
        return found

    def check_result_stream(self) -> None:
        """The contract every run must keep: the result stream holds one execution result per intent id, and
        nothing else (protection events have a stream of their own)."""
        seen: dict[str, str] = {}
        for entry_id, fields in self.redis.xrange(self.settings.result_stream):
            assert fields.get("kind") == "execution", f"result stream entry {entry_id} is not a result: {fields}"
            result = ExecutionResult.model_validate_json(fields["payload"])
            assert result.intent_id not in seen, (
                f"two results for {result.intent_id}: {seen[result.intent_id]}, {entry_id}"
            )
            seen[result.intent_id] = entry_id

    def wait_result(self, intent_id: str, timeout_s: float = 30) -> dict[str, Any]:
        """The intent's result, waiting for it; fails with the worker's log tail if none arrives."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.results(intent_id)
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(
            f"no result for {intent_id} within {timeout_s}s; worker log tail:\n" + self.log("worker")[-4000:]
        )

    def protection_events(self, intent_id: str) -> list[dict[str, Any]]:
        """Every protection event published for an intent id (on the protection stream)."""
        return [
            json.loads(fields["payload"])
            for _entry_id, fields in self.redis.xrange(self.settings.protection_stream)
            if fields.get("intent_id") == intent_id
        ]

    def dead_letters(self) -> list[dict[str, str]]:
        """The dead-letter stream's entries."""
        return [fields for _id, fields in self.redis.xrange(self.settings.dlq_stream)]


@pytest.fixture(scope="session")
def stack_paper() -> Iterator[PaperExchange]:
    """The session stack's own paper exchange: its worker keeps streams open there and calls it on its own, so the
    paper exchange's own tests (which count connections and requests) get another one (`paper_exchange`).

    Its weight budget is ten accounts' (`STACK_WEIGHT_PER_MIN`): the tests also call it directly, back to back and
    unpaced (in-process steps, `flatten`, look-ups, `qexec status`). The venue's limits and bans, and qexec's limiter
    at the usual 2400, are tested on exchanges of their own (tests/test_limiter.py, tests/test_paper_limits.py).
    """
    exchange = start_paper("--tick-ms", "0", "--weight-limit", str(STACK_WEIGHT_PER_MIN))
    try:
        yield exchange
    finally:
        exchange.stop()


@pytest.fixture(scope="session")
def stack(
    redis_server: LocalRedis, stack_paper: PaperExchange, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A worker and a bridge for the whole run, on database 0 of our Redis and a paper exchange of their own."""
    paper_exchange = stack_paper
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    metrics_port = free_port()
    extra = dict(
        PIPELINE_ENV,
        QEXEC_REDIS_URL=url,
        QEXEC_EXCHANGE_URL=paper_exchange.url,
        QEXEC_METRICS_PORT=str(metrics_port),
        QEXEC_WEIGHT_PER_MIN=str(STACK_WEIGHT_PER_MIN),  # the budget its paper exchange grants, as in production
    )
    env = clean_env(extra)
    settings = Settings(**{k.removeprefix("QEXEC_").lower(): v for k, v in extra.items()})
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()  # database 0 of the server these tests started, never anyone else's
    configure(app, settings)  # chains this test process starts go to the same broker as the worker
    running = Stack(
        env=env,
        settings=settings,
        redis=client,
        paper=paper_exchange,
        logs_dir=tmp_path_factory.mktemp("stack-logs"),
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
    )
    try:
        running.start_worker()
        running.start_bridge()
        yield running
        running.check_result_stream()
    finally:
        for proc in running.processes.values():
            stop_process(proc)
        client.close()


def unique_id(prefix: str = "t") -> str:
    """A fresh intent id."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


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


def order_queries(paper: Any) -> int:
    """How many `GET /fapi/v1/order` requests a paper exchange has served."""
    return int(paper.stats()["requests"].get("GET /fapi/v1/order", 0))


@contextlib.contextmanager
def stack_on(
    server: LocalRedis, paper: Any, logs_dir: Path, extra: dict[str, str], kind: type[Stack] = Stack
) -> Iterator[Stack]:
    """A `kind` stack on a Redis server and a paper exchange of the test's own, with `extra` settings (the Redis and
    venue URLs added); the processes the test starts are SIGKILLed after, and the server stopped."""
    extra = dict(extra, QEXEC_REDIS_URL=server.url, QEXEC_EXCHANGE_URL=paper.url)
    settings = Settings(**{k.removeprefix("QEXEC_").lower(): v for k, v in extra.items()})
    client = redis.Redis.from_url(server.url, decode_responses=True)
    logs_dir.mkdir()
    running = kind(env=clean_env(extra), settings=settings, redis=client, paper=paper, logs_dir=logs_dir)
    try:
        yield running
    finally:
        for proc in running.processes.values():
            stop_process(proc, signal.SIGKILL)
        client.close()
        server.stop()


def run_bench(script: str, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run one of bench/'s scripts as a user would, with none of the developer's QEXEC_* settings."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=clean_env({}),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def start_beat(stack: Stack, name: str, **env: str) -> None:
    """A real `celery -A qexec beat` for this stack (celery-redbeat, schedule in our Redis)."""
    stack.spawn(
        name,
        [sys.executable, "-m", "celery", "-A", "qexec", "beat", "--loglevel", "DEBUG"],
        ready="beat: Starting",
        env={**stack.env, **env},
    )
