"""qexec against two baseline executors, in one run, on the paper exchange: latency, throughput, REST budget,
rate-limit ceiling and memory. The naive baseline (bench/baseline.py) runs one intent at a time and polls; the asyncio
baseline (bench/async_baseline.py) is a careful single-process asyncio executor, many intents in flight.

.venv/bin/python bench/bench.py [--scenario overhead|realistic|testnet|ratelimit|soak|transport ...] [--quick]
    [--json FILE]

Every figure is measured here, for the three executors, against a paper exchange started for the scenario. Latency is
from the intent's stream entry to its result's stream entry (both ids carry Redis's clock).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
import redis
import requests

from qexec.constants import paper_keys
from qexec.ops.redisserver import LocalRedis, free_port
from qexec.worker.command import WITHOUT_PEERS, worker_argv

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SYMBOLS = ("DOGEUSDT", "XRPUSDT", "ADAUSDT", "TRXUSDT")
SIZE_USD = 25.0
WARM_UP = 8  # intents each executor gets (and answers) before a scenario measures it
EXECUTORS = ("qexec", "baseline", "asyncio")  # "baseline": the naive one (bench/baseline.py)
SCALE_IN = {"QEXEC_SAME_SIDE_POLICY": "add"}  # qexec's policy where intents pile up: each BUY adds to the position


def ms_of(entry_id: str) -> int:
    """The Redis clock time (ms) in a stream entry id."""
    return int(entry_id.split("-", 1)[0])


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Proc:
    """A child process with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def rss_mb(self) -> float:
        """Resident memory of the process and its children, MiB."""
        proc = psutil.Process(self.popen.pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20

    def cpu_s(self) -> float:
        """CPU seconds used so far by the process and its children."""
        proc = psutil.Process(self.popen.pid)
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
        return total


def spawn(
    name: str, argv: list[str], env: dict[str, str], logs: Path, ready: str | Callable[[], bool], timeout_s: float = 60
) -> Proc:
    """Start a process and wait until it is ready (a log line, or a predicate)."""
    log = logs / f"{name}.log"
    handle = log.open("ab")
    popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    proc = Proc(name, popen, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            break
        done = ready() if callable(ready) else ready in log.read_text(errors="replace")
        if done:
            return proc
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')[-3000:]}")


@dataclass(frozen=True)
class Venue:
    """Paper exchange flags for a scenario."""

    latency_ms: int = 0
    fill_delay_ms: int = 0
    result_wait_ms: int = 2000
    orders_per_10s: int = 1_000_000
    orders_per_min: int = 1_000_000
    weight_limit: int = 1_000_000
    accounts: tuple[str, ...] = ()  # accounts besides default, each served with its paper keys (paper_keys)


@dataclass
class Run:
    """One executor's figures in one scenario."""

    executor: str
    sent: int = 0
    results: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    fill_lags_ms: list[float] = field(default_factory=list)
    accept_lags_ms: list[float] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """The figures, with latency percentiles."""
        out = {"sent": self.sent, "results": self.results, "no_result_in_wait": self.sent - self.results}
        if self.latencies_ms:
            out |= {
                "p50_ms": pct(self.latencies_ms, 50),
                "p95_ms": pct(self.latencies_ms, 95),
                "p99_ms": pct(self.latencies_ms, 99),
            }
        return out | self.figures


class Bench:
    """Shared machinery: our Redis, a paper exchange per scenario, and the executors."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.redis_server = LocalRedis().start()
        self.db = 0
        self.limits = Venue()  # the limits the current paper exchange enforces; qexec's limiter is set to match
        self.contract_breaches: list[str] = []  # result streams that held more than one result per intent

    def close(self) -> None:
        """Stop our Redis."""
        self.redis_server.stop()

    def fresh_db(self) -> tuple[str, redis.Redis]:
        """A flushed database on our own server, for one executor's run."""
        self.db = (self.db + 1) % 16
        url = f"redis://127.0.0.1:{self.redis_server.port}/{self.db}"
        client = redis.Redis.from_url(url, decode_responses=True)
        client.flushdb()
        return url, client

    @contextmanager
    def paper(self, venue: Venue) -> Iterator[str]:
        """A paper exchange with the scenario's flags."""
        self.limits = venue
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [
            str(BIN / "qexec"),
            "paper",
            "--port",
            str(port),
            "--state",
            ":memory:",
            "--tick-ms",
            "0",
            "--latency-ms",
            str(venue.latency_ms),
            "--fill-delay-ms",
            str(venue.fill_delay_ms),
            "--result-wait-ms",
            str(venue.result_wait_ms),
            "--orders-per-10s",
            str(venue.orders_per_10s),
            "--orders-per-min",
            str(venue.orders_per_min),
            "--weight-limit",
            str(venue.weight_limit),
            "--balance",
            "1000000",
        ]
        for name in venue.accounts:
            argv += ["--account", ":".join((name, *paper_keys(name)))]

        def answers() -> bool:
            try:
                return requests.get(f"{url}/fapi/v1/ping", timeout=1).ok
            except requests.RequestException:
                return False

        proc = spawn(f"paper-{port}", argv, dict(os.environ), self.logs, answers)
        try:
            yield url
        finally:
            proc.stop()

    def env(self, redis_url: str, venue_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        """An executor's environment: ours without QEXEC_*, then the bench's settings, then `extra`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("QEXEC_")}
        env |= {
            "QEXEC_REDIS_URL": redis_url,
            "QEXEC_EXCHANGE_URL": venue_url,
            "QEXEC_METRICS_PORT": "0",
            "QEXEC_INTENT_MAX_AGE_S": "3600",
            # qexec budgets the account's limits itself; give it the ones this paper exchange enforces.
            "QEXEC_WEIGHT_PER_MIN": str(self.limits.weight_limit),
            "QEXEC_ORDERS_PER_10S": str(self.limits.orders_per_10s),
            "QEXEC_ORDERS_PER_MIN": str(self.limits.orders_per_min),
            "PYTHONUNBUFFERED": "1",
        }
        return env | (extra or {})

    @contextmanager
    def executor(
        self, kind: str, redis_url: str, venue_url: str, concurrency: int, extra: dict[str, str] | None = None
    ) -> Iterator[list[Proc]]:
        """qexec (worker + bridge), the naive baseline ("baseline") or the asyncio one ("asyncio", `concurrency`
        intents in flight), running against `venue_url` (`extra`: more QEXEC_* settings)."""
        env = self.env(redis_url, venue_url, extra)
        tag = uuid.uuid4().hex[:6]
        procs: list[Proc] = []
        try:
            if kind.startswith("qexec"):
                # "qexec+events": the worker sends Celery's task events, as it does while Flower watches it.
                events = ["--task-events"] if kind == "qexec+events" else []
                argv = worker_argv(
                    concurrency=concurrency,
                    node_name=f"bench-{tag}@%h",
                    extra=[*WITHOUT_PEERS, *events],
                    program=[str(BIN / "celery")],
                )
                procs.append(spawn(f"worker-{tag}", argv, env, self.logs, "ready.", 90))
                if env.get("QEXEC_USE_STREAMS", "true").lower() not in ("0", "false", "no", "off"):
                    # Measured from when the worker's venue streams are up and vouch for what follows.
                    worker = procs[-1]
                    _wait_for(lambda: "FEED_LIVE stream=user" in worker.log.read_text(errors="replace"), 30)
                    _wait_for(lambda: "FEED_LIVE stream=marks" in worker.log.read_text(errors="replace"), 30)
                    time.sleep(1.1)
                procs.append(
                    spawn(
                        f"bridge-{tag}",
                        [str(BIN / "qexec"), "bridge", "--log-level", "INFO"],
                        env,
                        self.logs,
                        lambda: _group_exists(redis_url),
                        60,
                    )
                )
            elif kind == "asyncio":
                argv = [sys.executable, str(ROOT / "bench" / "async_baseline.py"), "--redis-url", redis_url]
                argv += ["--exchange-url", venue_url, "--concurrency", str(concurrency)]
                procs.append(spawn(f"asyncio-{tag}", argv, env, self.logs, "async baseline ready", 60))
            else:
                procs.append(
                    spawn(
                        f"baseline-{tag}",
                        [
                            sys.executable,
                            str(ROOT / "bench" / "baseline.py"),
                            "--redis-url",
                            redis_url,
                            "--exchange-url",
                            venue_url,
                        ],
                        env,
                        self.logs,
                        "baseline ready",
                        60,
                    )
                )
            yield procs
        finally:
            for proc in procs:
                proc.stop()


def _wait_for(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting after {timeout_s}s: {check}")
        time.sleep(0.1)


def _group_exists(redis_url: str) -> bool:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return bool(client.exists("quantum:stream:trade.intent"))
    finally:
        client.close()


def marks(venue_url: str) -> dict[str, float]:
    """Current marks of the benchmark symbols."""
    prices = requests.get(f"{venue_url}/paper/v1/prices", timeout=5).json()
    return {s: float(prices[s]) for s in SYMBOLS}


def stats(venue_url: str) -> dict[str, Any]:
    """The paper exchange's counters."""
    return dict(requests.get(f"{venue_url}/paper/v1/stats", timeout=5).json())


def offer(
    r: redis.Redis, prices: dict[str, float], count: int, rate_per_s: float | None, *, scale_in: bool = False
) -> dict[str, str]:
    """XADD `count` intents (at `rate_per_s`, or all at once); returns intent id → intent entry id.

    Each symbol alternates an opening BUY and a reduce-only SELL that closes it: every intent places exactly one order
    under qexec's default position policies, and positions stay flat. That holds only while intents run in the order
    they were sent; where they pile up and run side by side, `scale_in` sends only BUYs (qexec then runs with
    QEXEC_SAME_SIDE_POLICY=add, so each one still places exactly one order).
    """
    sent: dict[str, str] = {}
    start = time.monotonic()
    run = uuid.uuid4().hex[:8]
    for n in range(count):
        if rate_per_s:
            lag = start + n / rate_per_s - time.monotonic()
            if lag > 0:
                time.sleep(lag)
        symbol = SYMBOLS[n % len(SYMBOLS)]
        closing = not scale_in and (n // len(SYMBOLS)) % 2 == 1
        side = "SELL" if closing else "BUY"
        intent = {
            "reduce_only": closing,
            "intent_id": f"b-{run}-{n}",
            "symbol": symbol,
            "side": side,
            "position_size_usd": SIZE_USD,
            "leverage": 5,
            "entry_price": prices[symbol],
        }
        sent[intent["intent_id"]] = str(r.xadd("quantum:stream:trade.intent", {"payload": json.dumps(intent)}))
    return sent


def collect(r: redis.Redis, sent: dict[str, str], timeout_s: float) -> dict[str, tuple[str, dict[str, Any]]]:
    """Results for the sent intents: intent id → (result entry id, payload), waiting up to `timeout_s`."""
    got: dict[str, tuple[str, dict[str, Any]]] = {}
    last = "0-0"
    deadline = time.monotonic() + timeout_s
    while len(got) < len(sent) and time.monotonic() < deadline:
        for _s, entries in r.xread({"quantum:stream:trade.execution.res": last}, block=500, count=1000) or []:
            for entry_id, fields in entries:
                last = entry_id
                if fields.get("kind", "execution") != "execution":
                    continue
                iid = fields.get("intent_id")
                if iid in sent and iid not in got:
                    got[iid] = (entry_id, json.loads(fields["payload"]))
    return got


class OrderSampler:
    """Samples the paper exchange's order counters every `every_s` in a thread: the pace of orders over a run (in
    all, and for each of `accounts` on its own)."""

    def __init__(self, venue_url: str, every_s: float = 0.5, accounts: tuple[str, ...] = ()) -> None:
        self.venue_url = venue_url
        self.every_s = every_s
        self.samples: list[tuple[float, int, int]] = []  # (monotonic s, entry orders, algo orders)
        self.by_account: dict[str, list[tuple[float, int, int]]] = {name: [] for name in accounts}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OrderSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            figures = stats(self.venue_url)
            now = time.monotonic()
            self.samples.append((now, figures["orders_placed"], figures["algo_orders_placed"]))
            for name, samples in self.by_account.items():
                own = figures["accounts"].get(name, {})
                samples.append((now, own.get("orders_placed", 0), own.get("algo_orders_placed", 0)))
            self._stop.wait(self.every_s)

    def per_minute(self, account: str | None = None) -> tuple[float, float]:
        """(all orders, entry orders) per minute from the first order seen to the last: the busy span (of one of
        the sampler's `accounts`, when named)."""
        samples = self.samples if account is None else self.by_account[account]
        totals = [(t, entries + algos, entries) for t, entries, algos in samples]
        moving = [i for i in range(1, len(totals)) if totals[i][1] > totals[i - 1][1]]
        if not moving:
            return 0.0, 0.0
        start, end = totals[moving[0] - 1], totals[moving[-1]]
        minutes = max(end[0] - start[0], 1e-9) / 60
        return (end[1] - start[1]) / minutes, (end[2] - start[2]) / minutes


def warm_up(r: redis.Redis, prices: dict[str, float], scale_in: bool) -> None:
    """Send `WARM_UP` intents and wait for their results before any figure is taken (connections, caches)."""
    sent = offer(r, prices, WARM_UP, 20, scale_in=scale_in)
    if len(collect(r, sent, 60)) < len(sent):
        raise RuntimeError("the warm-up intents got no result")


def latency_run(
    bench: Bench,
    kind: str,
    venue_url: str,
    count: int,
    rate: float | None,
    concurrency: int,
    timeout_s: float,
    extra: dict[str, str] | None = None,
    scale_in: bool = False,
) -> Run:
    """Offer intents to one executor and measure latency, CPU and REST calls per intent."""
    url, r = bench.fresh_db()
    run = Run(kind)
    with bench.executor(kind, url, venue_url, concurrency, extra) as procs:
        prices = marks(venue_url)
        warm_up(r, prices, scale_in)
        before_stats, before_cpu = stats(venue_url), sum(p.cpu_s() for p in procs)
        sent = offer(r, prices, count, rate, scale_in=scale_in)
        got = collect(r, sent, timeout_s)
        after_stats, after_cpu = stats(venue_url), sum(p.cpu_s() for p in procs)
    if kind.startswith("qexec"):
        breach = result_stream_breach(r)
        if breach:
            bench.contract_breaches.append(f"{kind}: {breach}")
    run.sent, run.results = len(sent), len(got)
    run.latencies_ms = [ms_of(rid) - ms_of(sent[iid]) for iid, (rid, _p) in got.items()]
    confirm_calls = after_stats["requests"].get("GET /fapi/v1/order", 0) - before_stats["requests"].get(
        "GET /fapi/v1/order", 0
    )
    run.figures |= {
        "cpu_s_per_intent": (after_cpu - before_cpu) / max(1, len(sent)),
        "confirm_calls_per_intent": confirm_calls / max(1, len(sent)),
        "filled": sum(1 for _rid, p in got.values() if p.get("status") == "filled"),
    }
    if got:
        first = min(ms_of(e) for e in sent.values())
        last = max(ms_of(rid) for rid, _p in got.values())
        run.figures["throughput_per_s"] = len(got) / max(0.001, (last - first) / 1000)
    run.fill_lags_ms, run.accept_lags_ms = _fill_lags(venue_url, got)
    return run


def result_stream_breach(r: redis.Redis) -> str | None:
    """What breaks the contract on a run's result stream: an entry that is not an execution result, or a second
    result for an intent; None when it holds one result per intent and nothing else."""
    seen: set[str] = set()
    foreign = twice = 0
    for _entry_id, fields in r.xrange("quantum:stream:trade.execution.res"):
        if fields.get("kind") != "execution":
            foreign += 1
        elif fields.get("intent_id") in seen:
            twice += 1
        seen.add(str(fields.get("intent_id")))
    return f"{foreign} entries that are not results, {twice} second results" if foreign or twice else None


def _fill_lags(venue_url: str, got: dict[str, tuple[str, dict[str, Any]]]) -> tuple[list[float], list[float]]:
    """Per filled result: ms from the venue's fill (order updateTime), and from its acceptance, to the result."""
    orders: dict[int, dict[str, Any]] = {}
    for symbol in SYMBOLS:
        for order in requests.get(f"{venue_url}/paper/v1/orders", params={"symbol": symbol}, timeout=10).json():
            orders[int(order["orderId"])] = order
    fill_lags, accept_lags = [], []
    for rid, payload in got.values():
        order = orders.get(int(payload.get("order_id") or -1))
        if order and order["status"] == "FILLED":
            fill_lags.append(ms_of(rid) - int(order["updateTime"]))
            accept_lags.append(ms_of(rid) - int(order["time"]))
    return fill_lags, accept_lags


# -- scenarios --------------------------------------------------------------------------------------------


def overhead(bench: Bench, quick: bool) -> dict[str, Any]:
    """1: 0 ms added latency, immediate fills, 20 intents/s for 60 s."""
    duration = 10 if quick else 60
    runs = {}
    for kind in ("qexec", "baseline", "asyncio", "qexec+events"):
        with bench.paper(Venue()) as venue:
            runs[kind] = latency_run(bench, kind, venue, 20 * duration, 20, 8, duration + 60)
    table = compare(runs, ["p50_ms", "p95_ms", "p99_ms", "cpu_s_per_intent", "no_result_in_wait"])
    with_events = runs | {"qexec": runs["qexec+events"]}
    for key in ("p50_ms", "p99_ms", "cpu_s_per_intent"):
        table["rows"][f"{key} (task events on)"] = _row(with_events, key)
    return table


def realistic(bench: Bench, quick: bool) -> dict[str, Any]:
    """2: 50 ms round trip, immediate fills: latency at 5/s, then throughput with everything offered at once."""
    duration = 10 if quick else 30
    runs, burst = {}, {}
    for kind in EXECUTORS:
        with bench.paper(Venue(latency_ms=50)) as venue:
            runs[kind] = latency_run(bench, kind, venue, 5 * duration, 5, 16, duration + 60)
            count = (20 if quick else 60) if kind == "baseline" else (200 if quick else 800)
            burst[kind] = latency_run(bench, kind, venue, count, None, 32, 300, SCALE_IN, scale_in=True)
    table = compare(runs, ["p50_ms", "p95_ms", "p99_ms", "no_result_in_wait"])
    table["rows"]["throughput_per_s"] = _row(burst, "throughput_per_s")
    table["rows"]["burst_sent"] = _row(burst, "sent")
    table["rows"]["burst_filled"] = _row(burst, "filled")
    return table


def testnet(bench: Bench, quick: bool) -> dict[str, Any]:
    """3: fills arrive 300 ms after acceptance (RESULT answers NEW): confirmation lag and REST calls per intent."""
    count = 30 if quick else 150
    runs = {}
    for kind in EXECUTORS:
        with bench.paper(Venue(fill_delay_ms=300, result_wait_ms=0)) as venue:
            run = latency_run(bench, kind, venue, count, 5, 8, 120)
            lags = run.fill_lags_ms
            run.figures |= {
                "fill_to_result_p50_ms": pct(lags, 50),
                "fill_to_result_p95_ms": pct(lags, 95),
                "fill_to_result_p99_ms": pct(lags, 99),
                "accept_to_result_p50_ms": pct(run.accept_lags_ms, 50),
                # GET /fapi/v1/order calls over the late fills measured (every fill of this run is late)
                "confirm_calls_per_late_fill": run.figures["confirm_calls_per_intent"] * run.sent / max(1, len(lags)),
            }
            runs[kind] = run
        with bench.paper(Venue()) as venue:
            immediate = latency_run(bench, kind, venue, count, 5, 8, 120)
            runs[kind].figures["confirm_calls_immediate"] = immediate.figures["confirm_calls_per_intent"]
    return compare(
        runs,
        [
            "fill_to_result_p50_ms",
            "fill_to_result_p95_ms",
            "fill_to_result_p99_ms",
            "accept_to_result_p50_ms",
            "confirm_calls_per_late_fill",
            "confirm_calls_per_intent",
            "confirm_calls_immediate",
            "p50_ms",
            "no_result_in_wait",
        ],
    )


def ratelimit(bench: Bench, quick: bool) -> dict[str, Any]:
    """4: Binance's order limits (1200/min, 300/10 s), offered twice that for a minute, then drained.

    Every order the venue accepted counts (entries, stop-losses, take-profits), over the span from the first order
    to the last. The account has no other client here, so qexec is given the whole budget (QEXEC_LIMIT_MARGIN=1;
    its default 0.95 leaves 5 % to other clients of the same account).
    """
    duration = 20 if quick else 60
    runs = {}
    for kind in EXECUTORS:
        venue_flags = Venue(orders_per_10s=300, orders_per_min=1200, weight_limit=2400)
        with bench.paper(venue_flags) as venue:
            before = stats(venue)
            with OrderSampler(venue) as sampler:
                extra = SCALE_IN | {"QEXEC_LIMIT_MARGIN": "1"}
                run = latency_run(bench, kind, venue, 40 * duration, 40, 32, duration * 5 + 60, extra, scale_in=True)
            after = stats(venue)
            all_per_min, entries_per_min = sampler.per_minute()
            run.figures |= {
                "orders_per_min": all_per_min,
                "entry_orders_per_min": entries_per_min,
                "limit_used_pct": 100 * all_per_min / 1200,
                "http_429_418": (after["http_429"] + after["http_418"]) - (before["http_429"] + before["http_418"]),
            }
            runs[kind] = run
    keys = ["orders_per_min", "entry_orders_per_min", "limit_used_pct", "http_429_418", "sent", "filled"]
    return compare(runs, [*keys, "no_result_in_wait"])


def soak(bench: Bench, quick: bool) -> dict[str, Any]:
    """5: 10,000 intents: resident memory after the first thousand and at the end."""
    total = 2000 if quick else 10_000
    runs = {}
    for kind in EXECUTORS:
        with bench.paper(Venue()) as venue:
            url, r = bench.fresh_db()
            run = Run(kind)
            with bench.executor(kind, url, venue, 8) as procs:
                prices = marks(venue)
                first = offer(r, prices, 1000, 200)
                collect(r, first, 300)
                rss_first = sum(p.rss_mb() for p in procs)
                rest = offer(r, prices, total - 1000, 200)
                got = collect(r, rest, 900)
                rss_last = sum(p.rss_mb() for p in procs)
            run.sent, run.results = total, 1000 + len(got)
            run.figures |= {
                "rss_after_1k_mb": rss_first,
                "rss_at_end_mb": rss_last,
                "rss_growth_pct": 100 * (rss_last - rss_first) / rss_first,
            }
            runs[kind] = run
    return compare(runs, ["rss_after_1k_mb", "rss_at_end_mb", "rss_growth_pct", "no_result_in_wait"])


def placement_round_trips(venue_url: str, transport: str, count: int) -> list[float]:
    """ms per entry order placed through qexec's venue seam (python-binance, RESULT answers), one after another, over
    `transport` ("rest" or "ws"); the first two (connections) are left out."""
    from qexec.config import Settings  # noqa: PLC0415 - the bench's own process uses qexec only here
    from qexec.models import OrderType, Side  # noqa: PLC0415
    from qexec.venue.binance import BinanceVenue  # noqa: PLC0415

    venue = BinanceVenue(Settings(exchange_url=venue_url, order_transport=transport))
    took = []
    for n in range(count + 2):
        started = time.perf_counter()
        venue.place_order(
            symbol="BTCUSDT",
            side=Side.BUY if n % 2 == 0 else Side.SELL,
            order_type=OrderType.MARKET,
            quantity=Decimal("0.002"),
            client_order_id=f"rtt-{transport}-{uuid.uuid4().hex[:16]}",
        )
        took.append((time.perf_counter() - started) * 1000)
    venue.close()
    return took[2:]


def transport(bench: Bench, quick: bool) -> dict[str, Any]:
    """6: orders over REST and over the WebSocket API (QEXEC_ORDER_TRANSPORT), at 0 and 50 ms of venue latency: an
    entry's placement round trip through the venue seam, and qexec's intent -> result at 10 intents/s."""
    count = 50 if quick else 300
    rows: dict[str, dict[str, float]] = {}
    for latency in (0, 50):
        figures: dict[str, dict[str, float]] = {}
        for name in ("rest", "ws"):
            with bench.paper(Venue(latency_ms=latency)) as venue:
                took = placement_round_trips(venue, name, 30 if quick else 200)
            with bench.paper(Venue(latency_ms=latency)) as venue:
                run = latency_run(bench, "qexec", venue, count, 10, 8, 120, {"QEXEC_ORDER_TRANSPORT": name})
            figures[name] = {
                "placement_p50_ms": pct(took, 50),
                "placement_p99_ms": pct(took, 99),
                "intent_to_result_p50_ms": run.summary().get("p50_ms", float("nan")),
                "intent_to_result_p99_ms": run.summary().get("p99_ms", float("nan")),
                "cpu_ms_per_intent": 1000 * run.figures["cpu_s_per_intent"],
                "no_result_in_wait": run.sent - run.results,
            }
        for key in figures["rest"]:
            rest, ws = figures["rest"][key], figures["ws"][key]
            rows[f"{key} @{latency} ms"] = {"rest": rest, "ws": ws, "ws/rest": _ratio(ws, rest)}
    return {"columns": ["rest", "ws", "ws/rest"], "rows": rows}


def _ratio(q: float, b: float) -> float:
    return q / b if b and not math.isnan(b) else float("nan")


def _row(runs: dict[str, Run], key: str) -> dict[str, float]:
    q, b, a = (runs[kind].summary().get(key, float("nan")) for kind in EXECUTORS)
    return {"qexec": q, "baseline": b, "ratio": _ratio(q, b), "asyncio": a, "ratio_asyncio": _ratio(q, a)}


def compare(runs: dict[str, Run], keys: list[str]) -> dict[str, Any]:
    """One scenario's table: each figure for qexec, the naive baseline, the asyncio one, and qexec / each
    ("ratio" is qexec / naive, "ratio_asyncio" qexec / asyncio)."""
    return {"rows": {key: _row(runs, key) for key in keys}}


SCENARIOS: dict[str, Callable[[Bench, bool], dict[str, Any]]] = {
    "overhead": overhead,
    "realistic": realistic,
    "testnet": testnet,
    "ratelimit": ratelimit,
    "soak": soak,
    "transport": transport,
}


def render(name: str, table: dict[str, Any]) -> str:
    """A scenario's table as text."""
    if "columns" in table:  # a table of its own columns (transport: rest, ws, ws/rest)
        lines = [f"\n{name}", f"  {'figure':36} " + " ".join(f"{c:>10}" for c in table["columns"])]
        for key, row in table["rows"].items():
            lines.append(f"  {key:36} " + " ".join(f"{row[c]:>10.4g}" for c in table["columns"]))
        return "\n".join(lines)
    head = f"{'qexec':>10} {'naive':>10} {'asyncio':>10} {'q/naive':>8} {'q/async':>8}"
    lines = [f"\n{name}", f"  {'figure':36} {head}"]
    for key, row in table["rows"].items():
        figures = f"{row['qexec']:>10.4g} {row['baseline']:>10.4g} {row['asyncio']:>10.4g}"
        lines.append(f"  {key:36} {figures} {row['ratio']:>8.3g} {row['ratio_asyncio']:>8.3g}")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summary(report: dict[str, Any]) -> str:
    """The run as Markdown: when, which commit, on what machine, and each scenario's table."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], check=False, cwd=ROOT, capture_output=True, text=True
    )
    machine = report["machine"]
    lines = [
        f"# make bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Commit `{commit.stdout.strip() or 'unknown'}`; {machine['cpus']} CPUs ({machine['cpu']}), Python "
        f"{machine['python']}{'; --quick' if report['quick'] else ''}. Each figure is one run, not a median; the "
        "ratios are qexec / the naive baseline (bench/baseline.py) and qexec / the asyncio baseline "
        "(bench/async_baseline.py), all measured in the same run.",
    ]
    for name, table in report["scenarios"].items():
        lines += ["", "```", render(name, table).strip("\n"), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the chosen scenarios and print (and write) their tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--summary", type=Path, help="also write the tables, dated and with the commit, as Markdown")
    args = parser.parse_args()
    chosen = args.scenario or list(SCENARIOS)
    logs = Path(tempfile.mkdtemp(prefix="qexec-bench-"))
    # SIGTERM unwinds like Ctrl-C, so the finally below stops our Redis and every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(logs)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "python": sys.version.split()[0]},
        "quick": args.quick,
        "scenarios": {},
    }
    try:
        for name in chosen:
            started = time.monotonic()
            table = SCENARIOS[name](bench, args.quick)
            table["seconds"] = round(time.monotonic() - started, 1)
            report["scenarios"][name] = table
            print(render(name, table), flush=True)
    finally:
        bench.close()
    report["result_stream_breaches"] = bench.contract_breaches
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(summary(report))
    print(f"\nprocess logs in {logs} (each figure is one run, not a median)", file=sys.stderr)
    if bench.contract_breaches:
        print("result stream contract broken: " + "; ".join(bench.contract_breaches))
        sys.exit(1)
    print("result streams: one result per intent, nothing else (every qexec run)")


if __name__ == "__main__":
    main()
