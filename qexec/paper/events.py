"""Websocket stream payloads as Binance sends them: user-data events and mark-price updates."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from qexec.paper.account import Account, Position
from qexec.paper.catalogue import Symbol
from qexec.paper.decimals import fmt, plain
from qexec.paper.orders import AlgoOrder, Fill, Order
from qexec.paper.prices import PriceBook

ORDER_TRADE_UPDATE = "ORDER_TRADE_UPDATE"
ACCOUNT_UPDATE = "ACCOUNT_UPDATE"
ALGO_UPDATE = "ALGO_UPDATE"
ACCOUNT_CONFIG_UPDATE = "ACCOUNT_CONFIG_UPDATE"
LISTEN_KEY_EXPIRED = "listenKeyExpired"
ZERO_5 = "0.00000"


def order_update(
    order: Order,
    symbol: Symbol,
    execution: str,
    now_ms: int,
    *,
    fill: Fill | None = None,
    expire_reason: str = "0",
    algo: AlgoOrder | None = None,
) -> dict[str, Any]:
    """``ORDER_TRADE_UPDATE`` for ``order`` as it stands; ``fill`` is the execution of a TRADE event."""
    pp, qp = symbol.price_places, symbol.qty_places
    avg = order.avg_price
    body: dict[str, Any] = {
        "s": order.symbol,
        "c": order.client_order_id,
        "S": order.side,
        "o": order.type,
        "f": order.time_in_force,
        "q": fmt(order.orig_qty, qp),
        "p": fmt(order.price, pp) if order.price else "0",
        "ap": fmt(avg, max(pp, 5)) if avg else "0",
        "sp": fmt(order.stop_price, pp) if order.stop_price else "0",
        "x": execution,
        "X": order.status,
        "i": order.order_id,
        "l": fmt(fill.qty, qp) if fill else "0",
        "z": fmt(order.executed_qty, qp) if order.executed_qty else "0",
        "L": fmt(fill.price, pp) if fill else "0",
        "N": "USDT",
        "n": fmt(fill.commission, 8) if fill else "0",
        "T": order.update_time_ms,
        "t": fill.trade_id if fill else 0,
        "b": "0",
        "a": "0",
        "m": fill.maker if fill else False,
        "R": order.reduce_only,
        "wt": order.working_type,
        "ot": order.orig_type,
        "ps": order.position_side,
        "cp": order.close_position,
        "pP": algo.price_protect if algo else False,
        "si": 0,
        "ss": 0,
        "rp": fmt(fill.realized_pnl, 8) if fill else "0",
        "V": "EXPIRE_MAKER",
        "pm": "NONE",
        "gtd": 0,
        "er": expire_reason,
    }
    if algo is not None and algo.callback_rate is not None:  # a triggered trailing stop
        body["AP"] = fmt(algo.activate_price, pp) if algo.activate_price is not None else "0"
        body["cr"] = plain(algo.callback_rate)
    return {"e": ORDER_TRADE_UPDATE, "E": now_ms, "T": order.update_time_ms, "o": body}


def account_update(
    account: Account,
    positions: Iterable[Position],
    *,
    symbols: dict[str, Symbol],
    mark: Callable[[str], Decimal],
    reason: str,
    time_ms: int,
    now_ms: int,
) -> dict[str, Any]:
    """``ACCOUNT_UPDATE``: the USDT balance and ``positions``, with the values ``positionRisk`` shows for them."""
    rows = []
    for pos in positions:
        risk = account.position_wire(pos, symbols[pos.symbol], mark(pos.symbol), 3)
        flat = pos.amt == 0
        rows.append(
            {
                "s": pos.symbol,
                "pa": "0" if flat else risk["positionAmt"],
                "ep": risk["entryPrice"],
                "bep": "0" if flat else risk["breakEvenPrice"],
                "cr": fmt(pos.realized, 8),
                "up": risk["unRealizedProfit"],
                "mt": "isolated" if account.margin_type.get(pos.symbol) == "ISOLATED" else "cross",
                "iw": risk["isolatedWallet"],
                "ps": pos.side,
            }
        )
    wallet = fmt(account.wallet, 8)
    return {
        "e": ACCOUNT_UPDATE,
        "E": now_ms,
        "T": time_ms,
        "a": {"m": reason, "B": [{"a": "USDT", "wb": wallet, "cw": wallet, "bc": "0"}], "P": rows},
    }


def algo_update(algo: AlgoOrder, symbol: Symbol, now_ms: int) -> dict[str, Any]:
    """``ALGO_UPDATE`` for ``algo`` as it stands (``X`` is its algoStatus, ``ai`` the order it triggered)."""
    pp, qp = symbol.price_places, symbol.qty_places
    triggered = algo.actual_order_id is not None
    body = {
        "caid": algo.client_algo_id,
        "aid": algo.algo_id,
        "at": "CONDITIONAL",
        "o": algo.order_type,
        "s": algo.symbol,
        "S": algo.side,
        "ps": algo.position_side,
        "f": algo.time_in_force,
        "q": fmt(algo.quantity, qp) if algo.quantity else "0",
        "X": algo.algo_status,
        "ai": str(algo.actual_order_id) if triggered else "",
        "ap": fmt(algo.actual_price, max(pp, 5)) if algo.actual_price else ZERO_5,
        "aq": fmt(algo.actual_qty, qp) if algo.actual_qty else ZERO_5,
        "act": ("LIMIT" if algo.order_type in ("STOP", "TAKE_PROFIT") else "MARKET") if triggered else "0",
        "tp": fmt(algo.trigger_price, pp) if algo.trigger_price else "0",
        "p": fmt(algo.price, pp) if algo.price else "0",
        "V": "EXPIRE_MAKER",
        "wt": algo.working_type,
        "pm": "NONE",
        "cp": algo.close_position,
        "pP": algo.price_protect,
        "R": algo.reduce_only,
        "tt": algo.trigger_time_ms,
        "gtd": 0,
        "rm": "",
    }
    return {"e": ALGO_UPDATE, "E": now_ms, "T": algo.update_time_ms, "o": body}


def config_update(symbol: str, leverage: int, now_ms: int) -> dict[str, Any]:
    """``ACCOUNT_CONFIG_UPDATE`` for a leverage change."""
    return {"e": ACCOUNT_CONFIG_UPDATE, "E": now_ms, "T": now_ms, "ac": {"s": symbol, "l": leverage}}


def listen_key_expired(key: str, now_ms: int) -> dict[str, Any]:
    """``listenKeyExpired``: the last event a connection on an expired key receives."""
    return {"e": LISTEN_KEY_EXPIRED, "E": now_ms, "listenKey": key}


def mark_price_update(prices: PriceBook, name: str, now_ms: int) -> dict[str, Any]:
    """``markPriceUpdate`` of ``name``, with the values ``GET /fapi/v1/premiumIndex`` gives."""
    index = prices.premium_index(name, now_ms)
    return {
        "e": "markPriceUpdate",
        "E": now_ms,
        "s": name,
        "p": index["markPrice"],
        "i": index["indexPrice"],
        "P": index["estimatedSettlePrice"],
        "r": index["lastFundingRate"],
        "T": index["nextFundingTime"],
    }
