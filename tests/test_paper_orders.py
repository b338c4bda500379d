"""Orders on the paper exchange through python-binance: fills, ACK vs RESULT, filters and errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from binance.exceptions import BinanceAPIException
from paper_fixtures import PaperExchange


def api_error(call: object, *args: object, **kwargs: object) -> BinanceAPIException:
    """The BinanceAPIException raised by ``call``."""
    with pytest.raises(BinanceAPIException) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


def test_market_order_with_result_reports_filled_with_the_exchange_price(paper: PaperExchange) -> None:
    """A MARKET order with RESULT comes back FILLED with avgPrice, executedQty and cumQuote consistent."""
    order = paper.client().futures_create_order(
        symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002", newOrderRespType="RESULT"
    )
    assert order["status"] == "FILLED"
    assert order["executedQty"] == order["origQty"] == "0.002"
    avg = Decimal(order["avgPrice"])
    assert avg > 0
    assert Decimal(order["cumQuote"]) == pytest.approx(avg * Decimal("0.002"))
    assert isinstance(order["orderId"], int)
    assert {"cumQty", "updateTime", "time", "clientOrderId", "positionSide"} <= set(order)


def test_market_order_with_ack_reports_new_and_zero_fill(paper: PaperExchange) -> None:
    """The default ACK reply is the acceptance snapshot (NEW, nothing executed) even though it filled."""
    client = paper.client()
    ack = client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.01")
    assert (ack["status"], ack["executedQty"], ack["avgPrice"], ack["cumQuote"]) == ("NEW", "0", "0.00000", "0")
    assert client.futures_get_order(symbol="ETHUSDT", orderId=ack["orderId"])["status"] == "FILLED"


def test_delayed_market_order_is_new_then_filled_after_the_delay(paper: PaperExchange) -> None:
    """With a fill delay the order is NEW at first and FILLED once the delay has passed."""
    paper.admin("POST", "/paper/v1/config", {"fill_delay_ms": 300})
    client = paper.client()
    ack = client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    assert (ack["status"], ack["executedQty"], ack["avgPrice"]) == ("NEW", "0", "0.00000")
    assert client.futures_get_order(symbol="BTCUSDT", orderId=ack["orderId"])["status"] == "NEW"
    time.sleep(0.5)
    filled = client.futures_get_order(symbol="BTCUSDT", orderId=ack["orderId"])
    assert filled["status"] == "FILLED"
    assert Decimal(filled["avgPrice"]) > 0


def test_result_waits_for_a_delayed_fill(paper: PaperExchange) -> None:
    """RESULT waits (up to result_wait_ms) for a delayed MARKET order and reports it FILLED."""
    paper.admin("POST", "/paper/v1/config", {"fill_delay_ms": 200})
    order = paper.client().futures_create_order(
        symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002", newOrderRespType="RESULT"
    )
    assert order["status"] == "FILLED"
    assert order["executedQty"] == "0.002"


def test_result_answers_new_when_the_fill_outlasts_the_result_wait(paper: PaperExchange) -> None:
    """When the delay is longer than result_wait_ms, RESULT answers with the order as it stands (NEW)."""
    paper.admin("POST", "/paper/v1/config", {"fill_delay_ms": 800, "result_wait_ms": 100})
    client = paper.client()
    order = client.futures_create_order(
        symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002", newOrderRespType="RESULT"
    )
    assert (order["status"], order["executedQty"]) == ("NEW", "0")
    time.sleep(1.0)
    assert client.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])["status"] == "FILLED"


def test_a_zero_result_wait_answers_new_even_for_a_fill_due_in_a_millisecond(paper: PaperExchange) -> None:
    """``result_wait_ms`` 0 answers every delayed order as it stands when placed (NEW), even with many orders at
    once and a fill due 1 ms later: the answer never waits on the loop, where that fill could land first."""
    paper.admin("POST", "/paper/v1/config", {"fill_delay_ms": 1, "result_wait_ms": 0})
    client = paper.client()

    def place(_: int) -> str:
        order = client.futures_create_order(
            symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002", newOrderRespType="RESULT"
        )
        return str(order["status"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(place, range(96)))
    assert statuses == ["NEW"] * 96


def test_limit_order_rests_until_the_mark_crosses_it_and_pays_the_maker_fee(paper: PaperExchange) -> None:
    """A LIMIT BUY under the mark stays NEW and fills at its price, as maker, when the mark falls to it."""
    paper.set_price("LINKUSDT", "14.000")
    client = paper.client()
    order = client.futures_create_order(
        symbol="LINKUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="10", price="13.500"
    )
    assert order["status"] == "NEW"
    assert [o["orderId"] for o in client.futures_get_open_orders(symbol="LINKUSDT")] == [order["orderId"]]
    paper.set_price("LINKUSDT", "13.400")
    filled = client.futures_get_order(symbol="LINKUSDT", orderId=order["orderId"])
    assert (filled["status"], filled["avgPrice"][:6]) == ("FILLED", "13.500")
    (trade,) = client.futures_account_trades(symbol="LINKUSDT")
    assert trade["maker"] is True
    assert Decimal(trade["commission"]) == Decimal("135") * Decimal("0.0002")


def test_marketable_limit_order_fills_at_once(paper: PaperExchange) -> None:
    """A LIMIT BUY above the mark fills immediately, no worse than its limit."""
    paper.set_price("AVAXUSDT", "12.770")
    order = paper.client().futures_create_order(
        symbol="AVAXUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="GTC",
        quantity="5",
        price="13.000",
        newOrderRespType="RESULT",
    )
    assert order["status"] == "FILLED"
    assert Decimal(order["avgPrice"]) <= Decimal("13.000")


def test_ioc_limit_that_cannot_fill_expires(paper: PaperExchange) -> None:
    """An IOC LIMIT away from the mark ends EXPIRED with nothing executed."""
    paper.set_price("AVAXUSDT", "12.770")
    order = paper.client().futures_create_order(
        symbol="AVAXUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="IOC",
        quantity="5",
        price="12.000",
        newOrderRespType="RESULT",
    )
    assert (order["status"], order["executedQty"]) == ("EXPIRED", "0")


def test_fok_that_cannot_fill_is_rejected(paper: PaperExchange) -> None:
    """A FOK LIMIT that cannot fill at once gets -5021."""
    error = api_error(
        paper.client().futures_create_order,
        symbol="AVAXUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="FOK",
        quantity="5",
        price="10.000",
    )
    assert error.code == -5021


def test_post_only_limit_that_would_take_is_rejected(paper: PaperExchange) -> None:
    """A GTX (post-only) LIMIT through the mark gets -5022."""
    paper.set_price("AVAXUSDT", "12.770")
    error = api_error(
        paper.client().futures_create_order,
        symbol="AVAXUSDT",
        side="SELL",
        type="LIMIT",
        timeInForce="GTX",
        quantity="5",
        price="12.500",  # through the mark, inside the PERCENT_PRICE band (12.13 and up)
    )
    assert (error.code, error.status_code) == (-5022, 400)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOPEUSDT", "type": "MARKET", "quantity": "1"}, -1121),
        ({"symbol": "BTCUSDT", "type": "MARKET"}, -1102),
        ({"symbol": "BTCUSDT", "type": "MARKET", "quantity": "abc"}, -1102),
        ({"symbol": "BTCUSDT", "type": "WHATEVER", "quantity": "0.002"}, -1116),
        ({"symbol": "BTCUSDT", "type": "LIMIT", "quantity": "0.002", "price": "90000.0"}, -1102),
        (
            {"symbol": "BTCUSDT", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.002", "price": "90000.001"},
            -1111,
        ),
        ({"symbol": "AVAXUSDT", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "12.0005"}, -4014),
        ({"symbol": "LINKUSDT", "type": "MARKET", "quantity": "1.505"}, -1111),
        ({"symbol": "BTCUSDT", "type": "MARKET", "quantity": "0.0005"}, -1111),
        ({"symbol": "BTCUSDT", "type": "MARKET", "quantity": "-1"}, -4003),
        ({"symbol": "BTCUSDT", "type": "MARKET", "quantity": "200"}, -4005),
        ({"symbol": "AVAXUSDT", "type": "MARKET", "quantity": "0.5"}, -1111),
        ({"symbol": "BTCUSDT", "type": "MARKET", "quantity": "0.001"}, -4164),
        ({"symbol": "AVAXUSDT", "type": "MARKET", "quantity": "50000"}, -2019),
        ({"symbol": "BTCUSDT", "type": "MARKET", "quantity": "0.002", "reduceOnly": "true"}, -2022),
        ({"symbol": "BTCUSDT", "type": "MARKET", "quantity": "0.002", "positionSide": "LONG"}, -4061),
        ({"symbol": "BTCUSDT", "type": "MARKET", "quantity": "0.002", "newClientOrderId": "x" * 37}, -4015),
        ({"symbol": "BTCUSDT", "type": "MARKET", "quantity": "0.002", "newClientOrderId": "bad id!"}, -4015),
    ],
)
def test_orders_breaking_the_rules_get_the_venue_error_code(
    paper: PaperExchange, params: dict[str, str], code: int
) -> None:
    """Each rule of the venue answers with its own error code, HTTP 400, and places nothing."""
    response = paper.signed("POST", "/fapi/v1/order", {"side": "BUY", **params})
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["code"] == code
    assert paper.orders() == []


def test_zero_quantity_gets_4003(paper: PaperExchange) -> None:
    """A zero quantity gets -4003 (quantity less than zero)."""
    response = paper.signed(
        "POST", "/fapi/v1/order", {"symbol": "LINKUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.00"}
    )
    assert response.json()["code"] == -4003


def test_conditional_type_sent_raw_to_the_order_endpoint_gets_4120(paper: PaperExchange) -> None:
    """STOP_MARKET posted straight to /fapi/v1/order gets -4120 with the live message."""
    response = paper.signed(
        "POST",
        "/fapi/v1/order",
        {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET", "stopPrice": "90000", "quantity": "0.002"},
    )
    assert response.json() == {
        "code": -4120,
        "msg": "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
    }


def test_duplicate_client_order_id_is_rejected_only_while_the_order_is_open(paper: PaperExchange) -> None:
    """-4116 while an order with the id is open; once it is gone the id may be used again."""
    client = paper.client()
    paper.set_price("AVAXUSDT", "12.770")
    limit = {"symbol": "AVAXUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "price": "11.000"}
    client.futures_create_order(**limit, quantity="1", newClientOrderId="intent-1")
    assert api_error(client.futures_create_order, **limit, quantity="1", newClientOrderId="intent-1").code == -4116
    client.futures_cancel_order(symbol="AVAXUSDT", origClientOrderId="intent-1")
    client.futures_create_order(symbol="AVAXUSDT", side="BUY", type="MARKET", quantity="1", newClientOrderId="intent-1")
    client.futures_create_order(symbol="AVAXUSDT", side="BUY", type="MARKET", quantity="1", newClientOrderId="intent-1")
    assert len(paper.orders(clientOrderId="intent-1")) == 3


def test_query_and_cancel_of_unknown_orders_get_2013_and_2011(paper: PaperExchange) -> None:
    """Querying an unknown order gets -2013; cancelling a filled or unknown one gets -2011."""
    client = paper.client()
    assert api_error(client.futures_get_order, symbol="BTCUSDT", origClientOrderId="never").code == -2013
    assert api_error(client.futures_cancel_order, symbol="BTCUSDT", orderId=12345).code == -2011
    filled = client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    assert api_error(client.futures_cancel_order, symbol="BTCUSDT", orderId=filled["orderId"]).code == -2011


def test_open_orders_are_listed_queried_and_cancelled(paper: PaperExchange) -> None:
    """openOrders, openOrder, allOrders and allOpenOrders see and cancel resting orders."""
    client = paper.client()
    paper.set_price("NEARUSDT", "2.500")
    first = client.futures_create_order(
        symbol="NEARUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="10", price="2.000"
    )
    second = client.futures_create_order(
        symbol="NEARUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity="10", price="3.000"
    )
    assert len(client.futures_get_open_orders(symbol="NEARUSDT")) == 2
    assert len(client.futures_get_open_orders()) == 2
    one = paper.signed("GET", "/fapi/v1/openOrder", {"symbol": "NEARUSDT", "orderId": first["orderId"]})
    assert one.json()["orderId"] == first["orderId"]
    cancelled = client.futures_cancel_order(symbol="NEARUSDT", orderId=first["orderId"])
    assert cancelled["status"] == "CANCELED"
    gone = paper.signed("GET", "/fapi/v1/openOrder", {"symbol": "NEARUSDT", "orderId": first["orderId"]})
    assert gone.json()["code"] == -2013
    done = client.futures_cancel_all_open_orders(symbol="NEARUSDT")
    assert done == {"code": 200, "msg": "The operation of cancel all open order is done."}
    statuses = {o["orderId"]: o["status"] for o in client.futures_get_all_orders(symbol="NEARUSDT")}
    assert statuses == {first["orderId"]: "CANCELED", second["orderId"]: "CANCELED"}
    assert client.futures_get_open_orders(symbol="NEARUSDT") == []


def test_user_trades_list_each_fill_with_binance_fields(paper: PaperExchange) -> None:
    """userTrades lists the fills with price, qty, quoteQty, commission and realised PnL."""
    client = paper.client()
    paper.set_price("ETHUSDT", "3000.00")
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.010")
    paper.set_price("ETHUSDT", "3100.00")
    sell = client.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.010")
    trades = client.futures_account_trades(symbol="ETHUSDT")
    assert len(trades) == 2
    assert {
        "id",
        "orderId",
        "price",
        "qty",
        "quoteQty",
        "commission",
        "commissionAsset",
        "realizedPnl",
        "side",
        "positionSide",
        "buyer",
        "maker",
        "time",
    } <= set(trades[0])
    closing = client.futures_account_trades(symbol="ETHUSDT", orderId=sell["orderId"])
    assert len(closing) == 1
    assert Decimal(closing[0]["realizedPnl"]) == pytest.approx(Decimal("0.99"), abs=Decimal("0.1"))


def test_reduce_only_order_closes_no_more_than_the_position(paper: PaperExchange) -> None:
    """A reduceOnly SELL larger than the long position fills only the position and leaves it flat."""
    client = paper.client()
    client.futures_create_order(symbol="SOLUSDT", side="BUY", type="MARKET", quantity="2")
    order = client.futures_create_order(
        symbol="SOLUSDT", side="SELL", type="MARKET", quantity="5", reduceOnly="true", newOrderRespType="RESULT"
    )
    assert order["executedQty"] == "2"
    assert client.futures_position_information(symbol="SOLUSDT") == []  # v3 lists open positions only


def test_one_way_position_flips_through_zero(paper: PaperExchange) -> None:
    """Selling more than the long in one-way mode leaves a short at the fill price."""
    client = paper.client()
    paper.set_price("SOLUSDT", "180.0000")
    client.futures_create_order(symbol="SOLUSDT", side="BUY", type="MARKET", quantity="2")
    sell = client.futures_create_order(
        symbol="SOLUSDT", side="SELL", type="MARKET", quantity="5", newOrderRespType="RESULT"
    )
    (position,) = client.futures_position_information(symbol="SOLUSDT")
    assert position["positionAmt"] == "-3"
    assert Decimal(position["entryPrice"]) == Decimal(sell["avgPrice"])


def test_user_trades_are_found_by_order_and_the_time_window_is_at_most_seven_days(paper: PaperExchange) -> None:
    """`userTrades?orderId=` gives that order's fills; a startTime..endTime span over 7 days gets -1127; a startTime
    alone covers the 7 days after it (a fill 8 days after an old start is not in it)."""
    client = paper.client()
    paper.set_price("ETHUSDT", "3300.00")
    first = client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.010")
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.020")
    [fill] = client.futures_account_trades(symbol="ETHUSDT", orderId=first["orderId"])
    assert (fill["orderId"], fill["qty"]) == (first["orderId"], "0.010")
    now = int(time.time() * 1000)
    day = 24 * 3600 * 1000
    with pytest.raises(BinanceAPIException) as wide:
        client.futures_account_trades(symbol="ETHUSDT", startTime=now - 8 * day, endTime=now)
    assert wide.value.code == -1127
    assert client.futures_account_trades(symbol="ETHUSDT", startTime=now - 8 * day) == []
    assert len(client.futures_account_trades(symbol="ETHUSDT", startTime=now - day)) == 2


@pytest.mark.parametrize(
    ("side", "price", "code"), [("BUY", "3500.00", -4016), ("SELL", "3100.00", -4024)], ids=["buy", "sell"]
)
def test_a_limit_outside_the_percent_price_band_is_refused(
    paper: PaperExchange, side: str, price: str, code: int
) -> None:
    """PERCENT_PRICE (mark x 1.05 up, x 0.95 down): a BUY above the band gets -4016, a SELL below it -4024; a BUY
    far below the mark (or a SELL far above it) rests, as on Binance."""
    client = paper.client()
    paper.set_price("ETHUSDT", "3300.00")
    limit = dict(symbol="ETHUSDT", type="LIMIT", timeInForce="GTC", quantity="0.020")
    with pytest.raises(BinanceAPIException) as refused:
        client.futures_create_order(side=side, price=price, **limit)
    assert refused.value.code == code
    resting = client.futures_create_order(side=side, price="1650.00" if side == "BUY" else "6600.00", **limit)
    assert resting["status"] == "NEW"


def test_user_trades_forget_fills_older_than_the_retention_knob(paper: PaperExchange) -> None:
    """`trade_retention_s` (6 months by default) bounds what userTrades returns, by orderId too."""
    client = paper.client()
    paper.set_price("ETHUSDT", "3300.00")
    old = client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.010")
    paper.admin("POST", "/paper/v1/config", {"trade_retention_s": 0.5})
    time.sleep(0.7)
    new = client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.020")
    assert [t["orderId"] for t in client.futures_account_trades(symbol="ETHUSDT")] == [new["orderId"]]
    assert client.futures_account_trades(symbol="ETHUSDT", orderId=old["orderId"]) == []
    assert paper.admin("GET", "/paper/v1/config")["trade_retention_s"] == 0.5


def test_a_limit_price_above_the_price_filter_maximum_gets_4002(paper: PaperExchange) -> None:
    """PRICE_FILTER's maxPrice is Binance's -4002 "Price greater than max price." (-4016 is the PERCENT_PRICE cap)."""
    error = api_error(
        paper.client().futures_create_order,
        symbol="BTCUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.002",
        price="10000000.10",
    )
    assert (error.code, error.message) == (-4002, "Price greater than max price.")


@pytest.mark.parametrize("tif", ["IOC", "FOK"])
def test_an_ioc_or_fok_limit_through_the_mark_fills_at_once(paper: PaperExchange, tif: str) -> None:
    """A marketable IOC or FOK LIMIT fills in full at once and leaves nothing on the book."""
    paper.set_price("AVAXUSDT", "12.770")
    client = paper.client()
    limit = dict(symbol="AVAXUSDT", side="BUY", type="LIMIT", quantity="5", price="13.000")
    order = client.futures_create_order(timeInForce=tif, newOrderRespType="RESULT", **limit)
    assert (order["status"], order["executedQty"], order["timeInForce"]) == ("FILLED", "5", tif)
    assert client.futures_get_open_orders(symbol="AVAXUSDT") == []


def test_an_ioc_limit_that_fills_in_part_expires_the_rest(paper: PaperExchange) -> None:
    """IOC with a partial_fill fault: the executed part stays, the rest expires (nothing rests on the book)."""
    paper.set_price("AVAXUSDT", "12.770")
    paper.add_fault(kind="partial_fill", ratio=0.4)
    client = paper.client()
    order = client.futures_create_order(
        symbol="AVAXUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="IOC",
        quantity="10",
        price="13.000",
        newOrderRespType="RESULT",
    )
    assert (order["status"], order["executedQty"]) == ("EXPIRED", "4")
    assert client.futures_get_open_orders(symbol="AVAXUSDT") == []


def test_a_fok_limit_that_could_fill_only_in_part_is_rejected_and_not_recorded(paper: PaperExchange) -> None:
    """FOK is all or nothing: with a partial_fill fault it gets -5021, and no fill, position or order remains."""
    paper.set_price("AVAXUSDT", "12.770")
    paper.add_fault(kind="partial_fill", ratio=0.4)
    client = paper.client()
    error = api_error(
        client.futures_create_order,
        symbol="AVAXUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="FOK",
        quantity="10",
        price="13.000",
    )
    assert error.code == -5021
    assert client.futures_account_trades(symbol="AVAXUSDT") == []
    assert client.futures_position_information(symbol="AVAXUSDT") == []
    assert paper.orders(symbol="AVAXUSDT") == []


def test_a_post_only_limit_away_from_the_mark_rests_and_fills_as_maker(paper: PaperExchange) -> None:
    """A GTX LIMIT that would not take rests as NEW and, once the mark reaches it, fills at its price as maker."""
    paper.set_price("AVAXUSDT", "12.770")
    client = paper.client()
    order = client.futures_create_order(
        symbol="AVAXUSDT", side="BUY", type="LIMIT", timeInForce="GTX", quantity="5", price="12.500"
    )
    assert (order["status"], order["timeInForce"]) == ("NEW", "GTX")
    paper.set_price("AVAXUSDT", "12.400")
    assert client.futures_get_order(symbol="AVAXUSDT", orderId=order["orderId"])["status"] == "FILLED"
    (trade,) = client.futures_account_trades(symbol="AVAXUSDT")
    assert (trade["maker"], trade["price"]) == (True, "12.500")


def test_the_retention_is_set_from_the_command_line(start_paper_server: Callable[..., PaperExchange]) -> None:
    """`qexec paper --trade-retention-s 0.3`: a fill is in userTrades at once and gone after 0.3 s."""
    paper = start_paper_server("--tick-ms", "0", "--trade-retention-s", "0.3")
    client = paper.client()
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.010")
    assert len(client.futures_account_trades(symbol="ETHUSDT")) == 1
    time.sleep(0.5)
    assert client.futures_account_trades(symbol="ETHUSDT") == []
