"""The vocabulary: intents parse as producers write them, and results cannot lie about fills."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from qexec.errors import IntentError
from qexec.models import ExecutionResult, Intent, OrderState, ResultStatus, Side, Ticket, client_order_id

SEED = {
    "symbol": "AVAXUSDT",
    "side": "BUY",
    "position_size_usd": 100.0,
    "leverage": 2.0,
    "entry_price": 12.77,
    "stop_loss": 12.45075,
    "take_profit": 13.1531,
    "confidence": 0.72,
    "timestamp": "2026-01-01T18:47:38.785347+00:00",
}


def test_seed_shape_parses_from_a_json_payload_field() -> None:
    """The seed producer's intent, as one JSON `payload` field, parses with the entry id as its id."""
    intent = Intent.from_fields({"payload": json.dumps(SEED)}, default_id="1-0")
    assert intent.id == "1-0"
    assert intent.side is Side.BUY
    assert intent.leverage == 2
    assert intent.timestamp == datetime(2026, 1, 1, 18, 47, 38, 785347, tzinfo=UTC)


def test_seed_shape_parses_from_flat_string_fields() -> None:
    """The same intent as flat stream fields (all strings) parses to the same values."""
    flat = {k: str(v) for k, v in SEED.items()}
    assert Intent.from_fields(flat, default_id="1-0") == Intent.from_fields(
        {"data": json.dumps(SEED)}, default_id="1-0"
    )


@pytest.mark.parametrize(("alias", "side"), [("LONG", Side.BUY), ("short", Side.SELL), ("sell", Side.SELL)])
def test_side_aliases_and_action_field_are_accepted(alias: str, side: Side) -> None:
    """LONG/SHORT are aliases of BUY/SELL, in any case, and `action` stands for `side`."""
    fields = {k: v for k, v in SEED.items() if k != "side"} | {"action": alias}
    assert Intent.from_fields(fields, default_id="x").side is side


def test_payload_intent_id_wins_over_the_entry_id() -> None:
    """An intent id in the payload is the idempotency key, not the stream entry id."""
    assert Intent.from_fields(SEED | {"intent_id": "sig-42"}, default_id="1-0").id == "sig-42"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"position_size_usd": -5}, "position_size_usd"),
        ({"position_size_usd": "nan"}, "position_size_usd"),
        ({"position_size_usd": 1e300}, "absurdly"),
        ({"leverage": 2.5}, "whole number"),
        ({"leverage": 500}, "between 1 and 125"),
        ({"side": "HOLD"}, "side"),
        ({"symbol": "BTC/USDT"}, "symbol"),
        ({"order_type": "LIMIT", "entry_price": None}, "entry_price"),
        ({"timestamp": "yesterday"}, "timestamp"),
    ],
)
def test_malformed_intents_raise_intent_error_naming_the_field(change: dict[str, object], message: str) -> None:
    """Each malformed intent raises IntentError whose message names what is wrong."""
    with pytest.raises(IntentError, match=message):
        Intent.from_fields({k: v for k, v in (SEED | change).items() if v is not None}, default_id="x")


def test_missing_fields_and_non_objects_are_intent_errors() -> None:
    """A missing symbol, a JSON array payload and broken JSON are all IntentErrors."""
    with pytest.raises(IntentError, match="symbol"):
        Intent.from_fields({"side": "BUY", "position_size_usd": 10}, default_id="x")
    with pytest.raises(IntentError, match="JSON object"):
        Intent.from_fields({"payload": "[1, 2]"}, default_id="x")
    with pytest.raises(IntentError, match="not valid JSON"):
        Intent.from_fields({"payload": "{oops"}, default_id="x")


def test_oversized_entries_are_refused_before_parsing() -> None:
    """An entry over the byte limit is an IntentError, however valid its content."""
    with pytest.raises(IntentError, match="byte limit"):
        Intent.from_fields(SEED | {"note": "x" * 20000}, default_id="x", max_bytes=16384)


def test_client_order_id_is_deterministic_short_and_venue_safe() -> None:
    """The client order id depends only on the intent id, fits 36 chars and uses [A-Za-z0-9_-]."""
    coid = client_order_id("1767293258785-0")
    assert coid == client_order_id("1767293258785-0") != client_order_id("1767293258785-1")
    assert len(coid) <= 36
    assert all(c.isalnum() or c in "_-" for c in coid)


def _result(**change: object) -> dict[str, object]:
    now = datetime.now(UTC)
    base: dict[str, object] = {
        "intent_id": "i",
        "symbol": "BTCUSDT",
        "action": "BUY",
        "status": "filled",
        "order_id": 1,
        "entry_price": 50000.0,
        "quantity": 0.002,
        "position_size_usd": 100.0,
        "mode": "paper",
        "venue": "127.0.0.1:8800",
        "received_at": now,
        "filled_at": now,
        "published_at": now,
    }
    return base | change


@pytest.mark.parametrize("field", ["entry_price", "quantity", "position_size_usd"])
@pytest.mark.parametrize("status", ["filled", "partially_filled"])
@pytest.mark.parametrize("bad", [0.0, -1.0, None, float("nan")])
def test_a_fill_result_cannot_hold_a_zero_or_missing_price_or_quantity(
    field: str, status: str, bad: float | None
) -> None:
    """A filled or partially filled result with a zero, negative, NaN or missing figure is refused."""
    with pytest.raises(ValidationError, match=field):
        ExecutionResult.model_validate(_result(status=status, **{field: bad}))


def test_rejected_results_need_a_reason_and_may_carry_no_price() -> None:
    """A rejected result without a reason is refused; with one it needs no price."""
    with pytest.raises(ValidationError, match="reason"):
        ExecutionResult.model_validate(_result(status="rejected", entry_price=None, quantity=None))
    ok = ExecutionResult.model_validate(_result(status="rejected", entry_price=None, quantity=None, reason="why"))
    assert ok.status is ResultStatus.REJECTED


def test_an_ack_snapshot_has_no_fill() -> None:
    """The ACK snapshot of a MARKET order (NEW, 0 executed, avgPrice 0) reports no fill and is not settled."""
    ack = OrderState.model_validate(
        {
            "orderId": 1,
            "clientOrderId": "c",
            "symbol": "BTCUSDT",
            "status": "NEW",
            "side": "BUY",
            "type": "MARKET",
            "origQty": "0.002",
            "executedQty": "0",
            "avgPrice": "0.00000",
        }
    )
    assert ack.fill is None
    assert not ack.settled


def test_a_fill_without_any_price_is_not_settled() -> None:
    """FILLED with executed quantity but no avgPrice or cumQuote is not accepted as a fill."""
    order = OrderState.model_validate(
        {
            "orderId": 1,
            "clientOrderId": "c",
            "symbol": "BTCUSDT",
            "status": "FILLED",
            "side": "BUY",
            "type": "MARKET",
            "origQty": "1",
            "executedQty": "1",
            "avgPrice": "0",
        }
    )
    assert not order.settled
    with pytest.raises(ValueError, match="no price"):
        order.fill  # noqa: B018


# A rejected ticket exactly as the previous release (ff5e762) wrote it into a chain's message, before verdicts had a
# kind: a worker of this release reads it and publishes its result unchanged.
PREVIOUS_RELEASE_TICKET = (
    '{"intent":{"intent_id":"compat-1","symbol":"BTCUSDT","side":"BUY","position_size_usd":100.0,"leverage":5,'
    '"entry_price":null,"stop_loss":null,"take_profit":null,"confidence":null,"timestamp":null,"order_type":"MARKET",'
    '"time_in_force":"GTC","reduce_only":false,"client_tag":null,"trailing_stop_pct":null},"entry_id":"1-0",'
    '"received_at":"2026-12-02T17:52:01.213077Z","client_order_id":"qx-fbea57479815d9c3fbb2487ed22dacf5",'
    '"quantity":null,"leverage":null,"closed_first":null,"canceled_at_deadline":false,"order":null,"placed_at":null,'
    '"verdict":{"status":"rejected","reason":"halted: maintenance","code":null}}'
)


def test_a_ticket_written_by_the_previous_release_is_read_as_it_was() -> None:
    """In-flight chain messages survive an upgrade: the verdict's new `kind` is optional."""
    ticket = Ticket.model_validate_json(PREVIOUS_RELEASE_TICKET)
    assert ticket.verdict is not None and ticket.verdict.reason == "halted: maintenance"
    assert ticket.verdict.kind is None
    assert ticket.client_order_id == client_order_id("compat-1")
