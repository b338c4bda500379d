"""End to end: `qexec up --demo` runs the real stack, every demo intent gets a result, Ctrl-C leaves nothing.

For the lead's review: this runs the real paper exchange, worker, bridge, beat and flower (~20 s on 2 cores).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from qexec.demo import DEMO_ORDERS
from qexec.redisserver import free_port

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"demo: (\d+) of (\d+) intents have results")


def is_running(pid: int) -> bool:
    """True when `pid` is a live process (a zombie awaiting its parent does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_up_demo_fills_every_demo_intent_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """The newcomer's path: one command, a table of fills, a clean stop."""
    # Given a machine whose QEXEC_* variables name nothing (so `qexec up` starts its own Redis)
    env = {key: value for key, value in os.environ.items() if not key.startswith("QEXEC_")}
    argv = [sys.executable, "-m", "qexec.stack", "up", "--demo", "--data-dir", str(tmp_path / "data")]
    argv += ["--paper-port", str(free_port()), "--flower-port", str(free_port())]
    up = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert up.stdout is not None
    stdout = up.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        # When the demo has run
        deadline = time.monotonic() + 120
        while not any(SUMMARY.search(line) for line in lines):
            assert up.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        descendants = psutil.Process(up.pid).children(recursive=True)

        # Then every demo intent has a filled result with a price and a quantity
        summary = next(found for line in lines if (found := SUMMARY.search(line)))
        assert summary.groups() == (str(len(DEMO_ORDERS)), str(len(DEMO_ORDERS))), "".join(lines)
        rows = [line.split("| ", 1)[1].split() for line in lines if "| demo-" in line]
        assert len(rows) == len(DEMO_ORDERS), "".join(lines)
        for row in rows:
            assert row[3] == "filled", row
            assert float(row[4]) > 0 and float(row[5]) > 0, row
            assert row[-1] == "ms", row

        # And Ctrl-C stops every process it started
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 130, "".join(lines)
        reader.join(5)
        assert len(descendants) >= 6  # honcho's relays, the five processes and Redis
        assert [p.pid for p in descendants if is_running(p.pid)] == []
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        reader.join(5)
        stdout.close()
