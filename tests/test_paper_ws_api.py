"""The paper exchange's WebSocket API (``/ws-fapi/v1``) and Ed25519 keys, driven by clients nobody here wrote.

python-binance 1.0.37's ``Client`` (its ``ws_future`` pointed at the paper exchange) and Binance's own SDK
(``binance-sdk-derivatives-trading-usds-futures``, only its ``stream_url`` changed) place, query and cancel orders
over the WebSocket API; raw frames cover what the clients hide (session logon, errors, faults, limits).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from binance.client import Client
from binance.exceptions import BinanceAPIException, BinanceWebsocketUnableToConnect
from binance_common.configuration import ConfigurationWebSocketAPI
from binance_sdk_derivatives_trading_usds_futures import DerivativesTradingUsdsFutures
from binance_sdk_derivatives_trading_usds_futures.websocket_api import DerivativesTradingUsdsFuturesWebSocketAPI
from binance_sdk_derivatives_trading_usds_futures.websocket_api.models import (
    NewOrderNewOrderRespTypeEnum,
    NewOrderSideEnum,
    NewOrderTypeEnum,
)
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paper_fixtures import PaperExchange, receive_until, start_paper
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from qexec.paper.command import paper_command

BTC = "BTCUSDT"
ED_KEY = "qexec-paper-ed25519-key"
ANSWER_TIMEOUT_S = 5.0
# The SDK hands aiohttp's ws_connect a float timeout, which aiohttp deprecates; nothing we can change here.
SDK_CONNECT_WARNING = pytest.mark.filterwarnings("ignore:parameter 'timeout' of type 'float':DeprecationWarning")


@dataclass(frozen=True)
class EdKey:
    """An Ed25519 API key of the paper account: its name, private key and the PEMs written for it."""

    api_key: str
    private: Ed25519PrivateKey
    private_pem: str
    public_path: Path

    def sign(self, payload: str) -> str:
        """The base64 Ed25519 signature of ``payload``, as Binance expects it (not URL-encoded)."""
        return base64.b64encode(self.private.sign(payload.encode())).decode()


def new_ed_key(folder: Path, api_key: str = ED_KEY) -> EdKey:
    """A fresh Ed25519 key pair, both halves written to ``folder`` as PEM."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (folder / f"{api_key}.pem").write_text(private_pem)
    public_path = folder / f"{api_key}.pub.pem"
    public_path.write_bytes(public_pem)
    return EdKey(api_key, private, private_pem, public_path)


@pytest.fixture(scope="module")
def ed_key(tmp_path_factory: pytest.TempPathFactory) -> EdKey:
    """The Ed25519 key the module's paper exchange knows."""
    return new_ed_key(tmp_path_factory.mktemp("ed25519"))


@pytest.fixture(scope="module")
def ws_exchange(ed_key: EdKey) -> Iterator[PaperExchange]:
    """One paper exchange for this module, with the default HMAC pair and ``ed_key`` (prices frozen)."""
    exchange = start_paper("--tick-ms", "0", "--ed25519-key", f"{ed_key.api_key}:{ed_key.public_path}")
    try:
        yield exchange
    finally:
        exchange.stop()


@pytest.fixture
def paper(ws_exchange: PaperExchange) -> PaperExchange:
    """The module's paper exchange, reset to a fresh account (faults, limits and config as at start-up)."""
    ws_exchange.admin("POST", "/paper/v1/reset")
    return ws_exchange


@pytest.fixture(scope="module", autouse=True)
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The module's one event loop: python-binance runs on the thread's current loop, the SDK tests on it too;
    closed at the end, so no loop is left for the garbage collector to warn about."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture(scope="module")
def clients(loop: asyncio.AbstractEventLoop) -> Iterator[list[Client]]:
    """python-binance clients the module's tests open; their WebSocket API connections are closed at its end,
    together (each close waits up to the client's ``TIMEOUT`` for its read loop to stop)."""
    opened: list[Client] = []
    yield opened

    async def close_all() -> None:
        await asyncio.gather(*(client.ws_future.close() for client in opened))

    loop.run_until_complete(close_all())


def pb_client(paper: PaperExchange, clients: list[Client], **kwargs: Any) -> Client:
    """A python-binance client of the paper exchange whose WebSocket API gives up after 2 s."""
    client = paper.client(**kwargs)
    client.ws_future.TIMEOUT = 2
    clients.append(client)
    return client


# ---- raw frames ----------------------------------------------------------------------------------


def ask(ws: ClientConnection, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send one request and return its answer (the one with the same id)."""
    request_id = uuid.uuid4().hex
    ws.send(json.dumps({"id": request_id, "method": method, "params": params or {}}))
    answer: dict[str, Any] = json.loads(ws.recv(timeout=ANSWER_TIMEOUT_S))
    assert answer["id"] == request_id
    return answer


def hmac_signed(paper: PaperExchange, params: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    """``params`` with the HMAC key, a timestamp and the hex signature over the sorted, joined params."""
    fields = {**params, "apiKey": paper.api_key, "timestamp": int(time.time() * 1000)}
    payload = "&".join(f"{k}={v}" for k, v in sorted(fields.items()))
    key = (secret or paper.api_secret).encode()
    return {**fields, "signature": hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()}


def ed_signed(key: EdKey, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the Ed25519 key, a timestamp and the base64 signature over the sorted, joined params."""
    fields = {**params, "apiKey": key.api_key, "timestamp": int(time.time() * 1000)}
    payload = "&".join(f"{k}={v}" for k, v in sorted(fields.items()))
    return {**fields, "signature": key.sign(payload)}


def market(client_id: str, side: str = "BUY", **extra: Any) -> dict[str, Any]:
    """The params of a BTCUSDT MARKET order of 0.002."""
    return {"symbol": BTC, "side": side, "type": "MARKET", "quantity": "0.002", "newClientOrderId": client_id, **extra}


def rest_order(paper: PaperExchange, client_id: str) -> requests.Response:
    """``GET /fapi/v1/order`` by client order id, signed over REST."""
    return paper.signed("GET", "/fapi/v1/order", {"symbol": BTC, "origClientOrderId": client_id})


# ---- python-binance ------------------------------------------------------------------------------


def test_python_binance_places_a_market_order_and_gets_its_result(paper: PaperExchange, clients: list[Client]) -> None:
    """``ws_futures_create_order`` MARKET with RESULT answers the filled order, as REST would."""
    client = pb_client(paper, clients)
    placed = client.ws_futures_create_order(
        symbol=BTC, side="BUY", type="MARKET", quantity="0.002", newOrderRespType="RESULT", newClientOrderId="ws-1"
    )
    assert (placed["status"], placed["executedQty"], placed["clientOrderId"]) == ("FILLED", "0.002", "ws-1")
    assert float(placed["avgPrice"]) > 0
    assert rest_order(paper, "ws-1").json()["orderId"] == placed["orderId"]
    assert paper.stats()["requests"]["WS order.place"] == 1


def test_python_binance_queries_and_cancels_a_limit_order(paper: PaperExchange, clients: list[Client]) -> None:
    """``ws_futures_get_order`` sees a resting LIMIT as NEW; ``ws_futures_cancel_order`` cancels it."""
    client = pb_client(paper, clients)
    placed = client.ws_futures_create_order(
        symbol=BTC, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.002", price="90000"
    )
    assert placed["status"] == "NEW"
    status = client.ws_futures_get_order(symbol=BTC, orderId=placed["orderId"])
    assert (status["status"], float(status["price"])) == ("NEW", 90000.0)
    canceled = client.ws_futures_cancel_order(symbol=BTC, origClientOrderId=placed["clientOrderId"])
    assert (canceled["orderId"], canceled["status"]) == (placed["orderId"], "CANCELED")
    assert paper.orders(clientOrderId=placed["clientOrderId"])[0]["status"] == "CANCELED"


def test_python_binance_sends_a_stop_market_as_an_algo_order(paper: PaperExchange, clients: list[Client]) -> None:
    """STOP_MARKET through ``ws_futures_create_order`` is ``algoOrder.place``; ``algoId`` cancels it."""
    client = pb_client(paper, clients)
    placed = client.ws_futures_create_order(
        symbol=BTC, side="SELL", type="STOP_MARKET", stopPrice="80000", quantity="0.002", clientAlgoId="sl-ws-1"
    )
    assert (placed["algoStatus"], placed["orderType"], placed["clientAlgoId"]) == ("NEW", "STOP_MARKET", "sl-ws-1")
    listed = paper.signed("GET", "/fapi/v1/algoOrder", {"algoId": placed["algoId"]}).json()
    assert (listed["algoStatus"], float(listed["triggerPrice"])) == ("NEW", 80000.0)
    canceled = client.ws_futures_cancel_order(symbol=BTC, algoId=placed["algoId"])
    assert (canceled["algoId"], canceled["code"]) == (placed["algoId"], "200")
    assert paper.stats()["requests"]["WS algoOrder.cancel"] == 1


def test_a_wrong_secret_gets_1022_and_places_nothing(paper: PaperExchange, clients: list[Client]) -> None:
    """A WebSocket API order signed with another secret gets -1022 with status 400, as over REST."""
    client = pb_client(paper, clients, api_secret="not-the-secret")
    with pytest.raises(BinanceAPIException) as caught:
        client.ws_futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
    assert (caught.value.code, caught.value.status_code) == (-1022, 400)
    assert caught.value.message == "Signature for this request is not valid."
    assert paper.orders() == []


def test_python_binance_signs_websocket_orders_with_an_ed25519_key(
    paper: PaperExchange, clients: list[Client], ed_key: EdKey
) -> None:
    """python-binance URL-encodes its base64 Ed25519 signature on the WebSocket API too; the venue accepts it."""
    client = pb_client(paper, clients, api_key=ed_key.api_key, private_key=ed_key.private_pem)
    placed = client.ws_futures_create_order(
        symbol=BTC, side="BUY", type="MARKET", quantity="0.002", newOrderRespType="RESULT"
    )
    assert placed["status"] == "FILLED"


def test_the_timeout_fault_sends_no_answer_but_the_order_is_placed(paper: PaperExchange, clients: list[Client]) -> None:
    """``timeout`` on ``WS order.place``: the client hears nothing; REST finds the order by its client id."""
    paper.add_fault(kind="timeout", endpoint="WS order.place")
    client = pb_client(paper, clients)
    with pytest.raises(BinanceWebsocketUnableToConnect, match="timed out"):
        client.ws_futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.002", newClientOrderId="t-1")
    found = rest_order(paper, "t-1")
    assert found.status_code == 200, found.text
    assert found.json()["status"] == "FILLED"
    assert paper.stats()["faults_fired"] == {"timeout": 1}


# ---- Ed25519 over REST ---------------------------------------------------------------------------


def test_python_binance_signs_rest_orders_with_an_ed25519_key(paper: PaperExchange, ed_key: EdKey) -> None:
    """``Client(api_key, private_key=PEM)`` places a REST order the venue verifies with the public key."""
    client = paper.client(api_key=ed_key.api_key, private_key=ed_key.private_pem)
    placed = client.futures_create_order(
        symbol=BTC, side="BUY", type="MARKET", quantity="0.002", newOrderRespType="RESULT"
    )
    assert placed["status"] == "FILLED"
    assert client.futures_get_order(symbol=BTC, orderId=placed["orderId"])["status"] == "FILLED"


def test_an_ed25519_signature_by_another_private_key_gets_1022(
    paper: PaperExchange, ed_key: EdKey, tmp_path: Path
) -> None:
    """The key's name signed by a private key that is not its pair: -1022 over REST, nothing placed."""
    stranger = new_ed_key(tmp_path)
    client = paper.client(api_key=ed_key.api_key, private_key=stranger.private_pem)
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.002")
    assert (caught.value.code, caught.value.status_code) == (-1022, 400)
    assert paper.orders() == []


def test_the_paper_command_refuses_a_malformed_ed25519_key_option(tmp_path: Path) -> None:
    """``--ed25519-key`` wants API_KEY:PEM_FILE naming an Ed25519 public key; anything else is a usage error."""
    x25519 = tmp_path / "x25519.pem"
    x25519.write_bytes(
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for value in ("no-colon", f"k:{tmp_path / 'absent.pem'}", f"k:{x25519}"):
        result = CliRunner().invoke(paper_command, ["--ed25519-key", value, "--state", ":memory:"])
        assert result.exit_code == 2, (value, result.output)
        assert "--ed25519-key" in result.output


# ---- raw frames: sessions, errors, limits, faults ------------------------------------------------


def test_after_an_ed25519_logon_an_unsigned_order_is_placed(paper: PaperExchange, ed_key: EdKey) -> None:
    """``session.logon`` answers Binance's fields; the connection then orders with a timestamp alone, until
    ``session.logout``."""
    with connect(paper.ws_api_url) as ws:
        unsigned = ask(ws, "order.place", market("u-0", timestamp=int(time.time() * 1000)))
        assert (unsigned["status"], unsigned["error"]["code"]) == (401, -2014)
        logon = ask(ws, "session.logon", ed_signed(ed_key, {}))
        assert logon["status"] == 200, logon
        result = logon["result"]
        assert set(result) == {"apiKey", "authorizedSince", "connectedSince", "returnRateLimits", "serverTime"}
        assert (result["apiKey"], result["returnRateLimits"]) == (ed_key.api_key, True)
        assert result["connectedSince"] <= result["authorizedSince"] <= result["serverTime"]
        placed = ask(ws, "order.place", market("u-1", timestamp=int(time.time() * 1000)))
        assert (placed["status"], placed["result"]["clientOrderId"]) == (200, "u-1")
        assert ask(ws, "session.status")["result"]["apiKey"] == ed_key.api_key
        assert ask(ws, "session.logout")["result"]["apiKey"] is None
        again = ask(ws, "order.place", market("u-2", timestamp=int(time.time() * 1000)))
        assert again["error"]["code"] == -2014
    assert [o["clientOrderId"] for o in paper.orders()] == ["u-1"]


def test_an_hmac_key_cannot_log_on(paper: PaperExchange) -> None:
    """``session.logon`` signed with the HMAC pair gets -1022 (Ed25519 keys only) and leaves the session as it was."""
    with connect(paper.ws_api_url) as ws:
        logon = ask(ws, "session.logon", hmac_signed(paper, {}))
        assert (logon["status"], logon["error"]) == (
            400,
            {"code": -1022, "msg": "Signature for this request is not valid."},
        )
        assert ask(ws, "session.status")["result"]["apiKey"] is None


def test_an_unknown_key_gets_2015(paper: PaperExchange) -> None:
    """A request naming a key the account does not have gets -2015 with status 401."""
    with connect(paper.ws_api_url) as ws:
        params = {**hmac_signed(paper, market("k-1")), "apiKey": "someone-else"}
        answer = ask(ws, "order.place", params)
    assert (answer["status"], answer["error"]["code"]) == (401, -2015)


def test_answers_carry_the_rate_limits_the_rest_headers_show(paper: PaperExchange) -> None:
    """``rateLimits`` counts request weight (shared with REST, per IP) and, on orders, both order counters."""
    with connect(paper.ws_api_url) as ws:
        placed = ask(ws, "order.place", hmac_signed(paper, market("r-1")))
        assert placed["rateLimits"] == [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400, "count": 0},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300, "count": 1},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200, "count": 1},
        ]
        status = ask(ws, "order.status", hmac_signed(paper, {"symbol": BTC, "origClientOrderId": "r-1"}))
        assert status["result"]["status"] == "FILLED"
        assert status["rateLimits"] == [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400, "count": 1}
        ]
    assert rest_order(paper, "r-1").headers["X-MBX-USED-WEIGHT-1M"] == "2"


def test_over_the_weight_limit_the_websocket_api_answers_429(paper: PaperExchange) -> None:
    """With 3 weight a minute the fourth ``order.status`` gets 429 -1003 with ``retryAfter``; REST is refused too."""
    paper.admin("POST", "/paper/v1/config", {"limits": {"weight_per_min": 3}})
    query = {"symbol": BTC, "orderId": 1}
    with connect(paper.ws_api_url) as ws:
        codes = [ask(ws, "order.status", hmac_signed(paper, query))["error"]["code"] for _ in range(3)]
        assert codes == [-2013, -2013, -2013]
        refused = ask(ws, "order.status", hmac_signed(paper, query))
    assert (refused["status"], refused["error"]["code"]) == (429, -1003)
    data = refused["error"]["data"]
    assert data["retryAfter"] > data["serverTime"]
    assert refused["rateLimits"][0]["count"] == 3
    assert rest_order(paper, "any").status_code == 429


def test_over_the_order_limit_the_websocket_api_answers_429(paper: PaperExchange) -> None:
    """With 2 orders per 10 s the third ``order.place`` gets 429 -1015 and is not placed."""
    paper.admin("POST", "/paper/v1/config", {"limits": {"orders_per_10s": 2}})
    with connect(paper.ws_api_url) as ws:
        answers = [ask(ws, "order.place", hmac_signed(paper, market(f"o-{i}"))) for i in range(3)]
    assert [a["status"] for a in answers] == [200, 200, 429]
    assert answers[2]["error"]["code"] == -1015
    assert answers[2]["rateLimits"][1]["count"] == 2
    assert sorted(o["clientOrderId"] for o in paper.orders()) == ["o-0", "o-1"]


def test_a_timeout_fault_not_executed_sends_nothing_and_places_nothing(paper: PaperExchange) -> None:
    """``timeout`` with ``executed: false``: no answer, no order; the connection still serves the next request."""
    paper.add_fault(kind="timeout", endpoint="WS order.place", executed=False)
    with connect(paper.ws_api_url) as ws:
        ws.send(json.dumps({"id": "lost", "method": "order.place", "params": hmac_signed(paper, market("n-1"))}))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.0)
        assert ask(ws, "session.status")["status"] == 200
    assert rest_order(paper, "n-1").json()["code"] == -2013


@pytest.mark.parametrize("executed", [True, False])
def test_the_drop_fault_cuts_the_connection_after_or_instead_of_executing(paper: PaperExchange, executed: bool) -> None:
    """``drop``: the server closes the socket without a close frame (1006), the order placed or not per
    ``executed``."""
    paper.add_fault(kind="drop", endpoint="WS order.place", executed=executed)
    with connect(paper.ws_api_url) as ws:
        ws.send(json.dumps({"id": "cut", "method": "order.place", "params": hmac_signed(paper, market("d-1"))}))
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=ANSWER_TIMEOUT_S)
    assert caught.value.rcvd is None  # no close frame came
    assert [o["clientOrderId"] for o in paper.orders()] == (["d-1"] if executed else [])
    assert paper.stats()["faults_fired"] == {"drop": 1}


def test_a_drop_fault_never_fires_on_a_rest_request(paper: PaperExchange) -> None:
    """A ``drop`` fault for any endpoint leaves REST alone (HTTP has no socket to cut) and waits for the ws."""
    paper.add_fault(kind="drop", endpoint="*")
    response = paper.signed("POST", "/fapi/v1/order", market("rest-1"))
    assert response.status_code == 200, response.text
    assert len(paper.admin("GET", "/paper/v1/faults")["faults"]) == 1


def test_malformed_frames_and_unknown_methods_get_error_answers(paper: PaperExchange) -> None:
    """Not JSON: -1135 with a null id; an unknown method: -1020 with its id; the connection stays open."""
    with connect(paper.ws_api_url) as ws:
        ws.send("{not json")
        bad = json.loads(ws.recv(timeout=ANSWER_TIMEOUT_S))
        assert (bad["id"], bad["status"], bad["error"]["code"]) == (None, 400, -1135)
        unknown = ask(ws, "order.teleport", {})
        assert (unknown["status"], unknown["error"]["code"]) == (400, -1020)
        assert unknown["error"]["msg"] == "This operation is not supported."
        assert ask(ws, "account.balance", hmac_signed(paper, {}))["result"][0]["asset"] == "USDT"


def test_websocket_api_orders_stream_to_the_user_data_stream(paper: PaperExchange) -> None:
    """An order placed over the WebSocket API streams ORDER_TRADE_UPDATE NEW then TRADE, as a REST order does."""
    listen_key = requests.post(
        paper.url + "/fapi/v1/listenKey", headers={"X-MBX-APIKEY": paper.api_key}, timeout=5
    ).json()["listenKey"]
    with connect(f"{paper.ws_url}/ws/{listen_key}") as stream, connect(paper.ws_api_url) as ws:
        assert ask(ws, "order.place", hmac_signed(paper, market("s-1")))["status"] == 200
        frames = receive_until(stream, lambda f: f.get("e") == "ORDER_TRADE_UPDATE" and f["o"]["x"] == "TRADE")
    updates = [f["o"]["x"] for f in frames if f.get("e") == "ORDER_TRADE_UPDATE" and f["o"]["c"] == "s-1"]
    assert updates == ["NEW", "TRADE"]


# ---- Binance's own SDK ---------------------------------------------------------------------------


def sdk_ws_api(paper: PaperExchange, **credentials: Any) -> DerivativesTradingUsdsFuturesWebSocketAPI:
    """The SDK's WebSocket API client with ``stream_url`` on the paper exchange (not yet connected)."""
    config = ConfigurationWebSocketAPI(stream_url=paper.ws_api_url, timeout=5000, **credentials)
    return DerivativesTradingUsdsFutures(config_ws_api=config).websocket_api


async def open_sdk(api: DerivativesTradingUsdsFuturesWebSocketAPI) -> DerivativesTradingUsdsFuturesWebSocketAPI:
    """Connect the SDK's client; ``create_connection`` (untyped in the SDK) returns the client itself."""
    connection: DerivativesTradingUsdsFuturesWebSocketAPI = await api.create_connection()  # type: ignore[no-untyped-call]
    return connection


@SDK_CONNECT_WARNING
def test_binance_sdk_places_an_hmac_signed_order(paper: PaperExchange, loop: asyncio.AbstractEventLoop) -> None:
    """The SDK's ``new_order`` signs with HMAC (URL-encoded payload) and parses the answer and its rate limits."""

    async def place() -> Any:
        api = sdk_ws_api(paper, api_key=paper.api_key, api_secret=paper.api_secret)
        connection = await open_sdk(api)
        try:
            return await connection.new_order(
                symbol=BTC,
                side=NewOrderSideEnum.BUY,
                type=NewOrderTypeEnum.MARKET,
                quantity=0.002,
                new_client_order_id="sdk-1",
                new_order_resp_type=NewOrderNewOrderRespTypeEnum.RESULT,
            )
        finally:
            await connection.close_connection()

    response = loop.run_until_complete(place())
    answer = response.data()
    assert answer.status == 200
    assert answer.result is not None
    assert (answer.result.status, answer.result.client_order_id) == ("FILLED", "sdk-1")
    assert {(r.rateLimitType, r.count) for r in response.rate_limits} == {
        ("REQUEST_WEIGHT", 0),
        ("ORDERS", 1),
    }


@SDK_CONNECT_WARNING
def test_binance_sdk_logs_on_with_ed25519_and_orders_without_signing(
    paper: PaperExchange, ed_key: EdKey, loop: asyncio.AbstractEventLoop
) -> None:
    """The SDK's ``session.logon`` with an Ed25519 key; its next ``new_order`` goes unsigned and is placed."""

    async def log_on_and_place() -> tuple[Any, Any, Any]:
        api = sdk_ws_api(paper, api_key=ed_key.api_key, private_key=ed_key.private_pem)
        connection = await open_sdk(api)
        signer: Any = api.signer  # the SDK's Ed25519 signer, which its annotations call ``Signers``
        try:
            logon = await connection.send_signed_message(
                {"method": "session.logon", "params": {}}, signer=signer, session_logon=True
            )
            placed = await connection.new_order(
                symbol=BTC, side=NewOrderSideEnum.SELL, type=NewOrderTypeEnum.MARKET, quantity=0.002
            )
            status: Any = await connection.send_message({"method": "session.status", "params": {}})
            return logon.data(), placed.data(), status.data()
        finally:
            await connection.close_connection()

    logon, placed, status = loop.run_until_complete(log_on_and_place())
    assert (logon["status"], logon["result"]["apiKey"]) == (200, ed_key.api_key)
    assert placed.result is not None and placed.result.status == "NEW"  # ACK: accepted, filled just after
    assert status["result"]["apiKey"] == ed_key.api_key
    assert paper.stats()["requests"]["WS session.logon"] == 1
