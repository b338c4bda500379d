"""`qexec console`: the operator's page, live over server-sent events, with halt, halt-and-flatten and resume.

Beyond loopback it refuses to start without credentials (the rule Flower follows, qexec/ops/flower_auth.py). The
actions are POST only, and each must carry the page's token in a header and come from the page's own origin: a
form or script on another site can neither read the token nor send the header without the browser's preflight,
which this server never grants.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import click
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from qexec import logs
from qexec.config import Settings
from qexec.constants import DEFAULT_ACCOUNT
from qexec.ops import console_state, halt
from qexec.ops.console_page import page
from qexec.ops.flower_auth import is_loopback
from qexec.venue.limiter import Limiter

if TYPE_CHECKING:
    from qexec.venue.base import Venue
    from qexec.venue.binance import BinanceVenue

log = logging.getLogger(__name__)

CONSOLE_ACTION = "CONSOLE_ACTION"
TOKEN_HEADER = "X-Qexec-Token"  # noqa: S105 - a header's name, not a secret
REALM = "qexec console"
EVENT_WAIT_MS = 1000  # the page hears of a new result at once, and of everything else within this
FLATTEN_WAIT_S = 30.0  # like `qexec halt --flatten --wait`: placements begun before the halt finish first
ACTIONS = ("halt", "flatten", "resume")
EXIT_REFUSED = 2  # the code `qexec up` reads as "a refused setting": not started again


class ConsoleRefused(click.ClickException):
    """Raised when the console would listen beyond loopback without credentials."""

    exit_code = EXIT_REFUSED


def credentials(settings: Settings) -> dict[str, str]:
    """`QEXEC_CONSOLE_AUTH` as user -> password (empty when unset)."""
    if settings.console_auth is None:
        return {}
    pairs = [item.partition(":") for item in settings.console_auth.get_secret_value().split(",") if item.strip()]
    return {user.strip(): password for user, _, password in pairs}


def check_binding(settings: Settings) -> None:
    """Refuse an unauthenticated console beyond loopback."""
    if is_loopback(settings.console_host) or credentials(settings):
        return
    where = settings.console_host or "every interface"
    raise ConsoleRefused(
        f"qexec: refusing to start the console on {where} without authentication. Set QEXEC_CONSOLE_AUTH="
        "user:password, or bind it to loopback with QEXEC_CONSOLE_HOST=127.0.0.1."
    )


class BasicAuth:
    """HTTP Basic on every route when credentials are set; the user's name (or `-`) goes in `scope["console.user"]`."""

    def __init__(self, app: ASGIApp, users: dict[str, str]) -> None:
        self.app = app
        self.users = users

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an authenticated request on; answer 401 to any other."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        user = self._user(Request(scope).headers.get("authorization", "")) if self.users else "-"
        if user is None:
            refusal = Response(
                "authentication required", status_code=401, headers={"WWW-Authenticate": f'Basic realm="{REALM}"'}
            )
            await refusal(scope, receive, send)
            return
        scope["console.user"] = user
        await self.app(scope, receive, send)

    def _user(self, header: str) -> str | None:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self.users.get(user)
        if expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
            return None
        return user


def cross_site_problem(request: Request, token: str) -> str | None:
    """Why an action request may not be the page's own (another origin, no token), or None when it is."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site != "same-origin":
        return f"Sec-Fetch-Site is {fetch_site}"
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin is not None and origin != own:
        return f"Origin {origin} is not {own}"
    if not hmac.compare_digest(request.headers.get(TOKEN_HEADER.lower(), ""), token):
        return f"no valid {TOKEN_HEADER} header"
    return None


class Console:
    """The page's server: its dependencies (settings, Redis, a venue maker, the venue reader) and its routes."""

    def __init__(
        self,
        settings: Settings,
        r: redis.Redis,
        venue_of: Callable[[Settings], Venue],
        watch: console_state.VenueWatch,
    ) -> None:
        self.settings = settings
        self.redis = r
        self.venue_of = venue_of  # a venue client for an account's settings (flatten's, one per account)
        self.watch = watch
        self.limiter = Limiter(r, settings)
        self._key = secrets.token_bytes(32)  # the page token's key: a restart invalidates every open page's token

    def token(self, user: str) -> str:
        """The token the page of `user` sends with each action."""
        return hmac.new(self._key, user.encode(), hashlib.sha256).hexdigest()

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows."""
        return console_state.snapshot(self.settings, self.redis, self.watch, self.limiter)

    async def index(self, request: Request) -> Response:
        """The page itself."""
        user = request.scope.get("console.user", "-")
        return HTMLResponse(page(token=self.token(user), user=user, mode=self.settings.venue.name))

    async def state(self, request: Request) -> Response:
        """The page's data once, as JSON."""
        return JSONResponse(await anyio.to_thread.run_sync(self.snapshot))

    async def events(self, request: Request) -> Response:
        """Server-sent events: a snapshot now, again as soon as a result or exit arrives, and every second."""
        return StreamingResponse(self._stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def _stream(self) -> AsyncIterator[str]:
        while True:
            data = await anyio.to_thread.run_sync(self.snapshot)
            yield f"event: snapshot\ndata: {json.dumps(data)}\n\n"
            await anyio.to_thread.run_sync(self._wait_for_news, data)

    def _wait_for_news(self, data: dict[str, Any]) -> None:
        """Block until a new result or exit entry is written, or EVENT_WAIT_MS passes."""
        s = self.settings
        newest = {s.result_stream: data.get("results") or [], s.exit_stream: data.get("exits") or []}
        since: dict[Any, Any] = {stream: rows[0]["id"] if rows else "0-0" for stream, rows in newest.items()}
        try:
            self.redis.xread(since, count=1, block=EVENT_WAIT_MS)
        except redis.RedisError:  # Redis is away: the next snapshot says so, a second from now
            time.sleep(EVENT_WAIT_MS / 1000)

    async def action(self, request: Request) -> Response:
        """POST /api/{halt,flatten,resume}: the kill switch, from the page, logged with who and where."""
        user = request.scope.get("console.user", "-")
        client = request.client.host if request.client else "-"
        name = request.path_params["name"]
        if name not in ACTIONS:
            return JSONResponse({"ok": False, "error": f"no action {name!r}; one of {', '.join(ACTIONS)}"}, 404)
        problem = cross_site_problem(request, self.token(user))
        if problem is not None:
            logs.proof(CONSOLE_ACTION, level=logging.WARNING, action=name, refused=problem, user=user, client=client)
            return JSONResponse({"ok": False, "error": f"refused: {problem}"}, status_code=403)
        try:
            body = await request.json()
        except ValueError:
            body = {}
        reason = str(body.get("reason") or "").strip() if isinstance(body, dict) else ""
        logs.proof(CONSOLE_ACTION, level=logging.WARNING, action=name, user=user, client=client, reason=reason or None)
        done = await anyio.to_thread.run_sync(self._act, name, reason, user, client)
        self.watch.refresh()
        return JSONResponse(done, status_code=200 if done["ok"] else 502)

    def _act(self, name: str, reason: str, user: str, client: str) -> dict[str, Any]:
        by, where = f"console:{user}", client
        if name == "resume":
            return {"ok": True, "action": name, "lifted": halt.resume(self.redis, by=by, where=where)}
        said = f"{reason} (console, {user}@{client})" if reason else f"from the console by {user}@{client}"
        record = halt.halt(self.redis, reason=said, flatten=name == "flatten", by=by, where=where)
        if name == "halt":
            return {"ok": True, "action": name, "halt": record}
        left = halt.wait_for_placements(self.redis, FLATTEN_WAIT_S)
        # every account: the halt the page sets is every account's
        done = halt.flatten_accounts(self.settings, list(self.settings.account_names), self.venue_of)
        own = done[DEFAULT_ACCOUNT].summary()
        return {
            "ok": all(flattened.flat for flattened in done.values()),
            "action": name,
            "halt": record,
            "placements_left": left,
            "closed": own["closed"],
            "canceled_symbols": own["canceled_symbols"],
            "errors": [f"{n}: {e}" for n, f in done.items() for e in f.summary()["errors"]],
            "positions_left": own["positions_left"],
            "accounts": {n: f.summary() for n, f in done.items()},
            "orders_left": own["orders_left"],
        }

    def app(self) -> ASGIApp:
        """The ASGI application: the routes behind the credentials' check, the venue reader running alongside."""

        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            self.watch.start()
            try:
                yield
            finally:
                self.watch.stop()

        routes = [
            Route("/", self.index),
            Route("/api/state", self.state),
            Route("/events", self.events),
            Route("/api/{name:str}", self.action, methods=["POST"]),
            Route("/favicon.ico", lambda _request: Response(status_code=204)),
        ]
        return BasicAuth(Starlette(routes=routes, lifespan=lifespan), credentials(self.settings))


def _venue_maker(r: redis.Redis) -> Callable[[Settings], BinanceVenue]:
    from qexec.venue.binance import BinanceVenue  # noqa: PLC0415 - python-binance only where the venue is read

    def make(settings: Settings) -> BinanceVenue:
        return BinanceVenue(settings, r)

    return make


def build(settings: Settings, r: redis.Redis) -> Console:
    """The console on this settings' Redis and venue, with the venue's streams feeding its view when they are on."""
    from qexec.venue import feed  # noqa: PLC0415

    venue_of = _venue_maker(r)
    reader = venue_of(settings)
    feed.start(settings, functools.partial(venue_of, settings))
    watch = console_state.VenueWatch(lambda: console_state.venue_part(reader, r), settings.console_venue_every_s)
    return Console(settings, r, venue_of, watch)


def serve(settings: Settings, log_level: str = "info") -> None:
    """Run the console until SIGINT or SIGTERM."""
    import uvicorn  # noqa: PLC0415

    from qexec import redis_streams  # noqa: PLC0415

    check_binding(settings)
    console = build(settings, redis_streams.connect(settings.redis_url))
    host, port = settings.console_host, settings.console_port
    log.info("console serving http://%s:%d/ (auth %s)", host, port, "on" if credentials(settings) else "off")
    uvicorn.run(console.app(), host=host, port=port, log_level=log_level, access_log=False)
