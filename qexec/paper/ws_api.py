"""Binance's WebSocket API on ``/ws-fapi/v1``: one JSON request per text frame, run through the REST pipeline.

A request ``{"id", "method", "params"}`` names the REST endpoint it stands for (``order.place`` is
``POST /fapi/v1/order``) and goes through ``Exchange.run`` as that endpoint does over HTTP (latency, weight and
order limits, key and signature, faults, handler, write-through) under the name ``WS <method>``, which faults and
stats use. The answer is ``{"id", "status", "result" | "error", "rateLimits"}``. A signature covers the other
params sorted by name and joined as a query string; the key a request is signed with (or the session's) names
the account it acts on. ``session.logon`` (Ed25519 keys only) lets the connection's
later requests leave ``apiKey`` and ``signature`` out. A ``timeout`` fault sends no answer; a ``drop`` fault cuts
the connection without a close frame. Requests of one connection run concurrently, each answered when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from qexec.paper import errors
from qexec.paper.auth import HMAC
from qexec.paper.endpoints import ENDPOINTS, fixed
from qexec.paper.engine import Engine, FillPlan, now_ms
from qexec.paper.exchange import Authorize, Endpoint, Exchange, Handler, Outcome
from qexec.paper.faults import EXECUTED_OR_NOT, WS_PREFIX
from qexec.paper.params import Params

WS_API_PATH = "/ws-fapi/v1"
SESSION_WEIGHT = 2  # session.logon, session.status and session.logout, as Binance weighs them
# The REST endpoint each WebSocket API method stands for: same parameters, answer, weight and security.
REST_EQUIVALENT = {
    "order.place": "POST /fapi/v1/order",
    "order.status": "GET /fapi/v1/order",
    "order.cancel": "DELETE /fapi/v1/order",
    "algoOrder.place": "POST /fapi/v1/algoOrder",
    "algoOrder.cancel": "DELETE /fapi/v1/algoOrder",
    "account.status": "GET /fapi/v2/account",
    "v2/account.status": "GET /fapi/v3/account",
    "account.balance": "GET /fapi/v2/balance",
    "v2/account.balance": "GET /fapi/v3/balance",
    "account.position": "GET /fapi/v2/positionRisk",
    "v2/account.position": "GET /fapi/v3/positionRisk",
    "ticker.price": "GET /fapi/v1/ticker/price",
    "ticker.book": "GET /fapi/v1/ticker/bookTicker",
    "depth": "GET /fapi/v1/depth",
    "userDataStream.start": "POST /fapi/v1/listenKey",
    "userDataStream.ping": "PUT /fapi/v1/listenKey",
    "userDataStream.stop": "DELETE /fapi/v1/listenKey",
}
SESSION_METHODS = ("session.logon", "session.status", "session.logout")
# Our choices where Binance documents none for USD-M: -1135 for a frame that is not a request, -1020 for a method
# this venue does not serve.
INVALID_REQUEST_CODE = -1135
UNKNOWN_METHOD = errors.VenueError(-1020, "This operation is not supported.")


def _ws_endpoint(
    method: str, security: str, weight: Callable[[Params], int], handler: Handler, *, order: bool = False
) -> Endpoint:
    """The endpoint a method runs as; its key, ``WS <method>``, is how faults and stats name it."""
    return Endpoint(WS_PREFIX.strip(), method, security, weight, handler, order=order)


def _by_method() -> dict[str, Endpoint]:
    rest = {ep.key: ep for ep in ENDPOINTS}
    found: dict[str, Endpoint] = {}
    for method, key in REST_EQUIVALENT.items():
        ep = rest[key]
        found[method] = _ws_endpoint(method, ep.security, ep.weight, ep.handler, order=ep.order)
    return found


METHODS = _by_method()


class InvalidRequest(Exception):
    """Raised when a frame is not a WebSocket API request; answered with ``id`` (when it was readable)."""

    def __init__(self, request_id: Any, msg: str) -> None:
        super().__init__(msg)
        self.request_id = request_id
        self.error = errors.VenueError(INVALID_REQUEST_CODE, msg)


@dataclass(frozen=True)
class Request:
    """One parsed request: its id, method and params as sent (JSON values; decimals kept as written)."""

    request_id: Any
    method: str
    raw: dict[str, Any]

    def params(self) -> Params:
        """The params as the REST handlers read them: strings, nulls left out."""
        return Params({k: text for k, v in self.raw.items() if (text := wire_text(v)) is not None})


def parse_request(frame: str) -> Request:
    """The request in a text frame (``InvalidRequest`` when it is not JSON, not an object, or badly shaped)."""
    try:
        body = json.loads(frame, parse_float=Decimal)
    except ValueError:
        raise InvalidRequest(None, "Invalid JSON request.") from None
    if not isinstance(body, dict):
        raise InvalidRequest(None, "Invalid JSON request; expected an object.")
    request_id = body.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str | None):
        raise InvalidRequest(None, "Invalid 'id' in JSON request; expected an integer, a string or null.")
    method = body.get("method")
    if not isinstance(method, str) or not method:
        raise InvalidRequest(request_id, "Invalid 'method' in JSON request; expected a string.")
    raw = body.get("params", {})
    if not isinstance(raw, dict):
        raise InvalidRequest(request_id, "Invalid 'params' in JSON request; expected an object.")
    return Request(request_id, method, raw)


def wire_text(value: Any) -> str | None:
    """A JSON param value as the query string would carry it (booleans ``true``/``false``); None for null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def signed_payloads(raw: dict[str, Any]) -> list[str]:
    """What a client may have signed: the params but ``signature``, sorted by name, joined raw (python-binance)
    or URL-encoded (Binance's SDK); python-binance writes booleans as ``True``/``False``."""
    items = sorted((k, v) for k, v in raw.items() if k != "signature" and v is not None)
    texts = [(k, wire_text(v) or "") for k, v in items]
    payloads = ["&".join(f"{k}={v}" for k, v in texts), urlencode(texts)]
    if any(isinstance(v, bool) for _, v in items):
        payloads.append("&".join(f"{k}={v if isinstance(v, bool) else wire_text(v)}" for k, v in items))
    return payloads


@dataclass
class Session:
    """One connection's authentication: since when it is open, the key ``session.logon`` authorized."""

    connected_ms: int
    return_rate_limits: bool = True
    api_key: str | None = None
    authorized_ms: int | None = None

    def status(self) -> dict[str, Any]:
        """The answer of ``session.logon``, ``session.status`` and ``session.logout``."""
        return {
            "apiKey": self.api_key,
            "authorizedSince": self.authorized_ms,
            "connectedSince": self.connected_ms,
            "returnRateLimits": self.return_rate_limits,
            "serverTime": now_ms(),
        }


@dataclass
class ApiConnection:
    """One open ``/ws-fapi/v1`` socket: its session, the lock its answers take turns on, its drop signal."""

    ws: WebSocket
    session: Session
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ip(self) -> str:
        """The client's address, the key of its request-weight window (shared with its REST requests)."""
        return self.ws.client.host if self.ws.client else "unknown"

    async def send(self, answer: dict[str, Any]) -> None:
        """Write one answer, unless the connection was dropped or the client has gone."""
        if self.dropped.is_set():
            return
        async with self.lock:
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                await self.ws.send_text(json.dumps(answer, separators=(",", ":")))


def rate_limits(ex: Exchange, ip: str, order: bool, account: str) -> list[dict[str, Any]]:
    """The ``rateLimits`` of an answer: the IP's request weight used this minute, and for orders both of the
    account's order counters."""
    config, limiter = ex.config, ex.limiter
    window = limiter.weight.get(ip)
    limits = [_limit("REQUEST_WEIGHT", "MINUTE", 1, config.weight_limit, window.used if window else 0)]
    if order:
        windows = limiter.order_windows(account)
        limits.append(_limit("ORDERS", "SECOND", 10, config.orders_per_10s, windows.ten_s.used))
        limits.append(_limit("ORDERS", "MINUTE", 1, config.orders_per_min, windows.minute.used))
    return limits


def _limit(kind: str, interval: str, interval_num: int, limit: int, count: int) -> dict[str, Any]:
    return {"rateLimitType": kind, "interval": interval, "intervalNum": interval_num, "limit": limit, "count": count}


def error_body(status: int, payload: Any, headers: dict[str, str]) -> dict[str, Any]:
    """An error's ``{"code", "msg"}``; a 429/418 adds ``data`` with ``serverTime`` and ``retryAfter`` (ms)."""
    body = dict(payload)
    retry_s = headers.get("Retry-After")
    if retry_s is not None and status in (418, 429):
        now = now_ms()
        body["data"] = {"serverTime": now, "retryAfter": now + int(retry_s) * 1000}
    return body


class WsApi:
    """The ``/ws-fapi/v1`` route of one exchange: connections, their sessions and their requests."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.tasks: set[asyncio.Task[None]] = set()

    def route(self) -> WebSocketRoute:
        """The Starlette route, on the REST port."""
        return WebSocketRoute(WS_API_PATH, self._serve)

    async def _serve(self, ws: WebSocket) -> None:
        """Read requests until the client leaves or a ``drop`` fault cuts the connection (no close frame)."""
        await ws.accept()
        wanted = ws.query_params.get("returnRateLimits", "true").lower() != "false"
        conn = ApiConnection(ws, Session(now_ms(), return_rate_limits=wanted))
        dropped = asyncio.ensure_future(conn.dropped.wait())
        try:
            while True:
                receiving = asyncio.ensure_future(ws.receive())
                await asyncio.wait({receiving, dropped}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()
                    return  # returning without a close frame: uvicorn closes the transport (the client sees 1006)
                message = receiving.result()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None and message.get("bytes") is not None:
                    text = message["bytes"].decode(errors="replace")
                if text is not None:
                    self._spawn(self.answer(conn, text))
        finally:
            dropped.cancel()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run one request on its own: a slow one (RESULT waiting for a fill) holds up no other."""
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def answer(self, conn: ApiConnection, frame: str) -> None:
        """Handle one frame and send its answer (none for a ``timeout`` fault; a ``drop`` fault cuts the socket)."""
        try:
            request = parse_request(frame)
        except InvalidRequest as exc:
            error = exc.error
            await conn.send(self._answer(conn, exc.request_id, Outcome(error.status, error.payload(), {}), False))
            return
        endpoint = self._endpoint(conn.session, request.method)
        if endpoint is None:
            self.ex.stats.errors[UNKNOWN_METHOD.code] += 1
            outcome = Outcome(UNKNOWN_METHOD.status, UNKNOWN_METHOD.payload(), {})
            await conn.send(self._answer(conn, request.request_id, outcome, False))
            return
        params = request.params()
        authorize = self._authorizer(conn.session, endpoint, params, request.raw)
        outcome = await self.ex.run(endpoint, params, conn.ip, authorize)
        if outcome.fault is not None and outcome.fault.kind in EXECUTED_OR_NOT:
            if outcome.fault.kind == "drop":
                conn.dropped.set()
            return
        wanted = params.get("returnRateLimits", "true").lower() != "false"
        await conn.send(self._answer(conn, request.request_id, outcome, endpoint.order, wanted))

    def _answer(
        self, conn: ApiConnection, request_id: Any, outcome: Outcome, order: bool, wanted: bool = True
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"id": request_id, "status": outcome.status}
        if outcome.status == 200:
            body["result"] = outcome.payload
        else:
            body["error"] = error_body(outcome.status, outcome.payload, outcome.headers)
        if conn.session.return_rate_limits and wanted:
            body["rateLimits"] = rate_limits(self.ex, conn.ip, order, outcome.account)
        return body

    def _endpoint(self, session: Session, method: str) -> Endpoint | None:
        """The endpoint ``method`` runs as: a REST equivalent, a session method bound to ``session``, or None."""
        if method in METHODS:
            return METHODS[method]
        if method not in SESSION_METHODS:
            return None

        async def handler(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
            if method == "session.logon":
                session.api_key, session.authorized_ms = p["apiKey"], now_ms()
            elif method == "session.logout":
                session.api_key, session.authorized_ms = None, None
            return session.status()

        security = "SIGNED" if method == "session.logon" else "NONE"
        return _ws_endpoint(method, security, fixed(SESSION_WEIGHT), handler)

    def _authorizer(self, session: Session, endpoint: Endpoint, params: Params, raw: dict[str, Any]) -> Authorize:
        """The security check of one request: its own key and signature, or the session's key after a logon."""
        auth = self.ex.auth
        logon = endpoint.path == "session.logon"

        def authorize(now: int) -> str | None:
            if endpoint.security == "NONE":
                return None
            key, signature = params.get("apiKey"), params.get("signature")
            if session.api_key and not logon and not signature and key in (None, "", session.api_key):
                auth.kind(session.api_key)  # a key removed since the logon no longer authorizes
                if endpoint.security == "SIGNED":
                    auth.check_window(params, now)
                return session.api_key
            kind = auth.kind(key)
            if endpoint.security == "KEY":
                return key
            params.integer("timestamp")
            if not signature:
                raise errors.missing("signature")
            if logon and kind == HMAC:
                # Binance logs on Ed25519 keys only; an HMAC-signed logon fails its signature check (as users
                # report, sieblyio/binance#626).
                raise errors.BAD_SIGNATURE
            auth.verify(key, signed_payloads(raw), signature)
            auth.check_window(params, now)
            return key

        return authorize
