"""The venue seam: the only module that imports `binance`. Library errors become qexec's own here."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from binance.client import Client
from binance.exceptions import BinanceAPIException, BinanceRequestException

from qexec.config import Settings
from qexec.errors import (
    OrderNotFound,
    OrderRejected,
    RateLimited,
    TemporaryVenueError,
    UnknownOutcome,
    VenueError,
    VenueUnavailable,
)
from qexec.models import OrderState, OrderType, Side
from qexec.rules import ExchangeRules, plain

log = logging.getLogger(__name__)

T = TypeVar("T")

# How each venue error code is treated (reference §3.3-3.4, §7.3). Codes not listed are terminal rejections.
UNKNOWN_OUTCOME_CODES = {-1006, -1007, -4116}  # -4116: an open order already has our id - go and look
TEMPORARY_CODES = {-1001, -1003, -1008, -1015, -1021, -5028}
NOT_FOUND_CODES = {-2013, -2011}
# The venue refused the keys themselves (-2015 invalid key/IP/permissions, -2014 key format, -2008 key id):
# on Binance this is what keys made for another environment (testnet vs demo vs mainnet) get (reference §5).
KEY_REFUSED_CODES = {-2015, -2014, -2008}
UNKNOWN_503_TEXT = "unknown error"


class Kind:
    """How a failed call is to be treated."""

    TEMPORARY = "temporary"
    UNKNOWN = "unknown"
    REJECTED = "rejected"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"


def classify(exc: BaseException) -> str:
    """The error policy: how a library or transport error from one venue call is to be treated."""
    if isinstance(exc, BinanceAPIException):
        status = int(exc.status_code or 0)
        code = int(exc.code or 0)
        message = str(exc.message or "").lower()
        if status in (418, 429):
            return Kind.RATE_LIMITED
        if code in NOT_FOUND_CODES:
            return Kind.NOT_FOUND
        if code in UNKNOWN_OUTCOME_CODES or status == 408:
            return Kind.UNKNOWN
        if status == 503 and UNKNOWN_503_TEXT in message:
            return Kind.UNKNOWN
        if code in TEMPORARY_CODES or status == 503:
            return Kind.TEMPORARY
        if status >= 500:
            return Kind.UNKNOWN  # a 5xx we cannot read may have executed
        return Kind.REJECTED
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Kind.TEMPORARY
    if isinstance(exc, requests.exceptions.ConnectionError) and _never_connected(exc):
        return Kind.TEMPORARY
    if isinstance(exc, requests.exceptions.RequestException | BinanceRequestException):
        return Kind.UNKNOWN
    return Kind.UNKNOWN


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection was refused before any byte of the request went out."""
    text = repr(exc.args[0]) if exc.args else repr(exc)
    return "NewConnectionError" in text or "Connection refused" in text


def _translate(exc: BaseException, *, mutating: bool) -> VenueError:
    kind = classify(exc)
    code = getattr(exc, "code", None)
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", None) or exc)
    if kind == Kind.RATE_LIMITED:
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("Retry-After") if response is not None else None
        return RateLimited(message, retry_after_s=float(retry_after or 1), code=code, http_status=status)
    if kind == Kind.NOT_FOUND:
        return OrderNotFound(message, code=code, http_status=status)
    if kind == Kind.REJECTED:
        return OrderRejected(message, code=code, http_status=status)
    if kind == Kind.UNKNOWN and mutating:
        return UnknownOutcome(f"{type(exc).__name__}: {message}", code=code, http_status=status)
    return TemporaryVenueError(f"{type(exc).__name__}: {message}", code=code, http_status=status)


class _Shared:
    """Per-venue-URL state shared by every thread of a process: clock offset, rules, leverage, mode."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.offset_ms: int | None = None
        self.rules: ExchangeRules | None = None
        self.leverage: dict[str, int] = {}
        self.dual_side: bool | None = None


_shared: dict[str, _Shared] = {}
_shared_lock = threading.Lock()


def _shared_for(url: str) -> _Shared:
    with _shared_lock:
        return _shared.setdefault(url, _Shared())


class Venue:
    """A Binance USD-M Futures account reached through python-binance's `Client` (one per thread)."""

    def __init__(self, settings: Settings) -> None:
        key, secret = settings.credentials()
        self.settings = settings
        self.mode = settings.mode.value
        self.url = settings.venue_url
        self.host = urlsplit(self.url).netloc
        self._client = Client(key, secret, ping=False, requests_params={"timeout": settings.request_timeout_s})
        # python-binance has no base-URL parameter; the instance attributes are read at every call (§6.1).
        self._client.FUTURES_URL = self.url + "/fapi"
        self._client.API_URL = self.url + "/api"
        self._client.REQUEST_RECVWINDOW = settings.recv_window_ms
        self._shared = _shared_for(self.url)
        if self._shared.offset_ms is not None:
            self._client.timestamp_offset = self._shared.offset_ms

    @property
    def label(self) -> str:
        """`mode@host`, for logs."""
        return f"{self.mode}@{self.host}"

    # -- plumbing -------------------------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *, mutating: bool = False, signed: bool = True, **params: Any) -> T:
        if signed and self._shared.offset_ms is None:
            self.sync_clock()
        for attempt in range(2):
            try:
                return fn(**params)
            except (BinanceAPIException, BinanceRequestException, requests.exceptions.RequestException) as exc:
                if isinstance(exc, BinanceAPIException) and exc.code == -1021 and attempt == 0:
                    # A definite rejection: our clock drifted. Resync and send again (reference §7.3 step 6).
                    log.warning("clock drift (-1021) from %s; resyncing", self.host)
                    self.sync_clock()
                    continue
                raise _translate(exc, mutating=mutating) from exc
        raise AssertionError("unreachable")

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
        """The symbol's current mark price."""
        return Decimal(str(self._call(self._client.futures_mark_price, signed=False, symbol=symbol)["markPrice"]))

    # -- account --------------------------------------------------------------------------------------

    def balances(self) -> list[dict[str, Any]]:
        """The account's asset balances."""
        return list(self._call(self._client.futures_account_balance))

    def positions(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Open positions (positionRisk), optionally for one symbol."""
        params: dict[str, Any] = {"symbol": symbol} if symbol else {}
        return list(self._call(self._client.futures_position_information, **params))

    def open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Open regular orders (openOrders), optionally for one symbol."""
        params: dict[str, Any] = {"symbol": symbol} if symbol else {}
        return list(self._call(self._client.futures_get_open_orders, **params))

    def open_algo_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Open algo (conditional: stop-loss, take-profit) orders (openAlgoOrders), optionally for one symbol."""
        params: dict[str, Any] = {"symbol": symbol} if symbol else {}
        return list(self._call(self._client.futures_get_open_orders, conditional=True, **params))

    def dual_side(self) -> bool:
        """True when the account is in hedge mode (cached per process)."""
        if self._shared.dual_side is None:
            answer = self._call(self._client.futures_get_position_mode)
            self._shared.dual_side = bool(answer.get("dualSidePosition"))
        return self._shared.dual_side

    def ensure_leverage(self, symbol: str, leverage: int) -> None:
        """Set the symbol's leverage unless this process already set it to that value."""
        if self._shared.leverage.get(symbol) == leverage:
            return
        self._call(self._client.futures_change_leverage, symbol=symbol, leverage=leverage)
        self._shared.leverage[symbol] = leverage

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
    ) -> OrderState:
        """Submit an order with `newOrderRespType=RESULT`; raises `UnknownOutcome` when it may have executed."""
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
            params["timeInForce"] = "GTC"
        if position_side:
            params["positionSide"] = position_side
        elif reduce_only:
            params["reduceOnly"] = "true"
        answer = self._call(self._client.futures_create_order, mutating=True, **params)
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
        return OrderState.model_validate(self._call(self._client.futures_get_order, **params))

    def cancel_order(self, symbol: str, *, order_id: int) -> OrderState:
        """Cancel an open order; raises `OrderNotFound` (-2011) when it is no longer open."""
        answer = self._call(self._client.futures_cancel_order, mutating=True, symbol=symbol, orderId=order_id)
        return OrderState.model_validate(answer)

    def check(self) -> dict[str, Any]:
        """The start-up self-test: server time and clock offset, exchange info, account balance."""
        try:
            offset = self.sync_clock()
            rules = self.rules(refresh=True)
            balances = self.balances()
        except VenueError as exc:
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
        usdt = next((b for b in balances if b.get("asset") == "USDT"), {})
        return {
            "mode": self.mode,
            "host": self.host,
            "clock_offset_ms": offset,
            "symbols": len(rules.symbols),
            "usdt_balance": usdt.get("balance"),
            "usdt_available": usdt.get("availableBalance"),
        }


_local = threading.local()


def thread_venue(settings: Settings) -> Venue:
    """This thread's `Venue` (python-binance clients hold a requests session; one per thread)."""
    venue: Venue | None = getattr(_local, "venue", None)
    if venue is None or venue.settings is not settings:
        venue = Venue(settings)
        _local.venue = venue
    return venue
