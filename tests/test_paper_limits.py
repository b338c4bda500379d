"""Rate limits on the paper exchange: weight and order-count headers, 429 with Retry-After, 418 bans."""

from __future__ import annotations

from paper_fixtures import PaperExchange


def test_every_response_carries_the_used_weight_with_binance_weights(paper: PaperExchange) -> None:
    """Weights add up per endpoint: account 5, GET order 1, openOrders without symbol 40, POST order 0."""
    first = paper.signed("GET", "/fapi/v2/account")
    assert first.headers["X-MBX-USED-WEIGHT-1M"] == "5"
    order = paper.signed(
        "POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002"}
    )
    assert order.headers["X-MBX-USED-WEIGHT-1M"] == "5"
    assert (order.headers["X-MBX-ORDER-COUNT-10S"], order.headers["X-MBX-ORDER-COUNT-1M"]) == ("1", "1")
    query = paper.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": order.json()["orderId"]})
    assert query.headers["X-MBX-USED-WEIGHT-1M"] == "6"
    assert "X-MBX-ORDER-COUNT-10S" not in query.headers
    everything = paper.signed("GET", "/fapi/v1/openOrders")
    assert everything.headers["X-MBX-USED-WEIGHT-1M"] == "46"
    one_symbol = paper.signed("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"})
    assert one_symbol.headers["X-MBX-USED-WEIGHT-1M"] == "47"
    all_orders = paper.signed("GET", "/fapi/v1/allOrders", {"symbol": "BTCUSDT"})
    assert all_orders.headers["X-MBX-USED-WEIGHT-1M"] == "52"
    error = paper.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": 1})
    assert error.headers["X-MBX-USED-WEIGHT-1M"] == "53"


def test_going_over_the_weight_limit_gets_429_then_continued_abuse_gets_418(paper: PaperExchange) -> None:
    """Past the (lowered) weight limit: 429 -1003 with Retry-After; more requests in the window: 418."""
    paper.admin("POST", "/paper/v1/config", {"limits": {"weight_per_min": 20, "ban_after": 2, "ban_s": 30}})
    for used in ("5", "10", "15", "20"):
        assert paper.signed("GET", "/fapi/v2/balance").headers["X-MBX-USED-WEIGHT-1M"] == used
    limited = paper.signed("GET", "/fapi/v2/balance")
    assert limited.status_code == 429
    assert limited.json()["code"] == -1003
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert paper.signed("GET", "/fapi/v2/balance").status_code == 429
    banned = paper.signed("GET", "/fapi/v2/balance")
    assert banned.status_code == 418
    assert banned.json()["code"] == -1003
    assert banned.json()["msg"].startswith("Way too many requests; IP banned until")
    assert 0 < int(banned.headers["Retry-After"]) <= 30
    assert paper.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": 1}).status_code == 418
    stats = paper.stats()
    assert (stats["http_429"], stats["http_418"], stats["limit_violations"]) == (2, 2, 3)


def test_too_many_new_orders_get_1015_with_http_429(paper: PaperExchange) -> None:
    """Past the (lowered) 10-second order limit an order gets -1015 and HTTP 429 with Retry-After."""
    paper.admin("POST", "/paper/v1/config", {"orders_per_10s": 3})
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002"}
    for count in ("1", "2", "3"):
        assert paper.signed("POST", "/fapi/v1/order", order).headers["X-MBX-ORDER-COUNT-10S"] == count
    refused = paper.signed("POST", "/fapi/v1/order", order)
    assert refused.status_code == 429
    assert refused.json() == {"code": -1015, "msg": "Too many new orders; current limit is 3 orders per 10 SECOND."}
    assert int(refused.headers["Retry-After"]) <= 10
    assert len(paper.orders()) == 3


def test_exchange_info_advertises_the_configured_limits(paper: PaperExchange) -> None:
    """rateLimits in exchangeInfo follow the configuration (Binance's defaults at start)."""
    limits = paper.client().futures_exchange_info()["rateLimits"]
    assert [(r["rateLimitType"], r["limit"]) for r in limits] == [
        ("REQUEST_WEIGHT", 2400),
        ("ORDERS", 1200),
        ("ORDERS", 300),
    ]
