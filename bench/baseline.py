"""The naive executor qexec replaces, for the benchmarks: one process, one intent at a time.

It reads the intent stream, places a MARKET order with python-binance, polls `futures_get_order` every 500 ms
until FILLED (the fix the old system's bug report proposed), and writes the result. No retries, no idempotency,
no protection: the yardstick, not a product.

.venv/bin/python bench/baseline.py --redis-url URL --exchange-url URL [--stream S] [--result-stream S]
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import time
import warnings
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import redis

from qexec.constants import INTENT_STREAM, PAPER_API_KEY, PAPER_API_SECRET, RESULT_STREAM

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance.client import Client

POLL_S = 0.5


def step_sizes(client: Client) -> dict[str, Decimal]:
    """Each symbol's market lot step, read once."""
    steps = {}
    for symbol in client.futures_exchange_info()["symbols"]:
        lot = next(f for f in symbol["filters"] if f["filterType"] in ("MARKET_LOT_SIZE", "LOT_SIZE"))
        steps[symbol["symbol"]] = Decimal(lot["stepSize"])
    return steps


def quantity(size_usd: float, price: float, step: Decimal) -> str:
    """Notional over the intent's entry price, floored to the step."""
    raw = Decimal(str(size_usd)) / Decimal(str(price))
    return format(((raw / step).to_integral_value(rounding=ROUND_FLOOR) * step).normalize(), "f")


def execute(client: Client, steps: dict[str, Decimal], intent: dict[str, Any]) -> dict[str, Any]:
    """Place, poll until FILLED, and describe the outcome."""
    symbol = intent["symbol"]
    order = client.futures_create_order(
        symbol=symbol,
        side=intent["side"],
        type="MARKET",
        quantity=quantity(intent["position_size_usd"], intent["entry_price"], steps[symbol]),
    )
    while order["status"] != "FILLED":
        if order["status"] in ("CANCELED", "EXPIRED", "REJECTED"):
            break
        order = client.futures_get_order(symbol=symbol, orderId=order["orderId"])
        if order["status"] != "FILLED":
            time.sleep(POLL_S)
    return result_of(intent, order)


def result_of(intent: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    """The result a baseline writes for an intent and the venue's last word on its order."""
    return {
        "intent_id": intent.get("intent_id"),
        "symbol": intent["symbol"],
        "action": intent["side"],
        "status": "filled" if order["status"] == "FILLED" else order["status"].lower(),
        "order_id": order["orderId"],
        "entry_price": float(order["avgPrice"]),
        "quantity": float(order["executedQty"]),
        "published_at": datetime.now(UTC).isoformat(),
    }


def main() -> None:
    """Run until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--exchange-url", required=True)
    parser.add_argument("--stream", default=INTENT_STREAM)
    parser.add_argument("--result-stream", default=RESULT_STREAM)
    args = parser.parse_args()
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    r = redis.Redis.from_url(args.redis_url, decode_responses=True)
    client = Client(PAPER_API_KEY, PAPER_API_SECRET, ping=False)
    client.FUTURES_URL = args.exchange_url.rstrip("/") + "/fapi"
    client.timestamp_offset = client.futures_time()["serverTime"] - math.floor(time.time() * 1000)
    steps = step_sizes(client)
    last = "$"
    print("baseline ready", flush=True)
    while not stop:
        for _stream, entries in r.xread({args.stream: last}, block=500, count=1) or []:
            for entry_id, fields in entries:
                last = entry_id
                intent = json.loads(fields["payload"])
                intent.setdefault("intent_id", entry_id)
                try:
                    result = execute(client, steps, intent)
                except Exception as exc:
                    result = {"intent_id": intent["intent_id"], "status": "failed", "reason": str(exc)}
                r.xadd(
                    args.result_stream,
                    {"payload": json.dumps(result), "intent_id": result["intent_id"], "status": result["status"]},
                )


if __name__ == "__main__":
    main()
