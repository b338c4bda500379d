"""The chaos suite: intents through a full stack while the venue misbehaves and processes are SIGKILLed.

.venv/bin/python bench/chaos.py [--intents 500] [--seed 1] [--json FILE] [--rate 8] [--worker-kills 3]
                                [--bridge-kills 2] [--redis-drop restart|kill|none] [--redis-down-s 5] [--keep-logs]

It starts its own Redis (AOF), paper exchange (`--state :memory:`, seeded chaos mode injecting every fault it
knows), two workers, two bridges and beat; sends the intents at a steady rate; SIGKILLs workers and bridges at
seeded moments and restarts them; restarts Redis once (down 5 s, beat running); then waits for the results and compares
them with the venue. It prints one table, writes it as JSON, and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
import requests

from qexec.models import client_order_id, utcnow
from qexec.ops.redisserver import LocalRedis, free_port
from qexec.worker.command import WITHOUT_PEERS, worker_argv

ROOT = Path(__file__).resolve().parent.parent
INTENT_STREAM = "quantum:stream:trade.intent"
RESULT_STREAM = "quantum:stream:trade.execution.res"

# Every fault the paper exchange knows, on order submits (kinds are tried in alphabetical order per request).
FAULT_PROBABILITIES = {
    "fill_delay": 0.06,
    "latency": 0.02,
    "partial_fill": 0.04,
    "rate_limit": 0.003,  # a short ban: every request from our IP gets 429 for `seconds`
    "reject": 0.03,
    "slow": 0.03,
    "timeout": 0.04,
    "timestamp": 0.03,
    "unavailable": 0.03,
    "unknown_after": 0.04,
    "unknown_before": 0.03,
}
FAULT_DELAY_MS = 2500  # longer than the request timeout: slow/latency become client timeouts, fills come late
BAN_S = 3

# Short venue deadlines so the deadline paths run within the run; recovery itself (the visibility timeout, the node
# beat and beat's takeover, the locks) stays at the production settings.
STACK_ENV = {
    "QEXEC_MODE": "paper",
    "QEXEC_METRICS_PORT": "0",
    "QEXEC_REQUEST_TIMEOUT_S": "2",
    "QEXEC_FILL_TIMEOUT_S": "10",
    "QEXEC_UNKNOWN_LOOKUP_S": "3",
    "QEXEC_POLL_INITIAL_S": "0.1",
    "QEXEC_POLL_MAX_S": "0.5",
    "QEXEC_CLAIM_IDLE_MS": "3000",
    "QEXEC_RECONCILE_EVERY_S": "5",
    "QEXEC_RETRY_COUNTDOWN_MAX_S": "2",
    "QEXEC_BROKER_WAIT_S": "8",  # a step waits this long for Redis to come back before leaving it to the sweep
    # Every intent is an entry: each symbol keeps one side, and entries add to the open position.
    "QEXEC_SAME_SIDE_POLICY": "add",
}

# Symbol, smallest and largest notional (USDT) that stay above the filters after rounding down.
SYMBOLS = [
    ("ETHUSDT", 40, 200),
    ("BNBUSDT", 20, 150),
    ("XRPUSDT", 10, 120),
    ("DOGEUSDT", 10, 120),
    ("ADAUSDT", 10, 120),
    ("LINKUSDT", 10, 120),
    ("LTCUSDT", 10, 150),
    ("TRXUSDT", 10, 120),
    ("AVAXUSDT", 20, 120),
    ("DOTUSDT", 10, 120),
]
TARGETS = (
    "lost",
    "duplicate_orders",
    "duplicate_results",
    "foreign_result_entries",
    "wrong_fills",
    "unreported_fills",
    "rate_limit_violations",
)
# Time to recover, from a worker's SIGKILL (or Redis answering again) to each in-flight intent's result and SL/TP:
# the 10 s, beyond the run's own fill deadline (a LIMIT entry in flight waits for it, kill or not).
RECOVERY_TARGET_S = 10.0 + float(STACK_ENV["QEXEC_FILL_TIMEOUT_S"])
PROTECTION_STREAM = "quantum:stream:trade.protection"


@dataclass
class Child:
    """A process of the stack, by role, with its log file."""

    name: str
    argv: list[str]
    ready: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Chaos:
    """The running stack and what the suite has done to it."""

    args: argparse.Namespace
    logs_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)
    redis_server: LocalRedis | None = None
    paper: subprocess.Popen[bytes] | None = None
    paper_url: str = ""
    kills: Counter[str] = field(default_factory=Counter)
    drops: int = 0
    faults_at: list[float] = field(default_factory=list)  # epoch time of each kill, and of Redis answering again
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, text: str) -> None:
        """Print and remember one event of the run."""
        line = f"[chaos +{time.monotonic() - START:6.1f}s] {text}"
        with self.lock:
            self.events.append(line)
        print(line, flush=True)

    # -- processes ---------------------------------------------------------------------------------

    def start(self, child: Child, timeout_s: float = 60) -> None:
        """Start a child and wait for its readiness line in its log."""
        log_path = self.logs_dir / f"{child.name}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as handle:
            child.proc = subprocess.Popen(child.argv, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT)
        self.children[child.name] = child
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with log_path.open("rb") as handle:
                handle.seek(offset)
                if child.ready.encode() in handle.read():
                    return
            if child.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{child.name} did not start (see {log_path})")

    def kill(self, name: str) -> None:
        """SIGKILL a child and reap it."""
        proc = self.children[name].proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        """SIGTERM every child, SIGKILL the stragglers, then the paper exchange and Redis."""
        procs = [c.proc for c in self.children.values() if c.proc is not None and c.proc.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.paper is not None and self.paper.poll() is None:
            self.paper.terminate()
            self.paper.wait(10)
        if self.redis_server is not None:
            self.redis_server.stop()


START = time.monotonic()


def worker(name: str) -> Child:
    """A `celery -A qexec worker` on the threads pool."""
    argv = worker_argv(concurrency=4, node_name=f"{name}-{os.urandom(3).hex()}@%h", extra=WITHOUT_PEERS)
    return Child(name, argv, "ready.")


def bridge(name: str) -> Child:
    """A `qexec bridge` with its own consumer name."""
    return Child(name, [sys.executable, "-m", "qexec.cli", "bridge", "--consumer", name], "reading")


def beat() -> Child:
    """`celery -A qexec beat` (reclaim, reconcile, heartbeat)."""
    return Child(
        "beat", [sys.executable, "-m", "celery", "-A", "qexec", "beat", "--loglevel", "INFO"], "beat: Starting"
    )


def start_paper(chaos: Chaos, seed: int) -> None:
    """`qexec paper` in memory with frozen prices and a deep wallet, then its chaos mode switched on."""
    port = free_port()
    script = Path(sys.executable).parent / "qexec"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "qexec.cli"]
    argv = [*command, "paper", "--port", str(port), "--state", ":memory:", "--seed", str(seed), "--tick-ms", "0"]
    argv += ["--result-wait-ms", "0", "--balance", "10000000"]
    with (chaos.logs_dir / "paper.log").open("ab") as handle:
        chaos.paper = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT)
    chaos.paper_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(chaos.paper_url + "/fapi/v1/ping", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the paper exchange did not start")


def admin(chaos: Chaos, method: str, path: str, body: Any = None) -> Any:
    """Call the paper exchange's admin API."""
    response = requests.request(method, chaos.paper_url + "/paper/v1" + path, json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def make_intents(n: int, rng: random.Random, marks: dict[str, str]) -> list[dict[str, Any]]:
    """N seeded intents: mostly MARKET, a tenth marketable LIMIT, random symbols, sizes and leverage."""
    sides = {symbol: rng.choice(["BUY", "SELL"]) for symbol, _low, _high in SYMBOLS}
    leverages = {symbol: rng.randint(2, 5) for symbol, _low, _high in SYMBOLS}
    intents = []
    for i in range(n):
        symbol, low, high = rng.choice(SYMBOLS)
        side = sides[symbol]
        intent: dict[str, Any] = {
            "intent_id": f"chaos-{rng.getrandbits(48):012x}-{i}",
            "symbol": symbol,
            "side": side,
            "position_size_usd": round(rng.uniform(low, high), 2),
            "leverage": leverages[symbol],
        }
        if rng.random() < 0.1:
            through = Decimal("1.02") if side == "BUY" else Decimal("0.98")
            intent.update(order_type="LIMIT", entry_price=float(Decimal(marks[symbol]) * through))
        intents.append(intent)
    return intents


def monkey(chaos: Chaos, plan: list[tuple[float, str]], rng: random.Random, stop: threading.Event) -> None:
    """Carry out the planned kills and the Redis drop at their moments, restarting what was killed."""
    t0 = time.monotonic()
    for at, action in plan:
        if stop.wait(max(0.0, t0 + at - time.monotonic())):
            return
        try:
            if action in ("worker", "bridge"):
                names = sorted(n for n, c in chaos.children.items() if n.startswith(action + "-") and c.alive)
                name = rng.choice(names)
                chaos.kill(name)
                if action == "worker":
                    chaos.faults_at.append(time.time())
                chaos.kills[action] += 1
                chaos.note(f"SIGKILL {name}")
                time.sleep(rng.uniform(1.0, 4.0))
                restart(chaos, worker(name) if action == "worker" else bridge(name), stop)
            elif action == "redis":
                drop_redis(chaos)
            elif action == "ban":
                # A short rate-limit ban of our IP on every endpoint, as the venue hands out after a burst.
                admin(
                    chaos, "POST", "/faults", {"kind": "rate_limit", "endpoint": "*", "status": 429, "seconds": BAN_S}
                )
                chaos.note(f"venue bans our IP with 429 for {BAN_S} s")
        except Exception as exc:  # the run goes on and reports what the stack did
            chaos.note(f"{action} failed: {exc!r}")


def restart(chaos: Chaos, child: Child, stop: threading.Event) -> None:
    """Start a killed process again, as a supervisor would: until it comes up."""
    for attempt in range(1, 11):
        try:
            chaos.start(child)
        except RuntimeError:
            chaos.note(f"{child.name} did not come up (attempt {attempt}); trying again")
            if stop.wait(2.0):
                return
        else:
            chaos.note(f"restarted {child.name}")
            return


def drop_redis(chaos: Chaos) -> None:
    """Drop every client connection to our Redis (CLIENT KILL), or restart it on the same port and data."""
    server = chaos.redis_server
    assert server is not None
    if chaos.args.redis_drop == "restart":
        server.stop()
        time.sleep(chaos.args.redis_down_s)
        server.start()
        chaos.faults_at.append(time.time())
        chaos.note(f"restarted Redis (AOF) after {chaos.args.redis_down_s:g} s away")
    else:
        client = redis.Redis.from_url(server.url)
        killed = client.client_kill_filter(_type="normal", skipme=True)
        killed += client.client_kill_filter(_type="pubsub")
        client.close()
        chaos.note(f"CLIENT KILL: dropped {killed} Redis connections")
    chaos.drops += 1


def results_by_intent(r: redis.Redis) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Every entry of the result stream read as a result, by intent id; and how many entries were something else
    than an execution result (the contract says none)."""
    found: dict[str, list[dict[str, Any]]] = {}
    foreign = 0
    last = "-"
    while True:
        batch: Any = r.xrange(RESULT_STREAM, min=last, count=2000)
        if last != "-":
            batch = batch[1:]
        if not batch:
            return found, foreign
        for _entry_id, fields in batch:
            payload = json.loads(fields["payload"])
            if fields.get("kind") != "execution":
                foreign += 1
            found.setdefault(payload["intent_id"], []).append(payload)
        last = batch[-1][0]


def recovery(chaos: Chaos, results: dict[str, list[dict[str, Any]]], r: redis.Redis) -> dict[str, Any]:
    """Seconds from each fault to each result and each `placed` protection event of an intent in flight then (its
    result came after the fault, and it was received before it): max and p95, and how many went over the target."""
    received = {i: epoch(found[0]["received_at"]) for i, found in results.items()}
    published = {i: epoch(found[0]["published_at"]) for i, found in results.items()}
    placed: dict[str, float] = {}
    for entry_id, fields in r.xrange(PROTECTION_STREAM):
        if json.loads(fields["payload"]).get("status") == "placed":
            placed.setdefault(fields.get("intent_id", ""), int(entry_id.split("-")[0]) / 1000)
    waits: dict[str, list[float]] = {"result": [], "protection": []}
    for at in chaos.faults_at:
        in_flight = [i for i in results if received[i] < at < published[i]]
        waits["result"] += [published[i] - at for i in in_flight]
        waits["protection"] += [placed[i] - at for i in in_flight if placed.get(i, 0) > at]
    figures: dict[str, Any] = {"recovery_target_s": RECOVERY_TARGET_S}
    for kind, values in waits.items():
        ordered = sorted(values)
        figures[f"{kind}_recovery_max_s"] = round(ordered[-1], 2) if ordered else None
        figures[f"{kind}_recovery_p95_s"] = (
            round(ordered[max(0, int(len(ordered) * 0.95 + 0.5) - 1)], 2) if ordered else None
        )
        figures[f"{kind}_recovery_over_target"] = sum(1 for v in values if v > RECOVERY_TARGET_S)
        figures[f"{kind}_recovery_samples"] = len(values)
    return figures


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))], 2)


def epoch(iso: str) -> float:
    """An ISO time's epoch seconds."""
    return datetime.fromisoformat(iso).timestamp()


def check(chaos: Chaos, intents: list[dict[str, Any]], r: redis.Redis) -> dict[str, Any]:
    """Compare every intent's results with the venue's orders and count each kind of failure."""
    results, foreign = results_by_intent(r)
    orders: list[dict[str, Any]] = admin(chaos, "GET", "/orders")
    by_client: dict[str, list[dict[str, Any]]] = {}
    by_id: dict[int, dict[str, Any]] = {}
    for order in orders:
        by_client.setdefault(order["clientOrderId"], []).append(order)
        by_id[int(order["orderId"])] = order
    stats = admin(chaos, "GET", "/stats")
    problems: list[str] = []
    lost = duplicate_orders = duplicate_results = wrong_fills = unreported_fills = 0
    statuses: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for intent in intents:
        iid = intent["intent_id"]
        mine = results.get(iid, [])
        venue = by_client.get(client_order_id(iid), [])
        if not mine:
            lost += 1
            problems.append(f"lost: {iid} ({len(venue)} venue orders)")
            continue
        statuses[mine[0]["status"]] += 1
        if len(mine) > 1:
            duplicate_results += 1
            problems.append(f"{len(mine)} results: {iid}")
        if len(venue) > 1:
            duplicate_orders += 1
            problems.append(f"{len(venue)} entry orders: {iid}")
        result = mine[0]
        if result["status"] != "filled":
            reason = re.sub(r"\d+(\.\d+)?", "N", str(result.get("reason")))[:100]
            reasons[f"{result['status']}: {reason}"] += 1
        if result["status"] in ("filled", "partially_filled"):
            order = by_id.get(int(result.get("order_id") or 0))
            if (
                order is None
                or not result.get("entry_price")
                or not result.get("quantity")
                or Decimal(str(result["entry_price"])) != Decimal(order["avgPrice"])
                or Decimal(str(result["quantity"])) != Decimal(order["executedQty"])
            ):
                wrong_fills += 1
                problems.append(f"wrong fill: {iid} result={result} venue={order}")
        elif any(Decimal(o["executedQty"]) > 0 for o in venue):
            unreported_fills += 1
            problems.append(f"fill reported as {result['status']}: {iid} ({result.get('reason')})")
    return {
        "intents_sent": len(intents),
        "terminal_results": sum(1 for i in intents if i["intent_id"] in results),
        "lost": lost,
        "duplicate_orders": duplicate_orders,
        "duplicate_results": duplicate_results,
        "foreign_result_entries": foreign,
        "wrong_fills": wrong_fills,
        "unreported_fills": unreported_fills,
        "rate_limit_violations": int(stats["limit_violations"]),
        "worker_kills": chaos.kills["worker"],
        "bridge_kills": chaos.kills["bridge"],
        "redis_drops": chaos.drops,
        "statuses": dict(statuses),
        "reasons": dict(reasons),
        "venue_requests": stats.get("requests", {}),
        "unexpected_exits": sorted(n for n, c in chaos.children.items() if not c.alive),
        "faults_fired": stats.get("faults_fired", {}),
        "venue_http_429": stats.get("http_429"),
        "venue_http_418": stats.get("http_418"),
        "venue_orders": len(orders),
        "problems": problems[:50],
        **recovery(chaos, results, r),
    }


ROWS = [
    ("intents sent", "intents_sent", None),
    ("terminal results", "terminal_results", None),
    ("intents without a result (lost)", "lost", 0),
    ("intents with >1 entry order (duplicates)", "duplicate_orders", 0),
    ("intents with >1 result", "duplicate_results", 0),
    ("result stream entries that are not results", "foreign_result_entries", 0),
    ("fills with a zero or wrong price/qty", "wrong_fills", 0),
    ("venue fills reported as no fill", "unreported_fills", 0),
    ("rate-limit violations (venue)", "rate_limit_violations", 0),
    ("worker kills", "worker_kills", None),
    ("bridge kills", "bridge_kills", None),
    ("Redis restarts / connection drops", "redis_drops", None),
]


def table(report: dict[str, Any]) -> str:
    """The report as one plain-text table."""
    lines = [f"{'metric':<44} {'value':>7}  target", f"{'-' * 44} {'-' * 7}  ------"]
    for label, key, target in ROWS:
        mark = "" if target is None else ("0  ok" if report[key] == target else "0  MISSED")
        lines.append(f"{label:<44} {report[key]:>7}  {mark}")
    for kind in ("result", "protection"):
        over = report[f"{kind}_recovery_over_target"]
        lines.append(
            f"{kind + ' after a fault, max / p95 s':<44} "
            f"{report[f'{kind}_recovery_max_s']} / {report[f'{kind}_recovery_p95_s']}"
            f"  <= {report['recovery_target_s']:g} s {'ok' if over == 0 else f'MISSED ({over})'}"
        )
    lines.append(f"statuses: {json.dumps(report['statuses'], sort_keys=True)}")
    lines.append(f"faults fired: {json.dumps(report['faults_fired'], sort_keys=True)}")
    lines.append(f"venue 429s: {report['venue_http_429']}, 418s: {report['venue_http_418']}")
    lines.append(f"processes that exited by themselves: {report['unexpected_exits'] or 'none'}")
    for reason, count in sorted(report["reasons"].items(), key=lambda item: -item[1]):
        lines.append(f"  {count:4} x {reason}")
    return "\n".join(lines)


def plan_chaos(args: argparse.Namespace, rng: random.Random, inject_s: float) -> list[tuple[float, str]]:
    """Seeded moments for the kills and the Redis drop, inside the injection window."""
    plan = [(rng.uniform(0.1, 0.9) * inject_s, "worker") for _ in range(args.worker_kills)]
    plan += [(rng.uniform(0.1, 0.9) * inject_s, "bridge") for _ in range(args.bridge_kills)]
    if args.redis_drop != "none":
        plan.append((rng.uniform(0.3, 0.7) * inject_s, "redis"))
    plan.append((rng.uniform(0.2, 0.8) * inject_s, "ban"))
    return sorted(plan)


def run(args: argparse.Namespace) -> int:
    """Start the stack, drive the intents through the chaos, check, print and write the table."""
    rng = random.Random(args.seed)
    logs_dir = Path(tempfile.mkdtemp(prefix="qexec-chaos-"))
    chaos = Chaos(args=args, logs_dir=logs_dir)
    stop = threading.Event()
    code = 1
    try:
        chaos.redis_server = LocalRedis(port=free_port(), data_dir=logs_dir / "redis", appendonly=True).start()
        start_paper(chaos, args.seed)
        env = {k: v for k, v in os.environ.items() if not k.startswith("QEXEC_")}
        env.update(STACK_ENV, PYTHONUNBUFFERED="1")
        env.update(QEXEC_REDIS_URL=chaos.redis_server.url, QEXEC_EXCHANGE_URL=chaos.paper_url)
        chaos.env = env
        for child in (worker("worker-1"), worker("worker-2"), bridge("bridge-1"), bridge("bridge-2"), beat()):
            chaos.start(child)
        chaos.note(f"stack up: Redis {chaos.redis_server.url}, paper {chaos.paper_url}, logs in {logs_dir}")
        marks = admin(chaos, "GET", "/prices")
        admin(
            chaos,
            "POST",
            "/config",
            {
                "chaos": {
                    "seed": args.seed,
                    "probabilities": FAULT_PROBABILITIES,
                    "delay_ms": FAULT_DELAY_MS,
                    "seconds": BAN_S,
                }
            },
        )
        intents = make_intents(args.intents, rng, marks)
        inject_s = args.intents / args.rate
        monkey_thread = threading.Thread(
            target=monkey, args=(chaos, plan_chaos(args, rng, inject_s), rng, stop), daemon=True
        )
        r = redis.Redis.from_url(chaos.redis_server.url, decode_responses=True, socket_timeout=10)
        monkey_thread.start()
        t0 = time.monotonic()
        for n, intent in enumerate(intents):
            time.sleep(max(0.0, t0 + n / args.rate - time.monotonic()))
            body = dict(intent, timestamp=utcnow().isoformat())
            for _attempt in range(50):  # a dropped connection is retried, as a producer would
                try:
                    r.xadd(INTENT_STREAM, {"payload": json.dumps(body)})
                    break
                except redis.ConnectionError:
                    time.sleep(0.2)
        chaos.note(f"sent {len(intents)} intents in {time.monotonic() - t0:.1f} s")
        monkey_thread.join()
        deadline = time.monotonic() + args.settle_s
        ids = {i["intent_id"] for i in intents}
        while time.monotonic() < deadline:
            try:
                if ids <= set(results_by_intent(r)[0]):
                    break
            except redis.ConnectionError:
                pass
            time.sleep(1)
        time.sleep(2)  # a second result, were there one, would land right behind the first
        chaos.note(f"settled {time.monotonic() - t0:.1f} s after the first intent")
        report = check(chaos, intents, r)
        report.update(seed=args.seed, rate_per_s=args.rate, logs=str(logs_dir), events=chaos.events)
        print(table(report))
        for problem in report["problems"]:
            print("  " + problem)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True))
        recovered = report["result_recovery_over_target"] == report["protection_recovery_over_target"] == 0
        code = 0 if recovered and all(report[key] == 0 for key in TARGETS) else 1
    finally:
        stop.set()
        chaos.stop_all()
        if code == 0 and not args.keep_logs:
            shutil.rmtree(logs_dir, ignore_errors=True)
        else:
            print(f"logs kept in {logs_dir}")
    return code


def main() -> None:
    """Parse the options and run the suite."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=int, default=500, help="intents to send (default 500)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the intents, faults and kills (default 1)")
    parser.add_argument("--json", default=None, help="write the report to this file")
    parser.add_argument("--rate", type=float, default=4.0, help="intents per second offered (default 4)")
    parser.add_argument("--worker-kills", type=int, default=3)
    parser.add_argument("--bridge-kills", type=int, default=2)
    parser.add_argument(
        "--redis-drop",
        choices=["kill", "restart", "none"],
        default="restart",
        help="restart Redis (default: stopped, down --redis-down-s, started on the same port and data), or CLIENT KILL",
    )
    parser.add_argument("--redis-down-s", type=float, default=5.0, help="how long a restarted Redis stays down (5)")
    parser.add_argument("--settle-s", type=float, default=240.0, help="longest wait for the last results")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs even on success")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
