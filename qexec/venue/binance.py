"""The venue seam: python-binance's REST `Client` (and, through ws_orders.py, its WebSocket API), the only modules
that import `binance`. Library errors become qexec's own here."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import redis
import requests
from binance.client import Client
from binance.exceptions import BinanceAPIException, BinanceRequestException

from qexec import constants, metrics
from qexec.config import Settings
from qexec.errors import (
    OrderNotFound,
    OrderRejected,
    PositionModeChanged,
    RateLimited,
    TemporaryVenueError,
    UnknownOutcome,
    VenueError,
    VenueUnavailable,
)
from qexec.models import AlgoOrder, Balance, OrderState, OrderType, PositionRisk, Side, Trade
from qexec.venue import feed as feeds
from qexec.venue import limiter, ws_orders
from qexec.venue.errors import KEY_REFUSED_CODES, POSITION_SIDE_MISMATCH, VENUE_503_TEXTS, VENUE_ERRORS, Kind
from qexec.venue.rules import ExchangeRules, plain

log = logging.getLogger(__name__)


T = TypeVar("T")


# Failures below HTTP, first match wins; a refused connection (nothing sent) is TEMPORARY too (see `classify`).
TRANSPORT_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    (requests.exceptions.ConnectTimeout, Kind.TEMPORARY),  # never connected: nothing was sent
    (requests.exceptions.ReadTimeout, Kind.UNKNOWN),  # sent, no answer in time
    (requests.exceptions.ConnectionError, Kind.UNKNOWN),  # reset or aborted with the request on the wire
    (requests.exceptions.ChunkedEncodingError, Kind.UNKNOWN),  # the answer broke off
    (BinanceRequestException, Kind.UNKNOWN),  # a 2xx that is not JSON: it may well have executed
    (requests.exceptions.RequestException, Kind.UNKNOWN),
)


def classify(exc: BaseException) -> str:
    """The error policy: how a library or transport error from one venue call is to be treated."""
    if isinstance(exc, BinanceAPIException):
        status = int(exc.status_code or 0)
        code = int(exc.code or 0)
        message = str(exc.message or "").lower()
        if status in (418, 429):
            return Kind.RATE_LIMITED
        if status == 503:
            for text, kind in VENUE_503_TEXTS.items():
                if text in message:
                    return kind
        if status == 408:
            return Kind.UNKNOWN  # the backend timed out with our request
        if code in VENUE_ERRORS:
            return VENUE_ERRORS[code]
        if status >= 500:
            return Kind.UNKNOWN  # a 5xx we cannot read may have executed
        return Kind.REJECTED
    if isinstance(exc, requests.exceptions.ConnectionError) and _never_connected(exc):
        return Kind.TEMPORARY
    for kind_of, kind in TRANSPORT_ERRORS:
        if isinstance(exc, kind_of):
            return kind
    return Kind.UNKNOWN


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection was refused before any byte of the request went out."""
    text = repr(exc.args[0]) if exc.args else repr(exc)
    return "NewConnectionError" in text or "Connection refused" in text


def _retry_after_s(response: Any) -> float:
    """How long a 429/418 asks to wait: REST's `Retry-After` header (seconds), or a WebSocket API answer's
    `error.data.retryAfter` (the time, in ms, it ends); 1 s when neither is given."""
    if isinstance(response, dict):
        error = response.get("error")
        data = error.get("data") if isinstance(error, dict) else None
        until_ms = data.get("retryAfter") if isinstance(data, dict) else None
        return max(1.0, (int(until_ms) - time.time() * 1000) / 1000) if until_ms else 1.0
    headers = getattr(response, "headers", None)
    retry_after = headers.get("Retry-After") if headers is not None else None
    return float(retry_after or 1)


def translate(exc: BaseException, *, mutating: bool) -> VenueError:
    kind = classify(exc)
    code = getattr(exc, "code", None)
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", None) or exc)
    if kind == Kind.RATE_LIMITED:
        wait_s = _retry_after_s(getattr(exc, "response", None))
        return RateLimited(message, retry_after_s=wait_s, code=code, http_status=status)
    if kind == Kind.NOT_FOUND:
        return OrderNotFound(message, code=code, http_status=status)
    if kind == Kind.REJECTED:
        rejected = PositionModeChanged if code == POSITION_SIDE_MISMATCH else OrderRejected
        return rejected(message, code=code, http_status=status)
    if kind == Kind.UNKNOWN and mutating:
        return UnknownOutcome(f"{type(exc).__name__}: {message}", code=code, http_status=status)
    return TemporaryVenueError(f"{type(exc).__name__}: {message}", code=code, http_status=status)


class _Shared:
    """Per-venue-URL state shared by every thread of a process: clock offset, rules, position mode."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.offset_ms: int | None = None
        self.rules: ExchangeRules | None = None
        self.dual_side: bool | None = None
        self.dual_side_at = 0.0
        self.mode_lock = threading.Lock()  # one thread of the process reads the position mode, the others wait


_shared: dict[str, _Shared] = {}


_shared_lock = threading.Lock()


def _shared_for(url: str, account: str) -> _Shared:
    """What the threads of this process share about a venue's account (its clock offset and rules are the venue's, but
    cheap to learn once per account; its position mode is the account's own)."""
    with _shared_lock:
        return _shared.setdefault(f"{account}@{url}", _Shared())


class BinanceVenue:
    """A Binance USD-M Futures account reached through python-binance's `Client` (one per thread)."""

    def __init__(self, settings: Settings, redis: redis.Redis | None = None) -> None:
        creds = settings.credentials()
        self.settings = settings
        self.identity = settings.venue  # which venue this is, from where the requests go (qexec/venue/identity.py)
        self.mode = self.identity.name
        self.url = settings.venue_url
        self.host = self.identity.host
        self._client = Client(
            creds.api_key,
            creds.secret,
            private_key=creds.private_key,  # Ed25519 signs instead of HMAC when set (qexec/venue/keys.py)
            ping=False,
            requests_params={"timeout": settings.request_timeout_s},
        )
        _settle_environment(self._client.session, self.url)
        # python-binance has no base-URL parameter; the instance attributes are read at every call (§6.1).
        self._client.FUTURES_URL = self.url + "/fapi"
        self._client.API_URL = self.url + "/api"
        self._client.REQUEST_RECVWINDOW = settings.recv_window_ms
        self._shared = _shared_for(self.url, settings.account)
        if self._shared.offset_ms is not None:
            self._client.timestamp_offset = self._shared.offset_ms
        # With a Redis, every call spends from the deployment's shared venue budget first (qexec/venue/limiter.py).
        self.limiter = limiter.Limiter(redis, settings) if redis is not None else None
        self._socket: ws_orders.OrderSocket | None = None  # see `_order_socket`

    @property
    def label(self) -> str:
        """`mode@host`, for logs."""
        return self.identity.label

    def close(self) -> None:
        """Close the client's HTTP connections, and the event loop python-binance made for this thread (§6.2).

        python-binance's `Client` creates (and never closes) an asyncio loop for each thread other than the main one
        it is built in; a thread that ends closes it here.
        """
        self._client.session.close()
        loop = getattr(self._client, "loop", None)
        if loop is None or threading.current_thread() is threading.main_thread():
            return
        if not loop.is_running() and not loop.is_closed():
            loop.close()

    @property
    def feed(self) -> feeds.Feed | None:
        """This process's live view of the account from the venue's streams, when one runs (qexec/venue/feed.py)."""
        return feeds.running(self.url, self.settings.account)

    # -- plumbing -------------------------------------------------------------------------------------

    def _call(
        self, fn: Callable[..., T], *, mutating: bool = False, signed: bool = True, spent: Any = None, **params: Any
    ) -> T:
        """One REST call through python-binance's `Client`, spending the shared budget first (`spent`: the caller
        already tried to, with `Limiter.spend_in`)."""
        if signed and self._shared.offset_ms is None:
            self.sync_clock()
        for attempt in range(2):
            self._spend(fn, params, spent if attempt == 0 else None)
            try:
                answer = fn(**params)
            except (BinanceAPIException, BinanceRequestException, requests.exceptions.RequestException) as exc:
                self._observe(getattr(exc, "response", None))
                if self._resynced(exc, attempt):
                    continue
                raise self._failure(exc, mutating) from exc
            self._observe(self._client.response)
            return answer
        raise AssertionError("unreachable")

    def _send(self, rest: Callable[..., Any], ws_call: str, *, mutating: bool, spent: Any = None, **params: Any) -> Any:
        """A call over the venue's WebSocket API (`ws_call`, python-binance's `AsyncClient` method) when that is the
        order transport; over REST (`rest`) when it is not, or when the WebSocket API cannot be reached. The same
        budget, the same errors: an answer that never came is an unknown outcome, looked up before any resend."""
        socket = self._order_socket()
        if socket is None or socket.down:
            return self._call(rest, mutating=mutating, spent=spent, **params)
        ws_params = dict(params, recvWindow=self.settings.recv_window_ms)
        for attempt in range(2):
            self._spend(rest, params, spent if attempt == 0 else None)
            try:
                answer = socket.request(ws_call, ws_params, self.clock_offset_ms())
            except ws_orders.NotSent as exc:
                log.warning("WS_API_UNREACHABLE error=%s: over REST for %g s", exc, self.settings.ws_retry_s)
                return self._call(rest, mutating=mutating, spent=limiter.SPENT, **params)
            except ws_orders.Lost as exc:
                lost = UnknownOutcome if mutating else TemporaryVenueError
                raise lost(f"the WebSocket API's answer never came: {exc}") from exc
            except BinanceAPIException as exc:
                self._observe_counts(socket)
                if self._resynced(exc, attempt):
                    continue
                raise self._failure(exc, mutating) from exc
            else:
                self._observe_counts(socket)
                return answer
        raise AssertionError("unreachable")

    def _observe_counts(self, socket: ws_orders.OrderSocket) -> None:
        if self.limiter is not None:
            self.limiter.observe(socket.counts)  # the venue's counts in the answer, as REST's headers carry them

    def _order_socket(self) -> ws_orders.OrderSocket | None:
        """This process's WebSocket API connection when orders go over it (made at the first order, not before)."""
        if self.settings.order_transport != "ws":
            return None
        if self._socket is None:
            self._socket = ws_orders.socket_for(self.settings)
        return self._socket

    def _spend(self, fn: Callable[..., Any], params: dict[str, Any], spent: Any) -> None:
        if self.limiter is not None:
            self.limiter.acquire(limiter.cost_of(getattr(fn, "__name__", ""), params), spent)

    def _resynced(self, exc: BaseException, attempt: int) -> bool:
        """Whether `exc` is a clock-drift rejection (-1021) worth one resend, the clock resynced for it."""
        if isinstance(exc, BinanceAPIException) and exc.code == -1021 and attempt == 0:
            # A definite rejection: our clock drifted. Resync and send again (reference §7.3 step 6).
            log.warning("clock drift (-1021) from %s; resyncing", self.host)
            self.sync_clock()
            return True
        return False

    def _failure(self, exc: BaseException, mutating: bool) -> VenueError:
        error = translate(exc, mutating=mutating)
        if isinstance(error, PositionModeChanged):
            self.forget_position_mode()  # the one recovery: whoever resends reads the account's mode again
        if isinstance(error, RateLimited) and self.limiter is not None:
            self.limiter.pause(error.retry_after_s, f"HTTP {error.http_status} from {self.host}")
            metrics.venue_rate_limited(self.limiter.redis, error.http_status)
        return error

    def _observe(self, response: requests.Response | None) -> None:
        if self.limiter is not None and response is not None:
            self.limiter.observe(response.headers)

    def sync_clock(self) -> int:
        """Measure the offset between the venue's clock and ours, and sign with it from now on."""
        before = time.time()
        server = self._call(self._client.futures_time, signed=False)["serverTime"]
        after = time.time()
        offset = int(server - (before + after) * 500)
        with self._shared.lock:
            self._shared.offset_ms = offset
        self._client.timestamp_offset = offset
        return offset

    # -- market data ----------------------------------------------------------------------------------

    def server_time_ms(self) -> int:
        """The venue's clock, in epoch milliseconds."""
        return int(self._call(self._client.futures_time, signed=False)["serverTime"])

    def rules(self, *, refresh: bool = False) -> ExchangeRules:
        """Exchange rules, cached for `rules_ttl_s` and shared by every thread."""
        cached = self._shared.rules
        if cached is not None and not refresh and time.time() - cached.fetched_at < self.settings.rules_ttl_s:
            return cached
        info = self._call(self._client.futures_exchange_info, signed=False)
        rules = ExchangeRules.from_exchange_info(info, fetched_at=time.time())
        self._shared.rules = rules
        return rules

    def mark_price(self, symbol: str) -> Decimal:
        """The symbol's mark price over REST (venue/view.py reads the stream's first)."""
        return Decimal(str(self._call(self._client.futures_mark_price, signed=False, symbol=symbol)["markPrice"]))

    def clock_offset_ms(self) -> int:
        """The venue's clock minus ours, in ms (measured once per process)."""
        if self._shared.offset_ms is None:
            self.sync_clock()
        return self._shared.offset_ms or 0

    # -- account --------------------------------------------------------------------------------------

    def balances(self) -> list[Balance]:
        """The account's asset balances."""
        return [Balance.model_validate(raw) for raw in self._call(self._client.futures_account_balance)]

    def positions(self, symbol: str | None = None) -> list[PositionRisk]:
        """Positions (positionRisk), optionally for one symbol."""
        params: dict[str, Any] = {"symbol": symbol} if symbol else {}
        rows = self._call(self._client.futures_position_information, **params)
        return [PositionRisk.model_validate(raw) for raw in rows]

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """Open regular orders (openOrders), optionally for one symbol."""
        params: dict[str, Any] = {"symbol": symbol} if symbol else {}
        return [OrderState.model_validate(raw) for raw in self._call(self._client.futures_get_open_orders, **params)]

    def open_algo_orders(self, symbol: str | None = None) -> list[AlgoOrder]:
        """Open algo (conditional: stop-loss, take-profit) orders (openAlgoOrders), optionally for one symbol."""
        params: dict[str, Any] = {"symbol": symbol} if symbol else {}
        rows = self._call(self._client.futures_get_open_orders, conditional=True, **params)
        return [AlgoOrder.model_validate(raw) for raw in rows]

    def new_listen_key(self) -> str:
        """A listen key for the user-data stream (POST creates one, or extends the account's active one)."""
        return str(self._call(self._client.futures_stream_get_listen_key, signed=False))

    def keepalive_listen_key(self, key: str) -> None:
        """Extend a listen key's life by 60 minutes; raises `OrderRejected` (-1125) when the venue no longer has it."""
        self._call(self._client.futures_stream_keepalive, signed=False, listenKey=key)

    def dual_side(self) -> bool:
        """True when the account is in hedge mode. Known for `position_mode_ttl_s` by the whole deployment: one thread
        per process looks, in Redis first, and only one process asks the venue (a 30-weight read, per account)."""
        shared = self._shared
        known = self._known_mode(shared)
        if known is not None:
            return known
        with shared.mode_lock:
            known = self._known_mode(shared)
            if known is not None:
                return known
            dual = self._mode_in_redis()
            if dual is None:
                dual = bool(self._call(self._client.futures_get_position_mode).get("dualSidePosition"))
                self._mode_to_redis(dual)
            shared.dual_side, shared.dual_side_at = dual, time.time()
            return dual

    def _known_mode(self, shared: _Shared) -> bool | None:
        fresh = shared.dual_side is not None and time.time() - shared.dual_side_at <= self.settings.position_mode_ttl_s
        return shared.dual_side if fresh else None

    def _mode_key(self) -> str:
        key = constants.POSITION_MODE_KEY.format(venue=self.url)
        return constants.account_key(key, self.settings.account)

    def _mode_in_redis(self) -> bool | None:
        if self.limiter is None:
            return None
        try:
            raw: Any = self.limiter.redis.get(self._mode_key())
        except redis.RedisError:
            return None  # the venue is asked instead
        return None if raw is None else raw in ("1", b"1")

    def _mode_to_redis(self, dual: bool) -> None:
        if self.limiter is not None:
            with contextlib.suppress(redis.RedisError):
                ttl_ms = max(1, int(self.settings.position_mode_ttl_s * 1000))
                self.limiter.redis.set(self._mode_key(), "1" if dual else "0", px=ttl_ms)

    def forget_position_mode(self) -> None:
        """Drop the known position mode, here and for the deployment (the venue said -4061: the account changed
        mode)."""
        self._shared.dual_side = None
        if self.limiter is not None:
            with contextlib.suppress(redis.RedisError):
                self.limiter.redis.delete(self._mode_key())

    def set_leverage(self, symbol: str, leverage: int) -> int:
        """`POST /fapi/v1/leverage`: the leverage the venue applied (its answer is authoritative)."""
        answer = self._call(self._client.futures_change_leverage, symbol=symbol, leverage=leverage)
        return int(answer["leverage"])

    def leverage(self, symbol: str) -> int:
        """The symbol's leverage from `positionRisk` v2 (v3 has none)."""
        rows = self._call(self._client.futures_position_information, symbol=symbol, version=2)
        if not rows:
            raise TemporaryVenueError(f"positionRisk has no row for {symbol}: its leverage is unknown")
        return int(rows[0]["leverage"])

    # -- orders ---------------------------------------------------------------------------------------

    def place_order(
        self,
        *,
        symbol: str,
        side: Side,
        order_type: OrderType,
        quantity: Decimal,
        client_order_id: str,
        price: Decimal | None = None,
        reduce_only: bool = False,
        position_side: str | None = None,
        time_in_force: str = "GTC",
        spent: Any = None,
    ) -> OrderState:
        """Submit an order with `newOrderRespType=RESULT`; raises `UnknownOutcome` when it may have executed.

        `spent`: the reply of the limiter's `spend_in` made just before (in the caller's round trip), if any.
        """
        params: dict[str, Any] = {
            "symbol": symbol,
            "side": side.value,
            "type": order_type.value,
            "quantity": plain(quantity),
            "newClientOrderId": client_order_id,
            "newOrderRespType": "RESULT",
        }
        if order_type is OrderType.LIMIT:
            if price is None:
                raise ValueError("a LIMIT order needs a price")
            params["price"] = plain(price)
            params["timeInForce"] = time_in_force
        if position_side:
            params["positionSide"] = position_side
        elif reduce_only:
            params["reduceOnly"] = "true"
        answer = self._send(
            self._client.futures_create_order, "ws_futures_create_order", mutating=True, spent=spent, **params
        )
        return OrderState.model_validate(answer)

    def get_order(self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None) -> OrderState:
        """Look an order up by venue id or client id; raises `OrderNotFound` when the venue has none."""
        params: dict[str, Any] = {"symbol": symbol}
        if order_id is not None:
            params["orderId"] = order_id
        elif client_order_id is not None:
            params["origClientOrderId"] = client_order_id
        else:
            raise ValueError("get_order needs order_id or client_order_id")
        return OrderState.model_validate(
            self._send(self._client.futures_get_order, "ws_futures_get_order", mutating=False, **params)
        )

    def cancel_order(self, symbol: str, *, order_id: int) -> OrderState:
        """Cancel an open order; raises `OrderNotFound` (-2011) when it is no longer open."""
        answer = self._send(
            self._client.futures_cancel_order, "ws_futures_cancel_order", mutating=True, symbol=symbol, orderId=order_id
        )
        return OrderState.model_validate(answer)

    def user_trades(
        self, symbol: str, *, start_ms: int | None = None, end_ms: int | None = None, order_id: int | None = None
    ) -> list[Trade]:
        """The account's fills of a symbol (userTrades): of one order, or between `start_ms` and `end_ms` (the venue
        allows at most 7 days between them, and keeps only recent months)."""
        params: dict[str, Any] = {"symbol": symbol, "limit": 1000}
        if order_id is not None:
            params["orderId"] = order_id
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        return [Trade.model_validate(t) for t in self._call(self._client.futures_account_trades, **params)]

    # -- algo (conditional) orders --------------------------------------------------------------------

    def place_algo_order(
        self,
        *,
        symbol: str,
        side: Side,
        order_type: str,
        trigger_price: Decimal,
        client_algo_id: str,
        position_side: str | None = None,
        quantity: Decimal | None = None,
    ) -> AlgoOrder:
        """Submit a STOP_MARKET / TAKE_PROFIT_MARKET on the mark price: closePosition, or reduce-only `quantity`."""
        params: dict[str, Any] = {
            "symbol": symbol,
            "side": side.value,
            "type": order_type,
            "triggerPrice": plain(trigger_price),
            "workingType": "MARK_PRICE",
            "clientAlgoId": client_algo_id,
            "algoType": "CONDITIONAL",
        }
        if quantity is None:
            params["closePosition"] = "true"
        else:
            params["quantity"] = plain(quantity)
            if not position_side:
                params["reduceOnly"] = "true"
        if position_side:
            params["positionSide"] = position_side
        answer = self._send(
            self._client.futures_create_algo_order, "ws_futures_create_algo_order", mutating=True, **params
        )
        return AlgoOrder.model_validate(answer)

    def get_algo_order(self, *, client_algo_id: str | None = None, algo_id: int | None = None) -> AlgoOrder:
        """Look an algo order up by `clientAlgoId` or `algoId`; raises `OrderNotFound` when the venue has none."""
        params: dict[str, Any] = {"algoId": algo_id} if algo_id is not None else {"clientAlgoId": client_algo_id}
        return AlgoOrder.model_validate(self._call(self._client.futures_get_order, conditional=True, **params))

    def cancel_algo_order(self, *, client_algo_id: str | None = None, algo_id: int | None = None) -> None:
        """Cancel a waiting algo order; raises `OrderNotFound` (-2011) when it no longer waits."""
        params: dict[str, Any] = {"algoId": algo_id} if algo_id is not None else {"clientAlgoId": client_algo_id}
        self._send(self._client.futures_cancel_algo_order, "ws_futures_cancel_algo_order", mutating=True, **params)

    def cancel_all_orders(self, symbol: str) -> None:
        """Cancel every open order and every waiting algo order of a symbol (allOpenOrders, algoOpenOrders)."""
        self._call(self._client.futures_cancel_all_open_orders, mutating=True, symbol=symbol)
        self._call(self._client.futures_cancel_all_algo_open_orders, mutating=True, symbol=symbol)

    def countdown_cancel_all(self, symbol: str, countdown_ms: int) -> None:
        """`POST /fapi/v1/countdownCancelAll` (weight 10): the venue cancels the symbol's open orders once
        `countdown_ms` passes without another call; 0 ends the countdown. Renewing is idempotent, so a timeout is
        retried, never an unknown outcome."""
        self._call(self._client.futures_countdown_cancel_all, symbol=symbol, countdownTime=int(countdown_ms))

    def check(self, budget_wait_s: float = 60.0) -> dict[str, Any]:
        """The start-up self-test: server time and clock offset, exchange info, account balance."""
        give_up_at = time.monotonic() + budget_wait_s
        while True:
            try:
                offset = self.sync_clock()
                rules = self.rules(refresh=True)
                balances = self.balances()
                break
            except RateLimited as exc:
                # A spent rate budget (ours or the venue's) is no outage: wait for it rather than refuse to start.
                if time.monotonic() >= give_up_at:
                    raise VenueUnavailable(
                        f"{self.label}: rate budget still spent after {budget_wait_s:g}s: {exc}",
                        code=exc.code,
                        http_status=exc.http_status,
                    ) from exc
                log.warning("self-test waiting %.1fs for the rate budget (%s)", exc.retry_after_s, exc)
                time.sleep(min(max(exc.retry_after_s, 0.5), 5.0))
            except VenueError as exc:
                self._refuse(exc)
        usdt = next((b for b in balances if b.asset == "USDT"), None)
        return {
            "mode": self.mode,
            "host": self.host,
            "clock_offset_ms": offset,
            "symbols": len(rules.symbols),
            "usdt_balance": plain(usdt.balance) if usdt else None,
            "usdt_available": plain(usdt.availableBalance) if usdt else None,
        }

    def _refuse(self, exc: VenueError) -> NoReturn:
        """Raise VenueUnavailable for a failed self-test, naming refused keys as such."""
        reason = f"{self.label}: {exc}"
        if exc.code in KEY_REFUSED_CODES:
            said = exc.message.rstrip(".")
            reason = (
                f"the venue refused the API keys in {self.mode} mode at {self.host}: {said}. Keys belong to one "
                "environment (testnet, demo or mainnet) and the others refuse them - testnet keys on demo or "
                "mainnet, or the reverse, is the usual cause: check that QEXEC_API_KEY/QEXEC_API_SECRET were made "
                "for this host (then the key's IP whitelist and Futures permission)"
            )
        raise VenueUnavailable(reason, code=exc.code, http_status=exc.http_status) from exc


def _settle_environment(session: requests.Session, url: str) -> None:
    """Read the proxy and CA settings of the environment once for the venue's URL, instead of on every request.

    requests consults the environment (proxies, no_proxy, CA bundle, .netrc) per request when `trust_env` is set,
    which cost about 4 % of a worker's CPU; the venue URL never changes, so the answer does not either.
    """
    found = session.merge_environment_settings(url, {}, None, None, None)
    session.trust_env = False
    session.proxies.update(found.get("proxies") or {})
    session.verify = found.get("verify", True)
    if found.get("cert"):
        session.cert = found["cert"]


_local = threading.local()


def thread_venue(settings: Settings, redis: redis.Redis | None = None) -> BinanceVenue:
    """This thread's `BinanceVenue` for the settings' account (python-binance clients hold a requests session; one
    per thread and account)."""
    venues: dict[str, BinanceVenue] | None = getattr(_local, "venues", None)
    if venues is None:
        venues = _local.venues = {}
    venue = venues.get(settings.account)
    if venue is None or venue.settings is not settings or (venue.limiter and venue.limiter.redis) is not redis:
        venue = venues[settings.account] = BinanceVenue(settings, redis)
    return venue
