"""The paper account survives a restart when its state lives in a file."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from paper_fixtures import PaperExchange


def test_orders_positions_balances_and_ids_survive_a_restart(
    tmp_path: Path, start_paper_server: Callable[..., PaperExchange]
) -> None:
    """After a restart on the same --state file everything is as it was and order ids keep growing."""
    state = str(tmp_path / "paper.sqlite3")
    first = start_paper_server("--tick-ms", "0", state=state)
    client = first.client()
    first.set_price("ETHUSDT", "3300.00")
    client.futures_change_leverage(symbol="ETHUSDT", leverage=7)
    filled = client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.500")
    resting = client.futures_create_order(
        symbol="ETHUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.100",
        price="3000.00",
        newClientOrderId="resting-1",
    )
    algo = client.futures_create_order(
        symbol="ETHUSDT", side="SELL", type="STOP_MARKET", stopPrice="3100", closePosition="true"
    )
    balance = client.futures_account_balance()[0]["balance"]
    position = client.futures_position_information(symbol="ETHUSDT")
    first.stop()

    second = start_paper_server("--tick-ms", "0", state=state)
    client = second.client()
    assert client.futures_get_order(symbol="ETHUSDT", orderId=filled["orderId"])["status"] == "FILLED"
    assert client.futures_get_order(symbol="ETHUSDT", origClientOrderId="resting-1")["status"] == "NEW"
    assert client.futures_account_balance()[0]["balance"] == balance
    assert client.futures_position_information(symbol="ETHUSDT") == position
    assert client.futures_position_information(symbol="ETHUSDT", version=2)[0]["leverage"] == "7"
    assert client.futures_get_order(algoId=algo["algoId"])["algoStatus"] == "NEW"
    assert second.admin("GET", "/paper/v1/prices")["ETHUSDT"] == "3300.00"
    later = client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.010")
    assert later["orderId"] > resting["orderId"]
    second.set_price("ETHUSDT", "3000.00")
    assert client.futures_get_order(symbol="ETHUSDT", orderId=resting["orderId"])["status"] == "FILLED"


def test_a_delayed_fill_interrupted_by_a_restart_completes_after_it(
    tmp_path: Path, start_paper_server: Callable[..., PaperExchange]
) -> None:
    """A MARKET order still NEW at shutdown is filled when the exchange comes back."""
    state = str(tmp_path / "paper.sqlite3")
    first = start_paper_server("--tick-ms", "0", "--fill-delay-ms", "60000", state=state)
    order = first.client().futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    first.stop()
    second = start_paper_server("--tick-ms", "0", state=state)
    deadline = time.monotonic() + 5
    status = ""
    while time.monotonic() < deadline and status != "FILLED":
        status = second.client().futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])["status"]
    assert status == "FILLED"
