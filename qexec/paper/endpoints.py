"""The Binance USD-M REST surface: one handler per endpoint, with its security type and weight."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from qexec.paper import errors
from qexec.paper.account import MAINT_MARGIN_RATE, Position, max_notional
from qexec.paper.decimals import ZERO, fmt
from qexec.paper.engine import Engine, FillPlan, now_ms
from qexec.paper.exchange import Endpoint, Exchange, Handler
from qexec.paper.orders import Order
from qexec.paper.params import Params
from qexec.paper.prices import INTERVAL_MS

CANCEL_ALL_DONE = {"code": 200, "msg": "The operation of cancel all open order is done."}
SUCCESS = {"code": 200, "msg": "success"}
DEPTH_LIMITS = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}


def fixed(weight: int) -> Callable[[Params], int]:
    """A weight that does not depend on the parameters."""
    return lambda _p: weight


def by_symbol(with_symbol: int, without: int) -> Callable[[Params], int]:
    """A weight that is lower when one symbol is asked for."""
    return lambda p: with_symbol if p.get("symbol") else without


def _depth_weight(p: Params) -> int:
    limit = p.get("limit") or "500"
    return DEPTH_LIMITS.get(int(limit), 10) if limit.isdigit() else 10


def _klines_weight(p: Params) -> int:
    limit = int(p["limit"]) if p.get("limit", "").isdigit() else 500
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


# ---- market data -------------------------------------------------------------------------------


async def ping(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/ping`` and ``/api/v3/ping``."""
    return {}


async def server_time(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/time`` and ``/api/v3/time``."""
    return {"serverTime": now_ms()}


async def exchange_info(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/exchangeInfo``."""
    config = ex.config
    return {
        "timezone": "UTC",
        "serverTime": now_ms(),
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": config.weight_limit},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": config.orders_per_min},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": config.orders_per_10s},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [s.info() for s in ex.accounts.symbols.values()],
    }


def _each_symbol(engine: Engine, p: Params, render: Callable[[str], Any]) -> Any:
    if p.get("symbol"):
        return render(engine.symbol(p["symbol"]).name)
    return [render(name) for name in engine.symbols]


async def ticker_price(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1|v2/ticker/price``."""
    prices, now = ex.accounts.prices, now_ms()

    def render(name: str) -> Any:
        symbol = ex.accounts.symbols[name]
        return {"symbol": name, "price": fmt(prices.mark(name), symbol.price_places), "time": now}

    return _each_symbol(engine, p, render)


async def ticker_24hr(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/ticker/24hr``: the last 24 hours of the price history (weight 1 with a symbol, 40 without)."""
    prices, now = ex.accounts.prices, now_ms()

    def render(name: str) -> Any:
        symbol, last = ex.accounts.symbols[name], prices.mark(name)
        candles = prices.day(name, now) or []
        fill = ex.accounts.last_fill(name)  # the paper accounts' own fills are the market's only trades
        last_qty = fill.qty if fill and candles and fill.time_ms >= candles[0].open_ms else ZERO
        first = candles[0].open if candles else last
        high = max([c.high for c in candles] + [last])
        low = min([c.low for c in candles] + [last])
        volume = sum((c.volume for c in candles), ZERO)
        quote = sum((c.quote_volume for c in candles), ZERO)
        change = last - first
        places = symbol.price_places
        return {
            "symbol": name,
            "priceChange": fmt(change, places),
            "priceChangePercent": fmt(change / first * 100 if first else ZERO, 3),
            "weightedAvgPrice": fmt(quote / volume if volume else last, places),
            "lastPrice": fmt(last, places),
            "lastQty": fmt(last_qty, symbol.qty_places),
            "openPrice": fmt(first, places),
            "highPrice": fmt(high, places),
            "lowPrice": fmt(low, places),
            "volume": fmt(volume, symbol.qty_places),
            "quoteVolume": fmt(quote, 2),
            "openTime": candles[0].open_ms if candles else now,
            "closeTime": now,
            "firstId": 0,
            "lastId": max(sum(c.trades for c in candles) - 1, 0),
            "count": sum(c.trades for c in candles),
        }

    return _each_symbol(engine, p, render)


async def book_ticker(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/ticker/bookTicker``: best bid and ask one tick either side of the mark."""
    now = now_ms()

    def render(name: str) -> Any:
        book = ex.accounts.prices.depth(name, 1, now)
        bid, ask = book["bids"][0], book["asks"][0]  # type: ignore[index]
        return {
            "symbol": name,
            "bidPrice": bid[0],
            "bidQty": bid[1],
            "askPrice": ask[0],
            "askQty": ask[1],
            "time": now,
            "lastUpdateId": now,
        }

    return _each_symbol(engine, p, render)


async def premium_index(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/premiumIndex``."""
    now = now_ms()
    return _each_symbol(engine, p, lambda name: ex.accounts.prices.premium_index(name, now))


async def depth(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/depth``."""
    name = engine.symbol(p.required("symbol")).name
    limit = p.integer("limit", 500)
    if limit not in DEPTH_LIMITS:
        raise errors.invalid("limit")
    now = now_ms()
    book = ex.accounts.prices.depth(name, limit, now)
    return {"lastUpdateId": now, "E": now, "T": now, "bids": book["bids"], "asks": book["asks"]}


async def klines(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/klines`` from the generated price history."""
    name = engine.symbol(p.required("symbol")).name
    interval = INTERVAL_MS.get(p.required("interval"))
    if interval is None:
        raise errors.BAD_INTERVAL
    limit = min(max(p.integer("limit", 500), 1), 1500)
    return ex.accounts.prices.klines(
        name, interval, p.optional_integer("startTime"), p.optional_integer("endTime"), limit
    )


# ---- orders ------------------------------------------------------------------------------------


def _order(ex: Exchange, order: Order) -> dict[str, Any]:
    return order.wire(ex.accounts.symbols[order.symbol])


async def new_order(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``POST /fapi/v1/order``: ACK is the acceptance snapshot, RESULT the final state (or as it stands)."""
    order = engine.place_order(p, plan)
    ex.stats.order_placed(engine.name)
    if order.order_id in engine.pending:
        ex.schedule_fill(engine, order.order_id, engine.pending[order.order_id].delay_ms)
    if p.get("newOrderRespType", "ACK") == "ACK":
        body = _order(ex, order)
        body.update(
            status="NEW",
            executedQty="0",
            cumQty="0",
            cumQuote="0",
            avgPrice="0.00000",
            updateTime=order.time_ms,
        )
    else:
        ex.commit()
        await ex.wait_final(order.order_id)
        body = _order(ex, order)
    if ex.config.order_answer_without_price:
        body.pop("avgPrice", None)
        body.pop("cumQuote", None)
    return body


async def get_order(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/order``."""
    return _order(ex, engine.find_order(p))


async def get_open_order(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/openOrder``: only while the order is open."""
    order = engine.find_order(p)
    if not order.live:
        raise errors.NO_SUCH_ORDER
    return _order(ex, order)


async def cancel_order(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``DELETE /fapi/v1/order``."""
    return _order(ex, engine.cancel_order(p))


async def open_orders(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/openOrders``."""
    symbol = engine.symbol(p["symbol"]).name if p.get("symbol") else None
    return [_order(ex, o) for o in engine.open_orders(symbol)]


async def all_orders(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/allOrders``."""
    return [_order(ex, o) for o in engine.all_orders(p)]


async def cancel_all_orders(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``DELETE /fapi/v1/allOpenOrders``."""
    engine.cancel_all(p.required("symbol"))
    return CANCEL_ALL_DONE


async def user_trades(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/userTrades``."""
    return [f.wire(ex.accounts.symbols[f.symbol]) for f in engine.user_trades(p)]


# ---- algo orders -------------------------------------------------------------------------------


async def new_algo(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``POST /fapi/v1/algoOrder``."""
    algo = engine.place_algo(p)
    ex.stats.algo_order_placed(engine.name)
    return algo.wire(ex.accounts.symbols[algo.symbol])


async def get_algo(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/algoOrder`` by ``algoId`` or ``clientAlgoId``."""
    algo = engine.find_algo(p)
    return algo.wire(ex.accounts.symbols[algo.symbol])


async def cancel_algo(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``DELETE /fapi/v1/algoOrder``."""
    algo = engine.cancel_algo(p)
    return {"algoId": algo.algo_id, "clientAlgoId": algo.client_algo_id, "code": "200", "msg": "success"}


async def open_algos(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/openAlgoOrders``."""
    symbol = engine.symbol(p["symbol"]).name if p.get("symbol") else None
    return [a.wire(ex.accounts.symbols[a.symbol]) for a in engine.open_algos(symbol)]


async def all_algos(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/allAlgoOrders``."""
    return [a.wire(ex.accounts.symbols[a.symbol]) for a in engine.all_algos(p)]


async def cancel_all_algos(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``DELETE /fapi/v1/algoOpenOrders``."""
    engine.cancel_all_algos(p.required("symbol"))
    return CANCEL_ALL_DONE


async def countdown_cancel_all(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``POST /fapi/v1/countdownCancelAll``: (re)start the symbol's countdown; ``countdownTime`` 0 ends it."""
    symbol = engine.symbol(p.required("symbol")).name
    countdown_ms = p.integer("countdownTime")
    if countdown_ms < 0:
        raise errors.missing("countdownTime")
    ex.countdowns.arm(engine, symbol, countdown_ms)
    return {"symbol": symbol, "countdownTime": str(countdown_ms)}


# ---- account -----------------------------------------------------------------------------------


def f8(value: Decimal) -> str:
    """A balance printed with 8 decimals."""
    return fmt(value, 8)


def _account(engine: Engine, version: int) -> dict[str, Any]:
    """The account answer: v2 lists every symbol's positions, v3 only the open ones."""
    account = engine.account
    totals = engine.totals()
    initial = totals["position_margin"] + totals["order_margin"]
    margin_balance = totals["wallet"] + totals["unrealized"]
    available = max(totals["available"], ZERO)
    if version == 2:
        keys = [(name, side) for name in engine.symbols for side in account.position_sides()]
    else:
        keys = [(p.symbol, p.side) for p in account.open_positions()]
    return {
        "feeTier": 0,
        "canTrade": True,
        "canDeposit": True,
        "canWithdraw": True,
        "feeBurn": False,
        "updateTime": 0,  # Binance: "reserved property, please ignore" (the assets' and positions' carry the time)
        "multiAssetsMargin": False,
        "tradeGroupId": -1,
        "totalInitialMargin": f8(initial),
        "totalMaintMargin": f8(totals["maint"]),
        "totalWalletBalance": f8(totals["wallet"]),
        "totalUnrealizedProfit": f8(totals["unrealized"]),
        "totalMarginBalance": f8(margin_balance),
        "totalPositionInitialMargin": f8(totals["position_margin"]),
        "totalOpenOrderInitialMargin": f8(totals["order_margin"]),
        "totalCrossWalletBalance": f8(totals["wallet"]),
        "totalCrossUnPnl": f8(totals["unrealized"]),
        "availableBalance": f8(available),
        "maxWithdrawAmount": f8(min(available, totals["wallet"])),
        "assets": [_account_asset(engine, totals)],
        "positions": [_account_position(engine, name, side, version) for name, side in keys],
    }


def _account_asset(engine: Engine, totals: dict[str, Decimal]) -> dict[str, Any]:
    """The account's one asset entry, USDT, from the engine's totals."""
    available = max(totals["available"], ZERO)
    return {
        "asset": "USDT",
        "walletBalance": f8(totals["wallet"]),
        "unrealizedProfit": f8(totals["unrealized"]),
        "marginBalance": f8(totals["wallet"] + totals["unrealized"]),
        "maintMargin": f8(totals["maint"]),
        "initialMargin": f8(totals["position_margin"] + totals["order_margin"]),
        "positionInitialMargin": f8(totals["position_margin"]),
        "openOrderInitialMargin": f8(totals["order_margin"]),
        "crossWalletBalance": f8(totals["wallet"]),
        "crossUnPnl": f8(totals["unrealized"]),
        "availableBalance": f8(available),
        "maxWithdrawAmount": f8(min(available, totals["wallet"])),
        "marginAvailable": True,
        "updateTime": engine.account.update_time_ms,
    }


def _account_position(engine: Engine, name: str, side: str, version: int) -> dict[str, Any]:
    """One position entry of the account; v2's carries leverage, margin type and entry price as well."""
    account = engine.account
    pos = account.position(name, side) if (name, side) in account.positions else None
    amt = pos.amt if pos else ZERO
    mark = engine.now_mark(name)
    leverage = account.leverage_of(name)
    notional = amt * mark
    margin = abs(notional) / leverage
    entry: dict[str, Any] = {
        "symbol": name,
        "positionSide": side,
        "positionAmt": fmt(amt, engine.symbols[name].qty_places),
        "unrealizedProfit": f8(pos.unrealized(mark) if pos else ZERO),
        "isolatedMargin": "0",
        "notional": f8(notional),
        "isolatedWallet": "0",
        "initialMargin": f8(margin),
        "maintMargin": f8(abs(notional) * MAINT_MARGIN_RATE),
        "updateTime": pos.update_time_ms if pos else 0,
    }
    if version == 2:
        entry.update(
            {
                "positionInitialMargin": f8(margin),
                "openOrderInitialMargin": "0",
                "leverage": str(leverage),
                "isolated": account.margin_type.get(name, "CROSSED") == "ISOLATED",
                "entryPrice": fmt(pos.entry if pos else ZERO, 8),
                "breakEvenPrice": fmt(pos.entry if pos else ZERO, 8),
                "maxNotional": max_notional(leverage),
                "bidNotional": "0",
                "askNotional": "0",
            }
        )
    return entry


async def account_v2(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v2/account``: every symbol's position entry."""
    return _account(engine, 2)


async def account_v3(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v3/account``: open positions only."""
    return _account(engine, 3)


async def balance(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v2|v3/balance``."""
    return engine.account.balance_wire(engine.totals())


def _position_risk(engine: Engine, p: Params, version: int) -> list[dict[str, Any]]:
    account = engine.account
    names = [engine.symbol(p["symbol"]).name] if p.get("symbol") else list(engine.symbols)
    if version == 3:
        busy = {pos.symbol for pos in account.open_positions()}
        busy |= {name for name, book in engine.live_orders.items() if book}
        busy |= {name for name, book in engine.live_algos.items() if book}
        names = [n for n in names if n in busy]
    rows = []
    for name in names:
        for side in account.position_sides():
            pos = account.positions.get((name, side))
            if pos is None:
                pos = Position(name, side)
            rows.append(account.position_wire(pos, engine.symbols[name], engine.now_mark(name), version))
    return rows


async def position_risk_v2(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v2/positionRisk``."""
    return _position_risk(engine, p, 2)


async def position_risk_v3(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v3/positionRisk``: symbols with a position or open orders, no leverage or margin type."""
    return _position_risk(engine, p, 3)


async def change_leverage(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``POST /fapi/v1/leverage``."""
    name = engine.symbol(p.required("symbol")).name
    try:
        leverage = int(p.required("leverage"))
    except ValueError:
        raise errors.INVALID_LEVERAGE from None
    engine.change_leverage(name, leverage)
    return {"leverage": leverage, "maxNotionalValue": max_notional(leverage), "symbol": name}


def _bracket(ex: Exchange, name: str) -> dict[str, Any]:
    top = ex.accounts.symbols[name].max_leverage
    brackets = []
    floor, cum = 0, Decimal(0)
    steps = [(top, 50_000, "0.004"), (top // 2, 250_000, "0.005"), (10, 1_000_000, "0.01"), (5, 10_000_000, "0.025")]
    for i, (leverage, cap, ratio) in enumerate(steps, start=1):
        brackets.append(
            {
                "bracket": i,
                "initialLeverage": max(leverage, 1),
                "notionalCap": cap,
                "notionalFloor": floor,
                "maintMarginRatio": float(ratio),
                "cum": float(cum),
            }
        )
        floor = cap
    return {"symbol": name, "notionalCoef": 1.0, "brackets": brackets}


async def leverage_bracket(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/leverageBracket``: one object for a symbol, else a list."""
    if p.get("symbol"):
        return _bracket(ex, engine.symbol(p["symbol"]).name)
    return [_bracket(ex, name) for name in ex.accounts.symbols]


async def get_position_mode(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``GET /fapi/v1/positionSide/dual``."""
    return {"dualSidePosition": engine.account.dual_side}


async def change_position_mode(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``POST /fapi/v1/positionSide/dual``."""
    p.required("dualSidePosition")
    engine.change_position_mode(p.flag("dualSidePosition"))
    return SUCCESS


async def change_margin_type(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``POST /fapi/v1/marginType``."""
    engine.change_margin_type(p.required("symbol"), p.required("marginType"))
    return SUCCESS


async def new_listen_key(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``POST /fapi/v1/listenKey``: the active key with its validity extended, or a new one."""
    return {"listenKey": ex.streams.new_listen_key(engine)}


async def keepalive_listen_key(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``PUT /fapi/v1/listenKey``: -1125 when no key is active (expired, deleted) or another key is named."""
    return {"listenKey": ex.streams.keepalive(engine, p.get("listenKey"))}


async def close_listen_key(ex: Exchange, engine: Engine, p: Params, plan: FillPlan) -> Any:
    """``DELETE /fapi/v1/listenKey``: the key ends and its user-data connections are closed."""
    ex.streams.close_listen_key(engine)
    return {}


def _ep(
    method: str, path: str, security: str, weight: Callable[[Params], int], handler: Handler, *, order: bool = False
) -> Endpoint:
    return Endpoint(method, path, security, weight, handler, order=order)


ENDPOINTS: list[Endpoint] = [
    _ep("GET", "/fapi/v1/ping", "NONE", fixed(1), ping),
    _ep("GET", "/fapi/v1/time", "NONE", fixed(1), server_time),
    _ep("GET", "/api/v3/ping", "NONE", fixed(1), ping),
    _ep("GET", "/api/v3/time", "NONE", fixed(1), server_time),
    _ep("GET", "/fapi/v1/exchangeInfo", "NONE", fixed(1), exchange_info),
    _ep("GET", "/fapi/v1/ticker/price", "NONE", by_symbol(1, 2), ticker_price),
    _ep("GET", "/fapi/v2/ticker/price", "NONE", by_symbol(1, 2), ticker_price),
    _ep("GET", "/fapi/v1/ticker/bookTicker", "NONE", by_symbol(2, 5), book_ticker),
    _ep("GET", "/fapi/v1/ticker/24hr", "NONE", by_symbol(1, 40), ticker_24hr),
    _ep("GET", "/fapi/v1/premiumIndex", "NONE", by_symbol(1, 10), premium_index),
    _ep("GET", "/fapi/v1/depth", "NONE", _depth_weight, depth),
    _ep("GET", "/fapi/v1/klines", "NONE", _klines_weight, klines),
    _ep("POST", "/fapi/v1/order", "SIGNED", fixed(0), new_order, order=True),
    _ep("GET", "/fapi/v1/order", "SIGNED", fixed(1), get_order),
    _ep("DELETE", "/fapi/v1/order", "SIGNED", fixed(1), cancel_order),
    _ep("GET", "/fapi/v1/openOrder", "SIGNED", fixed(1), get_open_order),
    _ep("GET", "/fapi/v1/openOrders", "SIGNED", by_symbol(1, 40), open_orders),
    _ep("GET", "/fapi/v1/allOrders", "SIGNED", fixed(5), all_orders),
    _ep("DELETE", "/fapi/v1/allOpenOrders", "SIGNED", fixed(1), cancel_all_orders),
    _ep("GET", "/fapi/v1/userTrades", "SIGNED", fixed(5), user_trades),
    _ep("POST", "/fapi/v1/countdownCancelAll", "SIGNED", fixed(10), countdown_cancel_all),
    _ep("POST", "/fapi/v1/algoOrder", "SIGNED", fixed(0), new_algo, order=True),
    _ep("GET", "/fapi/v1/algoOrder", "SIGNED", fixed(1), get_algo),
    _ep("DELETE", "/fapi/v1/algoOrder", "SIGNED", fixed(1), cancel_algo),
    _ep("GET", "/fapi/v1/openAlgoOrders", "SIGNED", by_symbol(1, 40), open_algos),
    _ep("GET", "/fapi/v1/allAlgoOrders", "SIGNED", fixed(5), all_algos),
    _ep("DELETE", "/fapi/v1/algoOpenOrders", "SIGNED", fixed(1), cancel_all_algos),
    _ep("GET", "/fapi/v2/account", "SIGNED", fixed(5), account_v2),
    _ep("GET", "/fapi/v3/account", "SIGNED", fixed(5), account_v3),
    _ep("GET", "/fapi/v2/balance", "SIGNED", fixed(5), balance),
    _ep("GET", "/fapi/v3/balance", "SIGNED", fixed(5), balance),
    _ep("GET", "/fapi/v2/positionRisk", "SIGNED", fixed(5), position_risk_v2),
    _ep("GET", "/fapi/v3/positionRisk", "SIGNED", fixed(5), position_risk_v3),
    _ep("POST", "/fapi/v1/leverage", "SIGNED", fixed(1), change_leverage),
    _ep("GET", "/fapi/v1/leverageBracket", "SIGNED", fixed(1), leverage_bracket),
    _ep("GET", "/fapi/v1/positionSide/dual", "SIGNED", fixed(30), get_position_mode),
    _ep("POST", "/fapi/v1/positionSide/dual", "SIGNED", fixed(1), change_position_mode),
    _ep("POST", "/fapi/v1/marginType", "SIGNED", fixed(1), change_margin_type),
    _ep("POST", "/fapi/v1/listenKey", "KEY", fixed(1), new_listen_key),
    _ep("PUT", "/fapi/v1/listenKey", "KEY", fixed(1), keepalive_listen_key),
    _ep("DELETE", "/fapi/v1/listenKey", "KEY", fixed(1), close_listen_key),
]
