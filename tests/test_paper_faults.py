"""Scripted bad days on the paper exchange: 503s before and after executing, slow replies, partial fills."""

from __future__ import annotations

import time

import pytest
import requests
from binance.exceptions import BinanceAPIException
from paper_fixtures import PaperExchange

MARKET = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002"}


def place(paper: PaperExchange, client_id: str, **extra: str) -> BinanceAPIException:
    """Place a MARKET order expecting an API error, and return it."""
    with pytest.raises(BinanceAPIException) as caught:
        paper.client().futures_create_order(**MARKET, newClientOrderId=client_id, **extra)
    return caught.value


def test_503_after_executing_leaves_the_order_at_the_venue(paper: PaperExchange) -> None:
    """ "Unknown error" 503 after execution: the client sees an error, yet the order exists and filled."""
    paper.add_fault(kind="unknown_after")
    error = place(paper, "intent-after")
    assert error.status_code == 503
    assert error.message == "Unknown error, please check your request or try again later."
    order = paper.client().futures_get_order(symbol="BTCUSDT", origClientOrderId="intent-after")
    assert order["status"] == "FILLED"


def test_503_before_executing_leaves_no_order(paper: PaperExchange) -> None:
    """The same 503 before execution: nothing exists, the query gets -2013."""
    paper.add_fault(kind="unknown_before")
    assert place(paper, "intent-before").status_code == 503
    with pytest.raises(BinanceAPIException) as caught:
        paper.client().futures_get_order(symbol="BTCUSDT", origClientOrderId="intent-before")
    assert caught.value.code == -2013
    assert paper.orders() == []


def test_service_unavailable_is_a_503_that_executed_nothing(paper: PaperExchange) -> None:
    """ "Service Unavailable." 503 places nothing."""
    paper.add_fault(kind="unavailable")
    error = place(paper, "intent-unavailable")
    assert (error.status_code, error.message) == (503, "Service Unavailable.")
    assert paper.orders() == []


def test_slow_response_times_the_client_out_while_the_order_executes(paper: PaperExchange) -> None:
    """A reply slower than the client's timeout raises ReadTimeout, but the order is at the venue."""
    paper.add_fault(kind="slow", delay_ms=1500)
    with pytest.raises(requests.exceptions.ReadTimeout):
        paper.client().futures_create_order(**MARKET, newClientOrderId="intent-slow", requests_params={"timeout": 0.5})
    order = paper.client().futures_get_order(symbol="BTCUSDT", origClientOrderId="intent-slow")
    assert order["status"] == "FILLED"


@pytest.mark.parametrize(("executed", "orders"), [(True, 1), (False, 0)])
def test_backend_timeout_1007_may_or_may_not_have_executed(paper: PaperExchange, executed: bool, orders: int) -> None:
    """-1007 answers with the order executed or not, as scripted."""
    paper.add_fault(kind="timeout", executed=executed)
    error = place(paper, "intent-timeout")
    assert error.code == -1007
    assert len(paper.orders(clientOrderId="intent-timeout")) == orders


def test_scripted_rejection_uses_the_given_code_message_and_status(paper: PaperExchange) -> None:
    """A reject fault answers with its code, msg and HTTP status and places nothing."""
    paper.add_fault(kind="reject", code=-1008, msg="Request throttled by system-level protection.", status=503)
    error = place(paper, "intent-reject")
    assert (error.code, error.status_code) == (-1008, 503)
    assert paper.orders() == []


def test_timestamp_fault_answers_1021(paper: PaperExchange) -> None:
    """A timestamp fault answers -1021 as if the clock had drifted."""
    paper.add_fault(kind="timestamp")
    assert place(paper, "intent-clock").code == -1021


def test_partial_market_fill_ends_expired_with_some_quantity(paper: PaperExchange) -> None:
    """A partial_fill MARKET order ends EXPIRED with 0 < executedQty < origQty."""
    paper.add_fault(kind="partial_fill", ratio=0.5)
    order = paper.client().futures_create_order(
        symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010", newOrderRespType="RESULT"
    )
    assert (order["status"], order["executedQty"], order["origQty"]) == ("EXPIRED", "0.005", "0.010")


def test_partial_limit_fill_stays_partially_filled_until_cancelled(paper: PaperExchange) -> None:
    """A partial_fill marketable LIMIT stays PARTIALLY_FILLED; cancelling keeps the executed part."""
    paper.set_price("ETHUSDT", "3300.00")
    paper.add_fault(kind="partial_fill", ratio=0.3)
    client = paper.client()
    order = client.futures_create_order(
        symbol="ETHUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="GTC",
        quantity="1.000",
        price="3400.00",
        newOrderRespType="RESULT",
    )
    assert (order["status"], order["executedQty"]) == ("PARTIALLY_FILLED", "0.300")
    paper.set_price("ETHUSDT", "3200.00")
    assert client.futures_get_order(symbol="ETHUSDT", orderId=order["orderId"])["status"] == "PARTIALLY_FILLED"
    cancelled = client.futures_cancel_order(symbol="ETHUSDT", orderId=order["orderId"])
    assert (cancelled["status"], cancelled["executedQty"]) == ("CANCELED", "0.300")


def test_fill_delay_fault_applies_to_the_next_n_orders_only(paper: PaperExchange) -> None:
    """fill_delay with count 2 leaves two orders NEW for a while; the third fills at once."""
    paper.add_fault(kind="fill_delay", delay_ms=400, count=2)
    client = paper.client()
    ids = [client.futures_create_order(**MARKET)["orderId"] for _ in range(3)]
    statuses = [client.futures_get_order(symbol="BTCUSDT", orderId=i)["status"] for i in ids]
    assert statuses == ["NEW", "NEW", "FILLED"]
    time.sleep(0.6)
    statuses = [client.futures_get_order(symbol="BTCUSDT", orderId=i)["status"] for i in ids]
    assert statuses == ["FILLED", "FILLED", "FILLED"]


def test_faults_match_by_symbol_and_client_order_id_and_can_be_listed_and_cleared(paper: PaperExchange) -> None:
    """A fault fires only on its symbol/client id; unfired faults are listed and DELETE clears them."""
    paper.add_fault(kind="unknown_before", client_order_id="only-this")
    paper.add_fault(kind="unknown_before", symbol="ETHUSDT", count=3)
    client = paper.client()
    client.futures_create_order(**MARKET, newClientOrderId="not-this")
    assert place(paper, "only-this").status_code == 503
    remaining = paper.admin("GET", "/paper/v1/faults")["faults"]
    assert [(f["symbol"], f["count"], f["fired"]) for f in remaining] == [("ETHUSDT", 3, 0)]
    assert paper.admin("DELETE", "/paper/v1/faults") == {"faults": []}
    assert paper.stats()["faults_fired"] == {"unknown_before": 1}


def test_a_fault_can_target_any_endpoint(paper: PaperExchange) -> None:
    """A fault on GET /fapi/v1/order makes the status query fail once."""
    client = paper.client()
    order = client.futures_create_order(**MARKET)
    paper.add_fault(kind="unavailable", endpoint="GET /fapi/v1/order")
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])
    assert caught.value.status_code == 503
    assert client.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])["status"] == "FILLED"


def test_rate_limit_fault_bans_for_the_given_seconds(paper: PaperExchange) -> None:
    """A rate_limit fault answers 418 with Retry-After and keeps refusing until the ban ends."""
    paper.add_fault(kind="rate_limit", status=418, seconds=0.5)
    error = place(paper, "intent-ban")
    assert (error.status_code, error.code) == (418, -1003)
    assert error.response.headers["Retry-After"] == "1"
    assert paper.signed("GET", "/fapi/v2/balance").status_code == 418
    time.sleep(0.6)
    assert paper.signed("GET", "/fapi/v2/balance").status_code == 200


def test_chaos_mode_fires_faults_at_random_with_a_seed(paper: PaperExchange) -> None:
    """With chaos probabilities set, faults fire on their own and are counted in stats."""
    paper.admin("POST", "/paper/v1/config", {"chaos": {"seed": 3, "probabilities": {"unknown_before": 1.0}}})
    assert place(paper, "intent-chaos").status_code == 503
    paper.admin("POST", "/paper/v1/config", {"chaos": {}})
    paper.client().futures_create_order(**MARKET)
    assert paper.stats()["faults_fired"] == {"unknown_before": 1}
