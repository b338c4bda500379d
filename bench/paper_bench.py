"""Benchmark of the paper exchange: signed MARKET RESULT order round-trips through python-binance.

.venv/bin/python bench/paper_bench.py [--orders 3000] [--threads 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from qexec.constants import PAPER_API_KEY, PAPER_API_SECRET
from qexec.ops.redisserver import free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance.client import Client

SYMBOL, QUANTITY = "DOGEUSDT", "100"  # 32 USDT a fill: thousands of fills stay within a 10,000 USDT wallet


def start_server(state: Path, port: int) -> subprocess.Popen[bytes]:
    """``qexec paper`` on ``port`` with a file state and frozen prices, ready to serve."""
    script = Path(sys.executable).parent / "qexec"
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from qexec.cli import main; main()"]
    process = subprocess.Popen(
        [
            *command,
            "paper",
            "--port",
            str(port),
            "--state",
            str(state),
            "--tick-ms",
            "0",
            "--orders-per-10s",
            "1000000",
            "--orders-per-min",
            "1000000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/fapi/v1/ping", timeout=1)
        except requests.ConnectionError:
            time.sleep(0.05)
        else:
            return process
    process.kill()
    raise RuntimeError("paper exchange did not start")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(orders: int, threads: int) -> dict[str, float]:
    """Drive ``orders`` round-trips from ``threads`` threads, one Client each; return the figures."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "paper.sqlite3", port)
        try:
            local = threading.local()

            def client() -> Client:
                if not hasattr(local, "client"):
                    c = Client(PAPER_API_KEY, PAPER_API_SECRET, ping=False)
                    c.FUTURES_URL = f"http://127.0.0.1:{port}/fapi"
                    local.client = c
                return local.client  # type: ignore[no-any-return]

            def one(i: int) -> float:
                started = time.perf_counter()
                order = client().futures_create_order(
                    symbol=SYMBOL,
                    side="BUY" if i % 2 == 0 else "SELL",
                    type="MARKET",
                    quantity=QUANTITY,
                    newOrderRespType="RESULT",
                    newClientOrderId=f"bench-{i}",
                )
                elapsed = time.perf_counter() - started
                assert order["status"] == "FILLED", order
                return elapsed * 1000

            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(one, range(min(200, orders))))  # warm-up: connections and code paths
                started = time.perf_counter()
                latencies = list(pool.map(one, range(orders)))
                seconds = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=10)
    return {
        "orders": orders,
        "threads": threads,
        "seconds": round(seconds, 3),
        "orders_per_s": round(orders / seconds, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
    }


def main() -> None:
    """Parse the arguments, run the benchmark, print (and optionally save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    figures = run(args.orders, args.threads)
    print(
        f"orders {figures['orders']}  threads {figures['threads']}  seconds {figures['seconds']}  "
        f"orders/s {figures['orders_per_s']}  p50 {figures['p50_ms']} ms  p95 {figures['p95_ms']} ms  "
        f"p99 {figures['p99_ms']} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
