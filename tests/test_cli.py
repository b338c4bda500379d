"""The `qexec` command line against the session stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from stack_fixtures import ROOT, Stack, unique_id

pytestmark = pytest.mark.slow


def test_qexec_inject_writes_an_intent_and_waits_for_its_result(stack: Stack) -> None:
    """`qexec inject --symbol … --wait` prints the entry id and then the filled result."""
    iid = unique_id("inject")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "qexec.cli",
            "inject",
            "--symbol",
            "NEARUSDT",
            "--side",
            "SELL",
            "--size-usd",
            "60",
            "--intent-id",
            iid,
            "--wait",
            "30",
        ],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    assert printed["intent_id"] == iid
    assert printed["status"] == "filled"
    assert printed["action"] == "SELL"
