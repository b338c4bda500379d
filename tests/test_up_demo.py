"""End to end: `qexec up --demo` runs the real stack, every demo intent gets a result, the terminal stays quiet,
Ctrl-C leaves nothing; and the real stack outlives a restart of its Redis.

For the lead's review: these run the real paper exchange, worker, bridge, beat and flower (~30 s each on 2 cores).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from qexec import constants
from qexec.ops.demo import DEMO_ORDERS
from qexec.ops.redisserver import EMBEDDED_ENV, LocalRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"demo: (\d+) of (\d+) intents have results")
CELERY_TASK_LINE = re.compile(r"Task qexec\.\w+\[[^\]]+\] (received|succeeded)|Sending due task")


def is_running(pid: int) -> bool:
    """True when `pid` is a live process (a zombie awaiting its parent does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Up:
    """A real `qexec up` on this machine (with no QEXEC_* settings but the choice of redis-server), its output
    collected as it comes."""

    def __init__(self, *args: str, **extra_env: str) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("QEXEC_")}
        if EMBEDDED_ENV in os.environ:
            env[EMBEDDED_ENV] = os.environ[EMBEDDED_ENV]
        argv = [sys.executable, "-m", "qexec.ops.stack", "up", *args]
        argv += ["--paper-port", str(free_port()), "--flower-port", str(free_port())]
        argv += ["--console-port", str(free_port())]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env={**env, **extra_env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(stdout.readline, "")), daemon=True)
        self.reader.start()

    def output(self) -> str:
        """Everything printed so far."""
        return "".join(self.lines)

    def wait_until(self, found: Callable[[], Any], timeout_s: float = 120) -> Any:
        """Poll `found` until it returns something true (its value); fail with the output if `qexec up` exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(redis.ConnectionError):
                value = found()
                if value:
                    return value
            assert self.proc.poll() is None, f"qexec up exited with {self.proc.returncode}:\n{self.output()}"
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.2)

    def started_pids(self) -> dict[str, int]:
        """The pid of each process's latest start, from the supervisor's `<name> started (pid=N)` lines."""
        return {name: int(pid) for name, pid in re.findall(r"\| (\w+) started \(pid=(\d+)\)", self.output())}

    def cleanup(self) -> None:
        """Stop `qexec up` if a failed test left it running: Ctrl-C first (it stops its children), then SIGKILL for
        it and whatever it started."""
        if self.proc.poll() is None:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for process in descendants:
                if is_running(process.pid):
                    process.kill()
        self.reader.join(5)
        if not self.reader.is_alive():  # closing a pipe another thread reads would block on its lock
            assert self.proc.stdout is not None
            self.proc.stdout.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_up_demo_fills_every_demo_intent_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """The newcomer's path: one command, a table of fills, a clean stop."""
    # Given a machine whose QEXEC_* variables name nothing (so `qexec up` starts its own Redis)
    up = Up("--demo", "--data-dir", str(tmp_path / "data"))
    lines = up.lines
    try:
        # When the demo has run
        up.wait_until(lambda: SUMMARY.search(up.output()))
        descendants = psutil.Process(up.proc.pid).children(recursive=True)

        # Then the banner names the Redis it started, and every demo intent has a filled result with a price and
        # a quantity
        assert re.search(r"\(started here, pid \d+, (Redis|Valkey) [\d.]+", up.output()), up.output()
        summary = next(found for line in lines if (found := SUMMARY.search(line)))
        assert summary.groups() == (str(len(DEMO_ORDERS)), str(len(DEMO_ORDERS))), "".join(lines)
        rows = [line.split("| ", 1)[1].split() for line in lines if "| demo-" in line]
        assert len(rows) == len(DEMO_ORDERS), "".join(lines)
        for row in rows:
            assert row[3] == "filled", row
            assert float(row[4]) > 0 and float(row[5]) > 0, row
            assert row[-1] == "ms", row

        # And for the next 10 s, while beat's housekeeping runs every 3 s, the terminal shows none of Celery's
        # per-task lines: they are in the worker's and beat's log files
        shown = len(lines)
        time.sleep(10)
        after = "".join(lines[shown:])
        assert not CELERY_TASK_LINE.search(after), after
        logs = tmp_path / "data" / "logs"
        assert re.search(r"Task qexec\.watch_positions\[[^\]]+\] received", (logs / "worker.log").read_text())
        assert "Sending due task watch-positions" in (logs / "beat.log").read_text()

        # And Ctrl-C stops every process it started
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(60) == 130, up.output()
        assert len(descendants) >= 6  # the five processes and Redis
        assert [p.pid for p in descendants if is_running(p.pid)] == []
    finally:
        up.cleanup()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_stack_outlives_a_restart_of_its_redis(tmp_path: Path) -> None:
    """Redis shut down for 6 s and started again: beat keeps running, its schedule runs again, nothing is stopped."""
    # Given the whole stack on its own Redis, with a venue heartbeat every second
    data = tmp_path / "data"
    up = Up("--data-dir", str(data), QEXEC_HEARTBEAT_EVERY_S="1")
    restarted: LocalRedis | None = None
    try:
        port = int(up.wait_until(lambda: re.search(r"redis +redis://127\.0\.0\.1:(\d+)/0", up.output()))[1])
        client = redis.Redis(port=port, decode_responses=True)
        up.wait_until(lambda: client.hget(constants.HEARTBEAT_KEY, "at"))
        before = up.started_pids()
        assert set(before) == {"paper", "worker", "bridge", "beat", "flower", "console"}, up.output()

        # When Redis shuts down (SHUTDOWN NOSAVE) and a new redis-server starts on its port and data dir 6 s later
        client.shutdown(nosave=True)
        down_at = datetime.now(UTC)
        time.sleep(6)
        restarted = LocalRedis(port=port, data_dir=data / "redis", appendonly=True).start()

        # Then beat's schedule runs again: a heartbeat is recorded after the restart
        def heartbeat_after_restart() -> bool:
            at = client.hget(constants.HEARTBEAT_KEY, "at")
            return at is not None and datetime.fromisoformat(str(at)) > down_at + timedelta(seconds=6)

        up.wait_until(heartbeat_after_restart, timeout_s=90)

        # And beat is the process it was, and nothing was stopped: every process runs, `qexec up` too
        output = up.output()
        assert up.started_pids()["beat"] == before["beat"], output
        assert is_running(before["beat"]), output
        for name, pid in up.started_pids().items():
            assert is_running(pid), f"{name}\n{output}"
        assert "stopping the stack" not in output and "sending SIGTERM" not in output, output
        assert up.proc.poll() is None, output
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(60) == 130, up.output()
    finally:
        up.cleanup()
        if restarted is not None:
            restarted.stop()
