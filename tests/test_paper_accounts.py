"""The paper exchange serves several accounts behind one IP: each with its own keys, wallet, positions, orders,
settings, listen key and order counters; request weight and market data shared."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest
import requests
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paper_fixtures import PaperExchange, pointed_at, receive_until, start_paper
from websockets.sync.client import ClientConnection, connect

from qexec.constants import PAPER_API_KEY
from qexec.paper.command import paper_command
from qexec.paper.orders import Order, dump

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance.client import Client
    from binance.exceptions import BinanceAPIException

BTC = "BTCUSDT"
ETH = "ETHUSDT"
ALICE = ("alice", "alice-key", "alice-secret")
BOB = ("bob", "bob-key", "bob-secret")
BOB_ED = "bob-ed25519-key"


def account_flags(*accounts: tuple[str, str, str]) -> list[str]:
    """``--account NAME:KEY:SECRET`` for each account."""
    return [flag for name, key, secret in accounts for flag in ("--account", f"{name}:{key}:{secret}")]


@pytest.fixture(scope="module")
def bob_ed() -> Ed25519PrivateKey:
    """The private half of bob's Ed25519 key (the module's exchange gets its public half)."""
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def accounts_exchange(tmp_path_factory: pytest.TempPathFactory, bob_ed: Ed25519PrivateKey) -> Iterator[PaperExchange]:
    """One paper exchange for the module with three accounts: default, alice and bob (bob also has an Ed25519
    key); prices frozen."""
    public = tmp_path_factory.mktemp("bob") / "bob.pub.pem"
    public.write_bytes(
        bob_ed.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    exchange = start_paper("--tick-ms", "0", *account_flags(ALICE, BOB), "--ed25519-key", f"{BOB_ED}:{public}:bob")
    try:
        yield exchange
    finally:
        exchange.stop()


@pytest.fixture
def paper(accounts_exchange: PaperExchange) -> PaperExchange:
    """The module's exchange, reset: every account fresh, config, faults and counters as at start-up."""
    accounts_exchange.admin("POST", "/paper/v1/reset")
    return accounts_exchange


def client_of(paper: PaperExchange, account: tuple[str, str, str]) -> Client:
    """A python-binance client signing with ``account``'s HMAC pair."""
    return paper.client(api_key=account[1], api_secret=account[2])


def signed_as(paper: PaperExchange, account: tuple[str, str, str], method: str, path: str, **params: Any) -> Any:
    """A hand-signed request of ``account`` (for the headers a client hides)."""
    return paper.signed(method, path, params, api_key=account[1], api_secret=account[2])


def position_amt(client: Client, symbol: str) -> str:
    """The one-way position amount of ``symbol`` (v2 lists a flat position too)."""
    amt: str = client.futures_position_information(symbol=symbol, version=2)[0]["positionAmt"]
    return amt


def market(symbol: str = BTC, side: str = "BUY", qty: str = "0.002", **extra: Any) -> dict[str, Any]:
    """The params of a MARKET order."""
    return {"symbol": symbol, "side": side, "type": "MARKET", "quantity": qty, **extra}


def admin_get(paper: PaperExchange, path: str, **query: str) -> requests.Response:
    """An admin GET with query parameters (not raised on error)."""
    return requests.get(paper.url + path, params=query, timeout=10)


# ---- trading ------------------------------------------------------------------------------------


def test_two_accounts_on_one_symbol_see_only_their_own_orders_positions_balances_and_trades(
    paper: PaperExchange,
) -> None:
    """Alice's MARKET buy fills in her account alone; bob's resting LIMIT is his alone; neither sees the other's
    orders or trades, and the default account stays untouched."""
    alice, bob, default = client_of(paper, ALICE), client_of(paper, BOB), paper.client()
    bought = alice.futures_create_order(**market(qty="0.010"), newOrderRespType="RESULT")
    resting = bob.futures_create_order(
        symbol=BTC, side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.002", price="99000.0"
    )
    assert position_amt(alice, BTC) == "0.010"
    assert position_amt(bob, BTC) == "0.000"
    assert position_amt(default, BTC) == "0.000"
    assert [o["orderId"] for o in bob.futures_get_open_orders()] == [resting["orderId"]]
    assert alice.futures_get_open_orders() == []
    assert [t["orderId"] for t in alice.futures_account_trades(symbol=BTC)] == [bought["orderId"]]
    assert bob.futures_account_trades(symbol=BTC) == []
    assert [o["orderId"] for o in alice.futures_get_all_orders(symbol=BTC)] == [bought["orderId"]]
    with pytest.raises(BinanceAPIException) as foreign:
        bob.futures_get_order(symbol=BTC, orderId=bought["orderId"])
    assert foreign.value.code == -2013
    fee = Decimal(bought["cumQuote"]) * Decimal("0.0005")
    assert Decimal(alice.futures_account_balance()[0]["balance"]) == Decimal(10000) - fee
    assert Decimal(bob.futures_account_balance()[0]["balance"]) == Decimal(10000)
    assert default.futures_account()["positions"][0]["positionAmt"] == "0.000"


def test_one_accounts_market_buy_does_not_move_the_others_position(paper: PaperExchange) -> None:
    """Bob holds a short; alice's buy on the same symbol leaves it exactly as it was, and a mark move that fills
    bob's resting order fills nothing of alice's."""
    alice, bob = client_of(paper, ALICE), client_of(paper, BOB)
    bob.futures_create_order(**market(ETH, "SELL", "0.300"))
    before = bob.futures_position_information(symbol=ETH)
    alice.futures_create_order(**market(ETH, "BUY", "0.500"))
    assert bob.futures_position_information(symbol=ETH) == before
    bob.futures_create_order(symbol=ETH, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.100", price="3000")
    paper.set_price(ETH, "2990")
    assert position_amt(bob, ETH) == "-0.200"
    assert position_amt(alice, ETH) == "0.500"


def test_leverage_and_position_mode_are_per_account(paper: PaperExchange) -> None:
    """Alice's leverage of 7 and her hedge mode leave bob at 20 in one-way mode, and bob still trades one-way."""
    alice, bob = client_of(paper, ALICE), client_of(paper, BOB)
    alice.futures_change_leverage(symbol=ETH, leverage=7)
    alice.futures_change_position_mode(dualSidePosition="true")
    assert alice.futures_get_position_mode() == {"dualSidePosition": True}
    assert bob.futures_get_position_mode() == {"dualSidePosition": False}
    assert alice.futures_position_information(symbol=ETH, version=2)[0]["leverage"] == "7"
    assert bob.futures_position_information(symbol=ETH, version=2)[0]["leverage"] == "20"
    assert bob.futures_create_order(**market(ETH, qty="0.010"))["positionSide"] == "BOTH"
    with pytest.raises(BinanceAPIException) as mismatch:
        alice.futures_create_order(**market(ETH, qty="0.010"))
    assert mismatch.value.code == -4061
    assert alice.futures_create_order(**market(ETH, qty="0.010", positionSide="LONG"))["positionSide"] == "LONG"


# ---- user-data streams --------------------------------------------------------------------------


def events_until_account_update(ws: ClientConnection) -> list[Any]:
    """Frames up to the first ACCOUNT_UPDATE (the one that follows a fill)."""
    return receive_until(ws, lambda e: e["e"] == "ACCOUNT_UPDATE", timeout=5)


def test_each_user_data_stream_carries_only_its_own_accounts_events(paper: PaperExchange) -> None:
    """Alice's and bob's listen keys differ; alice's fill streams to her connection only: the first frame bob's
    connection gets is his own order's."""
    alice, bob = client_of(paper, ALICE), client_of(paper, BOB)
    alice_key, bob_key = alice.futures_stream_get_listen_key(), bob.futures_stream_get_listen_key()
    assert alice_key != bob_key
    assert paper.client().futures_stream_get_listen_key() not in (alice_key, bob_key)
    with connect(f"{paper.ws_url}/ws/{alice_key}") as alice_ws, connect(f"{paper.ws_url}/ws/{bob_key}") as bob_ws:
        time.sleep(0.2)  # both connections are registered before the orders
        alice.futures_create_order(**market(qty="0.004"), newClientOrderId="alice-1")
        bob.futures_create_order(**market(qty="0.002"), newClientOrderId="bob-1")
        alice_events = events_until_account_update(alice_ws)
        bob_events = events_until_account_update(bob_ws)
    orders = [e["o"]["c"] for e in alice_events if e["e"] == "ORDER_TRADE_UPDATE"]
    assert orders == ["alice-1", "alice-1"]
    assert [e["o"]["c"] for e in bob_events if e["e"] == "ORDER_TRADE_UPDATE"] == ["bob-1", "bob-1"]
    assert alice_events[-1]["a"]["P"][0]["pa"] == "0.004"
    assert bob_events[-1]["a"]["P"][0]["pa"] == "0.002"


def test_a_listen_key_is_kept_alive_only_by_its_own_account(paper: PaperExchange) -> None:
    """PUT with alice's key signed by bob is -1125: bob has no active key, alice's is not his."""
    alice, bob = client_of(paper, ALICE), client_of(paper, BOB)
    alice_key = alice.futures_stream_get_listen_key()
    with pytest.raises(BinanceAPIException) as refused:
        bob.futures_stream_keepalive(listenKey=alice_key)
    assert refused.value.code == -1125
    alice.futures_stream_keepalive(listenKey=alice_key)


# ---- limits -------------------------------------------------------------------------------------


def test_the_order_count_limit_is_per_account(paper: PaperExchange) -> None:
    """With 2 orders per 10 s, alice's third order gets 429 -1015 while bob's first is accepted (his counter 1)."""
    paper.admin("POST", "/paper/v1/config", {"orders_per_10s": 2})
    for count in ("1", "2"):
        placed = signed_as(paper, ALICE, "POST", "/fapi/v1/order", **market())
        assert placed.headers["X-MBX-ORDER-COUNT-10S"] == count
    refused = signed_as(paper, ALICE, "POST", "/fapi/v1/order", **market())
    assert (refused.status_code, refused.json()["code"]) == (429, -1015)
    accepted = signed_as(paper, BOB, "POST", "/fapi/v1/order", **market())
    assert accepted.status_code == 200, accepted.text
    assert accepted.headers["X-MBX-ORDER-COUNT-10S"] == "1"
    assert paper.stats()["accounts"]["alice"]["orders_placed"] == 2
    assert paper.stats()["accounts"]["bob"]["orders_placed"] == 1


def test_the_request_weight_is_one_budget_for_every_account_of_the_ip(paper: PaperExchange) -> None:
    """Alice's and bob's requests add up in one weight window; with 10 a minute bob's second balance (weight 5
    after alice's 5 and his 5) gets 429 -1003, and so does alice's next."""
    paper.admin("POST", "/paper/v1/config", {"limits": {"weight_per_min": 10}})
    assert signed_as(paper, ALICE, "GET", "/fapi/v2/balance").headers["X-MBX-USED-WEIGHT-1M"] == "5"
    assert signed_as(paper, BOB, "GET", "/fapi/v2/balance").headers["X-MBX-USED-WEIGHT-1M"] == "10"
    over = signed_as(paper, BOB, "GET", "/fapi/v2/balance")
    assert (over.status_code, over.json()["code"]) == (429, -1003)
    assert signed_as(paper, ALICE, "GET", "/fapi/v2/balance").status_code == 429


# ---- the WebSocket API and other clients --------------------------------------------------------


def test_an_order_over_the_websocket_api_signed_with_bobs_key_lands_in_bobs_account(paper: PaperExchange) -> None:
    """python-binance's ``ws_futures_create_order`` with bob's pair places in bob's account; its ORDERS
    rateLimits count bob's orders, and alice's and default's accounts have no order."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    bob = client_of(paper, BOB)
    bob.ws_future.TIMEOUT = 2
    try:
        client_of(paper, BOB).futures_create_order(**market())
        placed = bob.ws_futures_create_order(**market(), newOrderRespType="RESULT", newClientOrderId="bob-ws-1")
    finally:
        loop.run_until_complete(bob.ws_future.close())
        loop.close()
        asyncio.set_event_loop(None)
    assert placed["status"] == "FILLED"
    assert [o["clientOrderId"] for o in paper.orders(account="bob", clientOrderId="bob-ws-1")] == ["bob-ws-1"]
    assert paper.orders(account="alice") == []
    assert paper.orders() == []
    assert position_amt(client_of(paper, BOB), BTC) == "0.004"


def ed_signed(key: Ed25519PrivateKey, api_key: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with ``apiKey``, ``timestamp`` and the Ed25519 ``signature`` of them sorted by name."""
    signed = {**params, "apiKey": api_key, "timestamp": int(time.time() * 1000)}
    payload = "&".join(f"{k}={v}" for k, v in sorted(signed.items()))
    return {**signed, "signature": base64.b64encode(key.sign(payload.encode())).decode()}


def test_after_a_logon_with_bobs_ed25519_key_unsigned_orders_land_in_bobs_account(
    paper: PaperExchange, bob_ed: Ed25519PrivateKey
) -> None:
    """``session.logon`` with the key ``--ed25519-key …:bob`` gives bob's account; an order sent on the session
    with a timestamp alone is bob's."""
    with connect(paper.ws_api_url) as ws:
        ws.send(json.dumps({"id": 1, "method": "session.logon", "params": ed_signed(bob_ed, BOB_ED, {})}))
        assert json.loads(ws.recv(timeout=5))["status"] == 200
        order = {**market(newClientOrderId="bob-session-1"), "timestamp": int(time.time() * 1000)}
        ws.send(json.dumps({"id": 2, "method": "order.place", "params": order}))
        answer = json.loads(ws.recv(timeout=5))
    assert answer["status"] == 200, answer
    assert [o["clientOrderId"] for o in paper.orders(account="bob")] == ["bob-session-1"]
    assert paper.orders() == []


def test_ccxt_with_alices_key_trades_in_alices_account(paper: PaperExchange) -> None:
    """ccxt's ``binanceusdm`` with alice's pair: its order and balance are alice's, default's wallet is whole."""
    exchange = pointed_at(ccxt.binanceusdm, paper, api_key=ALICE[1], api_secret=ALICE[2])
    exchange.load_markets()
    order = exchange.create_order("ETH/USDT:USDT", "market", "buy", 0.05)
    assert [o["orderId"] for o in paper.orders(account="alice")] == [int(order["id"])]
    assert exchange.fetch_balance()["USDT"]["total"] < 10000
    assert paper.client().futures_account_balance()[0]["balance"] == "10000.00000000"
    assert position_amt(client_of(paper, ALICE), ETH) == "0.050"


# ---- the admin API ------------------------------------------------------------------------------


def test_the_admin_api_lists_resets_and_reads_one_account(paper: PaperExchange) -> None:
    """``GET /paper/v1/accounts`` lists every account with its balance and open positions; a reset naming bob
    funds bob anew and leaves alice's position; ``orders?account=`` reads one account; an unknown one is 400."""
    client_of(paper, ALICE).futures_create_order(**market(qty="0.002"))
    client_of(paper, BOB).futures_create_order(**market(ETH, qty="0.100"))
    listed = {a["account"]: a for a in paper.admin("GET", "/paper/v1/accounts")["accounts"]}
    assert list(listed) == ["default", "alice", "bob"]
    assert (listed["default"]["balance"], listed["default"]["open_positions"]) == ("10000", 0)
    assert (listed["alice"]["open_positions"], listed["bob"]["open_positions"]) == (1, 1)
    assert Decimal(listed["alice"]["balance"]) < 10000
    reset = paper.admin("POST", "/paper/v1/reset", {"account": "bob", "balance": "500"})
    assert (reset["account"], reset["balance"]) == ("bob", "500")
    after = {a["account"]: a for a in paper.admin("GET", "/paper/v1/accounts")["accounts"]}
    assert (after["bob"]["balance"], after["bob"]["open_positions"]) == ("500", 0)
    assert after["alice"]["open_positions"] == 1
    assert paper.orders(account="bob") == []
    assert [o["symbol"] for o in paper.orders(account="alice")] == [BTC]
    assert client_of(paper, BOB).futures_account_balance()[0]["balance"] == "500.00000000"
    unknown = admin_get(paper, "/paper/v1/orders", account="carol")
    assert (unknown.status_code, unknown.json()) == (400, {"error": "unknown account 'carol'"})
    stats = paper.stats()
    assert stats["orders_placed"] == 2
    assert stats["accounts"]["alice"] == {"orders_placed": 1, "algo_orders_placed": 0, "fills": 1}


def test_a_fault_for_one_account_hits_only_that_accounts_requests(paper: PaperExchange) -> None:
    """A ``reject`` fault with ``account: bob`` lets alice's order through and refuses bob's; a fault naming an
    account the exchange lacks is 400."""
    fault = paper.add_fault(kind="reject", account="bob")
    assert fault["account"] == "bob"
    client_of(paper, ALICE).futures_create_order(**market())
    assert [f["id"] for f in paper.admin("GET", "/paper/v1/faults")["faults"]] == [fault["id"]]
    with pytest.raises(BinanceAPIException) as rejected:
        client_of(paper, BOB).futures_create_order(**market())
    assert rejected.value.code == -2010
    assert paper.orders(account="bob") == []
    assert len(paper.orders(account="alice")) == 1
    bad = requests.post(paper.url + "/paper/v1/faults", json={"kind": "reject", "account": "carol"}, timeout=10)
    assert bad.status_code == 400


# ---- persistence --------------------------------------------------------------------------------


def test_a_restart_keeps_every_accounts_positions_and_settings(
    tmp_path: Path, start_paper_server: Callable[..., PaperExchange]
) -> None:
    """After a restart on the same --state file alice's long, bob's short and bob's leverage are as they were."""
    state = str(tmp_path / "paper.sqlite3")
    first = start_paper_server("--tick-ms", "0", *account_flags(ALICE, BOB), state=state)
    client_of(first, ALICE).futures_create_order(**market(ETH, "BUY", "0.500"))
    client_of(first, BOB).futures_change_leverage(symbol=ETH, leverage=5)
    sold = client_of(first, BOB).futures_create_order(**market(ETH, "SELL", "0.200"))
    first.stop()
    second = start_paper_server("--tick-ms", "0", *account_flags(ALICE, BOB), state=state)
    alice, bob = client_of(second, ALICE), client_of(second, BOB)
    assert position_amt(alice, ETH) == "0.500"
    assert position_amt(bob, ETH) == "-0.200"
    assert bob.futures_position_information(symbol=ETH, version=2)[0]["leverage"] == "5"
    assert alice.futures_position_information(symbol=ETH, version=2)[0]["leverage"] == "20"
    assert position_amt(second.client(), ETH) == "0.000"
    assert bob.futures_get_order(symbol=ETH, orderId=sold["orderId"])["status"] == "FILLED"
    assert bob.futures_create_order(**market(ETH, "SELL", "0.010"))["orderId"] > sold["orderId"]


OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE prices (symbol TEXT PRIMARY KEY, price TEXT NOT NULL);
CREATE TABLE positions (
    symbol TEXT NOT NULL, side TEXT NOT NULL, amt TEXT NOT NULL, entry TEXT NOT NULL, update_time INTEGER NOT NULL,
    PRIMARY KEY (symbol, side));
CREATE TABLE orders (order_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE algo_orders (algo_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE fills (trade_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
"""


def write_single_account_state(path: Path) -> int:
    """A state file as the single-account paper exchange wrote it: a 0.5 ETH long at 3000, leverage 7, a wallet
    of 1234.5 and one resting order; returns that order's id."""
    now = int(time.time() * 1000)
    order = Order(
        order_id=4_000_000_041,
        symbol=ETH,
        client_order_id="old-resting",
        side="BUY",
        position_side="BOTH",
        type="LIMIT",
        orig_type="LIMIT",
        time_in_force="GTC",
        price=Decimal("2900.00"),
        orig_qty=Decimal("0.100"),
        reduce_only=False,
        time_ms=now,
        update_time_ms=now,
    )
    document = {
        "wallet": "1234.5",
        "dual_side": False,
        "leverage": {ETH: 7},
        "margin_type": {},
        "update_time": now,
        "listen_key": None,
        "listen_key_expires_ms": 0,
        "ids": {"order_id": 4_000_000_042, "algo_id": 3_000_000_001, "trade_id": 500_000_010},
    }
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('account', ?)", (json.dumps(document),))
    db.execute("INSERT INTO prices VALUES (?, ?)", (ETH, "3100.00"))
    db.execute("INSERT INTO positions VALUES (?, 'BOTH', '0.500', '3000', ?)", (ETH, now))
    db.execute("INSERT INTO orders VALUES (?, ?)", (order.order_id, dump(order)))
    db.commit()
    db.close()
    return order.order_id


def test_a_single_account_state_file_loads_as_the_default_account(
    tmp_path: Path, start_paper_server: Callable[..., PaperExchange]
) -> None:
    """A file from before accounts: its wallet, position, leverage, order and id sequence are ``default``'s;
    an account added on this start is fresh; after another restart it is all still there."""
    state = tmp_path / "old.sqlite3"
    order_id = write_single_account_state(state)
    for _restart in range(2):
        paper = start_paper_server("--tick-ms", "0", *account_flags(ALICE), state=str(state))
        default = paper.client()
        assert default.futures_account_balance()[0]["balance"] == "1234.50000000"
        assert position_amt(default, ETH) == "0.500"
        assert default.futures_position_information(symbol=ETH, version=2)[0]["leverage"] == "7"
        assert default.futures_get_order(symbol=ETH, orderId=order_id)["status"] == "NEW"
        assert paper.admin("GET", "/paper/v1/prices")[ETH] == "3100.00"
        alice = client_of(paper, ALICE)
        assert alice.futures_account_balance()[0]["balance"] == "10000.00000000"
        assert position_amt(alice, ETH) == "0.000"
        paper.stop()
    paper = start_paper_server("--tick-ms", "0", state=str(state))
    assert paper.client().futures_create_order(**market(ETH, qty="0.010"))["orderId"] == 4_000_000_042


# ---- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "alice"], "not NAME:API_KEY:API_SECRET"),
        (["--account", "alice:key-only"], "not NAME:API_KEY:API_SECRET"),
        (["--account", "Alice:k:s"], "account name 'Alice'"),
        (["--account", "a" * 33 + ":k:s"], "1 to 32 of a-z"),
        (["--account", "default:k:s"], "account 'default' is named twice"),
        (["--account", "bob:k1:s", "--account", "bob:k2:s"], "account 'bob' is named twice"),
        (["--account", "bob:k:s", "--account", "carol:k:s"], "API key 'k' is already a key of account 'bob'"),
        (["--account", f"bob:{PAPER_API_KEY}:s"], f"API key '{PAPER_API_KEY}' is already a key of account"),
    ],
)
def test_bad_account_options_are_usage_errors(args: list[str], message: str) -> None:
    """A malformed ``--account``, a bad or duplicate name and an API key given twice exit 2 and say why."""
    result = CliRunner().invoke(paper_command, [*args, "--state", ":memory:"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_an_ed25519_key_of_an_unknown_account_is_a_usage_error(tmp_path: Path) -> None:
    """``--ed25519-key KEY:PEM:carol`` without ``--account carol…`` exits 2 naming the account."""
    public = tmp_path / "k.pub.pem"
    public.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    result = CliRunner().invoke(paper_command, ["--ed25519-key", f"k:{public}:carol", "--state", ":memory:"])
    assert result.exit_code == 2, result.output
    assert "no account 'carol'" in result.output
