"""Reconcile (qexec/pipeline/reconcile.py): beat finishes an order no chain is watching."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from stack_fixtures import Stack, start_beat, stop_process, unique_id

from qexec import constants, redis_streams
from qexec.context import Context
from qexec.models import Intent, Ticket, utcnow
from qexec.pipeline.admission import new_ticket
from qexec.pipeline.place import place_entry
from qexec.venue.binance import BinanceVenue

pytestmark = pytest.mark.slow


def test_beat_reconcile_finishes_an_order_that_no_chain_is_watching(stack: Stack) -> None:
    """An order placed by a chain that then died is found by beat, cancelled at its deadline and published."""
    # Given an order placed a minute ago whose chain never got to confirm or publish
    minute_ago = utcnow() - timedelta(seconds=60)
    ctx = Context(
        stack.settings,
        redis_streams.connect(stack.settings.redis_url),
        BinanceVenue(stack.settings),
        lambda: minute_ago,
    )
    mark = Decimal(stack.paper.client().futures_mark_price(symbol="ETHUSDT")["markPrice"])
    iid = unique_id("orphan")
    intent = Intent.from_fields(
        {
            "intent_id": iid,
            "symbol": "ETHUSDT",
            "side": "BUY",
            "position_size_usd": 200,
            "order_type": "LIMIT",
            "entry_price": str(round(mark / 2, 2)),
        }
    )
    placed = place_entry(new_ticket(intent, entry_id=None, received_at=minute_ago), ctx)
    assert isinstance(placed, Ticket) and placed.order is not None and placed.order.status.value == "NEW"
    assert stack.redis.zscore(constants.INFLIGHT_KEY, iid) is not None

    # When beat runs its reconcile
    try:
        start_beat(stack, "beat-reconcile", QEXEC_RECONCILE_EVERY_S="1")
        result = stack.wait_result(iid, timeout_s=30)
    finally:
        stop_process(stack.processes.pop("beat-reconcile"))

    # Then the order was cancelled at the venue and the intent has its one result
    assert result["status"] == "canceled", result
    order = stack.paper.client().futures_get_order(symbol="ETHUSDT", orderId=placed.order.orderId)
    assert order["status"] == "CANCELED"
    assert stack.redis.zscore(constants.INFLIGHT_KEY, iid) is None
    assert "RECONCILED" in stack.log("worker")
