"""Flower: `celery -A qexec flower` runs with qexec's app and never listens beyond loopback unauthenticated."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from stack_fixtures import ROOT, clean_env, stop_process, wait_for_line

from qexec.config import Settings
from qexec.ops.flower_auth import check
from qexec.ops.redisserver import LocalRedis, free_port


@pytest.mark.parametrize(
    ("args", "env", "refused"),
    [
        (["--address=0.0.0.0"], {}, True),
        ([], {}, True),  # Flower's default address is every interface
        (["--address", "10.1.2.3"], {}, True),
        (["--address=127.0.0.1"], {}, False),
        (["--address=::1"], {}, False),
        (["--address=localhost"], {}, False),
        ([], {"FLOWER_ADDRESS": "127.0.0.1"}, False),
        (["--address=0.0.0.0", "--basic-auth=ops:pw"], {}, False),
        (["--address=0.0.0.0"], {"FLOWER_BASIC_AUTH": "ops:pw"}, False),
        (["--address=0.0.0.0", "--auth=.*@example\\.com$"], {}, False),
    ],
)
def test_flower_beyond_loopback_needs_authentication(args: list[str], env: dict[str, str], refused: bool) -> None:
    """The guard refuses exactly the unauthenticated non-loopback cases, and ignores other celery commands."""
    argv = ["celery", "-A", "qexec", "flower", *args]
    assert (check(argv, dict(env), Settings()) is not None) is refused
    assert check(["celery", "-A", "qexec", "worker", *args], dict(env), Settings()) is None


def test_qexec_flower_credentials_are_handed_to_flower() -> None:
    """QEXEC_FLOWER_BASIC_AUTH becomes FLOWER_BASIC_AUTH for the flower process, which then may bind anywhere."""
    environ: dict[str, str] = {}
    settings = Settings(flower_basic_auth="ops:s3cret")
    assert check(["celery", "-A", "qexec", "flower", "--address=0.0.0.0"], environ, settings) is None
    assert environ["FLOWER_BASIC_AUTH"] == "ops:s3cret"


def _flower(redis_server: LocalRedis, tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`celery -A qexec flower …` on our own Redis; returns the process and its log file."""
    log = tmp_path / "flower.log"
    handle = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "qexec", "flower", *args],
        cwd=ROOT,
        env=clean_env({"QEXEC_REDIS_URL": f"{redis_server.url.rsplit('/', 1)[0]}/14", **env}),
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    return proc, log


@pytest.fixture
def flower_port() -> Iterator[int]:
    """A free port for Flower."""
    yield free_port()


def test_flower_on_every_interface_without_credentials_refuses_to_start(
    redis_server: LocalRedis, tmp_path: Path, flower_port: int
) -> None:
    """`celery -A qexec flower --address=0.0.0.0` with no credentials exits non-zero and says what to set."""
    proc, log = _flower(redis_server, tmp_path, "--address=0.0.0.0", f"--port={flower_port}")
    try:
        assert proc.wait(60) != 0
    finally:
        stop_process(proc)
    assert "QEXEC_FLOWER_BASIC_AUTH" in log.read_text()


def test_flower_beyond_loopback_answers_401_without_credentials(
    redis_server: LocalRedis, tmp_path: Path, flower_port: int
) -> None:
    """With QEXEC_FLOWER_BASIC_AUTH set, Flower binds beyond loopback and its API wants the credentials."""
    proc, log = _flower(
        redis_server, tmp_path, "--address=0.0.0.0", f"--port={flower_port}", QEXEC_FLOWER_BASIC_AUTH="ops:s3cret"
    )
    try:
        wait_for_line(log, "Visit me at", proc, 60)
        base = f"http://127.0.0.1:{flower_port}"
        assert requests.get(f"{base}/api/workers", timeout=10).status_code == 401
        assert requests.get(f"{base}/", timeout=10).status_code == 401
        assert requests.get(f"{base}/api/workers", auth=("ops", "s3cret"), timeout=10).status_code == 200
        assert requests.get(f"{base}/api/workers", auth=("ops", "wrong"), timeout=10).status_code == 401
        metrics = requests.get(f"{base}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "flower_" in metrics.text
    finally:
        stop_process(proc)
    assert "s3cret" not in log.read_text()
