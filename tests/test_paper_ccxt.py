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
    """The funded USDT asset carries the time it last changed (ccxt skips an asset whose `updateTime` is 0); an
    open position holds its margin out of `free`."""
    balance = exchange.fetch_balance()
    assert balance["USDT"]["total"] == pytest.approx(10_000.0)
    assert balance["USDT"]["free"] == pytest.approx(10_000.0)
    exchange.create_order(SYMBOL, "market", "buy", 0.05)  # 165 USDT at 20x: 8.25 of margin held
    after = exchange.fetch_balance()["USDT"]
    assert after["total"] == pytest.approx(10_000.0, abs=0.2)  # less the taker fee and the slippage
    assert after["free"] == pytest.approx(after["total"] - 8.25, abs=0.05)


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


def test_ccxt_stop_loss_and_take_profit_go_to_the_algo_service(exchange: Any, paper: PaperExchange) -> None:
    """ccxt 4.5 sends a contract order with `stopLossPrice`/`takeProfitPrice` to `POST /fapi/v1/algoOrder`
    (conditional orders left /fapi/v1/order in 2025-12): they are listed, fetched and canceled as trigger orders,
    a second closePosition stop gets -4130, and the take-profit closes the position when the mark reaches it."""
    exchange.create_order(SYMBOL, "market", "buy", 0.05)
    stop = exchange.create_order(SYMBOL, "market", "sell", 0.05, None, {"stopLossPrice": 3000, "reduceOnly": True})
    take = exchange.create_order(SYMBOL, "market", "sell", 0.05, None, {"takeProfitPrice": 3600, "reduceOnly": True})
    held = {a["algoId"]: a["orderType"] for a in paper.admin("GET", "/paper/v1/algoOrders?symbol=ETHUSDT")}
    assert held == {int(stop["id"]): "STOP_MARKET", int(take["id"]): "TAKE_PROFIT_MARKET"}
    trigger = {"trigger": True}
    waiting = exchange.fetch_open_orders(SYMBOL, params=trigger)
    assert sorted(o["id"] for o in waiting) == sorted([stop["id"], take["id"]])
    assert exchange.fetch_order(take["id"], SYMBOL, trigger)["triggerPrice"] == pytest.approx(3600)
    exchange.cancel_order(stop["id"], SYMBOL, trigger)
    assert [o["id"] for o in exchange.fetch_open_orders(SYMBOL, params=trigger)] == [take["id"]]
    close_all = {"stopLossPrice": 3000, "closePosition": True}
    exchange.create_order(SYMBOL, "market", "sell", None, None, close_all)
    with pytest.raises(ccxt.BaseError) as second:
        exchange.create_order(SYMBOL, "market", "sell", None, None, {**close_all, "stopLossPrice": 2900})
    assert "-4130" in str(second.value)
    paper.set_price("ETHUSDT", "3650.00")
    assert [p for p in exchange.fetch_positions([SYMBOL]) if p["contracts"]] == []


def test_ccxt_reads_the_book_and_last_price_tickers(exchange: Any) -> None:
    """`fetch_bids_asks` reads `/fapi/v1/ticker/bookTicker` and `fetch_last_prices` `/fapi/v2/ticker/price`;
    `fetch_tickers()` reads every symbol's 24h ticker."""
    book = exchange.fetch_bids_asks([SYMBOL])[SYMBOL]
    assert book["bid"] < 3300 < book["ask"]
    assert exchange.fetch_last_prices([SYMBOL])[SYMBOL]["price"] == pytest.approx(3300.0)
    assert SYMBOL in exchange.fetch_tickers()


def test_ccxt_sees_the_venues_error_codes(exchange: Any) -> None:
    """An order above the margin (-2019) and an unknown order (-2013) come back with the venue's code."""
    with pytest.raises(ccxt.BaseError) as margin:
        exchange.create_order(SYMBOL, "market", "buy", 100)  # 330,000 USDT at 20x: 16,500 of margin, 10,000 held
    assert "-2019" in str(margin.value)
    with pytest.raises(ccxt.BaseError) as unknown:
        exchange.fetch_order("123", SYMBOL)
    assert "-2013" in str(unknown.value)
