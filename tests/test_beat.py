"""Beat: a real `celery -A qexec beat` through a Redis restart (a real redis-server, stopped and started again), and
one beat's schedule even when two are started."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from stack_fixtures import Stack, clean_env, start_beat, stop_process, wait_for_line

from qexec import constants
from qexec.ops.redisserver import LocalRedis, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
LOCK_KEY = constants.REDBEAT_PREFIX + ":lock"  # redbeat's default lock key under qexec's prefix
SENT = re.compile(r"Sending due task venue-heartbeat")
DOWN_S = 6  # how long Redis stays away: longer than a tick, shorter than the lock's 30 s


class Beat:
    """A `celery -A qexec beat` on one Redis, its output in a log file."""

    def __init__(self, redis_url: str, log_path: Path) -> None:
        self.log_path = log_path
        env = clean_env({"QEXEC_MODE": "paper", "QEXEC_REDIS_URL": redis_url, "QEXEC_HEARTBEAT_EVERY_S": "1"})
        argv = [sys.executable, "-m", "celery", "-A", "qexec", "beat", "--loglevel", "INFO"]
        with log_path.open("ab") as handle:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)

    def log(self) -> str:
        """Everything beat has logged so far."""
        return self.log_path.read_text(errors="replace")

    def sent(self) -> int:
        """How many heartbeats beat has sent so far."""
        return len(SENT.findall(self.log()))

    def wait_sent(self, more_than: int, timeout_s: float = 30) -> None:
        """Wait until beat has sent more than `more_than` heartbeats; fail with its log if it exits or stalls."""
        deadline = time.monotonic() + timeout_s
        while self.sent() <= more_than:
            assert self.proc.poll() is None, f"beat exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
            assert time.monotonic() < deadline, f"beat sent no heartbeat in {timeout_s} s:\n{self.log()[-3000:]}"
            time.sleep(0.1)


@pytest.fixture
def beat_redis(tmp_path: Path) -> Iterator[list[LocalRedis]]:
    """The servers a test starts on one port and data dir, in turn; whichever still runs is stopped at the end."""
    servers: list[LocalRedis] = []
    yield servers
    for server in servers:
        server.stop()


def restart(servers: list[LocalRedis], *, appendonly: bool, prepare: dict[str, str] | None = None) -> None:
    """SHUTDOWN NOSAVE the running server, wait DOWN_S, and start a new one on the same port and data dir (holding
    the keys in `prepare`, as a server restarted from another's snapshot would)."""
    old = servers[-1]
    client = redis.Redis.from_url(old.url)
    client.shutdown(nosave=True)
    client.close()
    started = time.monotonic()
    if prepare:
        with LocalRedis(port=free_port(), data_dir=old.data_dir / "snapshot") as scratch:
            writer = redis.Redis.from_url(scratch.url)
            for key, value in prepare.items():
                writer.set(key, value, px=60_000)
            writer.save()
            writer.close()
        (old.data_dir / "snapshot" / "dump.rdb").rename(old.data_dir / "dump.rdb")
    time.sleep(max(0.0, DOWN_S - (time.monotonic() - started)))
    servers.append(LocalRedis(port=old.port, data_dir=old.data_dir, appendonly=appendonly).start())


def test_beat_outlives_a_redis_restart_and_sends_its_schedule_again(
    tmp_path: Path, beat_redis: list[LocalRedis]
) -> None:
    """Redis (append-only, as `qexec up` runs it) away for 6 s: beat logs one warning, keeps its lock, sends again."""
    beat_redis.append(LocalRedis(port=free_port(), data_dir=tmp_path / "redis", appendonly=True).start())
    beat = Beat(beat_redis[0].url, tmp_path / "beat.log")
    try:
        beat.wait_sent(more_than=0)

        restart(beat_redis, appendonly=True)
        before = beat.sent()
        beat.wait_sent(more_than=before)

        assert beat.proc.poll() is None
        assert beat.log().count("Redis does not answer") == 1, beat.log()
        assert "Redis answers again" in beat.log()
        assert "Traceback" not in beat.log()
    finally:
        stop_process(beat.proc)


def test_beat_that_lost_its_lock_stands_by_while_another_holds_it(tmp_path: Path, beat_redis: list[LocalRedis]) -> None:
    """Redis comes back without beat's lock and with another beat's: nothing is sent until that lock is gone."""
    beat_redis.append(LocalRedis(port=free_port(), data_dir=tmp_path / "redis").start())
    beat = Beat(beat_redis[0].url, tmp_path / "beat.log")
    try:
        beat.wait_sent(more_than=0)

        restart(beat_redis, appendonly=False, prepare={LOCK_KEY: "another-beat"})
        wait_for_line(beat.log_path, "another beat holds the lock", beat.proc, 30)
        standing_by = beat.sent()
        time.sleep(3)
        assert beat.sent() == standing_by, "beat sent while another beat held the lock"

        client = redis.Redis.from_url(beat_redis[-1].url)
        client.delete(LOCK_KEY)
        client.close()
        beat.wait_sent(more_than=standing_by)

        assert beat.proc.poll() is None
        assert "is no longer ours" in beat.log()
        assert "took the lock" in beat.log()
    finally:
        stop_process(beat.proc)


def test_two_beats_started_by_mistake_send_each_periodic_task_once(stack: Stack) -> None:
    """celery-redbeat's lock keeps the second beat waiting: heartbeats arrive once a second, not twice."""
    env = {"QEXEC_HEARTBEAT_EVERY_S": "1"}
    pattern = re.compile(r"Task qexec\.venue_heartbeat\[[^\]]+\] received")
    try:
        start_beat(stack, "beat-a", **env)
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
