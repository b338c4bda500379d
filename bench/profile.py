"""Profile qexec under load: its worker and bridge on a paper exchange, with py-spy, and where an intent's time goes.

.venv/bin/python bench/profile.py [--intents 600] [--rate 20] [--latency-ms 0] [--concurrency 8] [--scale-in]
                                  [--spy worker,bridge,paper | --spy none] [--top 40] [--out DIR]
.venv/bin/python bench/profile.py --hop-cost

The first form runs the stack as `make bench` does (bench/bench.py's machinery), offers intents, and prints their
latency, throughput and each process's CPU per intent; with `--spy`, py-spy samples the chosen processes (`--gil`:
only time spent holding the GIL) and the busiest functions of each are printed, inclusive of what they call. py-spy
itself costs about a millisecond of latency while it samples: measure latency with `--spy none`. `--hop-cost` times
one Redis GET and one signed MARKET order, back to back and after 50 ms idle, which is what a cold hop costs here.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
import redis

from qexec.constants import PAPER_API_KEY, PAPER_API_SECRET

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # the bench's own machinery, next to this file

# Frames every sample shares (threads, the command line, the event loop): left out of the listing.
PLUMBING = re.compile(r"threading\.py|concurrent/futures|click/|asyncio/|uvicorn/(server|_compat)\.py|<module>")


def _top(raw: Path, count: int) -> list[str]:
    """The functions that were on the stack in the most samples (py-spy's raw format), with their share."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _sep, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        total += int(samples)
        for frame in {re.sub(r":\d+\)", ")", f) for f in stack.split(";")}:
            if not PLUMBING.search(frame):
                inclusive[frame] += int(samples)
    return [f"{n:7d} {100 * n / max(total, 1):5.1f}%  {frame[:110]}" for frame, n in inclusive.most_common(count)]


def _spy(pid: int, out: Path, seconds: int) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy", path=str(B.BIN)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy (or run with --spy none)")
    argv = [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200"]
    argv += ["--format", "raw", "--gil", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile(args: argparse.Namespace) -> None:
    """Run the stack, offer the intents, and print what was measured."""
    out = Path(args.out or tempfile.mkdtemp(prefix="qexec-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    chosen = set() if args.spy == "none" else set(args.spy.split(","))
    bench = B.Bench(out)
    try:
        with bench.paper(B.Venue(latency_ms=args.latency_ms)) as venue:
            url, r = bench.fresh_db()
            extra = B.SCALE_IN if args.scale_in else {}
            with bench.executor("qexec", url, venue, args.concurrency, extra) as procs:
                prices = B.marks(venue)
                B.warm_up(r, prices, args.scale_in)
                pids = {p.name.split("-")[0]: p.popen.pid for p in procs}
                if "paper" in chosen:
                    pids["paper"] = next(
                        p.pid
                        for p in psutil.process_iter(["cmdline"])
                        if venue.rsplit(":", 1)[1] in (p.info["cmdline"] or [])
                    )
                seconds = int(args.intents / args.rate) + 3 if args.rate else 20
                spies = {name: _spy(pid, out / f"{name}.txt", seconds) for name, pid in pids.items() if name in chosen}
                time.sleep(1)
                before = {p.name: psutil.Process(p.popen.pid).cpu_times() for p in procs}
                sent = B.offer(r, prices, args.intents, args.rate or None, scale_in=args.scale_in)
                got = B.collect(r, sent, 300)
                after = {p.name: psutil.Process(p.popen.pid).cpu_times() for p in procs}
                for spy in spies.values():
                    spy.wait()
        _report(args, sent, got, before, after, out, spies)
    finally:
        bench.close()


def _report(
    args: argparse.Namespace,
    sent: dict[str, str],
    got: dict[str, tuple[str, dict[str, object]]],
    before: dict[str, object],
    after: dict[str, object],
    out: Path,
    spies: dict[str, subprocess.Popen[bytes]],
) -> None:
    latencies = sorted(B.ms_of(rid) - B.ms_of(sent[iid]) for iid, (rid, _p) in got.items())
    print(f"results {len(got)} of {len(sent)}")
    if latencies:
        print(
            f"latency ms: p50 {B.pct(latencies, 50):g}  p95 {B.pct(latencies, 95):g}  p99 {B.pct(latencies, 99):g}"
            f"  mean {statistics.mean(latencies):.2f}"
        )
        first = min(B.ms_of(e) for e in sent.values())
        last = max(B.ms_of(rid) for rid, _p in got.values())
        print(f"throughput {len(got) / max(0.001, (last - first) / 1000):.1f} intents/s")
    for name, start in before.items():
        end = after[name]
        user = 1000 * (end.user - start.user) / len(sent)  # type: ignore[attr-defined]
        system = 1000 * (end.system - start.system) / len(sent)  # type: ignore[attr-defined]
        print(f"{name}: CPU per intent {user:.2f} ms user + {system:.2f} ms system")
    for name in spies:
        print(f"\n{name} (py-spy --gil, {out / (name + '.txt')}): the functions most often on the stack")
        print("\n".join(_top(out / f"{name}.txt", args.top)))


def hop_cost() -> None:
    """A Redis GET and a signed MARKET order, back to back and after 50 ms idle: the price of a cold hop here."""
    from qexec.ops.redisserver import LocalRedis  # noqa: PLC0415 - only this mode needs it

    def timed(call: object, gap_s: float, count: int = 100) -> float:
        laps = []
        for _ in range(count):
            started = time.perf_counter()
            call()  # type: ignore[operator]
            laps.append(1000 * (time.perf_counter() - started))
            time.sleep(gap_s)
        return statistics.median(laps)

    with LocalRedis() as server:
        client = redis.Redis(port=server.port)
        warm, cold = timed(lambda: client.get("x"), 0), timed(lambda: client.get("x"), 0.05)
        print(f"Redis GET: {warm:.2f} ms back to back, {cold:.2f} ms after 50 ms idle")
    bench = B.Bench(Path(tempfile.mkdtemp(prefix="qexec-hop-")))
    try:
        with bench.paper(B.Venue()) as venue:
            sides = iter(["BUY", "SELL"] * 200)
            from binance.client import Client  # noqa: PLC0415

            binance = Client(PAPER_API_KEY, PAPER_API_SECRET, ping=False)
            binance.FUTURES_URL = venue + "/fapi"

            def order() -> None:
                binance.futures_create_order(
                    symbol="DOGEUSDT", side=next(sides), type="MARKET", quantity="100", newOrderRespType="RESULT"
                )

            warm, cold = timed(order, 0, 50), timed(order, 0.05, 50)
            print(f"MARKET order: {warm:.2f} ms back to back, {cold:.2f} ms after 50 ms idle")
    finally:
        bench.close()


def main() -> None:
    """Parse the flags and run."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=int, default=600)
    parser.add_argument("--rate", type=float, default=20, help="intents per second; 0: all at once")
    parser.add_argument("--latency-ms", type=int, default=0, help="the paper exchange's added round trip")
    parser.add_argument("--concurrency", type=int, default=8, help="worker threads")
    parser.add_argument("--scale-in", action="store_true", help="only BUYs, with QEXEC_SAME_SIDE_POLICY=add")
    parser.add_argument("--spy", default="worker,bridge", help="processes py-spy samples (worker,bridge,paper) or none")
    parser.add_argument("--top", type=int, default=40, help="functions printed per profile")
    parser.add_argument("--out", help="where logs and profiles go (default: a temporary directory)")
    parser.add_argument("--hop-cost", action="store_true", help="time a cold and a warm Redis call and venue order")
    args = parser.parse_args()
    if args.hop_cost:
        hop_cost()
    else:
        profile(args)


if __name__ == "__main__":
    main()
