"""Time to recover: a worker SIGKILLed (or Redis restarted) while chains wait for late fills, per broker.

.venv/bin/python bench/recovery.py [--broker redis|rabbitmq ...] [--fault kill|redis-restart ...] [--rounds 3]
                                   [--intents 8] [--fill-delay-ms 2500] [--json FILE] [--target-s 10]

For each broker and fault it starts its own Redis (AOF, `appendfsync everysec`), paper exchange, two workers (distinct
node names), a bridge and beat, all with qexec's production defaults for recovery (visibility timeout, lock times,
beat's schedule). Each round sends `--intents` MARKET intents on distinct symbols - every other one's fill delayed
by the venue, the others' submits answered only after that delay, so the fault finds chains both in confirm_fill
and inside place_order (holding the intent's place lock) - then 1 s later SIGKILLs one worker (restarted after the
round) or stops Redis for `--redis-down-s` and starts it again on its data. From that moment (Redis: from when it
answers again) it measures, per intent, when its one result was on the result stream and when its SL/TP were
placed; it prints the max and p95 over the rounds, checks one result and one entry order per intent and the SL/TP
open at the venue, and exits 1 above `--target-s` or on any loss or duplicate.
RabbitMQ needs a local server with `rabbitmqctl` (a vhost of its own is made and deleted); without one it is
reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from chaos import INTENT_STREAM, Chaos, admin, beat, bridge, epoch, pct, results_by_intent, start_paper, worker

from qexec.constants import PROTECTION_STREAM
from qexec.models import client_order_id, utcnow
from qexec.ops.redisserver import LocalRedis, free_port

# Symbols and sizes (USDT) each fill above their filters on the paper exchange.
SYMBOLS = ["ETHUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "LINKUSDT", "LTCUSDT", "TRXUSDT", "AVAXUSDT"]
SIZE_USD = 120.0
# Only what a bench must set: where things are, and that every round's entry adds to its symbol's position.
# Everything recovery depends on (visibility timeout, locks, beat's schedule, poll times) stays at its default.
STACK_ENV = {"QEXEC_MODE": "paper", "QEXEC_METRICS_PORT": "0", "QEXEC_SAME_SIDE_POLICY": "add"}
POLL_S = 0.05
GIVE_UP_S = 180.0  # a round still unrecovered after this is reported as such (the old path took ~2 minutes)


@dataclass
class Round:
    """One fault and what followed it: seconds from the fault (or Redis back) to each intent's result and guard."""

    result_s: dict[str, float] = field(default_factory=dict)
    protected_s: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def rabbitmq_vhost() -> str | None:
    """A fresh vhost on the local RabbitMQ, or None when there is none to use."""
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            pass
    except OSError:
        return None
    if shutil.which("rabbitmqctl") is None:
        return None
    vhost = f"qexec-recovery-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, timeout=60, capture_output=True)
    permissions = ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]
    subprocess.run(permissions, check=True, timeout=60, capture_output=True)
    return vhost


def guarded_symbols(chaos: Chaos) -> set[str]:
    """Symbols whose position holds an open stop-loss and take-profit at the venue."""
    algos = requests.get(chaos.paper_url + "/paper/v1/algoOrders", timeout=10).json()
    kinds: dict[str, set[str]] = {}
    for algo in algos:
        if algo.get("algoStatus") == "NEW":
            kinds.setdefault(algo["symbol"], set()).add(algo["orderType"])
    return {symbol for symbol, have in kinds.items() if {"STOP_MARKET", "TAKE_PROFIT_MARKET"} <= have}


def send(r: redis.Redis, chaos: Chaos, args: argparse.Namespace, tag: str) -> dict[str, str]:
    """Send one intent per symbol: intent id -> symbol. Every other one's fill is delayed by the venue (the chain
    waits in confirm_fill); the others' submits execute at once but are answered only after the delay (the worker
    is inside place_order, holding the intent's place lock, when the fault strikes)."""
    sent: dict[str, str] = {}
    for n, symbol in enumerate(SYMBOLS[: args.intents]):
        iid = f"rec-{tag}-{symbol.lower()}-{uuid.uuid4().hex[:6]}"
        kind = "fill_delay" if n % 2 else "slow"
        fault = {"kind": kind, "delay_ms": args.fill_delay_ms, "client_order_id": client_order_id(iid)}
        admin(chaos, "POST", "/faults", fault)
        intent = {"intent_id": iid, "symbol": symbol, "side": "BUY", "position_size_usd": SIZE_USD, "leverage": 2}
        r.xadd(INTENT_STREAM, {"payload": json.dumps(dict(intent, timestamp=utcnow().isoformat()))})
        sent[iid] = symbol
    return sent


def strike(chaos: Chaos, args: argparse.Namespace, fault: str, round_no: int) -> float:
    """Do the round's fault; the epoch time recovery is measured from."""
    if fault == "kill":
        victim = f"worker-{1 + round_no % 2}"
        chaos.kill(victim)
        chaos.note(f"SIGKILLed {victim}")
        return time.time()
    server = chaos.redis_server
    assert server is not None
    server.stop()
    time.sleep(args.redis_down_s)
    server.start()
    chaos.note(f"Redis restarted after {args.redis_down_s:g} s away")
    return time.time()


def watch(r: redis.Redis, sent: dict[str, str], since: float) -> Round:
    """Poll the result and protection streams until every intent has its result and its SL/TP placed (or give up).

    A protection event `placed` is published once the venue has acknowledged both orders; `exactly_once` then
    checks that they are still open at the venue."""
    found = Round()
    deadline = time.monotonic() + GIVE_UP_S
    while time.monotonic() < deadline and (len(found.result_s) < len(sent) or len(found.protected_s) < len(sent)):
        try:
            results = results_by_intent(r)[0]
            guards = protection_by_intent(r)
        except redis.RedisError:
            results, guards = {}, {}
        for iid in sent:
            if iid in results and iid not in found.result_s:
                found.result_s[iid] = max(0.0, epoch(results[iid][0]["published_at"]) - since)
            if iid in guards and iid not in found.protected_s:
                found.protected_s[iid] = max(0.0, guards[iid] - since)
        time.sleep(POLL_S)
    for iid in sent:
        if iid not in found.result_s:
            found.problems.append(f"{iid}: no result {GIVE_UP_S:g} s after the fault")
        if iid not in found.protected_s:
            found.problems.append(f"{iid}: no stop-loss and take-profit {GIVE_UP_S:g} s after the fault")
    return found


def protection_by_intent(r: redis.Redis) -> dict[str, float]:
    """Intent id -> epoch time of its first `placed` protection event (the stream entry's own time)."""
    placed: dict[str, float] = {}
    for entry_id, fields in r.xrange(PROTECTION_STREAM):
        event = json.loads(fields["payload"])
        if event.get("status") == "placed" and fields.get("intent_id") not in placed:
            placed[fields["intent_id"]] = int(entry_id.split("-")[0]) / 1000
    return placed


def exactly_once(r: redis.Redis, chaos: Chaos, sent: dict[str, str]) -> list[str]:
    """One result per intent on the stream, one entry order per intent at the venue, and each position's stop-loss
    and take-profit open there."""
    problems = []
    results = results_by_intent(r)[0]
    unguarded = set(sent.values()) - guarded_symbols(chaos)
    problems += [f"{symbol}: no open stop-loss and take-profit at the venue" for symbol in sorted(unguarded)]
    for iid in sent:
        if len(results.get(iid, [])) != 1:
            problems.append(f"{iid}: {len(results.get(iid, []))} results")
        orders = requests.get(
            chaos.paper_url + "/paper/v1/orders", params={"clientOrderId": client_order_id(iid)}, timeout=10
        ).json()
        if len(orders) != 1:
            problems.append(f"{iid}: {len(orders)} entry orders at the venue")
        if results.get(iid) and results[iid][0]["status"] != "filled":
            problems.append(f"{iid}: {results[iid][0]['status']}: {results[iid][0].get('reason')}")
    return problems


def scenario(args: argparse.Namespace, broker: str, fault: str) -> dict[str, Any]:
    """Run the rounds of one broker and fault on a stack of their own; the figures."""
    vhost = rabbitmq_vhost() if broker == "rabbitmq" else None
    if broker == "rabbitmq" and vhost is None:
        return {"broker": broker, "fault": fault, "skipped": "no RabbitMQ with rabbitmqctl on 127.0.0.1:5672"}
    logs_dir = Path(tempfile.mkdtemp(prefix=f"qexec-recovery-{broker}-{fault}-"))
    chaos = Chaos(args=args, logs_dir=logs_dir)
    rounds: list[Round] = []
    try:
        chaos.redis_server = LocalRedis(port=free_port(), data_dir=logs_dir / "redis", appendonly=True).start()
        start_paper(chaos, seed=1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("QEXEC_")}
        env.update(STACK_ENV, PYTHONUNBUFFERED="1", QEXEC_REDIS_URL=chaos.redis_server.url)
        env.update(QEXEC_EXCHANGE_URL=chaos.paper_url)
        if vhost is not None:
            env["QEXEC_BROKER_URL"] = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
        chaos.env = env
        workers = [worker("worker-1"), worker("worker-2")]
        for child in (*workers, bridge("bridge-1"), beat()):
            chaos.start(child)
        r = redis.Redis.from_url(chaos.redis_server.url, decode_responses=True, socket_timeout=10)
        for round_no in range(args.rounds):
            sent = send(r, chaos, args, f"{broker[0]}{fault[0]}{round_no}")
            time.sleep(args.strike_after_s)
            since = strike(chaos, args, fault, round_no)
            found = watch(r, sent, since)
            time.sleep(1)  # a second result, were there one, would land right behind the first
            found.problems += exactly_once(r, chaos, sent)
            rounds.append(found)
            chaos.note(
                f"round {round_no + 1}: results by {max(found.result_s.values(), default=0):.1f} s, "
                f"guards by {max(found.protected_s.values(), default=0):.1f} s"
            )
            for child in workers:
                if not child.alive:
                    chaos.start(child)
    finally:
        chaos.stop_all()
        if vhost is not None:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, timeout=60, capture_output=True)
    return summary(broker, fault, rounds, logs_dir, args)


def summary(broker: str, fault: str, rounds: list[Round], logs_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The figures of one scenario, and whether it met the target."""
    results = [s for one in rounds for s in one.result_s.values()]
    guards = [s for one in rounds for s in one.protected_s.values()]
    problems = [p for one in rounds for p in one.problems]
    figures: dict[str, Any] = {
        "broker": broker,
        "fault": fault,
        "rounds": len(rounds),
        "intents": sum(len(one.result_s) for one in rounds),
        "result_max_s": pct(results, 100),
        "result_p95_s": pct(results, 95),
        "protected_max_s": pct(guards, 100),
        "protected_p95_s": pct(guards, 95),
        "problems": problems,
        "logs": str(logs_dir),
    }
    worst = max(figures["result_max_s"] or GIVE_UP_S, figures["protected_max_s"] or GIVE_UP_S)
    figures["ok"] = not problems and worst <= args.target_s
    if figures["ok"] and not args.keep_logs:
        shutil.rmtree(logs_dir, ignore_errors=True)
    return figures


def table(rows: list[dict[str, Any]], target_s: float) -> str:
    """The figures as one table."""
    head = f"{'broker':<9} {'fault':<14} {'rounds':>6} {'result max/p95 s':>17} {'SL+TP max/p95 s':>16}  verdict"
    lines = [head, "-" * len(head)]
    for row in rows:
        if "skipped" in row:
            lines.append(f"{row['broker']:<9} {row['fault']:<14} skipped: {row['skipped']}")
            continue
        verdict = "ok" if row["ok"] else f"MISSED (target {target_s:g} s; logs {row['logs']})"
        lines.append(
            f"{row['broker']:<9} {row['fault']:<14} {row['rounds']:>6} "
            f"{_pair(row['result_max_s'], row['result_p95_s']):>17} "
            f"{_pair(row['protected_max_s'], row['protected_p95_s']):>16}  {verdict}"
        )
        lines += [f"    {problem}" for problem in row["problems"]]
    return "\n".join(lines)


def _pair(high: float | None, p95: float | None) -> str:
    return f"{high if high is not None else '-'} / {p95 if p95 is not None else '-'}"


def main() -> None:
    """Parse the options, run every broker and fault asked for, print the table and exit 1 on a miss."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", action="append", choices=["redis", "rabbitmq"])
    parser.add_argument("--fault", action="append", choices=["kill", "redis-restart"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--intents", type=int, default=8, choices=range(1, len(SYMBOLS) + 1), metavar="N")
    parser.add_argument("--fill-delay-ms", type=int, default=2500)
    parser.add_argument("--strike-after-s", type=float, default=1.0)
    parser.add_argument("--redis-down-s", type=float, default=5.0)
    parser.add_argument("--target-s", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    rows = [
        scenario(args, broker, fault)
        for broker in args.broker or ["redis", "rabbitmq"]
        for fault in args.fault or ["kill", "redis-restart"]
    ]
    print(table(rows, args.target_s))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    sys.exit(0 if all(row.get("ok", True) for row in rows) else 1)


if __name__ == "__main__":
    main()
