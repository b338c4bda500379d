"""The running paper exchange: accounts, store, limits, faults and the request pipeline that ties them."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from qexec.paper import errors
from qexec.paper.account import DEFAULT_ACCOUNT
from qexec.paper.accounts import Accounts
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

# A handler acts on the account (its engine) the request is signed for; unsigned requests get ``default``'s.
Handler = Callable[["Exchange", Engine, Params, FillPlan], Awaitable[Any]]
# Checks a request's key and signature at the server time it is given (ms); returns the API key it authorized
# (None for a request that needs none).
Authorize = Callable[[int], str | None]


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
    """What one request came to: the status and payload Binance would answer, error headers, the fault that fired,
    the account it acted on."""

    status: int
    payload: Any
    headers: dict[str, str]
    fault: Fault | None = None
    account: str = DEFAULT_ACCOUNT


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
        accounts: Iterable[str] = (),
    ) -> None:
        self.config = config
        self.startup_config = copy.deepcopy(config)
        self.auth = auth
        self.store = store
        self.balance = balance
        self.stats = Stats()
        self.limiter = RateLimiter(config, self.stats)
        self.faults = Faults()
        prices = PriceBook(symbols, seed, now_ms())
        self.accounts = Accounts(symbols, prices, accounts, balance, Settings())
        self.apply_config()
        if store is not None:
            store.load(self.accounts)
            store.save(self.accounts)
        self.waiters: dict[int, asyncio.Event] = {}
        self.ticker: asyncio.Task[None] | None = None
        self.streams = Streams(self.accounts, self.config, self.stats, self.commit)
        self.countdowns = Countdowns(self.config, self.commit)

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the price walk, finish MARKET orders a restart interrupted, watch the listen key's expiry."""
        for engine in self.accounts:
            for order in engine.open_orders(None):
                if order.type == "MARKET" and order.order_id not in engine.pending:
                    engine.pending[order.order_id] = FillPlan()
                    self.schedule_fill(engine, order.order_id, 0)
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
            self.accounts.tick()
            self.commit()

    # ---- state ---------------------------------------------------------------------------------

    def apply_config(self) -> None:
        """Push fee, slippage and userTrades retention settings into every account's engine."""
        slippage, taker, maker = self.config.fee_decimals()
        self.accounts.apply_settings(Settings(slippage, taker, maker, int(self.config.trade_retention_s * 1000)))

    def commit(self) -> None:
        """Write what changed to the state file (write-through: before the response leaves)."""
        if self.store is not None:
            self.store.save(self.accounts)

    def reset(self, balance: Decimal | None, dual_side: bool) -> None:
        """A fresh exchange: every account's positions and orders, faults, counters and config as at start-up;
        prices restarted. ``balance`` (default ``--balance``) funds every account.

        The listen keys go with the accounts: their user-data connections are closed.
        """
        self.streams.reset()
        self.countdowns.clear()
        self.config.__dict__.update(copy.deepcopy(self.startup_config).__dict__)
        self.apply_config()
        for engine in self.accounts:
            engine.reset(balance if balance is not None else self.balance, dual_side)
        self.accounts.prices.restart(now_ms())
        self.accounts.moved.update(self.accounts.symbols)
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

    def reset_account(self, engine: Engine, balance: Decimal | None, dual_side: bool) -> None:
        """A fresh account ``engine``: its positions, orders, fills, listen key, countdowns and order counters go;
        the market, the configuration, the faults and the other accounts stay as they are."""
        self.streams.reset(engine)
        self.countdowns.clear(engine.name)
        for order_id in list(engine.pending):
            event = self.waiters.pop(order_id, None)
            if event is not None:
                event.set()
        engine.reset(balance if balance is not None else self.balance, dual_side)
        self.limiter.reset_account(engine.name)
        if self.store is not None:
            self.store.wipe(engine.name)
        self.commit()

    # ---- delayed fills -------------------------------------------------------------------------

    def schedule_fill(self, engine: Engine, order_id: int, delay_ms: int) -> None:
        """Fill a pending MARKET order of ``engine``'s account after ``delay_ms`` on the event loop."""
        self.waiters[order_id] = asyncio.Event()
        asyncio.get_running_loop().call_later(delay_ms / 1000, self._fill_due, engine, order_id)

    def _fill_due(self, engine: Engine, order_id: int) -> None:
        engine.fill_pending(order_id)
        self.commit()
        event = self.waiters.pop(order_id, None)
        if event is not None:
            event.set()

    async def wait_final(self, order_id: int) -> None:
        """Wait at most ``result_wait_ms`` for a pending order to fill. A zero wait answers the order as it stands
        without yielding to the loop (``asyncio.wait_for`` with no time left still yields while it cancels, long
        enough on a loaded machine for a 1 ms fill to land and the answer to say FILLED instead of NEW)."""
        event = self.waiters.get(order_id)
        if event is not None and self.config.result_wait_ms > 0:
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

        def authorize(now: int) -> str | None:
            if endpoint.security == "SIGNED":
                self.auth.check_signed(header, query, body, params, now)
            elif endpoint.security == "KEY":
                self.auth.check_key(header)
            else:
                return None
            return header

        outcome = await self.run(endpoint, params, ip, authorize)
        headers = self.limiter.headers(ip, endpoint.order, outcome.account)
        headers.update(outcome.headers)
        return json_response(outcome.payload, outcome.status, headers)

    async def run(self, endpoint: Endpoint, params: Params, ip: str, authorize: Authorize) -> Outcome:
        """Latency, limits, security (``authorize``), faults, the handler, persistence: one request of any
        transport, its errors turned into Binance's status and payload. The API key the request is signed with
        names the account it acts on (looked up once, here); an unsigned request acts on ``default``."""
        self.stats.requests[endpoint.key] += 1
        fault: Fault | None = None
        engine = self.accounts.default
        try:
            if self.config.latency_ms > 0:
                await asyncio.sleep(self.config.latency_ms / 1000)
            now = now_ms()
            self.limiter.admit(ip, endpoint.weight(params), now)
            key = authorize(now)
            if key is not None:
                engine = self.accounts.get(self.auth.account_of(key))
            if endpoint.order:
                self.limiter.admit_order(engine.name, now)
            fault = self.faults.take(endpoint.key, params, self.config.chaos, engine.name)
            plan = FillPlan(delay_ms=self.config.fill_delay_ms)
            if fault is not None:
                await self._fault_before(fault, ip, plan)
            payload = await endpoint.handler(self, engine, params, plan)
            self.commit()
            if fault is not None and fault.when == "after":
                await self._fault_after(fault)
        except errors.VenueError as exc:
            self.commit()
            self.stats.errors[exc.code] += 1
            return Outcome(exc.status, exc.payload(), exc.headers, fault, engine.name)
        except Exception:
            log.exception("paper exchange failed on %s", endpoint.key)
            self.commit()
            payload = {"code": -1000, "msg": "An unknown error occured while processing the request."}
            return Outcome(500, payload, {}, fault, engine.name)
        return Outcome(200, payload, {}, fault, engine.name)

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
