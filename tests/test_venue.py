"""The venue seam: python-binance against the paper exchange, and every failure mapped to qexec's own errors."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import requests
from binance.exceptions import BinanceAPIException, BinanceRequestException

from qexec.config import Settings
from qexec.errors import (
    OrderNotFound,
    OrderRejected,
    RateLimited,
    TemporaryVenueError,
    UnknownOutcome,
    VenueUnavailable,
)
from qexec.models import OrderStatus, OrderType, Side
from qexec.venue.binance import BinanceVenue, classify, translate
from qexec.venue.errors import VENUE_ERRORS, Kind


def api_error(status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None) -> BinanceAPIException:
    """The exception python-binance raises for a non-2xx answer (built from a real `requests.Response`)."""
    response = requests.Response()
    response.status_code = status
    response._content = (body if isinstance(body, str) else json.dumps(body)).encode()
    response.headers.update(headers or {})
    return BinanceAPIException(response, status, response.text)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            api_error(503, {"code": -1000, "msg": "Unknown error, please check your request or try again later."}),
            Kind.UNKNOWN,
        ),
        (api_error(503, {"code": -1001, "msg": "Service Unavailable."}), Kind.TEMPORARY),
        (api_error(400, {"code": -1007, "msg": "Timeout waiting for response from backend server."}), Kind.UNKNOWN),
        (api_error(400, {"code": -4116, "msg": "ClientOrderId is duplicated."}), Kind.UNKNOWN),
        (api_error(502, "<html>bad gateway</html>"), Kind.UNKNOWN),
        (api_error(429, {"code": -1003, "msg": "Too many requests"}, {"Retry-After": "7"}), Kind.RATE_LIMITED),
        (api_error(418, {"code": -1003, "msg": "Way too many requests; IP banned"}), Kind.RATE_LIMITED),
        (api_error(400, {"code": -2013, "msg": "Order does not exist."}), Kind.NOT_FOUND),
        (api_error(400, {"code": -2011, "msg": "Unknown order sent."}), Kind.NOT_FOUND),
        (api_error(400, {"code": -2019, "msg": "Margin is insufficient."}), Kind.REJECTED),
        (api_error(400, {"code": -4164, "msg": "Order's notional must be no smaller than 5.0"}), Kind.REJECTED),
        (
            api_error(400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}),
            Kind.TEMPORARY,
        ),
        (requests.exceptions.ReadTimeout("read timed out"), Kind.UNKNOWN),
        (requests.exceptions.ConnectTimeout("connect timed out"), Kind.TEMPORARY),
        (requests.exceptions.ConnectionError("Connection aborted: reset by peer"), Kind.UNKNOWN),
    ],
)
def test_each_venue_failure_has_one_policy(error: BaseException, kind: str) -> None:
    """The error table: unknown outcomes are looked up, temporary ones retried, rejections are terminal."""
    assert classify(error) == kind


@pytest.mark.parametrize(("code", "kind"), sorted(VENUE_ERRORS.items()))
def test_every_code_in_the_error_table_is_treated_as_listed(code: int, kind: str) -> None:
    """Each row of `VENUE_ERRORS`, answered with HTTP 400, gets its kind (rate-limit codes whatever the status)."""
    assert classify(api_error(400, {"code": code, "msg": "from the table"})) == kind


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (api_error(503, {"code": -1000, "msg": "Service Unavailable."}), Kind.TEMPORARY),
        (api_error(503, {"code": -1001, "msg": "Internal error; unable to process your request."}), Kind.TEMPORARY),
        (api_error(503, {"code": -1008, "msg": "Request throttled by system-level protection."}), Kind.TEMPORARY),
        (api_error(503, "<html>maintenance</html>"), Kind.UNKNOWN),
        (api_error(408, {"code": -1000, "msg": "timeout waiting for the backend"}), Kind.UNKNOWN),
        (api_error(500, {"code": -1000, "msg": "An unknown error occured."}), Kind.UNKNOWN),
        (api_error(400, {"code": -1000, "msg": "An unknown error occured."}), Kind.UNKNOWN),
        (api_error(429, {"code": -1015, "msg": "Too many new orders"}, {"Retry-After": "3"}), Kind.RATE_LIMITED),
        (api_error(400, {"code": -9999, "msg": "a code nobody documented"}), Kind.REJECTED),
        (api_error(401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}), Kind.REJECTED),
        (BinanceRequestException("Invalid Response: <html>"), Kind.UNKNOWN),
        (requests.exceptions.ChunkedEncodingError("connection broken"), Kind.UNKNOWN),
        (requests.exceptions.ConnectionError("NewConnectionError: [Errno 111] Connection refused"), Kind.TEMPORARY),
        (requests.exceptions.SSLError("handshake failed"), Kind.UNKNOWN),
        (ValueError("something else entirely"), Kind.UNKNOWN),
    ],
)
def test_statuses_bodies_and_transport_failures_the_code_alone_does_not_decide(error: BaseException, kind: str) -> None:
    """429/418, the three 503 bodies, 408, other 5xx, undocumented codes and transport errors."""
    assert classify(error) == kind


@pytest.mark.parametrize(
    ("kind_error", "mutating", "raised"),
    [
        (api_error(503, {"code": -1000, "msg": "Unknown error, please check your request"}), True, UnknownOutcome),
        (api_error(503, {"code": -1000, "msg": "Unknown error, please check"}), False, TemporaryVenueError),
        (api_error(400, {"code": -1008, "msg": "throttled"}), True, TemporaryVenueError),
        (api_error(400, {"code": -2013, "msg": "Order does not exist."}), False, OrderNotFound),
        (api_error(400, {"code": -2019, "msg": "Margin is insufficient."}), True, OrderRejected),
    ],
)
def test_each_kind_becomes_one_qexec_error(kind_error: BaseException, mutating: bool, raised: type) -> None:
    """Unknown outcomes matter only for requests that change something: a read is simply retried."""
    assert type(translate(kind_error, mutating=mutating)) is raised


def test_a_429_carries_its_retry_after_into_rate_limited() -> None:
    """The venue's Retry-After header becomes `retry_after_s`."""
    error = translate(api_error(429, {"code": -1003, "msg": "Too many"}, {"Retry-After": "7"}), mutating=True)
    assert isinstance(error, RateLimited)
    assert error.retry_after_s == 7


def test_clock_drift_is_resynced_and_the_call_sent_again(paper: Any) -> None:
    """-1021 once: the venue resyncs its clock offset and the second attempt answers."""
    venue = BinanceVenue(Settings(exchange_url=paper.url))
    venue.sync_clock()
    paper.add_fault(endpoint="GET /fapi/v3/balance", kind="timestamp", count=1)
    assert venue.balances()
    assert paper.stats()["errors"].get("-1021") == 1


@pytest.fixture
def venue(paper_exchange: Any) -> BinanceVenue:
    """A BinanceVenue on the session's paper exchange."""
    return BinanceVenue(Settings(exchange_url=paper_exchange.url))


def test_self_test_reports_clock_offset_rules_and_balance(venue: BinanceVenue) -> None:
    """`check` syncs the clock and reads exchange info and the USDT balance."""
    report = venue.check()
    assert report["mode"] == "paper"
    assert report["symbols"] >= 20
    assert Decimal(report["usdt_balance"]) > 0
    assert abs(report["clock_offset_ms"]) < 1000


def test_self_test_against_a_dead_venue_raises_venue_unavailable() -> None:
    """No server on the port: VenueUnavailable naming the mode and host, never a silent fallback."""
    dead = BinanceVenue(Settings(exchange_url="http://127.0.0.1:9", request_timeout_s=1))
    with pytest.raises(VenueUnavailable, match=r"paper@127\.0\.0\.1:9"):
        dead.check()


def test_a_market_order_placed_with_result_comes_back_filled(venue: BinanceVenue) -> None:
    """`newOrderRespType=RESULT` makes a MARKET order's answer its final FILLED state with a price."""
    order = venue.place_order(
        symbol="BTCUSDT",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal("0.002"),
        client_order_id="qx-venue-test-1",
    )
    assert order.status is OrderStatus.FILLED
    fill = order.fill
    assert fill is not None and fill.price > 0 and fill.quantity == Decimal("0.002")
    again = venue.get_order("BTCUSDT", client_order_id="qx-venue-test-1")
    assert again.orderId == order.orderId


def test_an_unknown_client_order_id_is_order_not_found(venue: BinanceVenue) -> None:
    """-2013 from the venue becomes OrderNotFound."""
    with pytest.raises(OrderNotFound):
        venue.get_order("BTCUSDT", client_order_id="qx-never-sent")


def test_a_filter_violation_is_a_rejection_with_the_venue_code(venue: BinanceVenue) -> None:
    """An order under the minimum notional is OrderRejected carrying the venue's code (-4164)."""
    with pytest.raises(OrderRejected) as caught:
        venue.place_order(
            symbol="BTCUSDT",
            side=Side.BUY,
            order_type=OrderType.MARKET,
            quantity=Decimal("0.001"),
            client_order_id="qx-venue-test-2",
        )
    assert caught.value.code == -4164


def test_a_read_timeout_on_submit_is_an_unknown_outcome(paper_exchange: Any) -> None:
    """A submit whose answer never comes in time may have executed: UnknownOutcome, and the order exists."""
    venue = BinanceVenue(Settings(exchange_url=paper_exchange.url, request_timeout_s=0.5))
    paper_exchange.admin(
        "POST",
        "/paper/v1/faults",
        json={"endpoint": "POST /fapi/v1/order", "kind": "slow", "delay_ms": 1500, "count": 1},
    )
    with pytest.raises(UnknownOutcome):
        venue.place_order(
            symbol="ETHUSDT",
            side=Side.BUY,
            order_type=OrderType.MARKET,
            quantity=Decimal("0.05"),
            client_order_id="qx-venue-test-3",
        )
    found = BinanceVenue(Settings(exchange_url=paper_exchange.url)).get_order(
        "ETHUSDT", client_order_id="qx-venue-test-3"
    )
    assert found.status is OrderStatus.FILLED
