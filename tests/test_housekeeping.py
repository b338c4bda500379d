"""Beat's housekeeping: reconcile orders no chain watches, one beat even if two start, heartbeat, reclaim."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from stack_fixtures import Stack, stop_process, unique_id

from qexec import constants, redis_streams
from qexec.config import Settings
from qexec.context import Context
from qexec.models import Intent, Ticket, utcnow
from qexec.ops import selftest
from qexec.pipeline import bridge
from qexec.pipeline.admission import new_ticket
from qexec.pipeline.place import place_entry
from qexec.venue.binance import BinanceVenue

pytestmark = pytest.mark.slow


def _beat(stack: Stack, name: str, **env: str) -> None:
    """A real `celery -A qexec beat` for this stack (celery-redbeat, schedule in our Redis)."""
    stack.spawn(
        name,
        [sys.executable, "-m", "celery", "-A", "qexec", "beat", "--loglevel", "DEBUG"],
        ready="beat: Starting",
        env={**stack.env, **env},
    )


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
        _beat(stack, "beat-reconcile", QEXEC_RECONCILE_EVERY_S="1")
        result = stack.wait_result(iid, timeout_s=30)
    finally:
        stop_process(stack.processes.pop("beat-reconcile"))

    # Then the order was cancelled at the venue and the intent has its one result
    assert result["status"] == "canceled", result
    order = stack.paper.client().futures_get_order(symbol="ETHUSDT", orderId=placed.order.orderId)
    assert order["status"] == "CANCELED"
    assert stack.redis.zscore(constants.INFLIGHT_KEY, iid) is None
    assert "RECONCILED" in stack.log("worker")


def test_two_beats_started_by_mistake_send_each_periodic_task_once(stack: Stack) -> None:
    """celery-redbeat's lock keeps the second beat waiting: heartbeats arrive once a second, not twice."""
    env = {"QEXEC_HEARTBEAT_EVERY_S": "1"}
    pattern = re.compile(r"Task qexec\.venue_heartbeat\[[^\]]+\] received")
    try:
        _beat(stack, "beat-a", **env)
        stack.spawn(
            "beat-b",
            [sys.executable, "-m", "celery", "-A", "qexec", "beat", "--loglevel", "DEBUG"],
            ready="beat: Acquiring lock",
            env={**stack.env, **env},
        )
        before = len(pattern.findall(stack.log("worker")))
        time.sleep(6)
        sent = len(pattern.findall(stack.log("worker"))) - before
    finally:
        for name in ("beat-a", "beat-b"):
            stop_process(stack.processes.pop(name))
    assert 3 <= sent <= 8, f"{sent} heartbeats in 6 s with a 1 s schedule"


def test_heartbeat_records_the_venue_state_and_says_when_it_fails(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A passing heartbeat is recorded with ok=1; a dead venue gives ok=0, the reason, and an error log line."""
    r = redis_streams.connect(stack.settings.redis_url)
    record = selftest.venue_heartbeat(Context(stack.settings, r, BinanceVenue(stack.settings)))
    assert record["ok"] == 1
    assert r.hget(constants.HEARTBEAT_KEY, "ok") == "1"

    dead = Settings(redis_url=stack.settings.redis_url, exchange_url="http://127.0.0.1:9", request_timeout_s=1)
    with caplog.at_level(logging.ERROR):
        record = selftest.venue_heartbeat(Context(dead, r, BinanceVenue(dead)))
    assert record["ok"] == 0
    assert "127.0.0.1:9" in record["error"]
    assert "VENUE_HEARTBEAT_FAILED" in caplog.text
    assert r.hget(constants.HEARTBEAT_KEY, "ok") == "0"


def test_beat_reclaims_an_entry_a_dead_bridge_left_pending(stack: Stack) -> None:
    """An entry read but never acknowledged by a vanished consumer is re-dispatched and acknowledged."""
    settings = stack.settings.model_copy(update={"intent_stream": f"test:intents:{unique_id()}", "claim_idle_ms": 100})
    r = redis_streams.connect(settings.redis_url)
    redis_streams.ensure_group(r, settings.intent_stream, settings.consumer_group)
    entry_id = r.xadd(
        settings.intent_stream, {"payload": json.dumps({"symbol": "BTCUSDT", "side": "BUY", "position_size_usd": 150})}
    )
    r.xreadgroup(settings.consumer_group, "vanished", {settings.intent_stream: ">"}, count=1)
    time.sleep(0.2)
    dispatched: list[Ticket] = []
    handled = bridge.reclaim_intents(Context(settings, r, BinanceVenue(settings)), dispatched.append)
    assert handled == 1
    assert [t.entry_id for t in dispatched] == [entry_id]
    assert r.xpending(settings.intent_stream, settings.consumer_group)["pending"] == 0
