"""Algo (conditional) orders on the paper exchange: placement, triggers, trailing stops, cancellation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from binance.exceptions import BinanceAPIException
from paper_fixtures import PaperExchange


def open_long(paper: PaperExchange, symbol: str, price: str, qty: str) -> None:
    """Set the mark and buy ``qty`` at market."""
    paper.set_price(symbol, price)
    paper.client().futures_create_order(symbol=symbol, side="BUY", type="MARKET", quantity=qty)


def test_stop_market_through_python_binance_becomes_an_algo_order(paper: PaperExchange) -> None:
    """futures_create_order(type=STOP_MARKET) lands on /fapi/v1/algoOrder and waits as NEW."""
    open_long(paper, "BTCUSDT", "95000.0", "0.002")
    client = paper.client()
    algo = client.futures_create_order(
        symbol="BTCUSDT", side="SELL", type="STOP_MARKET", stopPrice="90000", closePosition="true"
    )
    assert (algo["algoType"], algo["orderType"], algo["algoStatus"]) == ("CONDITIONAL", "STOP_MARKET", "NEW")
    assert algo["triggerPrice"] == "90000.0"
    assert algo["clientAlgoId"].startswith("x-Cb7ytekJ")
    listed = client.futures_get_open_orders(symbol="BTCUSDT", conditional=True)
    assert [a["algoId"] for a in listed] == [algo["algoId"]]
    assert client.futures_get_open_orders(symbol="BTCUSDT") == []


def test_stop_loss_with_close_position_triggers_on_a_price_move_and_closes_the_position(
    paper: PaperExchange,
) -> None:
    """A SL closePosition fires when the mark falls through it: position flat, loss realised in the wallet."""
    open_long(paper, "ETHUSDT", "3300.00", "1.000")
    client = paper.client()
    wallet_before = Decimal(client.futures_account_balance()[0]["balance"])
    algo = client.futures_create_order(
        symbol="ETHUSDT",
        side="SELL",
        type="STOP_MARKET",
        stopPrice="3200",
        closePosition="true",
        workingType="MARK_PRICE",
    )
    paper.set_price("ETHUSDT", "3250.00")
    assert client.futures_get_order(algoId=algo["algoId"])["algoStatus"] == "NEW"
    paper.set_price("ETHUSDT", "3190.00")
    done = client.futures_get_order(algoId=algo["algoId"])
    assert done["algoStatus"] == "FINISHED"
    assert done["actualQty"] == "1.000"
    actual = client.futures_get_order(symbol="ETHUSDT", orderId=int(done["actualOrderId"]))
    assert (actual["status"], actual["origType"], actual["type"]) == ("FILLED", "STOP_MARKET", "MARKET")
    assert client.futures_position_information(symbol="ETHUSDT") == []
    wallet_after = Decimal(client.futures_account_balance()[0]["balance"])
    assert wallet_after - wallet_before == pytest.approx(Decimal("-110") - Decimal("1.6"), abs=Decimal("2"))


def test_take_profit_with_close_position_closes_a_short_in_profit(paper: PaperExchange) -> None:
    """A TP BUY closePosition on a short fires when the mark falls to it, realising the profit."""
    paper.set_price("SOLUSDT", "180.0000")
    client = paper.client()
    client.futures_create_order(symbol="SOLUSDT", side="SELL", type="MARKET", quantity="10")
    algo = client.futures_create_order(
        symbol="SOLUSDT", side="BUY", type="TAKE_PROFIT_MARKET", stopPrice="170", closePosition="true"
    )
    paper.set_price("SOLUSDT", "169.0000")
    done = client.futures_get_order(clientAlgoId=algo["clientAlgoId"])
    assert done["algoStatus"] == "FINISHED"
    (trade,) = client.futures_account_trades(symbol="SOLUSDT", orderId=int(done["actualOrderId"]))
    assert Decimal(trade["realizedPnl"]) > 100
    assert client.futures_position_information(symbol="SOLUSDT") == []


def test_stop_already_through_the_mark_gets_2021(paper: PaperExchange) -> None:
    """A SELL stop above the mark would trigger at once: -2021."""
    open_long(paper, "BTCUSDT", "95000.0", "0.002")
    with pytest.raises(BinanceAPIException) as caught:
        paper.client().futures_create_order(
            symbol="BTCUSDT", side="SELL", type="STOP_MARKET", stopPrice="96000", closePosition="true"
        )
    assert (caught.value.code, caught.value.message) == (-2021, "Order would immediately trigger.")


def test_close_position_algo_is_cancelled_when_the_position_is_already_gone(paper: PaperExchange) -> None:
    """A closePosition stop that fires after the position was closed does nothing and ends CANCELED."""
    open_long(paper, "AVAXUSDT", "12.770", "10")
    client = paper.client()
    algo = client.futures_create_order(
        symbol="AVAXUSDT", side="SELL", type="STOP_MARKET", stopPrice="12", closePosition="true"
    )
    client.futures_create_order(symbol="AVAXUSDT", side="SELL", type="MARKET", quantity="10", reduceOnly="true")
    paper.set_price("AVAXUSDT", "11.900")
    assert client.futures_get_order(algoId=algo["algoId"])["algoStatus"] == "CANCELED"
    assert client.futures_position_information(symbol="AVAXUSDT") == []


def test_trailing_stop_follows_the_high_and_fires_on_the_callback(paper: PaperExchange) -> None:
    """A TRAILING_STOP_MARKET activates at activatePrice, tracks the high and sells on a 1% pullback."""
    open_long(paper, "LINKUSDT", "14.000", "10")
    client = paper.client()
    algo = client.futures_create_order(
        symbol="LINKUSDT",
        side="SELL",
        type="TRAILING_STOP_MARKET",
        quantity="10",
        activatePrice="14.500",
        callbackRate="1",
        reduceOnly="true",
    )
    assert (algo["activatePrice"], algo["callbackRate"]) == ("14.500", "1")
    for price in ("13.900", "14.600", "15.000", "14.900"):
        paper.set_price("LINKUSDT", price)
        assert client.futures_get_order(algoId=algo["algoId"])["algoStatus"] == "NEW"
    paper.set_price("LINKUSDT", "14.840")
    done = client.futures_get_order(algoId=algo["algoId"])
    assert done["algoStatus"] == "FINISHED"
    assert client.futures_position_information(symbol="LINKUSDT") == []


def test_stop_limit_triggers_into_a_resting_limit_order(paper: PaperExchange) -> None:
    """A STOP (with price) becomes a LIMIT order when triggered and finishes when that fills."""
    open_long(paper, "NEARUSDT", "2.500", "100")
    client = paper.client()
    algo = client.futures_create_order(
        symbol="NEARUSDT",
        side="SELL",
        type="STOP",
        stopPrice="2.400",
        price="2.450",
        quantity="100",
        reduceOnly="true",
        timeInForce="GTC",
    )
    paper.set_price("NEARUSDT", "2.390")
    triggered = client.futures_get_order(algoId=algo["algoId"])
    assert triggered["algoStatus"] == "TRIGGERED"
    limit = client.futures_get_order(symbol="NEARUSDT", orderId=int(triggered["actualOrderId"]))
    assert (limit["type"], limit["status"], limit["price"]) == ("LIMIT", "NEW", "2.450")
    paper.set_price("NEARUSDT", "2.460")
    assert client.futures_get_order(algoId=algo["algoId"])["algoStatus"] == "FINISHED"


def test_algo_orders_are_cancelled_one_by_one_or_all_at_once(paper: PaperExchange) -> None:
    """DELETE algoOrder by clientAlgoId, then algoOpenOrders; a second cancel gets -2011."""
    open_long(paper, "BTCUSDT", "95000.0", "0.002")
    client = paper.client()
    first = client.futures_create_order(
        symbol="BTCUSDT",
        side="SELL",
        type="STOP_MARKET",
        stopPrice="90000",
        closePosition="true",
        clientAlgoId="sl-intent-1",
    )
    client.futures_create_order(
        symbol="BTCUSDT", side="SELL", type="TAKE_PROFIT_MARKET", stopPrice="99000", closePosition="true"
    )
    cancelled = client.futures_cancel_order(clientAlgoId="sl-intent-1")
    assert cancelled == {"algoId": first["algoId"], "clientAlgoId": "sl-intent-1", "code": "200", "msg": "success"}
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_cancel_order(algoId=first["algoId"])
    assert caught.value.code == -2011
    assert client.futures_cancel_all_open_orders(symbol="BTCUSDT", conditional=True)["code"] == 200
    assert client.futures_get_open_orders(symbol="BTCUSDT", conditional=True) == []
    statuses = [a["algoStatus"] for a in client.futures_get_all_orders(symbol="BTCUSDT", conditional=True)]
    assert statuses == ["CANCELED", "CANCELED"]
    with pytest.raises(BinanceAPIException) as missing:
        client.futures_get_order(algoId=42)
    assert missing.value.code == -2013


def test_duplicate_client_algo_id_is_rejected_while_open(paper: PaperExchange) -> None:
    """A second open algo order with the same clientAlgoId gets -4116."""
    open_long(paper, "BTCUSDT", "95000.0", "0.002")
    client = paper.client()
    stop = {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET", "stopPrice": "90000", "closePosition": "true"}
    client.futures_create_order(**stop, clientAlgoId="sl-dup")
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_create_order(**stop, clientAlgoId="sl-dup")
    assert caught.value.code == -4116


@pytest.mark.parametrize(("rate", "accepted"), [("20", True), ("20.1", False), ("0.05", False)])
def test_a_trailing_stop_callback_rate_may_go_up_to_twenty_percent(
    paper: PaperExchange, rate: str, accepted: bool
) -> None:
    """Binance raised the maximum `callbackRate` from 10 to 20 % (change log of 2026-10-23); outside 0.1-20: refused."""
    open_long(paper, "LINKUSDT", "14.000", "10")
    client = paper.client()
    params = dict(symbol="LINKUSDT", side="SELL", type="TRAILING_STOP_MARKET", quantity="10", reduceOnly="true")
    if accepted:
        algo = client.futures_create_order(**params, callbackRate=rate)
        assert algo["callbackRate"] == rate
        client.futures_cancel_algo_order(algoId=algo["algoId"])
    else:
        with pytest.raises(BinanceAPIException) as refused:
            client.futures_create_order(**params, callbackRate=rate)
        assert "callbackRate" in refused.value.message


def test_a_second_close_position_order_of_a_type_and_side_is_refused_with_4130(paper: PaperExchange) -> None:
    """Binance holds one closePosition order per type and side: a second STOP_MARKET gets -4130, a TAKE_PROFIT_MARKET
    beside it is fine, and once the first is canceled the second goes through."""
    open_long(paper, "LINKUSDT", "14.000", "10")
    client = paper.client()
    stop = dict(symbol="LINKUSDT", side="SELL", type="STOP_MARKET", closePosition="true")
    first = client.futures_create_order(**stop, stopPrice="13.000")
    with pytest.raises(BinanceAPIException) as refused:
        client.futures_create_order(**stop, stopPrice="12.500")
    assert refused.value.code == -4130
    client.futures_create_order(
        symbol="LINKUSDT", side="SELL", type="TAKE_PROFIT_MARKET", closePosition="true", stopPrice="15"
    )
    client.futures_cancel_algo_order(algoId=first["algoId"])
    assert client.futures_create_order(**stop, stopPrice="12.500")["algoStatus"] == "NEW"
