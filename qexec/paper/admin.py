"""Admin routes under ``/paper/v1``: prices, faults, config, reset, accounts, order ledger and stats (JSON,
unsigned). A route on account state takes ``account`` (query parameter or JSON field; absent: ``default``)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from qexec.paper import errors
from qexec.paper.accounts import UnknownAccount
from qexec.paper.decimals import parse
from qexec.paper.engine import Engine
from qexec.paper.exchange import Exchange, json_response

AdminHandler = Callable[[Exchange, Request], Awaitable[Response]]


class AdminError(Exception):
    """Raised when an admin request is malformed; answered with HTTP 400 ``{"error": …}``."""


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise AdminError("body must be JSON") from None


def _account(ex: Exchange, request: Request, body: Any = None) -> Engine:
    """The account a request names: ``account`` in the JSON body or the query string, else ``default``."""
    name = body.get("account") if isinstance(body, dict) else None
    name = name or request.query_params.get("account")
    try:
        return ex.accounts.get(name)
    except UnknownAccount:
        raise AdminError(f"unknown account {name!r}") from None


def _price(value: Any) -> Decimal:
    price = parse(str(value))
    if price is None or price <= 0:
        raise AdminError(f"bad price {value!r}")
    return price


async def set_price(ex: Exchange, request: Request) -> Response:
    """``POST /paper/v1/price`` ``{"symbol", "price"}`` (or ``{"prices": {symbol: price}}``): set marks now."""
    body = await _body(request)
    changes = body.get("prices") or {body.get("symbol"): body.get("price")}
    for symbol, price in changes.items():
        if symbol not in ex.accounts.symbols:
            raise AdminError(f"unknown symbol {symbol!r}")
        ex.accounts.set_price(symbol, _price(price))
    ex.commit()
    ex.streams.marks_moved()
    marks = ex.accounts.prices.marks
    if len(changes) == 1:
        symbol = next(iter(changes))
        return json_response({"symbol": symbol, "price": str(marks[symbol])})
    return json_response({"prices": {s: str(marks[s]) for s in changes}})


async def get_prices(ex: Exchange, request: Request) -> Response:
    """``GET /paper/v1/prices``: every mark."""
    return json_response({s: str(p) for s, p in ex.accounts.prices.marks.items()})


async def add_faults(ex: Exchange, request: Request) -> Response:
    """``POST /paper/v1/faults``: script one fault (an object) or several (a list)."""
    body = await _body(request)
    items = body if isinstance(body, list) else [body]
    for item in items:
        if isinstance(item, dict) and item.get("account") is not None and item["account"] not in ex.accounts.by_name:
            raise AdminError(f"unknown account {item['account']!r}")
    try:
        added = [ex.faults.add(item) for item in items]
    except (TypeError, ValueError) as exc:
        raise AdminError(str(exc)) from None
    return json_response({"faults": [f.to_json() for f in added]})


async def list_faults(ex: Exchange, request: Request) -> Response:
    """``GET /paper/v1/faults[?account=]``: the scripted faults still waiting to fire (those that can hit the
    account, when one is named)."""
    name = request.query_params.get("account")
    found = [f for f in ex.faults.scripted if not name or f.account in (None, name)]
    return json_response({"faults": [f.to_json() for f in found]})


async def clear_faults(ex: Exchange, request: Request) -> Response:
    """``DELETE /paper/v1/faults``."""
    ex.faults.clear()
    return json_response({"faults": []})


async def set_config(ex: Exchange, request: Request) -> Response:
    """``POST /paper/v1/config``: change some knobs, answer with all of them."""
    try:
        ex.config.update(await _body(request))
    except (TypeError, ValueError) as exc:
        raise AdminError(str(exc)) from None
    ex.apply_config()
    return json_response(ex.config.to_json())


async def get_config(ex: Exchange, request: Request) -> Response:
    """``GET /paper/v1/config``."""
    return json_response(ex.config.to_json())


async def reset(ex: Exchange, request: Request) -> Response:
    """``POST /paper/v1/reset`` ``{"account"?, "balance"?, "dual_side"?}``: a fresh exchange (every account), or
    with ``account`` a fresh account of that name only."""
    body = await _body(request)
    balance = _price(body["balance"]) if body.get("balance") is not None else None
    dual_side = bool(body.get("dual_side", False))
    if body.get("account") or request.query_params.get("account"):
        engine = _account(ex, request, body)
        ex.reset_account(engine, balance, dual_side)
    else:
        engine = ex.accounts.default
        ex.reset(balance, dual_side)
    return json_response({"ok": True, "account": engine.name, "balance": str(engine.account.wallet)})


async def accounts(ex: Exchange, request: Request) -> Response:
    """``GET /paper/v1/accounts``: every account with its wallet balance and open positions and orders."""
    found = [
        {
            "account": engine.name,
            "balance": str(engine.account.wallet),
            "open_positions": sum(1 for _ in engine.account.open_positions()),
            "open_orders": len(engine.open_orders(None)),
            "dual_side": engine.account.dual_side,
        }
        for engine in ex.accounts
    ]
    return json_response({"accounts": found})


async def orders(ex: Exchange, request: Request) -> Response:
    """``GET /paper/v1/orders?symbol=&clientOrderId=&account=``: every order of the account since the last reset."""
    engine = _account(ex, request)
    symbol = request.query_params.get("symbol")
    client_id = request.query_params.get("clientOrderId")
    found = [
        o.wire(ex.accounts.symbols[o.symbol])
        for o in engine.orders.values()
        if (not symbol or o.symbol == symbol) and (not client_id or o.client_order_id == client_id)
    ]
    return json_response(found)


async def algo_orders(ex: Exchange, request: Request) -> Response:
    """``GET /paper/v1/algoOrders?symbol=&clientAlgoId=&account=``: every algo order of the account since the last
    reset."""
    engine = _account(ex, request)
    symbol = request.query_params.get("symbol")
    client_id = request.query_params.get("clientAlgoId")
    found = [
        a.wire(ex.accounts.symbols[a.symbol])
        for a in engine.algos.values()
        if (not symbol or a.symbol == symbol) and (not client_id or a.client_algo_id == client_id)
    ]
    return json_response(found)


async def stats(ex: Exchange, request: Request) -> Response:
    """``GET /paper/v1/stats``: the exchange's totals, and each account's order and fill counts."""
    fills = {engine.name: engine.fill_count for engine in ex.accounts}
    return json_response(ex.stats.to_json(fills, len(ex.streams.connections)))


async def drop_websockets(ex: Exchange, request: Request) -> Response:
    """``POST /paper/v1/ws/drop``: close every open websocket now (1012), as a venue restart would."""
    return json_response({"dropped": ex.streams.drop()})


ROUTES: list[tuple[str, str, AdminHandler]] = [
    ("POST", "/paper/v1/price", set_price),
    ("GET", "/paper/v1/prices", get_prices),
    ("POST", "/paper/v1/faults", add_faults),
    ("GET", "/paper/v1/faults", list_faults),
    ("DELETE", "/paper/v1/faults", clear_faults),
    ("POST", "/paper/v1/config", set_config),
    ("GET", "/paper/v1/config", get_config),
    ("POST", "/paper/v1/reset", reset),
    ("GET", "/paper/v1/accounts", accounts),
    ("GET", "/paper/v1/orders", orders),
    ("GET", "/paper/v1/algoOrders", algo_orders),
    ("GET", "/paper/v1/stats", stats),
    ("POST", "/paper/v1/ws/drop", drop_websockets),
]


async def run(handler: AdminHandler, ex: Exchange, request: Request) -> Response:
    """Run an admin handler, turning bad input into HTTP 400 JSON."""
    try:
        return await handler(ex, request)
    except AdminError as exc:
        return json_response({"error": str(exc)}, 400)
    except errors.VenueError as exc:
        return json_response(exc.payload(), exc.status)
