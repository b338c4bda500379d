"""The running paper exchange: engine, store, limits, faults and the request pipeline that ties them."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from qexec.paper import errors
from qexec.paper.auth import Auth
from qexec.paper.catalogue import Symbol
from qexec.paper.config import Config
from qexec.paper.countdown import Countdowns
from qexec.paper.engine import Engine, FillPlan, Settings, now_ms
from qexec.paper.faults import Fault, Faults
from qexec.paper.limits import RateLimiter
from qexec.paper.params import Params
from qexec.paper.prices import PriceBook
from qexec.paper.stats import Stats
from qexec.paper.store import Store
from qexec.paper.websockets import Streams

log = logging.getLogger("qexec.paper")

Handler = Callable[["Exchange", Params, FillPlan], Awaitable[Any]]
Authorize = Callable[[int], None]  # checks a request's key and signature at the server time it is given (ms)


@dataclass(frozen=True)
class Endpoint:
    """One Binance REST endpoint: security type, weight, order counting and its handler."""

    method: str
    path: str
    security: str  # NONE, KEY (API key only) or SIGNED
    weight: Callable[[Params], int]
    handler: Handler
    order: bool = False

    @property
    def key(self) -> str:
        """``"POST /fapi/v1/order"``: how faults and stats name the endpoint."""
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class Outcome:
    """What one request came to: the status and payload Binance would answer, error headers, the fault that fired."""

    status: int
    payload: Any
    headers: dict[str, str]
    fault: Fault | None = None


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response with ``Content-Type: application/json``."""
    return Response(json.dumps(payload, separators=(",", ":")).encode(), status, headers, media_type="application/json")


class Exchange:
    """State and behaviour of one paper exchange process."""

    def __init__(
        self,
        *,
        symbols: dict[str, Symbol],
        config: Config,
        auth: Auth,
        store: Store | None,
        seed: int,
        balance: Decimal,
    ) -> None:
        self.config = config
        self.startup_config = copy.deepcopy(config)
        self.auth = auth
        self.store = store
        self.balance = balance
        self.stats = Stats()
        self.limiter = RateLimiter(config, self.stats)
        self.faults = Faults()
        self.engine = Engine(symbols, PriceBook(symbols, seed, now_ms()), balance, Settings())
        self.apply_config()
        if store is not None and not store.load(self.engine):
            store.save(self.engine)
        self.waiters: dict[int, asyncio.Event] = {}
        self.ticker: asyncio.Task[None] | None = None
        self.streams = Streams(self.engine, self.config, self.stats, self.commit)
        self.countdowns = Countdowns(self.engine, self.config, self.commit)

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the price walk, finish MARKET orders a restart interrupted, watch the listen key's expiry."""
        for order in self.engine.open_orders(None):
            if order.type == "MARKET" and order.order_id not in self.engine.pending:
                self.engine.pending[order.order_id] = FillPlan()
                self.schedule_fill(order.order_id, 0)
        self.ticker = asyncio.create_task(self._tick_loop())
        self.streams.start()

    async def stop(self) -> None:
        """Stop the walk and the listen key's timer, and close the state file."""
        self.streams.stop()
        self.countdowns.clear()
        if self.ticker is not None:
            self.ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.ticker
        self.commit()
        if self.store is not None:
            self.store.close()

    async def _tick_loop(self) -> None:
        while True:
            tick_ms = self.config.tick_ms
            if tick_ms <= 0:
                await asyncio.sleep(0.1)
                continue
            await asyncio.sleep(tick_ms / 1000)
            self.engine.tick()
            self.commit()

    # ---- state ---------------------------------------------------------------------------------

    def apply_config(self) -> None:
        """Push fee, slippage and userTrades retention settings into the engine."""
        slippage, taker, maker = self.config.fee_decimals()
        self.engine.settings = Settings(slippage, taker, maker, int(self.config.trade_retention_s * 1000))

    def commit(self) -> None:
        """Write what changed to the state file (write-through: before the response leaves)."""
        if self.store is not None:
            self.store.save(self.engine)

    def reset(self, balance: Decimal | None, dual_side: bool) -> None:
        """A fresh account: positions, orders, faults, counters and config as at start-up; prices restarted.

        The listen key goes with the account: its user-data connections are closed.
        """
        self.streams.reset()
        self.countdowns.clear()
        self.config.__dict__.update(copy.deepcopy(self.startup_config).__dict__)
        self.apply_config()
        self.engine.reset(balance if balance is not None else self.balance, dual_side)
        self.engine.prices.restart(now_ms())
        self.engine.dirty.prices.update(self.engine.symbols)
        self.streams.marks_moved()
        self.faults.clear()
        self.limiter.reset()
        self.stats.__dict__.update(Stats().__dict__)
        for event in self.waiters.values():
            event.set()
        self.waiters.clear()
        if self.store is not None:
            self.store.wipe()
        self.commit()

    # ---- delayed fills -------------------------------------------------------------------------

    def schedule_fill(self, order_id: int, delay_ms: int) -> None:
        """Fill a pending MARKET order after ``delay_ms`` on the event loop."""
        self.waiters[order_id] = asyncio.Event()
        asyncio.get_running_loop().call_later(delay_ms / 1000, self._fill_due, order_id)

    def _fill_due(self, order_id: int) -> None:
        self.engine.fill_pending(order_id)
        self.commit()
        event = self.waiters.pop(order_id, None)
        if event is not None:
            event.set()

    async def wait_final(self, order_id: int) -> None:
        """Wait at most ``result_wait_ms`` for a pending order to fill."""
        event = self.waiters.get(order_id)
        if event is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self.config.result_wait_ms / 1000)

    # ---- the request pipeline ------------------------------------------------------------------

    async def handle(self, endpoint: Endpoint, request: Request) -> Response:
        """One Binance REST request: its parameters and security from the HTTP request, the rest by ``run``."""
        query = request.scope["query_string"].decode("latin-1")
        body = (await request.body()).decode("latin-1") if request.method != "GET" else ""
        params = Params(parse_qsl(body, keep_blank_values=True))
        if query:
            params.update(parse_qsl(query, keep_blank_values=True))
        ip = request.client.host if request.client else "unknown"
        header = request.headers.get("x-mbx-apikey")

        def authorize(now: int) -> None:
            if endpoint.security == "SIGNED":
                self.auth.check_signed(header, query, body, params, now)
            elif endpoint.security == "KEY":
                self.auth.check_key(header)

        outcome = await self.run(endpoint, params, ip, authorize)
        headers = self.limiter.headers(ip, endpoint.order)
        headers.update(outcome.headers)
        return json_response(outcome.payload, outcome.status, headers)

    async def run(self, endpoint: Endpoint, params: Params, ip: str, authorize: Authorize) -> Outcome:
        """Latency, limits, security (``authorize``), faults, the handler, persistence: one request of any
        transport, its errors turned into Binance's status and payload."""
        self.stats.requests[endpoint.key] += 1
        fault: Fault | None = None
        try:
            if self.config.latency_ms > 0:
                await asyncio.sleep(self.config.latency_ms / 1000)
            now = now_ms()
            self.limiter.admit(ip, endpoint.weight(params), now)
            authorize(now)
            if endpoint.order:
                self.limiter.admit_order(now)
            fault = self.faults.take(endpoint.key, params, self.config.chaos)
            plan = FillPlan(delay_ms=self.config.fill_delay_ms)
            if fault is not None:
                await self._fault_before(fault, ip, plan)
            payload = await endpoint.handler(self, params, plan)
            self.commit()
            if fault is not None and fault.when == "after":
                await self._fault_after(fault)
        except errors.VenueError as exc:
            self.commit()
            self.stats.errors[exc.code] += 1
            return Outcome(exc.status, exc.payload(), exc.headers, fault)
        except Exception:
            log.exception("paper exchange failed on %s", endpoint.key)
            self.commit()
            payload = {"code": -1000, "msg": "An unknown error occured while processing the request."}
            return Outcome(500, payload, {}, fault)
        return Outcome(200, payload, {}, fault)

    @staticmethod
    async def _fault_after(fault: Fault) -> None:
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_ms / 1000)
        else:
            raise fault.error()

    async def _fault_before(self, fault: Fault, ip: str, plan: FillPlan) -> None:
        self.stats.faults_fired[fault.kind] += 1
        when = fault.when
        if when == "latency":
            await asyncio.sleep(fault.delay_ms / 1000)
        elif when == "fill":
            if fault.kind == "fill_delay":
                plan.delay_ms = fault.delay_ms
            else:
                plan.partial_ratio = Decimal(str(fault.ratio))
        elif when == "before":
            if fault.kind == "rate_limit":
                self.limiter.ban(ip, fault.status or 429, fault.seconds)
                self.limiter.admit(ip, 0, now_ms())
            raise fault.error()
