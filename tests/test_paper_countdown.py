"""The paper exchange's dead-man switch (`POST /fapi/v1/countdownCancelAll`): a countdown per symbol, renewed or
ended by the client, that cancels the symbol's open orders (and, when configured, its algo orders) as it runs out."""

from __future__ import annotations

import time

import pytest
from binance.exceptions import BinanceAPIException
from paper_fixtures import PaperExchange


def rest_orders(paper: PaperExchange, symbol: str) -> tuple[int, int]:
    """A long position with a stop and a target, and a BUY LIMIT resting far under the mark: (order id, algo id)."""
    client = paper.client()
    paper.set_price(symbol, "95000.0")
    client.futures_create_order(symbol=symbol, side="BUY", type="MARKET", quantity="0.002")
    limit = client.futures_create_order(
        symbol=symbol, side="BUY", type="LIMIT", price="91000", quantity="0.002", timeInForce="GTC"
    )
    stop = client.futures_create_order(
        symbol=symbol, side="SELL", type="STOP_MARKET", stopPrice="90000", closePosition="true"
    )
    return int(limit["orderId"]), int(stop["algoId"])


def test_the_countdown_answers_as_binance_does_and_costs_ten_weight(paper: PaperExchange) -> None:
    """The answer echoes the symbol and the countdown as a string; the used weight grows by 10."""
    client = paper.client()
    client.futures_time()
    before = int(client.response.headers["X-MBX-USED-WEIGHT-1M"])
    answer = client.futures_countdown_cancel_all(symbol="BTCUSDT", countdownTime=60000)
    assert answer == {"symbol": "BTCUSDT", "countdownTime": "60000"}
    assert int(client.response.headers["X-MBX-USED-WEIGHT-1M"]) == before + 10
    assert client.futures_countdown_cancel_all(symbol="BTCUSDT", countdownTime=0)["countdownTime"] == "0"


def test_a_countdown_without_a_symbol_or_a_negative_time_is_refused(paper: PaperExchange) -> None:
    """-1102 for a missing or negative countdownTime, -1121 for an unknown symbol."""
    client = paper.client()
    for params, code in (
        ({"symbol": "BTCUSDT"}, -1102),
        ({"symbol": "BTCUSDT", "countdownTime": -5}, -1102),
        ({"symbol": "NOPEUSDT", "countdownTime": 1000}, -1121),
    ):
        with pytest.raises(BinanceAPIException) as refused:
            client.futures_countdown_cancel_all(**params)
        assert refused.value.code == code, params


def test_a_countdown_that_runs_out_cancels_open_orders_and_by_default_leaves_the_stops(paper: PaperExchange) -> None:
    """Renewed before it runs out, nothing happens; once it runs out the LIMIT is CANCELED and the stop still waits."""
    client = paper.client()
    order_id, algo_id = rest_orders(paper, "BTCUSDT")
    client.futures_countdown_cancel_all(symbol="BTCUSDT", countdownTime=1200)
    time.sleep(0.7)
    client.futures_countdown_cancel_all(symbol="BTCUSDT", countdownTime=1200)  # renewed: the deadline moves on
    time.sleep(0.8)
    assert client.futures_get_order(symbol="BTCUSDT", orderId=order_id)["status"] == "NEW", "renewed in time"
    time.sleep(1.0)
    assert client.futures_get_order(symbol="BTCUSDT", orderId=order_id)["status"] == "CANCELED"
    assert [a["algoId"] for a in client.futures_get_open_orders(symbol="BTCUSDT", conditional=True)] == [algo_id]


def test_with_countdown_cancels_algo_the_stops_go_too(paper: PaperExchange) -> None:
    """`countdown_cancels_algo` on: the run-out countdown also cancels the symbol's algo orders."""
    client = paper.client()
    paper.admin("POST", "/paper/v1/config", {"countdown_cancels_algo": True})
    order_id, algo_id = rest_orders(paper, "BTCUSDT")
    client.futures_countdown_cancel_all(symbol="BTCUSDT", countdownTime=500)
    time.sleep(1.2)
    assert client.futures_get_order(symbol="BTCUSDT", orderId=order_id)["status"] == "CANCELED"
    assert client.futures_get_open_orders(symbol="BTCUSDT", conditional=True) == []
    assert client.futures_get_order(symbol="BTCUSDT", algoId=algo_id, conditional=True)["algoStatus"] == "CANCELED"


def test_a_countdown_ended_with_zero_cancels_nothing(paper: PaperExchange) -> None:
    """countdownTime 0 ends the countdown: past its old deadline the orders are still open."""
    client = paper.client()
    order_id, _algo_id = rest_orders(paper, "BTCUSDT")
    client.futures_countdown_cancel_all(symbol="BTCUSDT", countdownTime=400)
    client.futures_countdown_cancel_all(symbol="BTCUSDT", countdownTime=0)
    time.sleep(0.9)
    assert client.futures_get_order(symbol="BTCUSDT", orderId=order_id)["status"] == "NEW"
