"""The symbols the paper exchange lists: a built-in catalogue, or a real exchangeInfo file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ONBOARD_MS = 1569398400000
PERPETUAL_DELIVERY_MS = 4133404800000
ORDER_TYPES = ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"]
TIME_IN_FORCE = ["GTC", "IOC", "FOK", "GTX", "GTD"]
PERCENT_PRICE_UP, PERCENT_PRICE_DOWN = Decimal("1.05"), Decimal("0.95")  # every symbol's PERCENT_PRICE band


@dataclass(frozen=True)
class Symbol:
    """One USDT perpetual: its filters, precisions and starting mark price."""

    name: str
    base_asset: str
    price: Decimal
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    price_precision: int
    quantity_precision: int
    max_leverage: int = 75
    min_price: Decimal = Decimal("0")
    max_price: Decimal = Decimal("10000000")
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def price_places(self) -> int:
        """Decimal places of the tick size, used to print prices."""
        return _places(self.tick_size)

    @property
    def qty_places(self) -> int:
        """Decimal places of the step size, used to print quantities."""
        return _places(self.step_size)

    def info(self) -> dict[str, Any]:
        """The symbol's entry in ``exchangeInfo``."""
        if self.raw is not None:
            return self.raw
        return {
            "symbol": self.name,
            "pair": self.name,
            "contractType": "PERPETUAL",
            "deliveryDate": PERPETUAL_DELIVERY_MS,
            "onboardDate": ONBOARD_MS,
            "status": "TRADING",
            "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000",
            "baseAsset": self.base_asset,
            "quoteAsset": "USDT",
            "marginAsset": "USDT",
            "pricePrecision": self.price_precision,
            "quantityPrecision": self.quantity_precision,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "settlePlan": 0,
            "triggerProtect": "0.0500",
            "liquidationFee": "0.012500",
            "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": str(self.min_price),
                    "maxPrice": str(self.max_price),
                    "tickSize": str(self.tick_size),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": str(self.min_qty),
                    "maxQty": str(self.max_qty),
                    "stepSize": str(self.step_size),
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": str(self.market_min_qty),
                    "maxQty": str(self.market_max_qty),
                    "stepSize": str(self.market_step_size),
                },
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": str(self.min_notional)},
                {
                    "filterType": "PERCENT_PRICE",
                    "multiplierUp": f"{PERCENT_PRICE_UP:.4f}",
                    "multiplierDown": f"{PERCENT_PRICE_DOWN:.4f}",
                    "multiplierDecimal": "4",
                },
            ],
            "orderTypes": ORDER_TYPES,
            "timeInForce": TIME_IN_FORCE,
        }


def _places(step: Decimal) -> int:
    exponent = step.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


# symbol, price, tick, step, maxQty, market maxQty, notional, pricePrecision, quantityPrecision, max leverage
_BUILT_IN: list[tuple[str, str, str, str, str, str, str, int, int, int]] = [
    ("BTCUSDT", "95000.00", "0.10", "0.001", "1000", "120", "100", 2, 3, 125),
    ("ETHUSDT", "3300.00", "0.01", "0.001", "10000", "2000", "20", 2, 3, 125),
    ("BNBUSDT", "650.00", "0.010", "0.01", "100000", "2000", "5", 3, 2, 75),
    ("SOLUSDT", "180.0000", "0.0100", "1", "1000000", "5000", "5", 4, 0, 75),
    ("XRPUSDT", "2.2000", "0.0001", "0.1", "10000000", "1000000", "5", 4, 1, 75),
    ("DOGEUSDT", "0.320000", "0.000010", "1", "50000000", "30000000", "5", 6, 0, 75),
    ("ADAUSDT", "0.90000", "0.00010", "1", "10000000", "1000000", "5", 5, 0, 75),
    ("AVAXUSDT", "12.7700", "0.0010", "1", "1000000", "100000", "5", 4, 0, 75),
    ("NEARUSDT", "2.5000", "0.0010", "1", "1000000", "200000", "5", 4, 0, 50),
    ("LINKUSDT", "14.000", "0.001", "0.01", "500000", "50000", "5", 3, 2, 75),
    ("AXSUSDT", "4.50000", "0.00100", "1", "1000000", "100000", "5", 5, 0, 50),
    ("DOTUSDT", "4.000", "0.001", "0.1", "1000000", "100000", "5", 3, 1, 75),
    ("LTCUSDT", "90.00", "0.01", "0.001", "100000", "5000", "5", 2, 3, 75),
    ("BCHUSDT", "450.00", "0.01", "0.001", "10000", "850", "5", 2, 3, 75),
    ("TRXUSDT", "0.25000", "0.00001", "1", "50000000", "5000000", "5", 5, 0, 75),
    ("ATOMUSDT", "4.500", "0.001", "0.01", "1000000", "50000", "5", 3, 2, 50),
    ("UNIUSDT", "8.0000", "0.0010", "1", "500000", "50000", "5", 4, 0, 50),
    ("FILUSDT", "2.500", "0.001", "0.1", "1000000", "100000", "5", 3, 1, 50),
    ("APTUSDT", "5.00000", "0.00010", "0.1", "1000000", "100000", "5", 5, 1, 50),
    ("ARBUSDT", "0.400000", "0.000100", "0.1", "10000000", "1000000", "5", 6, 1, 50),
    ("OPUSDT", "0.7000000", "0.0001000", "0.1", "10000000", "1000000", "5", 7, 1, 50),
    ("SUIUSDT", "3.000000", "0.000100", "0.1", "10000000", "1000000", "5", 6, 1, 50),
    ("ETCUSDT", "17.000", "0.001", "0.01", "1000000", "50000", "5", 3, 2, 50),
    ("INJUSDT", "12.000000", "0.001000", "0.1", "1000000", "50000", "5", 6, 1, 50),
]


def built_in() -> dict[str, Symbol]:
    """The built-in catalogue of USDT perpetuals with Binance-like filters and prices."""
    symbols: dict[str, Symbol] = {}
    for name, price, tick, step, max_qty, market_max, notional, pp, qp, max_lev in _BUILT_IN:
        step_d = Decimal(step)
        symbols[name] = Symbol(
            name=name,
            base_asset=name.removesuffix("USDT"),
            price=Decimal(price),
            tick_size=Decimal(tick),
            step_size=step_d,
            min_qty=step_d,
            max_qty=Decimal(max_qty),
            market_step_size=step_d,
            market_min_qty=step_d,
            market_max_qty=Decimal(market_max),
            min_notional=Decimal(notional),
            price_precision=pp,
            quantity_precision=qp,
            max_leverage=max_lev,
            min_price=Decimal(tick),
        )
    return symbols


def from_exchange_info(path: Path, prices_path: Path | None = None) -> dict[str, Symbol]:
    """Symbols read from a real ``exchangeInfo`` JSON; marks from ``prices_path`` or a default per symbol."""
    document = json.loads(path.read_text())
    prices: dict[str, Any] = json.loads(prices_path.read_text()) if prices_path else {}
    known = built_in()
    symbols: dict[str, Symbol] = {}
    for entry in document["symbols"]:
        if entry.get("status", "TRADING") != "TRADING" or entry.get("quoteAsset", "USDT") != "USDT":
            continue
        filters = {f["filterType"]: f for f in entry.get("filters", [])}
        price_filter = filters.get("PRICE_FILTER", {})
        lot = filters.get("LOT_SIZE", {})
        market_lot = filters.get("MARKET_LOT_SIZE", lot)
        name = entry["symbol"]
        tick = Decimal(price_filter.get("tickSize", "0.01"))
        if name in prices:
            price = Decimal(str(prices[name]))
        elif name in known:
            price = known[name].price
        else:
            # Without a price, a mark of 10,000 ticks is a fair guess: ticks are about 1e-4 of the price.
            price = tick * 10000
        symbols[name] = Symbol(
            name=name,
            base_asset=entry.get("baseAsset", name.removesuffix("USDT")),
            price=price,
            tick_size=tick,
            step_size=Decimal(lot.get("stepSize", "0.001")),
            min_qty=Decimal(lot.get("minQty", "0.001")),
            max_qty=Decimal(lot.get("maxQty", "1000000")),
            market_step_size=Decimal(market_lot.get("stepSize", lot.get("stepSize", "0.001"))),
            market_min_qty=Decimal(market_lot.get("minQty", lot.get("minQty", "0.001"))),
            market_max_qty=Decimal(market_lot.get("maxQty", lot.get("maxQty", "1000000"))),
            min_notional=Decimal(str(filters.get("MIN_NOTIONAL", {}).get("notional", "5"))),
            price_precision=int(entry.get("pricePrecision", 2)),
            quantity_precision=int(entry.get("quantityPrecision", 3)),
            max_leverage=known[name].max_leverage if name in known else 50,
            min_price=Decimal(price_filter.get("minPrice", "0")),
            max_price=Decimal(price_filter.get("maxPrice", "10000000")),
            raw=entry,
        )
    return symbols
