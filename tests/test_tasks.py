"""The Celery tasks (qexec/worker/tasks.py) called as an operator calls them: `celery -A qexec call
qexec.submit_intent`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from stack_fixtures import ROOT, Stack, seed_intent, unique_id, wait_for_line

pytestmark = pytest.mark.slow


def celery_call(stack: Stack, *options: str) -> str:
    """`celery -A qexec call qexec.submit_intent OPTIONS`: the task id it prints."""
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "qexec", "call", "qexec.submit_intent", *options],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_celery_call_submit_intent_leads_to_a_result(stack: Stack) -> None:
    """`celery -A qexec call qexec.submit_intent --kwargs …` validates the intent and starts the chain."""
    iid = unique_id("call")
    assert celery_call(stack, "--kwargs", json.dumps(seed_intent(iid, symbol="LINKUSDT")))
    result = stack.wait_result(iid)
    assert result["status"] == "filled", result
    assert result["entry_id"] is None


def dead_letter_of(stack: Stack, task_id: str, timeout_s: float = 15) -> dict[str, str]:
    """The dead letter a `submit_intent` task wrote."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [d for d in stack.dead_letters() if d.get("source") == f"task:{task_id}"]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no dead letter from task {task_id}")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--kwargs", json.dumps({"symbol": "ETHUSDT", "side": "UP", "position_size_usd": 50})], "side"),
        (["--kwargs", json.dumps({"symbol": "ETHUSDT", "side": "BUY", "position_size_usd": -5})], "position_size_usd"),
        (["--args", json.dumps(["ETHUSDT", "BUY", 50])], "keyword arguments"),
    ],
)
def test_celery_call_with_a_bad_intent_says_so_in_the_worker_log_and_dead_letters_it_as_given(
    stack: Stack, options: list[str], error: str
) -> None:
    """A bad side, a negative size, positional `--args`: each refused call is dead-lettered with its values intact
    (numbers stay numbers), and the worker logs INTENT_DEAD_LETTER at ERROR naming the task id."""
    task_id = celery_call(stack, *options)
    letter = dead_letter_of(stack, task_id)
    assert error in letter["error"], letter
    original = json.loads(letter["original"])
    given = json.loads(options[1])
    if options[0] == "--args":
        assert original["args"] == given
    else:
        assert original == given  # 50 and -5 are numbers, not "50" and "-5"
    wait_for_line(stack.logs_dir / "worker.log", f"task_id={task_id}", stack.processes["worker"], 15)
    [line] = [line for line in stack.log("worker").splitlines() if f"task_id={task_id}" in line]
    assert "ERROR" in line and "INTENT_DEAD_LETTER" in line
