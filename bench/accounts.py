"""Many accounts at once (issue 19): each account offered more than its order limit on one paper exchange, and
how the venue's accepted orders grow from 1 to 4 accounts with 1, 2 and 4 worker processes.

.venv/bin/python bench/accounts.py [--quick] [--accounts 1,2,4] [--workers 1,2,4] [--duration S] [--threads N]
    [--offer X] [--own-levels] [--json FILE]

For each (accounts, workers): a paper exchange with Binance's limits (300 orders/10 s and 1,200/min per account,
2,400 request weight/min per IP, shared by all the accounts) and an `--account` with its paper keys for each account
besides `default`; our own Redis; qexec with QEXEC_ACCOUNTS, one bridge and N worker processes (distinct node
names, `--threads` each). Each account is offered `--offer` times its order limit in intents for `--duration`
seconds (round robin over the accounts, each intent naming its own; BUYs only, under QEXEC_SAME_SIDE_POLICY=add as
in bench.py's `ratelimit`), then the stack drains. Per account: the orders the venue accepted per minute (entries,
stop-losses and take-profits) over its busy span, as % of 1,200; intents without exactly one result. Per run: the
venue's 429/418 answers (they are the IP's: one count for every account), REST reads per intent, CPU.

The bench accounts have no other client, so qexec is given the whole budget (QEXEC_LIMIT_MARGIN=1, as `ratelimit`);
its default 0.95 leaves 5 % to other clients of the account and of the IP.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import redis

from qexec.paper.endpoints import ENDPOINTS
from qexec.paper.params import Params
from qexec.worker.command import WITHOUT_PEERS, worker_argv

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # the bench's own machinery, next to this file

ORDERS_PER_10S = 300
ORDERS_PER_MIN = 1200  # each account's, as Binance counts them
WEIGHT_PER_MIN = 2400  # the IP's, shared by every account
TARGET_PCT = 95.0
ORDER_PATHS = ("POST /fapi/v1/order", "POST /fapi/v1/algoOrder")
LOG_MARKERS = ("RATE_LIMIT_PAUSE", "RATE_LIMIT_WAITED", "retry:", "ORDER_ERROR", "Traceback", "FEED_DOWN")


def account_names(count: int) -> tuple[str, ...]:
    """`default` and count - 1 more accounts."""
    return ("default", *(f"sleeve{n}" for n in range(2, count + 1)))


def settings(names: tuple[str, ...]) -> dict[str, str]:
    """qexec's settings for the run, beyond the bench's own (Bench.env)."""
    return B.SCALE_IN | {"QEXEC_LIMIT_MARGIN": "1", "QEXEC_ACCOUNTS": ",".join(names[1:])}


def _feeds_live(worker: B.Proc, feeds: int) -> bool:
    text = worker.log.read_text(errors="replace")
    return text.count("FEED_LIVE stream=user") >= feeds and text.count("FEED_LIVE stream=marks") >= feeds


@contextmanager
def stack(
    bench: B.Bench, redis_url: str, venue_url: str, workers: int, threads: int, names: tuple[str, ...]
) -> Iterator[list[B.Proc]]:
    """qexec for `names`: `workers` worker processes (`threads` each, distinct node names), then one bridge; from when
    every worker's venue streams are up, one user-data stream and one mark stream per account."""
    env = bench.env(redis_url, venue_url, settings(names))
    tag = uuid.uuid4().hex[:6]
    procs: list[B.Proc] = []
    try:
        for n in range(workers):
            argv = worker_argv(
                concurrency=threads,
                node_name=f"bench-{tag}-{n}@%h",
                extra=list(WITHOUT_PEERS),
                program=[str(B.BIN / "celery")],
            )
            procs.append(B.spawn(f"worker-{tag}-{n}", argv, env, bench.logs, "ready.", 90))
        for worker in list(procs):
            B._wait_for(functools.partial(_feeds_live, worker, len(names)), 60)
        time.sleep(1.1)
        bridge = [str(B.BIN / "qexec"), "bridge", "--log-level", "INFO"]
        procs.append(B.spawn(f"bridge-{tag}", bridge, env, bench.logs, lambda: B._group_exists(redis_url), 60))
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop()


def levels(price: float, turn: int) -> dict[str, float]:
    """A BUY's own stop-loss and take-profit, every other one of a position's intents 1 % further out: an intent
    whose levels are its position's newest moves them, so qexec re-places both (a cancel and an algo order each)."""
    wider = 0.01 * (turn % 2)
    return {"stop_loss": price * (0.98 - wider), "take_profit": price * (1.04 + wider)}


def offer(
    r: redis.Redis,
    prices: dict[str, float],
    names: tuple[str, ...],
    count: int,
    rate_per_s: float,
    own_levels: bool = False,
) -> dict[str, tuple[str, str]]:
    """XADD `count` intents at `rate_per_s`, round robin over the accounts (each intent names its own; `default`'s
    name none, as before accounts existed), each account's over the bench's symbols; intent id -> (entry id, account).

    BUYs only: they pile up and run side by side, so qexec runs with QEXEC_SAME_SIDE_POLICY=add, where each one
    places exactly one entry order and adds to its account's position (whose protection, at the default levels of
    one fill price, is placed once). With `own_levels` each intent moves its position's levels (`levels`)."""
    sent: dict[str, tuple[str, str]] = {}
    start = time.monotonic()
    run = uuid.uuid4().hex[:8]
    for n in range(count):
        lag = start + n / rate_per_s - time.monotonic()
        if lag > 0:
            time.sleep(lag)
        name = names[n % len(names)]
        symbol = B.SYMBOLS[(n // len(names)) % len(B.SYMBOLS)]
        intent: dict[str, Any] = {
            "intent_id": f"m-{run}-{n}",
            "symbol": symbol,
            "side": "BUY",
            "position_size_usd": B.SIZE_USD,
            "leverage": 5,
            "entry_price": prices[symbol],
        }
        if name != "default":
            intent["account"] = name
        if own_levels:
            intent |= levels(prices[symbol], n // (len(names) * len(B.SYMBOLS)))
        entry_id = str(r.xadd("quantum:stream:trade.intent", {"payload": json.dumps(intent)}))
        sent[intent["intent_id"]] = (entry_id, name)
    return sent


def warm_up(r: redis.Redis, prices: dict[str, float], names: tuple[str, ...]) -> None:
    """`WARM_UP` intents per account, answered before anything is measured (connections, caches, positions)."""
    sent = offer(r, prices, names, B.WARM_UP * len(names), 20)
    if len(B.collect(r, {iid: entry for iid, (entry, _name) in sent.items()}, 90)) < len(sent):
        raise RuntimeError("the warm-up intents got no result")
    time.sleep(1)  # their stop-losses and take-profits land before the count starts


def peak_60s(samples: list[tuple[float, int, int]]) -> int:
    """The most orders (entries and algo orders) the samples saw within any 60 s."""
    best, lo = 0, 0
    for hi in range(len(samples)):
        while samples[hi][0] - samples[lo][0] > 60:
            lo += 1
        best = max(best, sum(samples[hi][1:]) - sum(samples[lo][1:]))
    return best


def busy_span_s(samples: list[tuple[float, int, int]]) -> float:
    """Seconds from the sample before the first order to the sample with the last (OrderSampler.per_minute's span)."""
    moving = [i for i in range(1, len(samples)) if sum(samples[i][1:]) > sum(samples[i - 1][1:])]
    return max(samples[moving[-1]][0] - samples[moving[0] - 1][0], 1e-9) if moving else 1e-9


def per_minute(count: int, first_ms: int, last_ms: int) -> float:
    """`count` per minute over [first_ms, last_ms]."""
    return 60_000 * count / max(1, last_ms - first_ms)


def account_figures(
    name: str,
    sent: dict[str, tuple[str, str]],
    got: dict[str, tuple[str, dict[str, Any]]],
    sampler: B.OrderSampler,
) -> dict[str, Any]:
    """One account's figures: orders per minute at the venue over its busy span, intents and their results."""
    mine = {iid: entry for iid, (entry, owner) in sent.items() if owner == name}
    answered = {iid: got[iid] for iid in mine if iid in got}
    orders, entries = sampler.per_minute(name)
    samples = sampler.by_account[name]
    statuses = Counter(str(payload.get("status")) for _rid, payload in answered.values())
    wrong = sum(1 for _rid, payload in answered.values() if payload.get("account", "default") != name)
    figures: dict[str, Any] = {
        "orders_per_min": orders,
        "limit_used_pct": 100 * orders / ORDERS_PER_MIN,
        "entry_orders_per_min": entries,
        "algo_orders_per_min": orders - entries,
        "orders": sum(samples[-1][1:]) - sum(samples[0][1:]) if samples else 0,
        "peak_orders_in_60s": peak_60s(samples),
        "sent": len(mine),
        "results": len(answered),
        "lost": len(mine) - len(answered),
        "filled": statuses.get("filled", 0),
        "statuses": dict(statuses),
        "results_naming_another_account": wrong,
    }
    if answered:
        first = min(B.ms_of(entry) for entry in mine.values())
        last = max(B.ms_of(rid) for rid, _p in answered.values())
        figures["intents_per_min"] = per_minute(len(answered), first, last)
    return figures


def rest_calls(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """REST (and WebSocket API) requests per endpoint between two stats snapshots."""
    keys = set(after["requests"]) | set(before["requests"])
    calls = {k: after["requests"].get(k, 0) - before["requests"].get(k, 0) for k in sorted(keys)}
    return {k: v for k, v in calls.items() if v}


def weight_of(calls: dict[str, int]) -> int:
    """The request weight of those requests at the paper exchange (an endpoint lighter with a symbol counted with
    one, as qexec asks; one unknown here as 1)."""
    table = {ep.key: ep.weight for ep in ENDPOINTS}
    one_symbol = Params({"symbol": B.SYMBOLS[0]})
    return sum(n * table[key](one_symbol) if key in table else n for key, n in calls.items())


def log_markers(procs: list[B.Proc]) -> dict[str, int]:
    """How often each of LOG_MARKERS is in the stack's logs."""
    text = "".join(p.log.read_text(errors="replace") for p in procs)
    return {marker: text.count(marker) for marker in LOG_MARKERS}


def _busy_cpu_pct(before: Any, after: Any) -> float:
    """The machine's CPU use (all processes, every core) between two psutil.cpu_times() snapshots, %."""
    total = sum(after) - sum(before)
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    return float(100 * (total - idle) / max(total, 1e-9))


def _grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def measured(
    r: redis.Redis, venue: str, names: tuple[str, ...], procs: list[B.Proc], args: argparse.Namespace
) -> dict[str, Any]:
    """Offer the load to a running stack, drain it and take the figures."""
    prices = B.marks(venue)
    warm_up(r, prices, names)
    # Intents per second that would place `offer` x each account's order limit: one order each at the default
    # levels; about two with own levels (an entry, and an SL and a TP for the intents whose levels are the newest).
    rate = len(names) * args.offer * ORDERS_PER_MIN / 60 / (2 if args.own_levels else 1)
    duration = args.duration
    before, cpu_before, machine_before = B.stats(venue), sum(p.cpu_s() for p in procs), psutil.cpu_times()
    with B.OrderSampler(venue, accounts=names) as sampler:
        sent = offer(r, prices, names, int(rate * duration), rate, args.own_levels)
        got = B.collect(r, {iid: entry for iid, (entry, _name) in sent.items()}, duration * 5 + 120)
    after, cpu_after, machine_after = B.stats(venue), sum(p.cpu_s() for p in procs), psutil.cpu_times()
    calls = rest_calls(before, after)
    reads = sum(n for key, n in calls.items() if key not in ORDER_PATHS)
    orders, entries = sampler.per_minute()
    run: dict[str, Any] = {
        "offered_per_s": rate,
        "sent": len(sent),
        "results": len(got),
        "lost": len(sent) - len(got),
        "orders_per_min": orders,
        "entry_orders_per_min": entries,
        "http_429_418": (after["http_429"] + after["http_418"]) - (before["http_429"] + before["http_418"]),
        "venue_error_codes": _grown(before["errors"], after["errors"]),
        "rest_calls": calls,
        "reads_per_intent": reads / max(1, len(sent)),
        "weight_per_min": 60 * weight_of(calls) / busy_span_s(sampler.samples),
        "weight_per_intent": weight_of(calls) / max(1, len(sent)),
        "qexec_cpu_s_per_intent": (cpu_after - cpu_before) / max(1, len(sent)),
        "machine_cpu_busy_pct": _busy_cpu_pct(machine_before, machine_after),
        "accounts": {name: account_figures(name, sent, got, sampler) for name in names},
    }
    if got:
        first = min(B.ms_of(entry) for entry, _name in sent.values())
        run["intents_per_min"] = per_minute(len(got), first, max(B.ms_of(rid) for rid, _p in got.values()))
    run["log_markers"] = log_markers(procs)
    return run


def run_combo(bench: B.Bench, count: int, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One (accounts, workers) run on a fresh paper exchange and a fresh database."""
    names = account_names(count)
    flags = B.Venue(
        orders_per_10s=ORDERS_PER_10S, orders_per_min=ORDERS_PER_MIN, weight_limit=WEIGHT_PER_MIN, accounts=names[1:]
    )
    started, load = time.monotonic(), os.getloadavg()[0]
    with bench.paper(flags) as venue:
        url, r = bench.fresh_db()
        with stack(bench, url, venue, workers, args.threads, names) as procs:
            run = measured(r, venue, names, procs, args)
    breach = B.result_stream_breach(r)
    if breach:
        bench.contract_breaches.append(f"{count} accounts x {workers} workers: {breach}")
    run |= {
        "accounts_n": count,
        "workers": workers,
        "threads_per_worker": args.threads,
        "own_levels": args.own_levels,
        "result_stream_breach": breach,
        "load_avg_1m_before": load,
        "seconds": round(time.monotonic() - started, 1),
    }
    return run


def target_met(run: dict[str, Any]) -> bool:
    """Every account at >= 95 % of its order limit, no 429/418, every intent with its one result."""
    accounts = run["accounts"].values()
    full = all(a["limit_used_pct"] >= TARGET_PCT for a in accounts)
    return full and run["http_429_418"] == 0 and run["lost"] == 0 and not run["result_stream_breach"]


def summary_row(run: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """One run's row of the main table."""
    accounts = list(run["accounts"].values())
    per = [a["orders_per_min"] for a in accounts]
    one = next((x for x in runs if x["accounts_n"] == 1 and x["workers"] == run["workers"]), None)
    one = one or next((x for x in runs if x["accounts_n"] == 1), None)
    growth = f"{run['orders_per_min'] / one['orders_per_min']:.2f}" if one and one["orders_per_min"] else "-"
    return [
        str(run["accounts_n"]),
        str(run["workers"]),
        f"{min(per):.0f}-{max(per):.0f}",
        f"{min(a['limit_used_pct'] for a in accounts):.1f}",
        f"{sum(a['entry_orders_per_min'] for a in accounts) / len(accounts):.0f}",
        f"{run['orders_per_min']:.0f}",
        growth,
        f"{run.get('intents_per_min', 0):.0f}",
        str(run["http_429_418"]),
        str(run["lost"]),
        f"{run['weight_per_intent']:.2f}",
        f"{run['weight_per_min']:.0f}",
        f"{1000 * run['qexec_cpu_s_per_intent']:.1f}",
        f"{run['machine_cpu_busy_pct']:.0f}",
        "yes" if target_met(run) else "**no**",
    ]


SUMMARY_HEAD = [
    "accounts",
    "workers",
    "orders/min per account (min-max)",
    "% of 1,200 (lowest account)",
    "entry orders/min per account",
    "orders/min, all accounts",
    "x the 1-account row",
    "intents/min, all",
    "429/418",
    "lost",
    "weight/intent",
    "weight/min (IP)",
    "qexec CPU ms/intent",
    "machine CPU %",
    "target met",
]
DETAIL_HEAD = [
    "accounts x workers",
    "account",
    "orders/min",
    "% of 1,200",
    "entries/min",
    "SL+TP/min",
    "most in 60 s",
    "intents",
    "results",
    "lost",
    "intents/min",
]


def detail_rows(run: dict[str, Any]) -> list[list[str]]:
    """One row per account of a run."""
    return [
        [
            f"{run['accounts_n']} x {run['workers']}",
            name,
            f"{a['orders_per_min']:.0f}",
            f"{a['limit_used_pct']:.1f}",
            f"{a['entry_orders_per_min']:.0f}",
            f"{a['algo_orders_per_min']:.0f}",
            str(a["peak_orders_in_60s"]),
            str(a["sent"]),
            str(a["results"]),
            str(a["lost"]),
            f"{a.get('intents_per_min', 0):.0f}",
        ]
        for name, a in run["accounts"].items()
    ]


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


LOADS = {
    False: "BUYs at the default levels (one entry order per intent; protection placed once per position)",
    True: "BUYs that each move their position's SL/TP (an entry, and for the newest levels an SL, a TP and two "
    "cancels, per intent)",
}


def markdown(report: dict[str, Any]) -> str:
    """The run as Markdown: when, which commit, the command, the table of runs and each account's figures."""
    runs = report["runs"]
    lines = [
        f"# bench/accounts.py, {report['date']}",
        "",
        f"Commit `{report['commit']}`; {report['machine']['cpus']} CPUs ({report['machine']['cpu']}), Python "
        f"{report['machine']['python']}. Command: `{report['command']}`. Each account offered {report['offer']}x "
        f"its 1,200 orders/min in intents for {report['duration_s']} s, then drained; {report['threads']} threads "
        f"per worker; QEXEC_LIMIT_MARGIN=1; {LOADS[report['own_levels']]}; one run each, not a median.",
        "",
        *_table(SUMMARY_HEAD, [summary_row(run, runs) for run in runs]),
        "",
        *_table(DETAIL_HEAD, [row for run in runs for row in detail_rows(run)]),
    ]
    return "\n".join(lines) + "\n"


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def arguments() -> argparse.Namespace:
    """The command line; --quick's defaults where a knob is not given."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="15 s, 1 and 4 accounts with 1 worker: a smoke test")
    parser.add_argument("--accounts", type=_numbers, help="account counts to run (default 1,2,4; --quick 1,4)")
    parser.add_argument("--workers", type=_numbers, help="worker process counts to run (default 1,2,4; --quick 1)")
    parser.add_argument("--duration", type=int, help="seconds of offered load (default 60; --quick 15)")
    parser.add_argument("--threads", type=int, default=32, help="threads per worker process")
    parser.add_argument("--offer", type=float, default=2.0, help="intents offered per account, x its order limit")
    parser.add_argument("--own-levels", action="store_true", help="each intent moves its position's SL/TP (levels)")
    parser.add_argument("--json", type=Path, help="default bench/results/accounts-DATE[-quick].json (and .md)")
    args = parser.parse_args()
    args.accounts = args.accounts or ([1, 4] if args.quick else [1, 2, 4])
    args.workers = args.workers or ([1] if args.quick else [1, 2, 4])
    args.duration = args.duration or (15 if args.quick else 60)
    date = time.strftime("%Y-%m-%d", time.gmtime())
    tail = ("-quick" if args.quick else "") + ("-own-levels" if args.own_levels else "")
    args.json = args.json or B.ROOT / "bench" / "results" / f"accounts-{date}{tail}.json"
    return args


def main() -> None:
    """Run every (accounts, workers), print each as it ends, then the Markdown tables; write the JSON."""
    args = arguments()
    logs = Path(tempfile.mkdtemp(prefix="qexec-bench-accounts-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: our Redis and every child are stopped
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=B.ROOT, capture_output=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "qexec"], check=False, cwd=B.ROOT, capture_output=True
    )
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": (commit.stdout.decode().strip() or "unknown")
        + (" + uncommitted qexec/ changes" if dirty.stdout else ""),
        "command": " ".join([".venv/bin/python", "bench/accounts.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "cpu": B._cpu_model(), "python": sys.version.split()[0]},
        "offer": args.offer,
        "duration_s": args.duration,
        "threads": args.threads,
        "own_levels": args.own_levels,
        "runs": [],
    }
    bench = B.Bench(logs)
    try:
        for workers in args.workers:
            for count in args.accounts:
                run = run_combo(bench, count, workers, args)
                report["runs"].append(run)
                row = summary_row(run, report["runs"])
                print("  ".join(f"{h}={v}" for h, v in zip(SUMMARY_HEAD, row, strict=True)), flush=True)
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, indent=2))  # after each run: a long matrix keeps its part
    finally:
        bench.close()
    text = markdown(report)
    args.json.with_suffix(".md").write_text(text)
    print("\n" + text)
    print(f"figures in {args.json} and {args.json.with_suffix('.md')}; process logs in {logs}", file=sys.stderr)
    if bench.contract_breaches:
        print("result stream contract broken: " + "; ".join(bench.contract_breaches))
        sys.exit(1)


if __name__ == "__main__":
    main()
