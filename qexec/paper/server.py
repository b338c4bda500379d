"""The Starlette application: Binance REST, WebSocket API and stream routes, and admin routes over one ``Exchange``."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from qexec.paper import admin
from qexec.paper.endpoints import ENDPOINTS
from qexec.paper.exchange import Endpoint, Exchange, json_response
from qexec.paper.ws_api import WsApi

METHODS = ["GET", "POST", "PUT", "DELETE"]


def _invalid_path(request: Request) -> Response:
    return json_response({"code": -5000, "msg": f"Path {request.url.path}, Method {request.method} is invalid"}, 404)


def _binance_route(ex: Exchange, path: str, by_method: dict[str, Endpoint]) -> Route:
    async def endpoint(request: Request) -> Response:
        found = by_method.get(request.method)
        if found is None:
            return _invalid_path(request)
        return await ex.handle(found, request)

    return Route(path, endpoint, methods=METHODS)


def _admin_route(ex: Exchange, path: str, by_method: dict[str, admin.AdminHandler]) -> Route:
    async def endpoint(request: Request) -> Response:
        found = by_method.get(request.method)
        if found is None:
            return json_response({"error": f"{request.method} not allowed on {path}"}, 405)
        return await admin.run(found, ex, request)

    return Route(path, endpoint, methods=METHODS)


def create_app(ex: Exchange) -> Starlette:
    """The ASGI application serving ``ex``."""
    binance: dict[str, dict[str, Endpoint]] = defaultdict(dict)
    for ep in ENDPOINTS:
        binance[ep.path][ep.method] = ep
    admins: dict[str, dict[str, admin.AdminHandler]] = defaultdict(dict)
    for method, path, handler in admin.ROUTES:
        admins[path][method] = handler
    routes: list[BaseRoute] = [_binance_route(ex, path, methods) for path, methods in binance.items()]
    routes += [_admin_route(ex, path, methods) for path, methods in admins.items()]
    routes += ex.streams.routes()
    routes.append(WsApi(ex).route())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await ex.start()
        try:
            yield
        finally:
            await ex.stop()

    async def not_found(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code not in (404, 405):
            return json_response({"code": -1000, "msg": str(exc.detail)}, exc.status_code)
        return _invalid_path(request)

    handlers: dict[int | type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
        404: not_found,
        405: not_found,
    }
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
