"""What the pipeline makes of an intent's fields: strict types, its age from the stream entry, and the kill switch for
reductions - each through the real bridge and worker."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from position_helpers import context, flatten
from private_stack import private_stack
from stack_fixtures import Stack, unique_id

from qexec.ops import halt

pytestmark = pytest.mark.slow


def wait_dead_letter(stack: Stack, intent_id: str, timeout_s: float = 15) -> dict[str, str]:
    """The dead letter whose original names this intent id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for fields in stack.dead_letters():
            if intent_id in fields.get("original", ""):
                return fields
        time.sleep(0.1)
    raise AssertionError(f"no dead letter for {intent_id}")


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("position_size_usd", True, "not a boolean"),
        ("stop_loss", True, "not a boolean"),
        ("reduce_only", "yes", "reduce_only must be true or false"),
        ("reduce_only", 1, "reduce_only must be true or false"),
        ("time_in_force", "IOC", "time_in_force applies to LIMIT intents only"),
        ("time_in_force", "DAY", "time_in_force"),
    ],
)
def test_a_boolean_for_a_number_or_a_loose_flag_is_dead_lettered_not_traded(
    stack: Stack, field: str, value: Any, error: str
) -> None:
    """`position_size_usd: true` is no 1-USDT order and `"reduce_only": "yes"` closes nothing: both dead-lettered."""
    iid = unique_id("strict")
    body = {"intent_id": iid, "symbol": "NEARUSDT", "side": "BUY", "position_size_usd": 50, field: value}
    stack.inject(body)
    dead = wait_dead_letter(stack, iid)
    assert error in dead["error"], dead
    assert stack.results(iid) == []


def test_flat_fields_say_reduce_only_as_true_or_false_text(stack: Stack) -> None:
    """Flat stream fields are text: `reduce_only=false` and `leverage=` absent are an ordinary opening intent."""
    symbol = "NEARUSDT"
    ctx = context(stack.settings)
    flatten(ctx, symbol)
    try:
        iid = unique_id("flat")
        stack.inject(flat=True, intent_id=iid, symbol=symbol, side="BUY", position_size_usd=50, reduce_only="false")
        result = stack.wait_result(iid)
        assert result["status"] == "filled", result["reason"]
    finally:
        flatten(ctx, symbol)


def test_leverage_null_means_not_given(stack: Stack) -> None:
    """`"leverage": null` is an intent that names no leverage (the symbol keeps its own), not a dead letter."""
    symbol = "NEARUSDT"
    ctx = context(stack.settings)
    flatten(ctx, symbol)
    try:
        iid = unique_id("nolev")
        stack.inject({"intent_id": iid, "symbol": symbol, "side": "BUY", "position_size_usd": 50, "leverage": None})
        result = stack.wait_result(iid)
        assert result["status"] == "filled", result["reason"]
        assert result["leverage"] == int(ctx.venue.leverage(symbol))
    finally:
        flatten(ctx, symbol)


def test_an_intent_without_timestamp_is_as_old_as_its_stream_entry(stack: Stack, tmp_path: Path) -> None:
    """An intent queued 10 minutes ago with no `timestamp` (a bridge outage) is rejected as stale, not traded at
    today's price; one with a fresh `timestamp` in an old entry too (the earlier of the two counts)."""
    with private_stack(stack.paper, tmp_path, {}, bridge=False) as own:
        written_ms = int(time.time() * 1000) - 600_000
        bare, stamped = unique_id("old"), unique_id("oldts")
        body = {"symbol": "NEARUSDT", "side": "BUY", "position_size_usd": 50}
        own.redis.xadd(own.settings.intent_stream, {"payload": json.dumps(body | {"intent_id": bare})}, id=written_ms)
        fresh = body | {"intent_id": stamped, "timestamp": datetime.now(UTC).isoformat()}
        own.redis.xadd(own.settings.intent_stream, {"payload": json.dumps(fresh)}, id=written_ms + 1)
        orders = stack.paper.stats()["orders_placed"]
        own.start_bridge()
        for iid in (bare, stamped):
            result = own.wait_result(iid)
            assert result["status"] == "rejected", result
            assert re.match(r"stale: intent is 6\d\ds old", result["reason"]), result["reason"]
        assert stack.paper.stats()["orders_placed"] == orders


def test_a_halt_stops_new_exposure_but_lets_a_reduction_through(stack: Stack) -> None:
    """During `qexec halt`, a BUY is rejected as halted while a reduce-only SELL of the open long is filled."""
    symbol = "AVAXUSDT"
    ctx = context(stack.settings)
    flatten(ctx, symbol)
    opened = unique_id("pre")
    stack.inject({"intent_id": opened, "symbol": symbol, "side": "BUY", "position_size_usd": 100, "leverage": 2})
    assert stack.wait_result(opened)["status"] == "filled"
    halt.halt(stack.redis, reason="drill")
    try:
        more, less = unique_id("more"), unique_id("less")
        stack.inject({"intent_id": more, "symbol": symbol, "side": "BUY", "position_size_usd": 50})
        reduce = {"intent_id": less, "symbol": symbol, "side": "SELL", "position_size_usd": 50, "reduce_only": True}
        stack.inject(reduce)
        assert stack.wait_result(more)["reason"] == "halted: drill"
        assert stack.wait_result(less)["status"] == "filled"
    finally:
        halt.resume(stack.redis)
        flatten(ctx, symbol)
