"""The paper exchange's mark-price streams: raw and combined URLs, cadence, values and refusals."""

from __future__ import annotations

from decimal import Decimal

import pytest
from paper_fixtures import PaperExchange, receive
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

MARK_FIELDS = {"e", "E", "s", "p", "i", "P", "r", "T"}


def test_mark_price_array_stream_delivers_every_symbol_with_the_admin_set_price(paper: PaperExchange) -> None:
    """``!markPrice@arr`` sends one markPriceUpdate per listed symbol at once, with premiumIndex's values."""
    paper.set_price("BTCUSDT", "91234.5")
    with connect(f"{paper.ws_url}/ws/!markPrice@arr") as ws:
        updates = receive(ws, timeout=1.0)
    client = paper.client()
    listed = {s["symbol"] for s in client.futures_exchange_info()["symbols"]}
    assert {u["s"] for u in updates} == listed
    assert all(set(u) == MARK_FIELDS and u["e"] == "markPriceUpdate" for u in updates)
    btc = next(u for u in updates if u["s"] == "BTCUSDT")
    index = client.futures_mark_price(symbol="BTCUSDT")
    assert Decimal(btc["p"]) == Decimal("91234.5")
    assert (btc["p"], btc["i"], btc["P"], btc["r"], btc["T"]) == (
        index["markPrice"],
        index["indexPrice"],
        index["estimatedSettlePrice"],
        index["lastFundingRate"],
        index["nextFundingTime"],
    )


def test_symbol_stream_follows_the_mark_every_second(paper: PaperExchange) -> None:
    """``<symbol>@markPrice@1s`` sends at once, then every second with the mark as it is then."""
    paper.set_price("ETHUSDT", "3300.00")
    with connect(f"{paper.ws_url}/market/ws/ethusdt@markPrice@1s") as ws:
        first = receive(ws, timeout=0.5)
        second = receive(ws, timeout=1.5)
    assert (first["s"], Decimal(first["p"])) == ("ETHUSDT", Decimal("3300.00"))
    assert Decimal(second["p"]) == Decimal("3300.00")
    assert 900 <= second["E"] - first["E"] <= 1300


def test_a_mark_set_by_hand_reaches_market_streams_at_once(paper: PaperExchange) -> None:
    """An admin price change is sent on every market stream right away, not at the stream's next tick."""
    with connect(f"{paper.ws_url}/market/ws/ethusdt@markPrice") as ws:  # a 3 s stream
        first = receive(ws, timeout=0.5)
        paper.set_price("ETHUSDT", "3321.55")
        moved = receive(ws, timeout=0.5)
    assert Decimal(moved["p"]) == Decimal("3321.55")
    assert moved["E"] - first["E"] < 1000


def test_combined_stream_wraps_each_frame_with_its_stream_name(paper: PaperExchange) -> None:
    """``/stream?streams=a/b`` frames are ``{"stream": name, "data": payload}``, one per stream at the start."""
    url = f"{paper.ws_url}/stream?streams=btcusdt@markPrice/!markPrice@arr@1s"
    with connect(url) as ws:
        frames = [receive(ws, timeout=1.0) for _ in range(2)]
    by_stream = {f["stream"]: f["data"] for f in frames}
    assert set(by_stream) == {"btcusdt@markPrice", "!markPrice@arr@1s"}
    assert by_stream["btcusdt@markPrice"]["s"] == "BTCUSDT"
    assert len(by_stream["!markPrice@arr@1s"]) == len(paper.admin("GET", "/paper/v1/prices"))


def test_market_base_serves_raw_and_combined_streams(paper: PaperExchange) -> None:
    """``/market/ws/<stream>`` and ``/market/stream?streams=`` serve the same streams as the legacy URLs."""
    with connect(f"{paper.ws_url}/market/ws/solusdt@markPrice") as raw:
        assert receive(raw, timeout=1.0)["s"] == "SOLUSDT"
    with connect(f"{paper.ws_url}/market/stream?streams=adausdt@markPrice@1s") as combined:
        frame = receive(combined, timeout=1.0)
    assert (frame["stream"], frame["data"]["s"]) == ("adausdt@markPrice@1s", "ADAUSDT")


@pytest.mark.parametrize(
    "path",
    [
        "/market/ws/btcusdt@kline_1m",
        "/market/ws/BTCUSDT@markPrice",
        "/market/ws/nosuchusdt@markPrice",
        "/ws/btcusdt@markPrice@5s",
        "/market/stream?streams=btcusdt@markPrice/bogus@depth",
        "/stream?streams=btcusdt@bookTicker",
    ],
)
def test_an_unknown_stream_name_is_closed_with_1008(paper: PaperExchange, path: str) -> None:
    """A stream the exchange does not serve (or no stream at all): the socket closes 1008 with a reason."""
    with connect(paper.ws_url + path) as ws, pytest.raises(ConnectionClosed) as caught:
        ws.recv(timeout=2.0)
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == 1008
    assert caught.value.rcvd.reason


def test_market_base_does_not_serve_the_user_data_stream(paper: PaperExchange) -> None:
    """A listen key on ``/market/ws/`` is not a market stream: closed 1008."""
    key = paper.client().futures_stream_get_listen_key()
    with connect(f"{paper.ws_url}/market/ws/{key}") as ws, pytest.raises(ConnectionClosed) as caught:
        ws.recv(timeout=2.0)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008


def test_a_combined_stream_can_carry_the_listen_key_next_to_mark_prices(paper: PaperExchange) -> None:
    """``/stream?streams=<listenKey>/<symbol>@markPrice``: user events arrive wrapped with the key as stream."""
    client = paper.client()
    key = client.futures_stream_get_listen_key()
    with connect(f"{paper.ws_url}/stream?streams={key}/dogeusdt@markPrice") as ws:
        mark = receive(ws, timeout=1.0)
        client.futures_create_order(symbol="DOGEUSDT", side="BUY", type="MARKET", quantity="100")
        frames = [receive(ws) for _ in range(3)]
    assert mark["stream"] == "dogeusdt@markPrice"
    assert [f["stream"] for f in frames] == [key, key, key]
    assert [f["data"]["e"] for f in frames] == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"]
