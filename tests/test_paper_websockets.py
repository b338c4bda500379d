"""The paper exchange's user-data stream, read with a websockets client while python-binance trades over REST."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from binance.client import Client
from binance.exceptions import BinanceAPIException
from paper_fixtures import PaperExchange, receive, receive_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

ORDER_FIELDS = set(
    "s c S o f q p ap sp x X i l z L N n T t b a m R wt ot ps cp rp V pm gtd er".split()  # noqa: SIM905
)
POSITION_FIELDS = {"s", "pa", "ep", "bep", "cr", "up", "mt", "iw", "ps"}
ALGO_FIELDS = set(
    "caid aid at o s S ps f q X ai ap aq act tp p V wt pm cp pP R tt gtd rm".split()  # noqa: SIM905
)


@contextmanager
def user_stream(paper: PaperExchange, client: Client, path: str = "/private/ws?listenKey={key}") -> Iterator[Any]:
    """A connection to the account's user-data stream (a listen key from POST /fapi/v1/listenKey)."""
    key = client.futures_stream_get_listen_key()
    with connect(paper.ws_url + path.format(key=key), open_timeout=5) as ws:
        yield ws


def closed(ws: ClientConnection, timeout: float = 2.0) -> ConnectionClosed:
    """The ConnectionClosed the next read raises (frames still queued before the close are skipped)."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as caught:
        while True:
            ws.recv(timeout=max(0.0, deadline - time.monotonic()))
    return caught.value


def kinds(frames: list[dict[str, Any]]) -> list[str]:
    """Each event as ``ORDER_TRADE_UPDATE:x/X``, ``ALGO_UPDATE:X`` or its type."""
    out = []
    for event in frames:
        if event["e"] == "ORDER_TRADE_UPDATE":
            out.append(f"ORDER:{event['o']['x']}/{event['o']['X']}")
        elif event["e"] == "ALGO_UPDATE":
            out.append(f"ALGO:{event['o']['X']}")
        else:
            out.append(event["e"])
    return out


def test_result_market_order_streams_new_then_filled_and_an_account_update_matching_position_risk(
    paper: PaperExchange,
) -> None:
    """A RESULT MARKET order: NEW, then TRADE/FILLED with the REST figures, then ACCOUNT_UPDATE as positionRisk."""
    client = paper.client()
    with user_stream(paper, client) as ws:
        order = client.futures_create_order(
            symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002", newOrderRespType="RESULT"
        )
        new, trade, account = receive(ws), receive(ws), receive(ws)
        position = client.futures_position_information(symbol="BTCUSDT")[0]
        balance = client.futures_account_balance()[0]
    assert kinds([new, trade, account]) == ["ORDER:NEW/NEW", "ORDER:TRADE/FILLED", "ACCOUNT_UPDATE"]
    assert set(new["o"]) >= ORDER_FIELDS
    assert set(trade["o"]) >= ORDER_FIELDS
    o = trade["o"]
    assert (o["i"], o["c"], o["s"], o["S"], o["o"], o["ps"]) == (
        order["orderId"],
        order["clientOrderId"],
        "BTCUSDT",
        "BUY",
        "MARKET",
        "BOTH",
    )
    assert (o["q"], o["l"], o["z"]) == ("0.002", "0.002", order["executedQty"])
    assert o["ap"] == order["avgPrice"]
    assert Decimal(o["L"]) == Decimal(order["avgPrice"])
    assert o["T"] == trade["T"] == order["updateTime"]
    assert (o["N"], o["m"], o["er"]) == ("USDT", False, "0")
    assert Decimal(o["n"]) == Decimal(order["cumQuote"]) * Decimal("0.0005")
    assert isinstance(o["t"], int) and o["t"] > 0
    trades = client.futures_account_trades(symbol="BTCUSDT")
    assert [t["id"] for t in trades] == [o["t"]]
    assert new["o"]["T"] == new["T"] == order["time"]
    assert account["a"]["m"] == "ORDER"
    assert account["a"]["B"] == [
        {"a": "USDT", "wb": balance["balance"], "cw": balance["crossWalletBalance"], "bc": "0"}
    ]
    [p] = account["a"]["P"]
    assert set(p) == POSITION_FIELDS
    assert (p["s"], p["ps"], p["mt"]) == ("BTCUSDT", "BOTH", "cross")
    assert (p["pa"], p["ep"]) == (position["positionAmt"], position["entryPrice"])


def test_events_are_on_the_stream_right_after_the_rest_answer(paper: PaperExchange) -> None:
    """An ACK MARKET order answers NEW, and its fill is already on the stream when the answer is read."""
    client = paper.client()
    with user_stream(paper, client) as ws:
        ack = client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.010")
        answered = time.monotonic()
        frames = receive_until(ws, lambda e: e["e"] == "ACCOUNT_UPDATE", timeout=1.0)
        waited = time.monotonic() - answered
    assert ack["status"] == "NEW"
    assert kinds(frames) == ["ORDER:NEW/NEW", "ORDER:TRADE/FILLED", "ACCOUNT_UPDATE"]
    assert waited < 0.25


def test_delayed_fill_arrives_on_the_stream_after_the_rest_answer_said_new(paper: PaperExchange) -> None:
    """With a fill delay the REST answer and the first event say NEW; the TRADE comes when the fill happens."""
    paper.admin("POST", "/paper/v1/config", {"fill_delay_ms": 300})
    client = paper.client()
    with user_stream(paper, client) as ws:
        ack = client.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002")
        new = receive(ws, timeout=0.2)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.1)
        trade, account = receive(ws), receive(ws)
    assert ack["status"] == "NEW"
    assert kinds([new, trade, account]) == ["ORDER:NEW/NEW", "ORDER:TRADE/FILLED", "ACCOUNT_UPDATE"]
    assert trade["o"]["i"] == ack["orderId"]
    assert trade["E"] - new["E"] >= 250
    assert account["a"]["P"][0]["pa"] == "-0.002"
    assert client.futures_get_order(symbol="BTCUSDT", orderId=ack["orderId"])["updateTime"] == trade["o"]["T"]


def test_cancelling_a_limit_order_streams_new_then_canceled(paper: PaperExchange) -> None:
    """A resting LIMIT order streams NEW; DELETE /fapi/v1/order streams CANCELED and no ACCOUNT_UPDATE."""
    paper.set_price("LINKUSDT", "14.000")
    client = paper.client()
    with user_stream(paper, client) as ws:
        order = client.futures_create_order(
            symbol="LINKUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="2", price="13.500"
        )
        new = receive(ws)
        cancelled = client.futures_cancel_order(symbol="LINKUSDT", orderId=order["orderId"])
        cancel = receive(ws)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.1)
    assert kinds([new, cancel]) == ["ORDER:NEW/NEW", "ORDER:CANCELED/CANCELED"]
    assert (new["o"]["o"], new["o"]["f"], new["o"]["p"], new["o"]["q"]) == ("LIMIT", "GTC", "13.500", order["origQty"])
    assert cancel["o"]["T"] == cancelled["updateTime"]


def test_limit_order_filled_by_a_price_move_streams_a_maker_trade(paper: PaperExchange) -> None:
    """When the mark crosses a resting LIMIT order the stream shows its TRADE as maker, at the limit price."""
    paper.set_price("LINKUSDT", "14.000")
    client = paper.client()
    with user_stream(paper, client) as ws:
        client.futures_create_order(
            symbol="LINKUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="2", price="13.500"
        )
        receive(ws)
        paper.set_price("LINKUSDT", "13.400")
        trade, account = receive(ws), receive(ws)
    assert kinds([trade, account]) == ["ORDER:TRADE/FILLED", "ACCOUNT_UPDATE"]
    assert (trade["o"]["m"], trade["o"]["L"], trade["o"]["ap"]) == (True, "13.500", "13.50000")
    assert Decimal(trade["o"]["n"]) == Decimal("27") * Decimal("0.0002")


def test_partly_filled_market_order_ends_expired_with_reason_9(paper: PaperExchange) -> None:
    """A MARKET order that fills only partly streams PARTIALLY_FILLED, then EXPIRED with er 9."""
    paper.add_fault(kind="partial_fill", ratio=0.5)
    client = paper.client()
    with user_stream(paper, client) as ws:
        order = client.futures_create_order(
            symbol="SOLUSDT", side="BUY", type="MARKET", quantity="2", newOrderRespType="RESULT"
        )
        frames = [receive(ws) for _ in range(4)]
    assert kinds(frames) == ["ORDER:NEW/NEW", "ORDER:TRADE/PARTIALLY_FILLED", "ACCOUNT_UPDATE", "ORDER:EXPIRED/EXPIRED"]
    assert (frames[1]["o"]["l"], frames[1]["o"]["z"]) == ("1", "1")
    assert (frames[3]["o"]["z"], frames[3]["o"]["er"]) == (order["executedQty"], "9")


def test_closing_a_position_streams_the_realised_profit_and_a_flat_position(paper: PaperExchange) -> None:
    """A reduce-only close streams its realised profit (rp) and an ACCOUNT_UPDATE with pa "0"."""
    client = paper.client()
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="1.000")
    paper.set_price("ETHUSDT", "3400.00")
    with user_stream(paper, client) as ws:
        client.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="1.000", reduceOnly="true")
        frames = receive_until(ws, lambda e: e["e"] == "ACCOUNT_UPDATE")
    trade, account = frames[-2], frames[-1]
    realized = Decimal(trade["o"]["rp"])
    assert realized == pytest.approx(Decimal(100) - Decimal("0.66"), abs=Decimal("0.1"))
    assert trade["o"]["R"] is True
    [p] = account["a"]["P"]
    assert (p["pa"], p["ep"], p["up"]) == ("0", "0.00000", "0.00000000")
    assert Decimal(p["cr"]) == realized
    assert client.futures_position_information(symbol="ETHUSDT") == []


def test_hedge_mode_account_update_names_the_position_side(paper: PaperExchange) -> None:
    """In hedge mode the fill's ACCOUNT_UPDATE lists the LONG position only, as positionRisk shows it."""
    paper.admin("POST", "/paper/v1/reset", {"dual_side": True})
    client = paper.client()
    with user_stream(paper, client) as ws:
        client.futures_create_order(symbol="BNBUSDT", side="BUY", positionSide="LONG", type="MARKET", quantity="0.10")
        frames = receive_until(ws, lambda e: e["e"] == "ACCOUNT_UPDATE")
    long = next(p for p in client.futures_position_information(symbol="BNBUSDT") if p["positionSide"] == "LONG")
    assert frames[1]["o"]["ps"] == "LONG"
    [p] = frames[-1]["a"]["P"]
    assert (p["ps"], p["pa"], p["ep"]) == ("LONG", long["positionAmt"], long["entryPrice"])


def test_algo_order_placement_and_cancel_stream_algo_updates(paper: PaperExchange) -> None:
    """A STOP_MARKET through python-binance streams ALGO_UPDATE NEW; its cancel streams ALGO_UPDATE CANCELED."""
    client = paper.client()
    client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    with user_stream(paper, client) as ws:
        algo = client.futures_create_order(
            symbol="BTCUSDT", side="SELL", type="STOP_MARKET", stopPrice="90000", closePosition="true"
        )
        new = receive(ws)
        client.futures_cancel_order(algoId=algo["algoId"])
        cancel = receive(ws)
    assert kinds([new, cancel]) == ["ALGO:NEW", "ALGO:CANCELED"]
    o = new["o"]
    assert set(o) >= ALGO_FIELDS
    assert (o["caid"], o["aid"], o["at"], o["o"], o["tp"]) == (
        algo["clientAlgoId"],
        algo["algoId"],
        "CONDITIONAL",
        "STOP_MARKET",
        "90000.0",
    )
    assert (o["cp"], o["ai"], o["act"], o["tt"]) == (True, "", "0", 0)
    assert cancel["o"]["aid"] == algo["algoId"]


def test_triggered_stop_streams_triggered_its_order_and_finished(paper: PaperExchange) -> None:
    """A stop the mark reaches: ALGO TRIGGERED, the MARKET order's NEW and TRADE, a flat position, ALGO FINISHED."""
    client = paper.client()
    client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    algo = client.futures_create_order(
        symbol="BTCUSDT", side="SELL", type="STOP_MARKET", stopPrice="90000", closePosition="true"
    )
    with user_stream(paper, client) as ws:
        paper.set_price("BTCUSDT", "89000.0")
        frames = receive_until(ws, lambda e: e["e"] == "ALGO_UPDATE" and e["o"]["X"] == "FINISHED")
    assert kinds(frames) == [
        "ALGO:TRIGGERED",
        "ORDER:NEW/NEW",
        "ORDER:TRADE/FILLED",
        "ACCOUNT_UPDATE",
        "ALGO:FINISHED",
    ]
    done = client.futures_get_order(algoId=algo["algoId"])
    triggered, new, trade, account, finished = frames
    assert triggered["o"]["ai"] == finished["o"]["ai"] == done["actualOrderId"] == str(new["o"]["i"])
    assert (triggered["o"]["act"], triggered["o"]["tt"]) == ("MARKET", done["triggerTime"])
    assert (new["o"]["o"], new["o"]["ot"], new["o"]["sp"], new["o"]["cp"]) == ("MARKET", "STOP_MARKET", "90000.0", True)
    assert new["o"]["c"] == algo["clientAlgoId"]
    assert trade["o"]["z"] == finished["o"]["aq"] == done["actualQty"] == "0.002"
    assert account["a"]["P"][0]["pa"] == "0"


def test_events_parameter_limits_what_a_connection_receives(paper: PaperExchange) -> None:
    """``events=ACCOUNT_UPDATE`` gets only account updates; a second, unfiltered connection gets everything."""
    client = paper.client()
    key = client.futures_stream_get_listen_key()
    url = f"{paper.ws_url}/private/ws?listenKey={key}"
    with connect(url + "&events=ACCOUNT_UPDATE/ALGO_UPDATE") as filtered, connect(url) as everything:
        client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
        only = receive(filtered)
        with pytest.raises(TimeoutError):
            filtered.recv(timeout=0.1)
        frames = [receive(everything) for _ in range(3)]
    assert only["e"] == "ACCOUNT_UPDATE"
    assert kinds(frames) == ["ORDER:NEW/NEW", "ORDER:TRADE/FILLED", "ACCOUNT_UPDATE"]
    assert frames[2] == only


@pytest.mark.parametrize("path", ["/ws/{key}", "/private/ws/{key}"])
def test_legacy_and_path_style_urls_serve_the_user_data_stream(paper: PaperExchange, path: str) -> None:
    """``/ws/<listenKey>`` (the legacy URL) and ``/private/ws/<listenKey>`` carry the same events."""
    client = paper.client()
    with user_stream(paper, client, path) as ws:
        client.futures_create_order(symbol="XRPUSDT", side="BUY", type="MARKET", quantity="10")
        frames = [receive(ws) for _ in range(3)]
    assert kinds(frames) == ["ORDER:NEW/NEW", "ORDER:TRADE/FILLED", "ACCOUNT_UPDATE"]


@pytest.mark.parametrize("path", ["/private/ws?listenKey=nosuchkey", "/private/ws", "/ws/nosuchkey"])
def test_an_unknown_listen_key_is_accepted_then_closed_with_1008(paper: PaperExchange, path: str) -> None:
    """A key that is not the account's active one: the socket opens, then closes 1008 "This listenKey ..."."""
    paper.client().futures_stream_get_listen_key()
    with connect(paper.ws_url + path) as ws:
        exc = closed(ws)
    assert exc.rcvd is not None
    assert (exc.rcvd.code, exc.rcvd.reason) == (1008, "This listenKey does not exist.")


def test_an_expired_listen_key_sends_listen_key_expired_and_closes(paper: PaperExchange) -> None:
    """When the key outlives its ttl every connection gets listenKeyExpired and is closed; PUT then says -1125."""
    paper.admin("POST", "/paper/v1/config", {"listen_key_ttl_s": 0.4})
    client = paper.client()
    with user_stream(paper, client) as ws:
        key = ws.request.path.split("listenKey=")[1]
        expired = receive(ws, timeout=2.0)
        exc = closed(ws)
    assert (expired["e"], expired["listenKey"]) == ("listenKeyExpired", key)
    assert isinstance(expired["E"], int)
    assert exc.rcvd is not None and exc.rcvd.code == 1000
    with pytest.raises(BinanceAPIException) as refused:
        client.futures_stream_keepalive(key)
    assert refused.value.code == -1125
    assert client.futures_stream_get_listen_key() != key
    with connect(f"{paper.ws_url}/ws/{key}") as stale:
        assert closed(stale).rcvd.code == 1008  # type: ignore[union-attr]


def test_keepalive_extends_the_listen_key(paper: PaperExchange) -> None:
    """A PUT before the ttl runs out keeps the key and its connection alive past the first deadline."""
    paper.admin("POST", "/paper/v1/config", {"listen_key_ttl_s": 0.6})
    client = paper.client()
    with user_stream(paper, client) as ws:
        key = ws.request.path.split("listenKey=")[1]
        time.sleep(0.35)
        client.futures_stream_keepalive(key)
        time.sleep(0.4)
        client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
        assert receive(ws)["e"] == "ORDER_TRADE_UPDATE"
    assert client.futures_stream_get_listen_key() == key


def test_deleting_the_listen_key_closes_its_connections(paper: PaperExchange) -> None:
    """DELETE /fapi/v1/listenKey closes the stream; the key is gone for PUT too."""
    client = paper.client()
    with user_stream(paper, client) as ws:
        key = ws.request.path.split("listenKey=")[1]
        client.futures_stream_close(key)
        exc = closed(ws)
    assert exc.rcvd is not None and exc.rcvd.code == 1000
    with pytest.raises(BinanceAPIException) as refused:
        client.futures_stream_keepalive(key)
    assert refused.value.code == -1125


def test_reset_closes_user_stream_connections(paper: PaperExchange) -> None:
    """POST /paper/v1/reset ends the account and its key, and so its user-data connections."""
    client = paper.client()
    with user_stream(paper, client) as ws:
        paper.admin("POST", "/paper/v1/reset")
        closed(ws)
    assert paper.stats()["ws_connections"] == 0


def test_leverage_change_streams_account_config_update(paper: PaperExchange) -> None:
    """POST /fapi/v1/leverage streams ACCOUNT_CONFIG_UPDATE with the symbol and its new leverage."""
    client = paper.client()
    with user_stream(paper, client) as ws:
        client.futures_change_leverage(symbol="ETHUSDT", leverage=7)
        event = receive(ws)
    assert (event["e"], event["ac"]) == ("ACCOUNT_CONFIG_UPDATE", {"s": "ETHUSDT", "l": 7})


def test_a_leverage_change_from_another_client_streams_and_a_refused_one_streams_nothing(paper: PaperExchange) -> None:
    """A signed POST /fapi/v1/leverage by another client (as the Binance UI would) streams ACCOUNT_CONFIG_UPDATE in
    Binance's shape; one the venue refuses (-2028) streams nothing."""
    client = paper.client()
    paper.set_price("ETHUSDT", "3300.00")
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="5")
    with user_stream(paper, client) as ws:
        refused = paper.signed("POST", "/fapi/v1/leverage", {"symbol": "ETHUSDT", "leverage": 1})
        assert refused.json()["code"] == -2028
        assert paper.signed("POST", "/fapi/v1/leverage", {"symbol": "ETHUSDT", "leverage": 25}).status_code == 200
        event = receive(ws)
    assert set(event) == {"e", "E", "T", "ac"} and isinstance(event["E"], int) and isinstance(event["T"], int)
    assert (event["e"], event["ac"]) == ("ACCOUNT_CONFIG_UPDATE", {"s": "ETHUSDT", "l": 25})


def test_margin_type_change_streams_an_account_update_with_the_new_margin_type(paper: PaperExchange) -> None:
    """POST /fapi/v1/marginType streams ACCOUNT_UPDATE (reason MARGIN_TYPE_CHANGE) with the flat position."""
    client = paper.client()
    with user_stream(paper, client) as ws:
        client.futures_change_margin_type(symbol="SOLUSDT", marginType="ISOLATED")
        event = receive(ws)
    assert (event["e"], event["a"]["m"]) == ("ACCOUNT_UPDATE", "MARGIN_TYPE_CHANGE")
    [p] = event["a"]["P"]
    assert (p["s"], p["pa"], p["mt"], p["ps"]) == ("SOLUSDT", "0", "isolated", "BOTH")


def test_ioc_limit_order_that_cannot_fill_streams_expired_with_reason_2(paper: PaperExchange) -> None:
    """An IOC LIMIT order away from the mark is accepted (NEW) and expires at once with er 2."""
    paper.set_price("LINKUSDT", "14.000")
    client = paper.client()
    with user_stream(paper, client) as ws:
        order = client.futures_create_order(
            symbol="LINKUSDT", side="BUY", type="LIMIT", timeInForce="IOC", quantity="2", price="13.000"
        )
        frames = [receive(ws) for _ in range(2)]
    assert kinds(frames) == ["ORDER:NEW/NEW", "ORDER:EXPIRED/EXPIRED"]
    assert (frames[1]["o"]["i"], frames[1]["o"]["f"], frames[1]["o"]["er"]) == (order["orderId"], "IOC", "2")
