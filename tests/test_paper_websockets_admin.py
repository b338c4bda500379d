"""Operating the paper exchange's websockets: the drop hook, the counters and the cut of a client that stops reading."""

from __future__ import annotations

import time

import pytest
from paper_fixtures import PaperExchange, receive
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.sync.client import connect


def wait_for(condition: object, timeout: float = 2.0) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_ws_drop_closes_every_open_websocket_with_1012(paper: PaperExchange) -> None:
    """POST /paper/v1/ws/drop closes user-data and market connections at once; clients see an error close."""
    key = paper.client().futures_stream_get_listen_key()
    with (
        connect(f"{paper.ws_url}/private/ws?listenKey={key}") as user,
        connect(f"{paper.ws_url}/market/ws/!markPrice@arr") as market,
    ):
        receive(market, timeout=1.0)
        assert paper.stats()["ws_connections"] == 2
        assert paper.admin("POST", "/paper/v1/ws/drop") == {"dropped": 2}
        for ws in (user, market):
            with pytest.raises(ConnectionClosedError) as caught:
                ws.recv(timeout=2.0)
            assert caught.value.rcvd is not None and caught.value.rcvd.code == 1012
    assert wait_for(lambda: paper.stats()["ws_connections"] == 0)


def test_a_dropped_client_can_reconnect_with_the_same_listen_key(paper: PaperExchange) -> None:
    """After a drop the listen key is still valid: a new connection on it gets the account's events again."""
    client = paper.client()
    key = client.futures_stream_get_listen_key()
    url = f"{paper.ws_url}/private/ws?listenKey={key}"
    with connect(url) as ws:
        paper.admin("POST", "/paper/v1/ws/drop")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=2.0)
    with connect(url) as ws:
        client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
        assert receive(ws)["o"]["x"] == "NEW"


def test_stats_count_open_websockets_and_the_frames_sent(paper: PaperExchange) -> None:
    """``ws_connections`` counts open sockets; ``ws_events`` counts frames sent, user and market alike."""
    client = paper.client()
    key = client.futures_stream_get_listen_key()
    assert (paper.stats()["ws_connections"], paper.stats()["ws_events"]) == (0, 0)
    with connect(f"{paper.ws_url}/ws/{key}") as user, connect(f"{paper.ws_url}/ws/btcusdt@markPrice") as market:
        receive(market, timeout=1.0)
        client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
        [receive(user) for _ in range(3)]
        stats = paper.stats()
    assert (stats["ws_connections"], stats["ws_events"]) == (2, 4)
    assert wait_for(lambda: paper.stats()["ws_connections"] == 0)


def test_a_connection_with_more_unsent_frames_than_the_queue_limit_is_cut(paper: PaperExchange) -> None:
    """When a connection's unsent frames reach ``ws_queue_limit`` it is cut (no close frame) instead of growing."""
    paper.admin("POST", "/paper/v1/config", {"ws_queue_limit": 20})
    paper.set_price("XRPUSDT", "2.5000")
    client = paper.client()
    key = client.futures_stream_get_listen_key()
    with connect(f"{paper.ws_url}/ws/{key}") as ws:
        # Given fifteen resting orders, whose NEW events the client has read
        for _ in range(15):
            client.futures_create_order(
                symbol="XRPUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="10", price="2.4000"
            )
        [receive(ws) for _ in range(15)]
        # When one price move fills them all: thirty events queued before the writer can send one
        paper.set_price("XRPUSDT", "2.3000")
        # Then the connection is cut: the client reads what was written, then the connection ends abnormally
        with pytest.raises(ConnectionClosedError) as caught:
            while True:
                ws.recv(timeout=2.0)
    assert caught.value.rcvd is None
    assert wait_for(lambda: paper.stats()["ws_connections"] == 0)
    assert "frames unsent, closing it" in paper.output()
