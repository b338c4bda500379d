"""The Celery worker's start-up: it checks the venue before it consumes anything and stops when the check fails."""

from __future__ import annotations

import subprocess
import uuid

from paper_fixtures import PaperExchange, free_port
from stack_fixtures import ROOT, Stack, clean_env

from qexec.worker.command import WITHOUT_PEERS, worker_argv

RUN_TIMEOUT_S = 60


def worker(redis_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `celery -A qexec worker` (threads pool) on our own Redis until it exits by itself."""
    args = worker_argv(concurrency=1, node_name=f"failfast-{uuid.uuid4().hex[:6]}@%h", extra=WITHOUT_PEERS)
    return subprocess.run(
        args,
        cwd=ROOT,
        env=clean_env({"QEXEC_REDIS_URL": redis_url, **env}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def test_a_worker_against_a_dead_venue_exits_non_zero_before_consuming(redis_url: str) -> None:
    """A dead venue stops the worker with FATAL_VENUE_UNAVAILABLE and exit 3 before it connects to the broker."""
    url = f"http://127.0.0.1:{free_port()}"
    done = worker(redis_url, QEXEC_EXCHANGE_URL=url)
    assert done.returncode == 3, done.stdout
    assert f"CRITICAL/MainProcess] FATAL_VENUE_UNAVAILABLE mode=paper url={url} reason=" in done.stdout
    assert "Connected to redis" not in done.stdout
    assert "ready." not in done.stdout


def test_a_worker_with_keys_the_venue_refuses_exits_non_zero(redis_url: str, paper_exchange: PaperExchange) -> None:
    """Keys the venue refuses stop the worker with the keys-refused reason, the key itself never logged."""
    done = worker(
        redis_url,
        QEXEC_EXCHANGE_URL=paper_exchange.url,
        QEXEC_API_KEY="wrongkey-1234567",
        QEXEC_API_SECRET="wrongsecret-7654321",
    )
    assert done.returncode == 3, done.stdout
    assert "FATAL_VENUE_UNAVAILABLE" in done.stdout and "refused the API keys in paper mode" in done.stdout
    assert "wrongkey-1234567" not in done.stdout and "wrongsecret-7654321" not in done.stdout


def test_a_worker_in_mainnet_mode_without_arming_refuses_to_start(redis_url: str) -> None:
    """Unarmed mainnet ends the worker with a message naming QEXEC_MAINNET_CONFIRM, not a traceback."""
    done = worker(redis_url, QEXEC_MODE="mainnet", QEXEC_API_KEY="k" * 64, QEXEC_API_SECRET="s" * 64)
    assert done.returncode != 0
    assert "FATAL_INVALID_SETTINGS" in done.stdout and "QEXEC_MAINNET_CONFIRM=I_UNDERSTAND" in done.stdout
    assert "Traceback" not in done.stdout
    assert "k" * 64 not in done.stdout


def test_a_running_worker_logged_the_venue_check_before_it_was_ready(stack: Stack) -> None:
    """The stack's worker logged VENUE_OK (mode, host, clock offset, symbols, balance) before `ready.`."""
    log = stack.log("worker")
    venue_ok = log.index("VENUE_OK mode=paper host=127.0.0.1:")
    assert venue_ok < log.index("ready.")
    line = log[venue_ok:].splitlines()[0]
    for field in ("clock_offset_ms=", "symbols=24", "usdt_balance="):
        assert field in line
    assert "qexec-paper-key" not in log and "qexec-paper-secret" not in log
