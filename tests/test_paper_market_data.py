"""Public market data of the paper exchange: ping, time, exchangeInfo, prices, depth and klines."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import requests
from paper_fixtures import PaperExchange

from qexec.paper.catalogue import built_in
from qexec.paper.prices import PriceBook


def test_ping_and_time_answer_on_futures_and_spot_paths(paper: PaperExchange) -> None:
    """futures_ping/futures_time and the spot ping/time that Client(ping=True) uses all answer."""
    client = paper.client()
    assert client.futures_ping() == {}
    assert abs(client.futures_time()["serverTime"] - time.time() * 1000) < 5000
    assert client.ping() == {}
    assert "serverTime" in client.get_server_time()


def test_exchange_info_lists_the_catalogue_with_binance_filters(paper: PaperExchange) -> None:
    """exchangeInfo has at least 20 USDT perpetuals with PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, MIN_NOTIONAL."""
    info = paper.client().futures_exchange_info()
    symbols = {s["symbol"]: s for s in info["symbols"]}
    assert len(symbols) >= 20
    assert {"BTCUSDT", "ETHUSDT", "AVAXUSDT", "NEARUSDT", "LINKUSDT", "AXSUSDT"} <= set(symbols)
    btc = {f["filterType"]: f for f in symbols["BTCUSDT"]["filters"]}
    assert btc["MIN_NOTIONAL"]["notional"] == "100"
    assert {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE"} <= set(btc)
    assert symbols["AVAXUSDT"]["contractType"] == "PERPETUAL"
    assert {f["filterType"]: f for f in symbols["AVAXUSDT"]["filters"]}["MIN_NOTIONAL"]["notional"] == "5"


def test_mark_price_and_tickers_follow_the_admin_price(paper: PaperExchange) -> None:
    """premiumIndex, v2 ticker (client) and v1 ticker (raw) show a price set through the admin route."""
    paper.set_price("AXSUSDT", "4.321")
    client = paper.client()
    assert Decimal(client.futures_mark_price(symbol="AXSUSDT")["markPrice"]) == Decimal("4.321")
    assert client.futures_symbol_ticker(symbol="AXSUSDT")["price"] == "4.321"
    v1 = requests.get(f"{paper.url}/fapi/v1/ticker/price", params={"symbol": "AXSUSDT"}, timeout=5).json()
    assert Decimal(v1["price"]) == Decimal("4.321")
    assert len(client.futures_mark_price()) >= 20
    assert client.futures_orderbook_ticker(symbol="AXSUSDT")["bidPrice"] == "4.320"


def test_order_book_honours_the_limit_around_the_mark(paper: PaperExchange) -> None:
    """depth returns `limit` levels a side, bids below and asks above the mark."""
    paper.set_price("NEARUSDT", "2.500")
    book = paper.client().futures_order_book(symbol="NEARUSDT", limit=10)
    assert len(book["bids"]) == len(book["asks"]) == 10
    assert Decimal(book["bids"][0][0]) < Decimal("2.500") < Decimal(book["asks"][0][0])


def test_klines_come_from_the_generated_history(paper: PaperExchange) -> None:
    """klines honour interval, limit and startTime, and the last close is the current mark."""
    paper.set_price("LINKUSDT", "15.000")
    client = paper.client()
    candles = client.futures_klines(symbol="LINKUSDT", interval="5m", limit=12)
    assert len(candles) == 12
    assert all(b[0] - a[0] == 300_000 for a, b in itertools.pairwise(candles))
    assert candles[-1][4] == "15.000"
    start = candles[2][0]
    later = client.futures_klines(symbol="LINKUSDT", interval="5m", startTime=start, limit=3)
    assert [c[0] for c in later] == [c[0] for c in candles[2:5]]


def test_the_price_walk_is_reproducible_from_its_seed() -> None:
    """Two price books with the same seed walk the same way; another seed walks differently."""
    runs = []
    for seed in (7, 7, 8):
        book = PriceBook(built_in(), seed, 1_700_000_000_000)
        for step in range(20):
            book.walk(1_700_000_000_000 + step * 1000)
        runs.append(dict(book.marks))
    assert runs[0] == runs[1] != runs[2]


def test_exchange_info_file_replaces_the_catalogue_and_its_filters_apply(
    tmp_path: Path, start_paper_server: Callable[..., PaperExchange]
) -> None:
    """--exchange-info serves a real exchangeInfo's symbols; --prices sets their marks; -4023/-4004 apply."""
    entry = {
        "symbol": "HALFUSDT",
        "status": "TRADING",
        "contractType": "PERPETUAL",
        "baseAsset": "HALF",
        "quoteAsset": "USDT",
        "pricePrecision": 2,
        "quantityPrecision": 1,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000", "tickSize": "0.01"},
            {"filterType": "LOT_SIZE", "minQty": "2", "maxQty": "1000", "stepSize": "0.5"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "2", "maxQty": "100", "stepSize": "0.5"},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
        ],
    }
    info = tmp_path / "exchangeInfo.json"
    info.write_text(json.dumps({"symbols": [entry]}))
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"HALFUSDT": 10}))
    server = start_paper_server("--tick-ms", "0", "--exchange-info", str(info), "--prices", str(prices))
    served = server.client().futures_exchange_info()["symbols"]
    assert [s["symbol"] for s in served] == ["HALFUSDT"]
    assert server.admin("GET", "/paper/v1/prices") == {"HALFUSDT": "10"}
    order = {"symbol": "HALFUSDT", "side": "BUY", "type": "MARKET"}
    assert server.signed("POST", "/fapi/v1/order", {**order, "quantity": "2.3"}).json()["code"] == -4023
    assert server.signed("POST", "/fapi/v1/order", {**order, "quantity": "1.5"}).json()["code"] == -4004
    assert server.signed("POST", "/fapi/v1/order", {**order, "quantity": "2.5"}).status_code == 200


def test_prices_walk_when_ticking(start_paper_server: Callable[..., PaperExchange]) -> None:
    """With --tick-ms the marks move on their own."""
    server = start_paper_server("--tick-ms", "50")
    before = server.admin("GET", "/paper/v1/prices")
    time.sleep(0.4)
    assert server.admin("GET", "/paper/v1/prices") != before


def used_weight(response: requests.Response) -> int:
    """The ``X-MBX-USED-WEIGHT-1M`` a response reports."""
    return int(response.headers["X-MBX-USED-WEIGHT-1M"])


def test_24hr_ticker_has_binances_fields_and_types_and_weighs_1_or_40(paper: PaperExchange) -> None:
    """`/fapi/v1/ticker/24hr`: Binance's sixteen fields, decimals as strings and times, ids and count as integers,
    the last price the mark and the range around it, lastQty the last fill's; weight 1 for a symbol, 40 for all."""
    paper.set_price("ETHUSDT", "3300.00")
    url = f"{paper.url}/fapi/v1/ticker/24hr"
    one = requests.get(url, params={"symbol": "ETHUSDT"}, timeout=5)
    every = requests.get(url, timeout=5)
    assert one.status_code == every.status_code == 200
    again = requests.get(url, params={"symbol": "BTCUSDT"}, timeout=5)
    assert (used_weight(every) - used_weight(one), used_weight(again) - used_weight(every)) == (40, 1)
    ticker = one.json()
    decimals = "priceChange priceChangePercent weightedAvgPrice lastPrice lastQty openPrice highPrice lowPrice"
    decimals += " volume quoteVolume"
    integers = "openTime closeTime firstId lastId count"
    assert set(ticker) == {"symbol", *decimals.split(), *integers.split()}
    assert all(isinstance(ticker[k], str) and Decimal(ticker[k]) == Decimal(ticker[k]) for k in decimals.split())
    assert all(isinstance(ticker[k], int) for k in integers.split())
    assert (ticker["symbol"], ticker["lastPrice"]) == ("ETHUSDT", "3300.00")
    assert Decimal(ticker["lowPrice"]) <= Decimal("3300.00") <= Decimal(ticker["highPrice"])
    assert Decimal(ticker["priceChange"]) == Decimal("3300.00") - Decimal(ticker["openPrice"])
    assert ticker["closeTime"] - ticker["openTime"] <= 24 * 3600 * 1000
    assert len(every.json()) == len(paper.client().futures_exchange_info()["symbols"])
    paper.client().futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.020")
    assert requests.get(url, params={"symbol": "ETHUSDT"}, timeout=5).json()["lastQty"] == "0.020"


def test_price_and_book_tickers_answer_one_symbol_or_all(paper: PaperExchange) -> None:
    """`/fapi/v1/ticker/price` and `/fapi/v1/ticker/bookTicker` give an object for a symbol and a list without one;
    the book brackets the mark."""
    paper.set_price("LINKUSDT", "14.000")
    price = requests.get(f"{paper.url}/fapi/v1/ticker/price", params={"symbol": "LINKUSDT"}, timeout=5).json()
    assert (price["symbol"], price["price"], type(price["time"])) == ("LINKUSDT", "14.000", int)
    book = requests.get(f"{paper.url}/fapi/v1/ticker/bookTicker", params={"symbol": "LINKUSDT"}, timeout=5).json()
    assert {"symbol", "bidPrice", "bidQty", "askPrice", "askQty", "time", "lastUpdateId"} <= set(book)
    assert Decimal(book["bidPrice"]) < Decimal("14.000") < Decimal(book["askPrice"])
    for path in ("/fapi/v1/ticker/price", "/fapi/v1/ticker/bookTicker"):
        every = requests.get(paper.url + path, timeout=5).json()
        assert isinstance(every, list) and "LINKUSDT" in {t["symbol"] for t in every}
