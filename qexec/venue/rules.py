"""Exchange rules from `exchangeInfo`: tick and step sizes, quantity limits, minimum notional, price band."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from qexec.models import Refusal, RejectKind


def plain(value: Decimal) -> str:
    """A decimal in plain notation without trailing zeros (`120`, `0.001`; never `1.2E+2`)."""
    text = format(value.normalize(), "f")
    return text


def _floor_to(value: Decimal, step: Decimal) -> Decimal:
    if step <= 0:
        return value
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def _ceil_to(value: Decimal, step: Decimal) -> Decimal:
    if step <= 0:
        return value
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


@dataclass(frozen=True)
class SymbolRules:
    """One symbol's trading filters."""

    symbol: str
    status: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    # PERCENT_PRICE: a BUY limit at most mark x up, a SELL limit at least mark x down (0: no band).
    multiplier_up: Decimal = Decimal(0)
    multiplier_down: Decimal = Decimal(0)

    @classmethod
    def from_exchange_info(cls, entry: Mapping[str, Any]) -> SymbolRules:
        """Read a symbol entry of `GET /fapi/v1/exchangeInfo`."""
        filters = {f["filterType"]: f for f in entry.get("filters", [])}
        price = filters.get("PRICE_FILTER", {})
        lot = filters.get("LOT_SIZE", {})
        market = filters.get("MARKET_LOT_SIZE", lot)
        notional = filters.get("MIN_NOTIONAL", {})
        band = filters.get("PERCENT_PRICE", {})
        return cls(
            symbol=entry["symbol"],
            status=entry.get("status", "TRADING"),
            tick_size=Decimal(price.get("tickSize", "0")),
            step_size=Decimal(lot.get("stepSize", "0")),
            min_qty=Decimal(lot.get("minQty", "0")),
            max_qty=Decimal(lot.get("maxQty", "0")),
            market_step_size=Decimal(market.get("stepSize", lot.get("stepSize", "0"))),
            market_min_qty=Decimal(market.get("minQty", lot.get("minQty", "0"))),
            market_max_qty=Decimal(market.get("maxQty", lot.get("maxQty", "0"))),
            min_notional=Decimal(notional.get("notional", notional.get("minNotional", "0"))),
            multiplier_up=Decimal(band.get("multiplierUp", "0")),
            multiplier_down=Decimal(band.get("multiplierDown", "0")),
        )

    def quantity_for(self, notional_usd: Decimal, price: Decimal, *, market: bool) -> Decimal:
        """Quantity worth `notional_usd` at `price`, rounded down to the step size."""
        step = self.market_step_size if market else self.step_size
        return _floor_to(notional_usd / price, step).normalize()

    def round_price(self, price: Decimal, *, down: bool) -> Decimal:
        """A price on the tick grid, rounded down (or up) so a limit never crosses further than asked."""
        rounded = _floor_to(price, self.tick_size) if down else _ceil_to(price, self.tick_size)
        return rounded.normalize()

    def limit_price_problem(self, buy: bool, price: Decimal, mark: Decimal) -> Refusal | None:
        """Why the venue would refuse this LIMIT price against the mark (PERCENT_PRICE: -4016, -4024), or None."""
        if buy and self.multiplier_up > 0 and price > mark * self.multiplier_up:
            return Refusal(
                RejectKind.PRICE_BAND,
                f"limit price {plain(price)} is above {self.symbol}'s band: at most {plain(mark * self.multiplier_up)} "
                f"(mark {plain(mark)} x PERCENT_PRICE multiplierUp {plain(self.multiplier_up)})",
            )
        if not buy and self.multiplier_down > 0 and price < mark * self.multiplier_down:
            return Refusal(
                RejectKind.PRICE_BAND,
                f"limit price {plain(price)} is below {self.symbol}'s band: at least "
                f"{plain(mark * self.multiplier_down)} (mark {plain(mark)} x PERCENT_PRICE multiplierDown "
                f"{plain(self.multiplier_down)})",
            )
        return None

    def problem(self, quantity: Decimal, price: Decimal, *, market: bool, reduce_only: bool = False) -> Refusal | None:
        """Why the venue would refuse this quantity at this price, or None when it fits (MIN_NOTIONAL does not apply
        to reduce-only orders: a small leftover can always be closed)."""
        if self.status != "TRADING":
            return Refusal(RejectKind.UNKNOWN_SYMBOL, f"{self.symbol} is not trading (status {self.status})")
        min_qty = self.market_min_qty if market else self.min_qty
        max_qty = self.market_max_qty if market else self.max_qty
        if quantity <= 0 or quantity < min_qty:
            return Refusal(
                RejectKind.MIN_SIZE, f"quantity {plain(quantity)} is below {self.symbol}'s minimum {plain(min_qty)}"
            )
        if max_qty > 0 and quantity > max_qty:
            return Refusal(
                RejectKind.OTHER, f"quantity {plain(quantity)} is above {self.symbol}'s maximum {plain(max_qty)}"
            )
        if not reduce_only and quantity * price < self.min_notional:
            return Refusal(
                RejectKind.MIN_SIZE,
                f"notional {plain(quantity * price)} USDT is below {self.symbol}'s minimum "
                f"{plain(self.min_notional)} USDT",
            )
        return None


@dataclass(frozen=True)
class ExchangeRules:
    """Every symbol's rules, as fetched at `fetched_at` (epoch seconds)."""

    symbols: Mapping[str, SymbolRules]
    fetched_at: float

    @classmethod
    def from_exchange_info(cls, info: Mapping[str, Any], fetched_at: float) -> ExchangeRules:
        """Read the whole `exchangeInfo` response."""
        symbols = {s["symbol"]: SymbolRules.from_exchange_info(s) for s in info.get("symbols", [])}
        return cls(symbols=symbols, fetched_at=fetched_at)

    def get(self, symbol: str) -> SymbolRules | None:
        """The symbol's rules, or None for a symbol the venue does not list."""
        return self.symbols.get(symbol)
