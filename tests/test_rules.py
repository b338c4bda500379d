"""Exchange rules: quantities floor to the step, and orders under the minimums are caught before sending."""

from __future__ import annotations

from decimal import Decimal

from qexec.models import RejectKind
from qexec.venue.rules import SymbolRules

BTC = {
    "symbol": "BTCUSDT",
    "status": "TRADING",
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "261.10", "maxPrice": "809484", "tickSize": "0.10"},
        {"filterType": "LOT_SIZE", "stepSize": "0.001", "maxQty": "1000", "minQty": "0.001"},
        {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.001", "maxQty": "120", "minQty": "0.001"},
        {"filterType": "MIN_NOTIONAL", "notional": "100"},
    ],
}


def test_quantity_is_notional_over_price_floored_to_the_step() -> None:
    """250 USDT at 60,000 is 0.0041666…, floored to 0.004 on a 0.001 step."""
    rules = SymbolRules.from_exchange_info(BTC)
    assert rules.quantity_for(Decimal(250), Decimal(60000), market=True) == Decimal("0.004")


def test_min_notional_and_min_qty_are_reported_with_the_numbers() -> None:
    """Under the minimum notional or quantity, `problem` says which limit and its value, as a `min_size` refusal."""
    rules = SymbolRules.from_exchange_info(BTC)
    notional = rules.problem(Decimal("0.001"), Decimal(60000), market=True)
    quantity = rules.problem(Decimal(0), Decimal(60000), market=True)
    assert notional is not None and "minimum 100 USDT" in notional.reason
    assert quantity is not None and "below BTCUSDT's minimum 0.001" in quantity.reason
    assert notional.kind is quantity.kind is RejectKind.MIN_SIZE
    assert rules.problem(Decimal("0.002"), Decimal(60000), market=True) is None


def test_market_orders_use_the_market_lot_maximum() -> None:
    """MARKET orders are held to MARKET_LOT_SIZE, which is tighter than LOT_SIZE."""
    rules = SymbolRules.from_exchange_info(BTC)
    too_big = rules.problem(Decimal(200), Decimal(60000), market=True)
    assert too_big is not None and "maximum 120" in too_big.reason and too_big.kind is RejectKind.OTHER
    assert rules.problem(Decimal(200), Decimal(60000), market=False) is None


def test_limit_prices_round_to_the_tick_without_crossing_further() -> None:
    """A buy limit rounds down and a sell limit rounds up to the tick size."""
    rules = SymbolRules.from_exchange_info(BTC)
    assert rules.round_price(Decimal("60000.17"), down=True) == Decimal("60000.1")
    assert rules.round_price(Decimal("60000.11"), down=False) == Decimal("60000.2")
