"""Websocket clients against the paper exchange: Binance's live subscription protocol, ccxt.pro, event shapes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import ccxt.pro
import pytest
from paper_fixtures import PaperExchange, pointed_at, receive, receive_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

RECORDED = Path(__file__).parent / "data" / "binance_ws"
Result = TypeVar("Result")


def request(ws: ClientConnection, method: str, params: list[Any] | None = None, request_id: Any = 1) -> Any:
    """Send one live-subscription request and return its answer (stream frames before it are skipped)."""
    message: dict[str, Any] = {"method": method, "id": request_id}
    if params is not None:
        message["params"] = params
    ws.send(json.dumps(message))
    return answer(ws)


def answer(ws: ClientConnection) -> Any:
    """The next answer to a request (a frame with ``result`` or ``error``), skipping stream frames."""
    return receive_until(ws, lambda f: isinstance(f, dict) and ("result" in f or "error" in f))[-1]


@contextmanager
def opened(paper: PaperExchange, path: str) -> Iterator[ClientConnection]:
    """A websocket to ``path`` on the paper exchange."""
    with connect(paper.ws_url + path, open_timeout=5) as ws:
        yield ws


# ---- the live subscription protocol ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/market/ws", "/market/ws/0", "/ws/3"])
def test_a_bare_market_endpoint_answers_subscribe_with_result_null_then_streams(
    paper: PaperExchange, path: str
) -> None:
    """``SUBSCRIBE`` on a bare endpoint (a trailing number is a connection id) answers null, then sends marks."""
    paper.set_price("BTCUSDT", "91234.5")
    with opened(paper, path) as ws:
        answer = request(ws, "SUBSCRIBE", ["btcusdt@markPrice@1s"], 1)
        update = receive(ws)
    assert answer == {"result": None, "id": 1}
    assert (update["e"], update["s"], Decimal(update["p"])) == ("markPriceUpdate", "BTCUSDT", Decimal("91234.5"))


def test_a_bare_combined_endpoint_wraps_what_it_subscribed(paper: PaperExchange) -> None:
    """``/market/stream`` with no ``streams=`` waits for ``SUBSCRIBE``; its frames are ``{"stream", "data"}``."""
    with opened(paper, "/market/stream") as ws:
        assert request(ws, "SUBSCRIBE", ["ethusdt@markPrice", "!markPrice@arr@1s"], 7) == {"result": None, "id": 7}
        frames = [receive(ws) for _ in range(2)]
    by_stream = {f["stream"]: f["data"] for f in frames}
    assert by_stream["ethusdt@markPrice"]["s"] == "ETHUSDT"
    assert {u["s"] for u in by_stream["!markPrice@arr@1s"]} >= {"BTCUSDT", "ETHUSDT"}


def test_list_subscriptions_names_url_and_subscribed_streams_and_unsubscribe_stops_one(paper: PaperExchange) -> None:
    """``LIST_SUBSCRIPTIONS`` lists the URL's streams and subscribed ones; ``UNSUBSCRIBE`` ends only the named."""
    with opened(paper, "/market/stream?streams=solusdt@markPrice@1s") as ws:
        receive(ws)
        request(ws, "SUBSCRIBE", ["adausdt@markPrice@1s"], 2)
        listed = request(ws, "LIST_SUBSCRIPTIONS", request_id=3)
        request(ws, "UNSUBSCRIBE", ["solusdt@markPrice@1s"], 4)
        later = [receive(ws, timeout=1.5) for _ in range(2)]
        remaining = request(ws, "LIST_SUBSCRIPTIONS", request_id=5)
    assert listed == {"result": ["solusdt@markPrice@1s", "adausdt@markPrice@1s"], "id": 3}
    assert {f["stream"] for f in later if "stream" in f} == {"adausdt@markPrice@1s"}
    assert remaining == {"result": ["adausdt@markPrice@1s"], "id": 5}


def test_set_property_combined_wraps_a_raw_connections_frames(paper: PaperExchange) -> None:
    """``SET_PROPERTY ["combined", true]`` makes a raw connection wrap frames; ``GET_PROPERTY`` reports it."""
    with opened(paper, "/market/ws") as ws:
        before = request(ws, "GET_PROPERTY", ["combined"], 1)
        assert request(ws, "SET_PROPERTY", ["combined", True], 2) == {"result": None, "id": 2}
        after = request(ws, "GET_PROPERTY", ["combined"], 3)
        request(ws, "SUBSCRIBE", ["xrpusdt@markPrice"], 4)
        frame = receive(ws)
    assert (before["result"], after["result"]) == (False, True)
    assert (frame["stream"], frame["data"]["s"]) == ("xrpusdt@markPrice", "XRPUSDT")


def test_the_request_id_may_be_the_string_binances_own_sdk_sends(paper: PaperExchange) -> None:
    """An id like ``"7e1080b2-6cbb-47f5-aa30-b2a85691bb9f"`` (the official SDK's UUIDs) is echoed back."""
    uuid = "7e1080b2-6cbb-47f5-aa30-b2a85691bb9f"
    with opened(paper, "/market/stream") as ws:
        assert request(ws, "SUBSCRIBE", ["btcusdt@markPrice"], uuid) == {"result": None, "id": uuid}


@pytest.mark.parametrize(
    ("sent", "code", "msg_start", "answer_id"),
    [
        ('{"method": "SUBSCRIBE", "params": [', 3, "Invalid JSON: expected value at line 1 column", None),
        ('{"method": "SUBSCRIB", "params": [], "id": 5}', 2, "Invalid request: unknown variant `SUBSCRIB`", 5),
        ('{"params": ["btcusdt@markPrice"], "id": 6}', 2, "Invalid request: missing field `method`", 6),
        ('{"method": "SUBSCRIBE", "params": ["btcusdt@markPrice"]}', 2, "Invalid request: request ID must be", None),
        ('{"method": "SUBSCRIBE", "params": ["btcusdt@markPrice"], "id": -1}', 2, "Invalid request: request ID", None),
        ('{"method": "SUBSCRIBE", "params": "btcusdt@markPrice", "id": 8}', 2, "Invalid request: params", 8),
        ('{"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 9}', 2, "Invalid request: invalid stream", 9),
        ('{"method": "GET_PROPERTY", "params": ["nosuch"], "id": 10}', 0, "Unknown property", 10),
        ('{"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 11}', 1, "Invalid value type", 11),
        ('{"method": "GET_PROPERTY", "params": ["combined", true], "id": 12}', 2, "Invalid request: too many", 12),
    ],
)
def test_a_bad_request_gets_binances_documented_error(
    paper: PaperExchange, sent: str, code: int, msg_start: str, answer_id: Any
) -> None:
    """Bad JSON is code 3, a bad request code 2, an unknown property 0, a bad value 1; the socket stays open."""
    with opened(paper, "/market/ws/0") as ws:
        ws.send(sent)
        refused = answer(ws)
        still_open = request(ws, "LIST_SUBSCRIPTIONS", request_id=99)
    assert set(refused) == {"error", "id"} and refused["id"] == answer_id
    assert refused["error"]["code"] == code
    assert refused["error"]["msg"].startswith(msg_start)
    assert still_open == {"result": [], "id": 99}


def test_a_subscribe_with_one_bad_name_subscribes_none_of_them(paper: PaperExchange) -> None:
    """``SUBSCRIBE`` is all or nothing: a bad name among good ones is refused and nothing starts."""
    with opened(paper, "/market/ws") as ws:
        answer = request(ws, "SUBSCRIBE", ["btcusdt@markPrice", "BTCUSDT@markPrice"], 1)
        listed = request(ws, "LIST_SUBSCRIPTIONS", request_id=2)
    assert answer["error"]["code"] == 2
    assert listed == {"result": [], "id": 2}


def test_the_public_endpoint_does_not_serve_mark_prices(paper: PaperExchange) -> None:
    """Binance routes ``@markPrice`` to ``/market``: ``/public`` refuses it rather than staying silent."""
    with opened(paper, "/public/ws") as ws:
        answer = request(ws, "SUBSCRIBE", ["btcusdt@markPrice"], 1)
    assert answer == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 1}


def test_path_mode_serves_several_streams_named_in_the_path_unwrapped(paper: PaperExchange) -> None:
    """``/market/ws/a/b`` (Binance's "ws mode") sends both streams as raw payloads."""
    with opened(paper, "/market/ws/btcusdt@markPrice/ethusdt@markPrice") as ws:
        frames = [receive(ws) for _ in range(2)]
    assert {f["s"] for f in frames} == {"BTCUSDT", "ETHUSDT"}


def test_a_private_stream_subscribes_the_listen_key_by_message(paper: PaperExchange) -> None:
    """``/private/stream`` + ``SUBSCRIBE [<listenKey>]``: user events arrive wrapped with the key as stream."""
    client = paper.client()
    key = client.futures_stream_get_listen_key()
    with opened(paper, "/private/stream") as ws:
        assert request(ws, "SUBSCRIBE", [key], 1) == {"result": None, "id": 1}
        client.futures_create_order(symbol="DOGEUSDT", side="BUY", type="MARKET", quantity="100")
        frames = [receive(ws) for _ in range(3)]
        listed = request(ws, "LIST_SUBSCRIPTIONS", request_id=2)
    assert [f["stream"] for f in frames] == [key, key, key]
    assert [f["data"]["e"] for f in frames] == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"]
    assert listed == {"result": [key], "id": 2}


def test_a_private_stream_refuses_a_key_that_is_not_the_active_one(paper: PaperExchange) -> None:
    """``SUBSCRIBE`` of an unknown listen key is an invalid stream, and no events follow."""
    paper.client().futures_stream_get_listen_key()
    with opened(paper, "/private/stream") as ws:
        answer = request(ws, "SUBSCRIBE", ["nosuchkey"], 1)
    assert answer["error"] == {"code": 2, "msg": "Invalid request: invalid stream"}


def test_private_stream_mode_takes_the_listen_key_and_events_in_the_query(paper: PaperExchange) -> None:
    """``/private/stream?listenKey=<key>&events=ACCOUNT_UPDATE``: only that event, wrapped with the key."""
    client = paper.client()
    key = client.futures_stream_get_listen_key()
    with opened(paper, f"/private/stream?listenKey={key}&events=ACCOUNT_UPDATE") as ws:
        client.futures_create_order(symbol="XRPUSDT", side="BUY", type="MARKET", quantity="10")
        frame = receive(ws)
    assert (frame["stream"], frame["data"]["e"]) == (key, "ACCOUNT_UPDATE")


def test_unsubscribing_the_listen_key_stops_its_events(paper: PaperExchange) -> None:
    """``UNSUBSCRIBE [<listenKey>]`` on a connection that subscribed it: no more user events there."""
    client = paper.client()
    key = client.futures_stream_get_listen_key()
    with opened(paper, "/stream") as ws:
        request(ws, "SUBSCRIBE", [key], 1)
        assert request(ws, "UNSUBSCRIBE", [key], 2) == {"result": None, "id": 2}
        client.futures_create_order(symbol="XRPUSDT", side="BUY", type="MARKET", quantity="10")
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)


def test_the_legacy_market_url_without_streams_is_still_refused_with_a_reason(paper: PaperExchange) -> None:
    """A stream name the exchange does not serve in the URL still closes 1008 (only a bare URL waits)."""
    with opened(paper, "/market/ws/btcusdt@depth") as ws, pytest.raises(ConnectionClosed) as caught:
        ws.recv(timeout=2.0)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008


# ---- ccxt.pro ----------------------------------------------------------------------------------


def ccxt_client(paper: PaperExchange) -> Any:
    """A ccxt.pro ``binanceusdm`` whose REST and websocket bases all point at the paper exchange."""
    exchange = pointed_at(ccxt.pro.binanceusdm, paper)
    # ccxt rewrites ".../ws" to ".../market/ws" and ".../private/ws" (Binance's routed URLs).
    exchange.urls["api"]["ws"]["linear"] = paper.ws_url + "/ws"
    return exchange


def with_ccxt_pro(paper: PaperExchange, act: Callable[[Any], Awaitable[Result]]) -> Result:
    """What ``act(exchange)`` returns, run on a fresh ccxt.pro client that is closed afterwards."""

    async def run() -> Result:
        exchange = ccxt_client(paper)
        try:
            return await act(exchange)
        finally:
            await exchange.close()

    return asyncio.run(run())


def test_ccxt_pro_watch_mark_price_gets_the_mark_the_admin_set(paper: PaperExchange) -> None:
    """ccxt.pro's ``watch_mark_price`` (a bare ``/market/ws/<n>`` and ``SUBSCRIBE``) returns the paper mark."""
    paper.set_price("BTCUSDT", "91000.5")
    ticker = with_ccxt_pro(paper, lambda exchange: asyncio.wait_for(exchange.watch_mark_price("BTC/USDT:USDT"), 10))
    assert ticker["symbol"] == "BTC/USDT:USDT"
    assert (ticker["markPrice"], ticker["indexPrice"]) == (91000.5, 91000.5)
    assert ticker["info"]["e"] == "markPriceUpdate"


def test_ccxt_pro_watch_mark_prices_gets_every_symbol_from_the_array_stream(paper: PaperExchange) -> None:
    """``watch_mark_prices()`` (``!markPrice@arr@1s``) returns a ticker for every listed symbol with its mark."""
    paper.set_price("ETHUSDT", "3300.25")
    tickers = with_ccxt_pro(paper, lambda exchange: asyncio.wait_for(exchange.watch_mark_prices(), 10))
    assert len(tickers) == len(paper.admin("GET", "/paper/v1/prices"))
    assert tickers["ETH/USDT:USDT"]["markPrice"] == 3300.25


def test_ccxt_pro_watch_orders_sees_a_market_order_fill_on_the_user_stream(paper: PaperExchange) -> None:
    """``watch_orders`` (listen key, ``/private/ws?listenKey=``) reports the filled order ccxt placed over REST."""

    async def trade_and_watch(exchange: Any) -> tuple[Any, list[Any]]:
        watching = asyncio.ensure_future(exchange.watch_orders("BTC/USDT:USDT"))
        await asyncio.sleep(0.5)  # the listen key and the connection are up before the order
        placed = await exchange.create_order("BTC/USDT:USDT", "market", "buy", 0.002)
        orders: list[Any] = await asyncio.wait_for(watching, 10)
        while orders[-1]["status"] != "closed":
            orders = await asyncio.wait_for(exchange.watch_orders("BTC/USDT:USDT"), 10)
        return placed, orders

    placed, orders = with_ccxt_pro(paper, trade_and_watch)
    last = orders[-1]
    assert (last["id"], last["status"], last["filled"]) == (placed["id"], "closed", 0.002)
    assert last["average"] == placed["average"] and last["average"] > 0


# ---- event shapes against Binance's documented examples ---------------------------------------


def shape(value: Any) -> Any:
    """Keys and JSON types of ``value``, recursively (a list's shape is its first element's)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def recorded(name: str) -> dict[str, Any]:
    """The documented example ``name`` from tests/data/binance_ws, minus the keys its ``_conditional`` names."""
    example: dict[str, Any] = json.loads((RECORDED / f"{name}.json").read_text())
    assert example["_source"].startswith("https://developers.binance.com/")
    payload: dict[str, Any] = example["payload"]
    for dotted in example.get("_conditional", []):
        parent, _, key = dotted.rpartition(".")
        node = payload
        for part in filter(None, parent.split(".")):
            node = node[part]
        node.pop(key)
    return payload


def user_events(paper: PaperExchange, act: Any, count: int) -> list[dict[str, Any]]:
    """The first ``count`` user-data events after ``act(client)`` runs."""
    client = paper.client()
    key = client.futures_stream_get_listen_key()
    with opened(paper, f"/private/ws?listenKey={key}") as ws:
        act(client)
        return [receive(ws) for _ in range(count)]


def test_order_and_account_updates_have_the_documented_keys_and_types(paper: PaperExchange) -> None:
    """A filled MARKET order's ``ORDER_TRADE_UPDATE`` and ``ACCOUNT_UPDATE`` match Binance's examples' shape."""
    frames = user_events(
        paper, lambda c: c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002"), 3
    )
    new, trade, account = frames
    assert shape(new) == shape(recorded("order_trade_update"))
    assert shape(trade) == shape(recorded("order_trade_update"))
    assert shape(account) == shape(recorded("account_update"))


def test_algo_update_has_the_documented_keys_and_types(paper: PaperExchange) -> None:
    """A placed stop's ``ALGO_UPDATE`` matches Binance's example's shape."""

    def place(client: Any) -> None:
        client.futures_create_order(
            symbol="BTCUSDT", side="SELL", type="STOP_MARKET", stopPrice="80000", closePosition="true"
        )

    (algo,) = user_events(paper, place, 1)
    assert shape(algo) == shape(recorded("algo_update"))


def test_account_config_update_has_the_documented_keys_and_types(paper: PaperExchange) -> None:
    """A leverage change's ``ACCOUNT_CONFIG_UPDATE`` (``ac: {s, l}``) matches Binance's example's shape."""
    (config,) = user_events(paper, lambda c: c.futures_change_leverage(symbol="ETHUSDT", leverage=9), 1)
    assert shape(config) == shape(recorded("account_config_update"))
    assert config["ac"] == {"s": "ETHUSDT", "l": 9}


def test_listen_key_expired_has_the_documented_keys_and_types(paper: PaperExchange) -> None:
    """``listenKeyExpired`` on a key that ran out matches Binance's example's shape."""
    paper.admin("POST", "/paper/v1/config", {"listen_key_ttl_s": 0.4})
    key = paper.client().futures_stream_get_listen_key()
    with opened(paper, f"/private/ws?listenKey={key}") as ws:
        expired = receive(ws, timeout=3.0)
    assert shape(expired) == shape(recorded("listen_key_expired"))
    assert expired["listenKey"] == key


def test_mark_price_update_has_the_documented_keys_and_types(paper: PaperExchange) -> None:
    """``markPriceUpdate`` matches Binance's example's shape: prices and the funding rate are strings."""
    with opened(paper, "/market/ws/btcusdt@markPrice") as ws:
        update = receive(ws)
    assert shape(update) == shape(recorded("mark_price_update"))
