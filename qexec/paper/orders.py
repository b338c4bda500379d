"""Orders, algo (conditional) orders and fills, and their Binance wire shapes."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from qexec.paper.catalogue import Symbol
from qexec.paper.decimals import ZERO, fmt, plain

LIVE_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
CONDITIONAL_TYPES = frozenset({"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"})
LIVE_ALGO_STATUSES = frozenset({"NEW", "TRIGGERING"})


@dataclass
class Order:
    """A LIMIT or MARKET order on the book or in the history."""

    order_id: int
    symbol: str
    client_order_id: str
    side: str
    position_side: str
    type: str
    orig_type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    reduce_only: bool
    time_ms: int
    update_time_ms: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    close_position: bool = False
    stop_price: Decimal = ZERO
    working_type: str = "CONTRACT_PRICE"
    hold: bool = False

    @property
    def live(self) -> bool:
        """True while the order is NEW or PARTIALLY_FILLED."""
        return self.status in LIVE_STATUSES

    @property
    def remaining(self) -> Decimal:
        """Quantity still to fill."""
        return self.orig_qty - self.executed_qty

    @property
    def avg_price(self) -> Decimal:
        """Volume-weighted fill price, zero before the first fill."""
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO

    def wire(self, symbol: Symbol) -> dict[str, Any]:
        """The order object as Binance sends it (the superset of New/Query/Cancel fields)."""
        pp, qp = symbol.price_places, symbol.qty_places
        avg = self.avg_price
        return {
            "orderId": self.order_id,
            "symbol": self.symbol,
            "status": self.status,
            "clientOrderId": self.client_order_id,
            "price": fmt(self.price, pp) if self.price else "0",
            "avgPrice": fmt(avg, max(pp, 5)) if avg else "0.00000",
            "origQty": fmt(self.orig_qty, qp),
            "executedQty": fmt(self.executed_qty, qp) if self.executed_qty else "0",
            "cumQty": fmt(self.executed_qty, qp) if self.executed_qty else "0",
            "cumQuote": plain(self.cum_quote),
            "timeInForce": self.time_in_force,
            "type": self.type,
            "reduceOnly": self.reduce_only,
            "closePosition": self.close_position,
            "side": self.side,
            "positionSide": self.position_side,
            "stopPrice": fmt(self.stop_price, pp) if self.stop_price else "0",
            "workingType": self.working_type,
            "priceProtect": False,
            "origType": self.orig_type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": self.time_ms,
            "updateTime": self.update_time_ms,
        }


@dataclass
class AlgoOrder:
    """A conditional order held by the algo service until its trigger fires."""

    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    position_side: str
    order_type: str
    time_in_force: str
    quantity: Decimal
    trigger_price: Decimal
    price: Decimal
    working_type: str
    close_position: bool
    price_protect: bool
    reduce_only: bool
    create_time_ms: int
    update_time_ms: int
    activate_price: Decimal | None = None
    callback_rate: Decimal | None = None
    algo_status: str = "NEW"
    trigger_time_ms: int = 0
    actual_order_id: int | None = None
    actual_price: Decimal = ZERO
    actual_qty: Decimal = ZERO
    activated: bool = False
    extreme: Decimal | None = None

    @property
    def live(self) -> bool:
        """True while the algo order waits for its trigger."""
        return self.algo_status in LIVE_ALGO_STATUSES

    def wire(self, symbol: Symbol) -> dict[str, Any]:
        """The algo order object as Binance's algo service sends it."""
        pp, qp = symbol.price_places, symbol.qty_places
        body: dict[str, Any] = {
            "algoId": self.algo_id,
            "clientAlgoId": self.client_algo_id,
            "algoType": "CONDITIONAL",
            "orderType": self.order_type,
            "symbol": self.symbol,
            "side": self.side,
            "positionSide": self.position_side,
            "timeInForce": self.time_in_force,
            "quantity": fmt(self.quantity, qp) if self.quantity else "0",
            "algoStatus": self.algo_status,
            "triggerPrice": fmt(self.trigger_price, pp) if self.trigger_price else "0",
            "price": fmt(self.price, pp) if self.price else "0",
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": self.working_type,
            "priceMatch": "NONE",
            "closePosition": self.close_position,
            "priceProtect": self.price_protect,
            "reduceOnly": self.reduce_only,
            "activatePrice": fmt(self.activate_price, pp) if self.activate_price is not None else "",
            "callbackRate": plain(self.callback_rate) if self.callback_rate is not None else "",
            "createTime": self.create_time_ms,
            "updateTime": self.update_time_ms,
            "triggerTime": self.trigger_time_ms,
            "goodTillDate": 0,
        }
        if self.algo_status not in LIVE_ALGO_STATUSES and self.actual_order_id is not None:
            body["actualOrderId"] = str(self.actual_order_id)
            body["actualPrice"] = fmt(self.actual_price, pp) if self.actual_price else "0"
            body["actualType"] = "LIMIT" if self.order_type in ("STOP", "TAKE_PROFIT") else "MARKET"
            body["actualQty"] = fmt(self.actual_qty, qp) if self.actual_qty else "0"
        return body


@dataclass
class Fill:
    """One trade of an order against the paper book."""

    trade_id: int
    order_id: int
    symbol: str
    side: str
    position_side: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    realized_pnl: Decimal
    maker: bool
    time_ms: int

    def wire(self, symbol: Symbol) -> dict[str, Any]:
        """The trade as ``GET /fapi/v1/userTrades`` lists it."""
        return {
            "buyer": self.side == "BUY",
            "commission": fmt(self.commission, 8),
            "commissionAsset": "USDT",
            "id": self.trade_id,
            "maker": self.maker,
            "orderId": self.order_id,
            "price": fmt(self.price, symbol.price_places),
            "qty": fmt(self.qty, symbol.qty_places),
            "quoteQty": plain(self.price * self.qty),
            "realizedPnl": fmt(self.realized_pnl, 8),
            "side": self.side,
            "positionSide": self.position_side,
            "symbol": self.symbol,
            "time": self.time_ms,
        }


Record = TypeVar("Record", Order, AlgoOrder, Fill)


def dump(record: Order | AlgoOrder | Fill) -> str:
    """A record as JSON for the state store (decimals as strings)."""
    return json.dumps({k: (str(v) if isinstance(v, Decimal) else v) for k, v in dataclasses.asdict(record).items()})


def load(kind: type[Record], text: str) -> Record:
    """A record read back from its JSON in the state store."""
    raw = json.loads(text)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(kind):
        value = raw.get(item.name)
        if value is not None and "Decimal" in str(item.type):
            value = Decimal(value)
        values[item.name] = value
    return kind(**values)
