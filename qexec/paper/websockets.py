"""Websocket streams: the listen key's user-data stream and the mark-price market streams, on the HTTP port.

Every open socket is a ``Connection``: a queue of JSON text frames and the task that writes them, so the engine
only appends (it never waits on a client). User-data events are pushed by an account's engine as it changes
state, through its ``Engine.publish``, which is set only while a user-data connection of that account is open (a
listen key belongs to one account, and its connections get that account's events only). Market connections sample
the marks on their own timers. What a client sends is a live-subscription request (``subscriptions``) that changes the
connection's streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from qexec.paper import events, subscriptions
from qexec.paper.accounts import Accounts
from qexec.paper.config import Config
from qexec.paper.engine import Engine, now_ms
from qexec.paper.stats import Stats

log = logging.getLogger("qexec.paper")

NO_SUCH_KEY = "This listenKey does not exist."
POLICY_VIOLATION = 1008  # refused: unknown listen key or stream name
SERVICE_RESTART = 1012  # the admin drop (and uvicorn's own shutdown) close with this
NORMAL = 1000
INVALID_STREAM = "Invalid request: invalid stream"  # Binance's answer to SUBSCRIBE with a name it does not serve
ABORT_AFTER_S = 1.0  # a dropped connection whose close frame cannot be written within this is cut
MAX_REASON_BYTES = 123  # RFC 6455: the close reason fits in a control frame


def _dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


@dataclass(frozen=True)
class MarketStream:
    """A mark-price stream: one symbol or all (``symbol`` None), every ``interval_s`` seconds."""

    name: str
    symbol: str | None
    interval_s: float


def parse_market_stream(name: str, symbols: Iterable[str]) -> MarketStream | None:
    """The mark-price stream ``name`` (``!markPrice@arr[@1s]``, ``<symbol>@markPrice[@1s]``), or None."""
    base, fast = (name[:-3], True) if name.endswith("@1s") else (name, False)
    interval_s = 1.0 if fast else 3.0
    if base == "!markPrice@arr":
        return MarketStream(name, None, interval_s)
    symbol, sep, kind = base.partition("@")
    # Binance's stream names carry the symbol in lower case; any other spelling is not a stream there either.
    if sep and kind == "markPrice" and symbol == symbol.lower() and symbol.upper() in symbols:
        return MarketStream(name, symbol.upper(), interval_s)
    return None


class Close(NamedTuple):
    """A close frame waiting in a connection's queue behind the frames before it."""

    code: int
    reason: str


@dataclass(frozen=True)
class Route:
    """What a websocket URL serves: mark-price streams, the user-data stream, and whether frames are wrapped."""

    market: bool
    user: bool
    combined: bool


class Connection:
    """One open websocket: a bounded queue of text frames, the task writing them and, for market streams, timers."""

    def __init__(
        self,
        ws: WebSocket,
        stats: Stats,
        queue_limit: int,
        route: Route,
        *,
        listen_key: str | None = None,
        wanted: frozenset[str] | None = None,
        market: Iterable[MarketStream] = (),
        render: Callable[[MarketStream, bool], str] | None = None,
        answer: Callable[[Connection, str], None] | None = None,
    ) -> None:
        self.ws = ws
        self.stats = stats
        self.queue_limit = queue_limit
        self.route = route
        self.listen_key = listen_key
        self.wanted = wanted
        self.market = list(market)
        self.combined = route.combined  # SET_PROPERTY ["combined", …] changes it
        self.render = render
        self.answer = answer
        self.frames: deque[str | Close] = deque()
        self.wake = asyncio.Event()
        self.marks_moved = asyncio.Event()  # set by an admin price change: market streams send it at once
        self.resubscribed = asyncio.Event()  # set by SUBSCRIBE/UNSUBSCRIBE: the timers follow the new streams
        self.closing = False
        self.writer: asyncio.Task[None] | None = None
        self.account: str | None = None  # the account whose user-data events it receives

    def wants(self, event: str) -> bool:
        """True when this user-data connection receives ``event`` (``events=`` filter; expiry always)."""
        return self.wanted is None or event in self.wanted or event == events.LISTEN_KEY_EXPIRED

    def subscriptions(self) -> list[str]:
        """The stream names this connection is subscribed to (``LIST_SUBSCRIPTIONS``), market streams first."""
        return [stream.name for stream in self.market] + ([self.listen_key] if self.listen_key else [])

    def push(self, frame: str) -> None:
        """Queue a frame; a connection whose queue is full is cut instead of growing."""
        if self.closing:
            return
        if len(self.frames) >= self.queue_limit:
            peer = self.ws.client.host if self.ws.client else "?"
            kind = "user-data" if self.listen_key else "market"
            log.warning("%s websocket of %s: %d frames unsent, closing it", kind, peer, len(self.frames))
            self.abort()
            return
        self.frames.append(frame)
        self.wake.set()

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Close after the queued frames (``flush``) or at once, dropping them."""
        if self.closing:
            return
        self.closing = True
        if not flush:
            self.frames.clear()
            asyncio.get_running_loop().call_later(ABORT_AFTER_S, self.abort)
        self.frames.append(Close(code, reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")))
        self.wake.set()

    def abort(self) -> None:
        """Cut the connection without a close frame (the client sees 1006)."""
        self.closing = True
        self.frames.clear()
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()

    async def serve(self) -> None:
        """Write frames, answer what the client sends, tick market streams; return when it ends."""
        self.writer = asyncio.create_task(self._write())
        tasks = [self.writer, asyncio.create_task(self._read())]
        if self.render is not None:
            tasks.append(asyncio.create_task(self._tick()))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write(self) -> None:
        ws = self.ws
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            while True:
                while not self.frames:
                    self.wake.clear()
                    await self.wake.wait()
                frame = self.frames.popleft()
                if isinstance(frame, Close):
                    await ws.close(frame.code, frame.reason)
                    return
                await ws.send_text(frame)
                self.stats.ws_events += 1

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None and message.get("bytes") is not None:
                text = message["bytes"].decode(errors="replace")
            if text is not None and self.answer is not None:
                self.answer(self, text)

    async def _tick(self) -> None:
        assert self.render is not None
        loop = asyncio.get_running_loop()
        due = dict.fromkeys(self.market, loop.time())
        while True:
            now = loop.time()
            for stream, at in due.items():
                if at <= now:
                    self.push(self.render(stream, self.combined))
                    due[stream] = max(at + stream.interval_s, now)
            wakers = [asyncio.ensure_future(self.marks_moved.wait()), asyncio.ensure_future(self.resubscribed.wait())]
            timeout = max(0.0, min(due.values()) - loop.time()) if due else None
            try:
                await asyncio.wait(wakers, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waker in wakers:
                    waker.cancel()
            now = loop.time()
            if self.marks_moved.is_set():
                self.marks_moved.clear()
                due = dict.fromkeys(self.market, now)
            if self.resubscribed.is_set():
                self.resubscribed.clear()
                # A new stream sends its first frame at once; the others keep their cadence.
                due = {stream: due.get(stream, now) for stream in self.market}


class Streams:
    """Every open websocket of the exchange, each account's user-data fan-out and its listen key's lifetime."""

    def __init__(self, accounts: Accounts, config: Config, stats: Stats, commit: Callable[[], None]) -> None:
        self.accounts = accounts
        self.config = config
        self.stats = stats
        self.commit = commit
        self.connections: set[Connection] = set()
        self.user: dict[str, set[Connection]] = {}  # account name -> its user-data connections
        self.expiry: dict[str, asyncio.TimerHandle] = {}  # account name -> the timer of its listen key

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Watch the expiry of the listen keys restored from the state file."""
        for engine in self.accounts:
            self._watch_expiry(engine)

    def stop(self, account: str | None = None) -> None:
        """Stop watching the listen keys (or only ``account``'s)."""
        for name in [n for n in self.expiry if account is None or n == account]:
            self.expiry.pop(name).cancel()

    def drop(self) -> int:
        """Close every websocket now with 1012 (queued frames are dropped); returns how many."""
        dropped = list(self.connections)
        for conn in dropped:
            conn.close(SERVICE_RESTART, "Service restart", flush=False)
        for engine in self.accounts:
            self._end_user(engine, None)
        return len(dropped)

    def marks_moved(self) -> None:
        """Marks were set by hand (admin): every market stream sends the new marks now, not at its next tick."""
        for conn in self.connections:
            if conn.market:
                conn.marks_moved.set()

    def reset(self, engine: Engine | None = None) -> None:
        """An account is gone (None: every account): close its user-data connections and forget its expiry timer."""
        for gone in [engine] if engine is not None else list(self.accounts):
            self._end_user(gone, (NORMAL, "account reset"))
            self.stop(gone.name)

    # ---- the listen key ------------------------------------------------------------------------

    def new_listen_key(self, engine: Engine) -> str:
        """``POST /fapi/v1/listenKey``: the account's active key (extended) or a new one; an expired key's streams
        end."""
        now = now_ms()
        previous = engine.listen_key
        key = engine.new_listen_key(now, self._ttl_ms())
        if previous is not None and previous != key:
            self._expired(engine, previous)
        self._watch_expiry(engine)
        return key

    def keepalive(self, engine: Engine, key: str | None) -> str:
        """``PUT /fapi/v1/listenKey``: extend the account's active key (-1125 when it has expired or is not active)."""
        now = now_ms()
        if engine.listen_key is not None and engine.active_listen_key(now) is None:
            self._expire_now(engine)
        key = engine.keepalive_listen_key(key, now, self._ttl_ms())
        self._watch_expiry(engine)
        return key

    def close_listen_key(self, engine: Engine) -> None:
        """``DELETE /fapi/v1/listenKey``: the account's key stops existing and its streams are closed."""
        engine.close_listen_key()
        self._end_user(engine, (NORMAL, "listenKey closed"))
        self.stop(engine.name)

    def _ttl_ms(self) -> int:
        return int(self.config.listen_key_ttl_s * 1000)

    def _watch_expiry(self, engine: Engine) -> None:
        self.stop(engine.name)
        if engine.listen_key is None:
            return
        delay_s = max(0.0, (engine.listen_key_expires_ms - now_ms()) / 1000)
        self.expiry[engine.name] = asyncio.get_running_loop().call_later(delay_s, self._expiry_due, engine)

    def _expiry_due(self, engine: Engine) -> None:
        self.expiry.pop(engine.name, None)
        if engine.listen_key is None:
            return
        if engine.active_listen_key(now_ms()) is not None:  # extended meanwhile
            self._watch_expiry(engine)
            return
        self._expire_now(engine)

    def _expire_now(self, engine: Engine) -> None:
        key = engine.listen_key
        engine.close_listen_key()
        self.commit()
        if key is not None:
            self._expired(engine, key)

    def _expired(self, engine: Engine, key: str) -> None:
        self.publish(engine.name, events.listen_key_expired(key, now_ms()))
        self._end_user(engine, (NORMAL, "listenKey expired"))

    def _end_user(self, engine: Engine, close: tuple[int, str] | None) -> None:
        """Stop the account's user-data fan-out; close its connections after their queued frames when ``close`` is
        given."""
        ending = list(self.user.pop(engine.name, ()))
        engine.publish = None
        for conn in ending:
            conn.account = None
            if close is not None:
                conn.close(*close)

    # ---- fan-out -------------------------------------------------------------------------------

    def publish(self, account: str, event: dict[str, Any]) -> None:
        """Queue a user-data event on every connection of the account's listen key that wants it (serialised
        once); no other account's connection sees it."""
        name = event["e"]
        raw: str | None = None
        wrapped: str | None = None
        for conn in list(self.user.get(account, ())):
            if not conn.wants(name):
                continue
            if conn.combined:
                wrapped = wrapped or _dumps({"stream": conn.listen_key, "data": event})
                conn.push(wrapped)
            else:
                raw = raw or _dumps(event)
                conn.push(raw)

    def _render(self) -> Callable[[MarketStream, bool], str]:
        prices, names = self.accounts.prices, list(self.accounts.symbols)

        def render(stream: MarketStream, combined: bool) -> str:
            now = now_ms()
            if stream.symbol is None:
                data: Any = [events.mark_price_update(prices, name, now) for name in names]
            else:
                data = events.mark_price_update(prices, stream.symbol, now)
            return _dumps({"stream": stream.name, "data": data} if combined else data)

        return render

    # ---- endpoints -----------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """Every websocket URL: Binance's routed ``/market``, ``/public``, ``/private`` and the unrouted root."""
        market, user, both, nothing = (True, False), (False, True), (True, True), (False, False)
        prefixes = {"": both, "/market": market, "/public": nothing, "/private": user}
        routes: list[BaseRoute] = []
        for prefix, (serves_market, serves_user) in prefixes.items():
            raw = self._endpoint(Route(serves_market, serves_user, combined=False))
            combined = self._endpoint(Route(serves_market, serves_user, combined=True))
            routes += [
                WebSocketRoute(f"{prefix}/ws", raw),
                WebSocketRoute(f"{prefix}/ws/{{names:path}}", raw),
                WebSocketRoute(f"{prefix}/stream", combined),
            ]
        return routes

    def _endpoint(self, route: Route) -> Callable[[WebSocket], Awaitable[None]]:
        async def endpoint(ws: WebSocket) -> None:
            await self._serve(ws, route)

        return endpoint

    async def _serve(self, ws: WebSocket, route: Route) -> None:
        """Open a connection on ``route`` with the streams its URL names (none: it subscribes by message)."""
        await ws.accept()
        query = ws.query_params
        names = [n for n in ws.path_params.get("names", "").split("/") if not _connection_id(n)]
        if route.combined:
            names += [n for n in query.get("streams", "").split("/") if n]
        if route.user and not route.market:  # /private: the key comes in the query (or the path)
            names += query.getlist("listenKey")
            if not route.combined and not names:
                await ws.close(POLICY_VIOLATION, NO_SUCH_KEY)  # /private/ws needs a key; /private/stream may wait
                return
        chosen = query.get("events")
        wanted = frozenset(e for e in chosen.split("/") if e) if chosen else None
        streams: list[MarketStream] = []
        key: str | None = None
        for name in names:
            found = self._resolve(name, route)
            if found is None:
                await ws.close(POLICY_VIOLATION, self._refusal(name, route))
                return
            if isinstance(found, MarketStream):
                if found not in streams:  # a stream named twice is served once
                    streams.append(found)
            else:
                key = found
        conn = Connection(
            ws,
            self.stats,
            self.config.ws_queue_limit,
            route,
            listen_key=key,
            wanted=wanted,
            market=streams,
            render=self._render() if route.market else None,
            answer=self._answer,
        )
        self.connections.add(conn)
        if key is not None:
            self._join_user(conn)
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)
            self._leave_user(conn)

    def _resolve(self, name: str, route: Route) -> MarketStream | str | None:
        """The market stream or the active listen key ``name`` stands for on ``route``, or None."""
        if route.market:
            stream = parse_market_stream(name, self.accounts.symbols)
            if stream is not None:
                return stream
        if route.user and self.accounts.listen_key_owner(name, now_ms()) is not None:
            return name
        return None

    def _refusal(self, name: str, route: Route) -> str:
        """The close reason for a name in a URL that is no stream this route serves."""
        looks_like_key = "@" not in name and not name.startswith("!")
        if route.user and (not route.market or looks_like_key):
            return NO_SUCH_KEY
        return f"Invalid stream name: {name!r}".encode()[:MAX_REASON_BYTES].decode(errors="ignore")

    def _join_user(self, conn: Connection) -> None:
        """Add ``conn`` to the fan-out of the account whose listen key it names (leaving another's first)."""
        owner = self.accounts.listen_key_owner(conn.listen_key or "", now_ms())
        if owner is None:
            return
        if conn.account is not None and conn.account != owner.name:
            self._leave_user(conn)
        conn.account = owner.name
        self.user.setdefault(owner.name, set()).add(conn)
        owner.publish = functools.partial(self.publish, owner.name)

    def _leave_user(self, conn: Connection) -> None:
        account, conn.account = conn.account, None
        if account is None:
            return
        listeners = self.user.get(account)
        if listeners is not None:
            listeners.discard(conn)
            if not listeners:
                del self.user[account]
                self.accounts.get(account).publish = None

    # ---- live subscriptions --------------------------------------------------------------------

    def _answer(self, conn: Connection, text: str) -> None:
        """Carry out one request the client sent and queue its answer (see ``subscriptions``)."""
        try:
            request = subscriptions.parse(text)
            result = self._carry_out(conn, request)
        except subscriptions.Refused as refused:
            conn.push(refused.frame())
            return
        conn.push(subscriptions.answer(request.id, result))

    def _carry_out(self, conn: Connection, request: subscriptions.Request) -> Any:
        method, params = request.method, request.params
        if method == subscriptions.LIST_SUBSCRIPTIONS:
            return conn.subscriptions()
        if method in (subscriptions.GET_PROPERTY, subscriptions.SET_PROPERTY):
            if params[0] != subscriptions.COMBINED:
                raise subscriptions.Refused(subscriptions.UNKNOWN_PROPERTY, "Unknown property", request.id)
            if method == subscriptions.GET_PROPERTY:
                return conn.combined
            if not isinstance(params[1], bool):
                raise subscriptions.Refused(
                    subscriptions.BAD_VALUE_TYPE, "Invalid value type: expected Boolean", request.id
                )
            conn.combined = params[1]
            return None
        if method == subscriptions.SUBSCRIBE:
            found = [self._resolve(name, conn.route) for name in params]
            if None in found:  # all or nothing: one bad name subscribes none of them
                raise subscriptions.Refused(subscriptions.INVALID_REQUEST, INVALID_STREAM, request.id)
            for item in found:
                if isinstance(item, MarketStream):
                    if item not in conn.market:
                        conn.market.append(item)
                elif item is not None:
                    conn.listen_key = item
                    self._join_user(conn)
        else:  # UNSUBSCRIBE: a name not subscribed is no error
            gone = set(params)
            conn.market = [stream for stream in conn.market if stream.name not in gone]
            if conn.listen_key in gone:
                conn.listen_key = None
                self._leave_user(conn)
        conn.resubscribed.set()
        return None


def _connection_id(name: str) -> bool:
    """True for a path part that names no stream: empty, or a number (ccxt opens ``/market/ws/0``, ``/ws/1``)."""
    return name == "" or name.isdigit()
