"""A careful single-process asyncio executor, for the benchmarks: what a capable engineer might write in a day
instead of adopting qexec.

It reads the intent stream in a consumer group and runs up to `--concurrency` intents at once, each an asyncio task.
Each places a MARKET order with python-binance's `AsyncClient`, with `newOrderRespType=RESULT` (an immediate fill
comes back FILLED in the one round trip) and a client order id derived from the intent id. An order the answer leaves
open is resolved from the futures user-data stream (`ORDER_TRADE_UPDATE`), not by polling; one GET of the order if
the stream has said nothing in 30 s. It writes the result in baseline.py's format and acknowledges the entry. No
retries, no rate budget, no protection (SL/TP), no recovery of entries read but never answered: the second yardstick.

.venv/bin/python bench/async_baseline.py --redis-url URL --exchange-url URL [--stream S] [--result-stream S]
    [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import re
import signal
import time
import warnings
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from baseline import quantity, result_of

from qexec.constants import INTENT_STREAM, PAPER_API_KEY, PAPER_API_SECRET, RESULT_STREAM

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance import AsyncClient, BinanceSocketManager

GROUP = "async-baseline"
FILL_WAIT_S = 30.0
OPEN = ("NEW", "PARTIALLY_FILLED")
CLIENT_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")  # Binance's newClientOrderId pattern


def client_order_id(intent_id: str) -> str:
    """The order's client id: the intent id where Binance's pattern allows it, else a digest of it."""
    if CLIENT_ID.fullmatch(intent_id):
        return intent_id
    return "i-" + hashlib.sha256(intent_id.encode()).hexdigest()[:34]


class Executor:
    """The intents in flight, and the fills the user-data stream resolves for them."""

    def __init__(self, client: AsyncClient, r: aioredis.Redis, args: argparse.Namespace) -> None:
        self.client, self.r, self.args = client, r, args
        self.steps: dict[str, Decimal] = {}
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}  # client order id → its terminal state
        self.slots = asyncio.Semaphore(args.concurrency)
        self.streaming = asyncio.Event()

    async def load_steps(self) -> None:
        """Each symbol's market lot step, read once."""
        for symbol in (await self.client.futures_exchange_info())["symbols"]:
            lot = next(f for f in symbol["filters"] if f["filterType"] in ("MARKET_LOT_SIZE", "LOT_SIZE"))
            self.steps[symbol["symbol"]] = Decimal(lot["stepSize"])

    async def listen(self, sockets: BinanceSocketManager) -> None:
        """Resolve waiting orders from ORDER_TRADE_UPDATE; reopen the stream when it breaks."""
        while True:
            try:
                async with sockets.futures_user_socket() as socket:
                    self.streaming.set()
                    while True:
                        message = await socket.recv()
                        if message.get("e") == "error":
                            print(f"user stream: {message}", flush=True)
                        elif message.get("e") == "ORDER_TRADE_UPDATE":
                            self.resolve(message["o"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the read loop ended: open a new stream (fills meanwhile: the 30 s GET)
                print(f"user stream closed: {exc!r}; reopening", flush=True)
                await asyncio.sleep(1)

    def resolve(self, update: dict[str, Any]) -> None:
        """A terminal state of one of our orders, as the stream tells it."""
        fill = self.waiting.get(update["c"])
        if fill and not fill.done() and update["X"] not in OPEN:
            fill.set_result(
                {"orderId": update["i"], "status": update["X"], "avgPrice": update["ap"], "executedQty": update["z"]}
            )

    async def execute(self, intent: dict[str, Any]) -> dict[str, Any]:
        """Place, wait for the fill if the answer has none yet, and describe the outcome."""
        symbol = intent["symbol"]
        cid = client_order_id(str(intent["intent_id"]))
        fill = self.waiting[cid] = asyncio.get_running_loop().create_future()  # before the order: events may lead
        params = {
            "symbol": symbol,
            "side": intent["side"],
            "type": "MARKET",
            "quantity": quantity(intent["position_size_usd"], intent["entry_price"], self.steps[symbol]),
            "newClientOrderId": cid,
            "newOrderRespType": "RESULT",
        }
        if intent.get("reduce_only"):
            params["reduceOnly"] = "true"
        try:
            order = await self.client.futures_create_order(**params)
            if order["status"] in OPEN:
                try:
                    order = await asyncio.wait_for(fill, FILL_WAIT_S)
                except TimeoutError:
                    order = await self.client.futures_get_order(symbol=symbol, orderId=order["orderId"])
        finally:
            self.waiting.pop(cid, None)
        return result_of(intent, order)

    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        """One intent: execute, write its result, acknowledge its entry; frees its slot."""
        intent: dict[str, Any] = {"intent_id": fields.get("intent_id") or entry_id}
        try:
            intent = json.loads(fields["payload"])
            intent.setdefault("intent_id", entry_id)
            result = await self.execute(intent)
        except Exception as exc:
            result = {"intent_id": intent.get("intent_id", entry_id), "status": "failed", "reason": str(exc)}
        try:
            await self.r.xadd(
                self.args.result_stream,
                {"payload": json.dumps(result), "intent_id": result["intent_id"], "status": result["status"]},
            )
            await self.r.xack(self.args.stream, GROUP, entry_id)
        except Exception as exc:
            print(f"result for {result['intent_id']} not written: {exc!r}", flush=True)
        finally:
            self.slots.release()


async def run(args: argparse.Namespace) -> None:
    """Run until SIGTERM/SIGINT, then let the intents in flight finish (10 s at most)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    r = aioredis.Redis.from_url(args.redis_url, decode_responses=True)
    client = AsyncClient(PAPER_API_KEY, PAPER_API_SECRET)
    client.FUTURES_URL = args.exchange_url.rstrip("/") + "/fapi"
    client.timestamp_offset = (await client.futures_time())["serverTime"] - int(time.time() * 1000)
    sockets = BinanceSocketManager(client, max_queue_size=100_000)
    sockets.FSTREAM_URL = re.sub(r"^http", "ws", args.exchange_url.rstrip("/")) + "/"  # + private/ws?listenKey=
    executor = Executor(client, r, args)
    await executor.load_steps()
    with contextlib.suppress(aioredis.ResponseError):  # BUSYGROUP: it exists
        await r.xgroup_create(args.stream, GROUP, id="$", mkstream=True)
    listener = asyncio.create_task(executor.listen(sockets))
    await asyncio.wait_for(executor.streaming.wait(), 30)
    tasks: set[asyncio.Task[None]] = set()
    print(f"async baseline ready (concurrency {args.concurrency})", flush=True)
    while not stop.is_set():
        read = await r.xreadgroup(GROUP, "c1", {args.stream: ">"}, count=args.concurrency, block=500)
        for _stream, entries in read or []:
            for entry_id, fields in entries:
                await executor.slots.acquire()
                task = asyncio.create_task(executor.handle(entry_id, fields))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(listener, 5)
    await client.close_connection()
    await r.aclose()


def main() -> None:
    """Parse the flags and run the loop."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--exchange-url", required=True)
    parser.add_argument("--stream", default=INTENT_STREAM)
    parser.add_argument("--result-stream", default=RESULT_STREAM)
    parser.add_argument("--concurrency", type=int, default=32, help="intents in flight at most")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
