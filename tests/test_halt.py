"""The kill switch (qexec/ops/halt.py): `celery call qexec.halt` / `qexec.resume`, run by a real worker, logged with
who and from where; and a position `halt --flatten` closed exits with reason `halt`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from position_helpers import FlatSymbol, context, exits, intent, run
from stack_fixtures import ROOT, Stack, seed_intent, unique_id

from qexec import constants
from qexec.ops import halt
from qexec.positions import monitor

pytestmark = pytest.mark.slow


def celery_call(stack: Stack, task: str, **kwargs: object) -> None:
    """`celery -A qexec call <task> --kwargs '<json>'`, as an operator types it, on the stack's broker."""
    argv = [sys.executable, "-m", "celery", "-A", "qexec", "call", task, "--kwargs", json.dumps(kwargs)]
    sent = subprocess.run(argv, cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=60, check=False)
    assert sent.returncode == 0, sent.stderr


def wait_halted(stack: Stack, halted: bool, timeout_s: float = 20) -> None:
    """Wait until the worker has run the task: the halt flag set (or lifted)."""
    deadline = time.monotonic() + timeout_s
    while bool(stack.redis.exists(constants.HALT_KEY)) is not halted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bool(stack.redis.exists(constants.HALT_KEY)) is halted, stack.log("worker")[-3000:]


def test_celery_call_halt_rejects_the_next_intent_and_resume_lets_the_one_after_through(
    stack: Stack, flat_symbol: FlatSymbol
) -> None:
    """The worker runs `qexec.halt`: the next intent is `rejected` (halted: <reason>), the record and the log name
    who sent it and where it ran; after `qexec.resume` the next intent fills."""
    ctx = context(stack.settings)
    symbol = "DOTUSDT"
    flat_symbol(ctx, symbol, "7.000")
    try:
        # Given an operator who halts through Celery
        celery_call(stack, "qexec.halt", reason="remote drill", flatten=False, by="alice")
        wait_halted(stack, True)
        record = json.loads(stack.redis.get(constants.HALT_KEY) or "{}")
        assert (record["reason"], record["by"]) == ("remote drill", "alice")
        assert "->" in record["where"]
        # When an intent arrives, Then it is rejected as halted
        blocked = unique_id("rh")
        stack.inject(seed_intent(blocked, symbol=symbol, stop_loss=6.5, take_profit=7.5))
        result = stack.wait_result(blocked)
        assert (result["status"], result["reason"]) == ("rejected", "halted: remote drill"), result
        # When the operator resumes, Then the next intent fills
        celery_call(stack, "qexec.resume", by="alice")
        wait_halted(stack, False)
        through = unique_id("rh")
        stack.inject(seed_intent(through, symbol=symbol, stop_loss=6.5, take_profit=7.5))
        assert stack.wait_result(through)["status"] == "filled"
        log = stack.log("worker")
        assert re.search(r"HALT_SET reason=\"remote drill\" flatten=False by=alice where=\S+->\S+", log), log[-3000:]
        assert re.search(r"HALT_LIFTED by=alice where=\S+->\S+", log), log[-3000:]
    finally:
        halt.resume(stack.redis)


def test_a_position_closed_by_halt_flatten_exits_with_reason_halt(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """`qexec halt --flatten` closes a tracked long: its exit says `halt`, not `signal`."""
    ctx = context(stack.settings)
    symbol = "ETCUSDT"
    flat_symbol(ctx, symbol, "17.000")
    opened = unique_id("halted")
    result, _event = run(ctx, intent(opened, symbol, "BUY", 100, stop_loss=16, take_profit=18))
    for position in ctx.venue.positions(symbol):
        if position.positionAmt:
            halt._close(ctx.venue, position)  # what `halt --flatten` does, on this symbol alone
    monitor.watch(ctx, symbols={symbol})
    [exit_event] = [e for e in exits(ctx, symbol) if e["intent_ids"] == [opened]]
    assert exit_event["reason"] == "halt"
    assert exit_event["quantity"] == pytest.approx(result.quantity)
