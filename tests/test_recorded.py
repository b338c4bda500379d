"""Binance's own REST answers, recorded in tests/data/binance_rest: qexec's models read them, and the paper exchange
answers the same requests with the same keys and JSON types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from paper_fixtures import PaperExchange

from qexec.models import AlgoOrder, OrderState, PositionRisk

RECORDED = Path(__file__).parent / "data" / "binance_rest"


def recorded(name: str) -> tuple[Any, set[str]]:
    """A recorded payload and the keys Binance sends only in some cases."""
    body = json.loads((RECORDED / f"{name}.json").read_text())
    return body["payload"], set(body["_conditional"])


def shape(value: Any) -> str:
    """A JSON value's type, as a name."""
    return {bool: "bool", int: "number", float: "number", str: "string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def assert_same_shape(venue: dict[str, Any], paper: dict[str, Any], conditional: set[str]) -> None:
    """Every key the venue sends (always) is in the paper's answer, with the same JSON type."""
    missing = sorted(set(venue) - conditional - set(paper))
    assert missing == [], f"the paper exchange leaves out {missing}"
    differ = {k: (shape(v), shape(paper[k])) for k, v in venue.items() if k in paper and shape(v) != shape(paper[k])}
    assert differ == {}, f"types differ (venue, paper): {differ}"


@pytest.mark.parametrize("name", ["query_order", "new_order_ack"])
def test_qexec_reads_the_venues_order_answers(name: str) -> None:
    """The order model reads Binance's own Query Order example and a live ACK answer."""
    payload, _ = recorded(name)
    order = OrderState.model_validate(payload)
    assert order.orderId == payload["orderId"] and order.status.value == "NEW"
    assert not order.settled or order.executedQty == 0


def test_qexec_reads_the_venues_algo_order_answer() -> None:
    """The algo order model reads the SDK's recorded `POST /fapi/v1/algoOrder` answer."""
    payload, _ = recorded("algo_order")
    algo = AlgoOrder.model_validate(payload)
    assert (algo.algoId, algo.clientAlgoId, algo.live) == (2146760, "6B2I9XVcJpCjqPAJ4YoFX7", True)


@pytest.mark.parametrize("name", ["position_risk_v3", "position_risk_v2"])
def test_qexec_reads_the_venues_position_answers(name: str) -> None:
    """The position model reads Binance's positionRisk v3 and v2 examples."""
    [payload], _ = recorded(name)
    position = PositionRisk.model_validate(payload)
    assert position.symbol == payload["symbol"] and str(position.positionAmt) == payload["positionAmt"]


def test_the_paper_exchange_answers_orders_in_the_venues_shape(paper: PaperExchange) -> None:
    """A MARKET order's ACK answer and a Query Order answer carry the venue's keys and types."""
    client = paper.client()
    paper.set_price("BTCUSDT", "95000.0")
    ack = client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    assert_same_shape(*recorded("new_order_ack")[:1], ack, recorded("new_order_ack")[1])
    venue, conditional = recorded("query_order")
    queried = client.futures_get_order(symbol="BTCUSDT", orderId=ack["orderId"])
    assert_same_shape(venue, queried, conditional)


def test_the_paper_exchange_answers_algo_orders_in_the_venues_shape(paper: PaperExchange) -> None:
    """`POST /fapi/v1/algoOrder` answers with the keys and types of the SDK's recorded answer."""
    client = paper.client()
    paper.set_price("BNBUSDT", "650.000")
    client.futures_create_order(symbol="BNBUSDT", side="BUY", type="MARKET", quantity="0.10")
    answer = client.futures_create_order(
        symbol="BNBUSDT", side="SELL", type="TAKE_PROFIT", quantity="0.01", price="750.000", stopPrice="750.000"
    )
    venue, conditional = recorded("algo_order")
    assert_same_shape(venue, answer, conditional)


@pytest.mark.parametrize("version", [3, 2])
def test_the_paper_exchange_answers_position_risk_in_the_venues_shape(paper: PaperExchange, version: int) -> None:
    """positionRisk v3 and v2 rows carry the keys and types of Binance's examples."""
    client = paper.client()
    paper.set_price("ADAUSDT", "0.90000")
    client.futures_create_order(symbol="ADAUSDT", side="BUY", type="MARKET", quantity="30")
    [row] = [
        r for r in client.futures_position_information(symbol="ADAUSDT", version=version) if r["positionAmt"] != "0"
    ]
    [venue], conditional = recorded(f"position_risk_v{version}")
    assert_same_shape(venue, row, conditional)
