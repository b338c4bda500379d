"""Request security on the paper exchange: API key, HMAC signature, timestamp window, JSON errors."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
import requests
from binance.exceptions import BinanceAPIException
from paper_fixtures import PaperExchange


def test_wrong_api_key_gets_2015_with_http_401(paper: PaperExchange) -> None:
    """A key the exchange does not know gets -2015 and HTTP 401."""
    client = paper.client()
    client.API_KEY = "someone-else"
    client.session.headers["X-MBX-APIKEY"] = "someone-else"
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_account_balance()
    assert (caught.value.code, caught.value.status_code) == (-2015, 401)
    assert caught.value.message == "Invalid API-key, IP, or permissions for action."


def test_wrong_secret_gets_1022_signature_error(paper: PaperExchange) -> None:
    """A signature made with another secret gets -1022 and HTTP 400."""
    response = paper.signed("GET", "/fapi/v2/balance", api_secret="not-the-secret")
    assert response.status_code == 400
    assert response.json() == {"code": -1022, "msg": "Signature for this request is not valid."}


def test_signature_covers_the_raw_body_so_encoded_values_fail(paper: PaperExchange) -> None:
    """python-binance signs raw values but URL-encodes the body, so an id with ':' fails with -1022."""
    with pytest.raises(BinanceAPIException) as caught:
        paper.client().futures_create_order(
            symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002", newClientOrderId="a:b"
        )
    assert caught.value.code == -1022
    assert paper.orders() == []


def test_missing_signature_gets_1102(paper: PaperExchange) -> None:
    """A signed endpoint without a signature names the missing parameter."""
    response = requests.get(
        f"{paper.url}/fapi/v2/balance?timestamp={int(time.time() * 1000)}",
        headers={"X-MBX-APIKEY": paper.api_key},
        timeout=5,
    )
    assert response.json()["code"] == -1102
    assert "'signature'" in response.json()["msg"]


def test_stale_timestamp_gets_1021_outside_the_recv_window(paper: PaperExchange) -> None:
    """A timestamp older than recvWindow gets -1021."""
    client = paper.client()
    client.timestamp_offset = -20_000
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_account_balance()
    assert caught.value.code == -1021
    assert caught.value.message == "Timestamp for this request is outside of the recvWindow."


def test_timestamp_ahead_of_the_server_gets_1021(paper: PaperExchange) -> None:
    """A timestamp more than 1000 ms ahead of the server gets -1021."""
    client = paper.client()
    client.timestamp_offset = 3_000
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_account_balance()
    assert caught.value.code == -1021
    assert "1000ms ahead" in caught.value.message


def test_default_recv_window_is_five_seconds(paper: PaperExchange) -> None:
    """Without recvWindow a 6 s old timestamp is refused; with recvWindow=10000 it passes."""
    old = int(time.time() * 1000) - 6_000
    assert paper.signed("GET", "/fapi/v2/balance", {"timestamp": old}).json()["code"] == -1021
    assert paper.signed("GET", "/fapi/v2/balance", {"timestamp": old, "recvWindow": 10000}).status_code == 200


def test_query_string_parameters_win_over_body_parameters(paper: PaperExchange) -> None:
    """When a parameter is in both the query string and the body, the query string's value is used."""
    query = "symbol=ETHUSDT"
    body = f"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.010&timestamp={int(time.time() * 1000)}"
    signature = hmac.new(paper.api_secret.encode(), (query + body).encode(), hashlib.sha256).hexdigest()
    response = requests.post(
        f"{paper.url}/fapi/v1/order?{query}",
        data=f"{body}&signature={signature}",
        headers={"X-MBX-APIKEY": paper.api_key, "Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    assert response.json()["symbol"] == "ETHUSDT"


def test_listen_key_endpoints_need_only_the_api_key(paper: PaperExchange) -> None:
    """listenKey is created, kept alive and closed with the key header alone; a wrong key gets -2015."""
    client = paper.client()
    key = client.futures_stream_get_listen_key()
    assert len(key) == 64
    assert client.futures_stream_get_listen_key() == key
    assert client.futures_stream_keepalive(listenKey=key) == {"listenKey": key}
    assert client.futures_stream_close(listenKey=key) == {}
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_stream_keepalive(listenKey=key)
    assert caught.value.code == -1125
    response = requests.post(f"{paper.url}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": "nope"}, timeout=5)
    assert (response.status_code, response.json()["code"]) == (401, -2015)


def test_every_error_is_json_with_the_json_content_type(paper: PaperExchange) -> None:
    """Errors, unknown paths included, are JSON bodies with Content-Type application/json."""
    for response in (
        requests.get(f"{paper.url}/fapi/v1/nothing-here", timeout=5),
        requests.get(f"{paper.url}/fapi/v2/balance", timeout=5),
        paper.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": 1}),
    ):
        assert response.status_code >= 400
        assert response.headers["Content-Type"] == "application/json"
        assert set(response.json()) == {"code", "msg"}
