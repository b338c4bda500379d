"""The venue's WebSocket API (`ws-fapi`) as an order path: one connection per process, kept open on an event-loop
thread of its own, that every worker thread sends through (python-binance's `AsyncClient` signs each request, HMAC or
Ed25519).

A request either never left (`NotSent`: no connection could be made, so REST may carry it instead) or went out and its
answer did not come (`Lost`: it may have executed); the venue's own answers, errors included, come back as
python-binance gives them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import time
from typing import Any

from binance.async_client import AsyncClient
from binance.exceptions import BinanceWebsocketUnableToConnect
from binance.ws.constants import WSListenerState
from binance.ws.websocket_api import WebsocketAPI
from websockets.exceptions import ConnectionClosed

from qexec.config import Settings

log = logging.getLogger(__name__)


# python-binance's messages for a request it could not send: no connection could be made, or none was there.
_NEVER_SENT = ("Connection failed", "Trying to send request while WebSocket is not connected")


# A WebSocket API answer's `rateLimits` entries, as the REST answers' `X-MBX-*` headers name the same counts (the
# limiter reads those): (rateLimitType, interval, intervalNum) -> header.
_COUNT_HEADERS: dict[tuple[Any, Any, Any], str] = {
    ("REQUEST_WEIGHT", "MINUTE", 1): "X-MBX-USED-WEIGHT-1M",
    ("ORDERS", "SECOND", 10): "X-MBX-ORDER-COUNT-10S",
    ("ORDERS", "MINUTE", 1): "X-MBX-ORDER-COUNT-1M",
}


def count_headers(rate_limits: Any) -> dict[str, str]:
    """The venue's counts in an answer's `rateLimits`, as the REST headers that carry them."""
    headers: dict[str, str] = {}
    for entry in rate_limits if isinstance(rate_limits, list) else ():
        if not isinstance(entry, dict):
            continue
        header = _COUNT_HEADERS.get((entry.get("rateLimitType"), entry.get("interval"), entry.get("intervalNum")))
        if header is not None and isinstance(entry.get("count"), int):
            headers[header] = str(entry["count"])
    return headers


class NotSent(Exception):
    """The WebSocket API could not be reached: the request never left."""


class Lost(Exception):
    """The request went out and no answer came (a timeout, or the connection dropped with it in flight)."""


class _OrderApi(WebsocketAPI):  # type: ignore[misc]
    """python-binance's WebSocket API client for one connection, with qexec's timeouts. When the connection drops, the
    requests in flight fail at once (the library would let each wait out its timeout) and it is done: the next request
    makes a fresh one (the library's own reconnect, racing a request's, could leave an answer on a socket nobody
    reads)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        super().__init__(url=url)
        self.TIMEOUT = timeout_s  # each request's wait for its answer (python-binance: 10 s)
        self._ws_kwargs = {"open_timeout": timeout_s}  # passed to websockets.connect (python-binance 1.0.37)
        self.broken = False
        self.counts: dict[str, str] = {}  # the venue's counts in the latest answer (`count_headers`)

    def _handle_message(self, msg: Any) -> Any:
        # python-binance hands a request only its answer's `result`; the venue's counts come with the answer.
        if isinstance(msg, str) and '"rateLimits"' in msg:  # a text frame (python-binance's is_binary=False)
            try:
                counts = count_headers(json.loads(msg).get("rateLimits"))
            except (ValueError, AttributeError):
                counts = {}
            if counts:
                self.counts = counts
        return super()._handle_message(msg)

    async def _propagate_error(self, error_msg: dict[str, Any]) -> None:
        # The library queues the error for readers of its streams; this connection has none, only requests in flight.
        self.broken = True
        self.ws_state = WSListenerState.EXITING  # its read loop ends instead of reconnecting
        for future in list(self._responses.values()):
            if not future.done():
                future.set_exception(Lost(f"connection lost: {error_msg.get('type')} {error_msg.get('m')}"))


class OrderSocket:
    """The WebSocket API connection of this process for one venue and key."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.ws_api_base_url
        self._timeout_s = settings.request_timeout_s
        self._retry_s = settings.ws_retry_s
        self._down_until = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qexec-ws-api", daemon=True)
        self._thread.start()
        creds = settings.credentials()
        self._client: AsyncClient = self._wait(self._build(creds.api_key, creds.secret, creds.private_key))

    async def _build(self, key: str, secret: str | None, private_key: str | None) -> AsyncClient:
        client = AsyncClient(key, secret, private_key=private_key)  # built on this loop: its sockets live here
        await client.session.close()  # its REST session: REST goes through the venue's own `Client`
        client.ws_future = _OrderApi(self.url, self._timeout_s)
        return client

    def _wait(self, coroutine: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout=2 * self._timeout_s + 1)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Lost(f"no answer from {self.url} in {2 * self._timeout_s + 1:g} s") from None

    @property
    def counts(self) -> dict[str, str]:
        """The venue's request weight and order counts as of the latest answer, as REST's `X-MBX-*` headers."""
        return dict(self._client.ws_future.counts)

    @property
    def down(self) -> bool:
        """Whether the last attempt to connect failed less than `ws_retry_s` ago (orders go over REST meanwhile)."""
        return time.monotonic() < self._down_until

    def request(self, call: str, params: dict[str, Any], offset_ms: int) -> Any:
        """Send one request with `AsyncClient.<call>` (e.g. `ws_futures_create_order`), signed with the venue's clock
        offset, and return its `result`; raises `NotSent`, `Lost`, or python-binance's `BinanceAPIException`."""
        if self.down:
            raise NotSent(f"{self.url} could not be reached less than {self._retry_s:g} s ago")

        async def send() -> Any:
            if self._client.ws_future.broken:
                self._client.ws_future = _OrderApi(self.url, self._timeout_s)
            self._client.timestamp_offset = offset_ms
            return await getattr(self._client, call)(**params)

        try:
            return self._wait(send())
        except BinanceWebsocketUnableToConnect as exc:
            if not str(exc).startswith(_NEVER_SENT):
                raise Lost(f"no answer from {self.url} in {self._timeout_s:g} s ({exc})") from None
            self._down_until = time.monotonic() + self._retry_s
            raise NotSent(f"{self.url}: {exc}") from None
        except ConnectionClosed as exc:  # while sending: the frame may or may not have gone out
            raise Lost(f"connection to {self.url} closed while sending: {exc}") from None

    def close(self) -> None:
        """Close the connection and stop its thread."""

        async def shut() -> None:
            await self._client.ws_future.close()

        try:
            self._wait(shut())
        except Exception as exc:  # closing at shutdown: nothing is left to do about it
            log.debug("closing the WebSocket API connection: %r", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)


_sockets: dict[tuple[int, str, str], OrderSocket] = {}
_lock = threading.Lock()


def socket_for(settings: Settings) -> OrderSocket:
    """This process's connection to the WebSocket API of `settings`' venue and key (a forked child makes its own)."""
    key = (os.getpid(), settings.ws_api_base_url, settings.credentials().api_key)
    with _lock:
        socket = _sockets.get(key)
        if socket is None:
            socket = _sockets[key] = OrderSocket(settings)
        return socket


def close_all() -> None:
    """Close this process's WebSocket API connections (a worker's shutdown)."""
    with _lock:
        mine = [key for key in _sockets if key[0] == os.getpid()]
        sockets = [_sockets.pop(key) for key in mine]
    for socket in sockets:
        socket.close()
