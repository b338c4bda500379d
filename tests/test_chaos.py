"""The chaos suite's short version: intents through a full stack with venue faults, kills and a Redis drop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stack_fixtures import run_bench

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_the_short_chaos_run_loses_nothing_duplicates_nothing_and_fakes_no_fill(tmp_path: Path) -> None:
    """80 intents, every venue fault at random, one worker and one bridge SIGKILLed, Redis dropped: all targets 0,
    and every intent in flight at a fault recovered within the target."""
    report_path = tmp_path / "chaos.json"
    run = run_bench(
        "chaos.py",
        "--intents",
        "80",
        "--seed",
        "3",
        "--worker-kills",
        "1",
        "--bridge-kills",
        "1",
        "--redis-drop",
        "restart",  # a real restart, down 5 s, with beat running: every process must wait it out
        "--redis-down-s",
        "5",
        "--json",
        str(report_path),
        timeout_s=280,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "intents without a result (lost)" in run.stdout
    report = json.loads(report_path.read_text())
    assert report["intents_sent"] == report["terminal_results"] == 80
    assert report["lost"] == report["duplicate_orders"] == report["wrong_fills"] == 0
    assert report["duplicate_results"] == report["unreported_fills"] == report["rate_limit_violations"] == 0
    assert report["foreign_result_entries"] == 0  # the result stream holds results only
    assert (report["worker_kills"], report["bridge_kills"], report["redis_drops"]) == (1, 1, 1)
    assert sum(report["faults_fired"].values()) > 0
    # Every intent in flight at the worker kill and at the Redis restart has its result and its SL/TP within the
    # target, at the production recovery settings (beat's takeover, not a short visibility timeout)
    assert report["result_recovery_samples"] > 0
    assert report["result_recovery_over_target"] == report["protection_recovery_over_target"] == 0
    assert report["result_recovery_max_s"] <= report["recovery_target_s"]
