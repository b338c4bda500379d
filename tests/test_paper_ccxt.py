"""ccxt's `binanceusdm` (REST), a client nobody here wrote, against the paper exchange with only its URLs changed.

ccxt maps an error to its own classes by the exchange's host and code table; where it cannot classify a local
URL's error, the tests assert on the venue's code in the message instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from paper_fixtures import PaperExchange, pointed_at

SYMBOL = "ETH/USDT:USDT"


@pytest.fixture
def exchange(paper: PaperExchange) -> Iterator[Any]:
    """A synchronous ccxt `binanceusdm` on a fresh paper account, its markets loaded."""
    paper.set_price("ETHUSDT", "3300.00")
    client = pointed_at(ccxt.binanceusdm, paper)
    client.load_markets()
    yield client


def test_ccxt_loads_the_markets_and_the_time(exchange: Any) -> None:
    """`load_markets` reads exchangeInfo into ccxt's market table (precision, limits); `fetch_time` the clock."""
    market = exchange.market(SYMBOL)
    assert market["id"] == "ETHUSDT" and market["linear"] and market["swap"]
    assert market["limits"]["cost"]["min"] == 20
    assert Decimal(str(market["precision"]["amount"])) == Decimal("0.001")
    assert abs(exchange.fetch_time() - exchange.milliseconds()) < 5000


def test_ccxt_fetch_ticker_reads_the_24h_ticker(exchange: Any, paper: PaperExchange) -> None:
    """`fetch_ticker` uses `GET /fapi/v1/ticker/24hr` (it answered -5000 "Path is invalid" before); the last
    price is the paper mark."""
    ticker = exchange.fetch_ticker(SYMBOL)
    assert ticker["last"] == pytest.approx(3300.0)
    assert ticker["high"] >= ticker["last"] >= ticker["low"] > 0
    assert ticker["timestamp"] is not None
    assert len(exchange.fetch_tickers([SYMBOL, "BTC/USDT:USDT"])) == 2


def test_ccxt_fetch_balance_shows_the_funded_usdt(exchange: Any) -> None:
    """The funded USDT asset carries the time it last changed (ccxt skips an asset whose `updateTime` is 0)."""
    balance = exchange.fetch_balance()
    assert balance["USDT"]["total"] == pytest.approx(10_000.0)
    assert balance["USDT"]["free"] == pytest.approx(10_000.0)


def test_ccxt_trades_market_limit_and_reduce_only_and_sees_the_position(exchange: Any) -> None:
    """Leverage, a market buy, a resting limit fetched and canceled, the position, a reduce-only close."""
    assert exchange.set_leverage(5, SYMBOL)["leverage"] == 5
    bought = exchange.create_order(SYMBOL, "market", "buy", 0.05)
    assert exchange.fetch_order(bought["id"], SYMBOL)["status"] == "closed"
    resting = exchange.create_order(SYMBOL, "limit", "buy", 0.05, 3200)
    assert exchange.fetch_order(resting["id"], SYMBOL)["status"] == "open"
    assert exchange.cancel_order(resting["id"], SYMBOL)["status"] == "canceled"
    [position] = [p for p in exchange.fetch_positions([SYMBOL]) if p["contracts"]]
    assert (position["side"], position["contracts"]) == ("long", pytest.approx(0.05))
    exchange.create_order(SYMBOL, "market", "sell", 0.05, params={"reduceOnly": True})
    assert [p for p in exchange.fetch_positions([SYMBOL]) if p["contracts"]] == []


def test_ccxt_stop_loss_and_take_profit_orders(exchange: Any, paper: PaperExchange) -> None:
    """ccxt's stop-loss and take-profit orders reach the venue (algo orders since 2025-12); the paper exchange holds
    them as such, or answers with Binance's own code if ccxt sends them to the old path."""
    exchange.create_order(SYMBOL, "market", "buy", 0.05)
    try:
        stop = exchange.create_order(SYMBOL, "STOP_MARKET", "sell", 0.05, None, {"stopPrice": 3000, "reduceOnly": True})
    except ccxt.BaseError as exc:
        assert "-4120" in str(exc)  # conditional types belong to /fapi/v1/algoOrder
    else:
        assert stop["id"]
        algos = paper.client().futures_get_open_orders(symbol="ETHUSDT", conditional=True)
        assert [a["orderType"] for a in algos] == ["STOP_MARKET"]


def test_ccxt_sees_the_venues_error_codes(exchange: Any) -> None:
    """An order above the margin (-2019) and an unknown order (-2013) come back with the venue's code."""
    with pytest.raises(ccxt.BaseError) as margin:
        exchange.create_order(SYMBOL, "market", "buy", 100)  # 330,000 USDT at 20x: 16,500 of margin, 10,000 held
    assert "-2019" in str(margin.value)
    with pytest.raises(ccxt.BaseError) as unknown:
        exchange.fetch_order("123", SYMBOL)
    assert "-2013" in str(unknown.value)
