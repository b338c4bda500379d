"""The worker's command line, written once (qexec/worker/command.py), and `qexec worker`, which runs it."""

from __future__ import annotations

import signal
import sys
import uuid
from pathlib import Path

from click.testing import CliRunner
from paper_fixtures import PaperExchange, qexec_command
from private_stack import private_stack
from stack_fixtures import ROOT

from qexec.cli import main
from qexec.config import Settings
from qexec.worker.command import WITHOUT_PEERS, worker_argv


def procfile() -> dict[str, str]:
    """The Procfile's processes: name -> shell line."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def test_the_procfile_worker_runs_qexec_worker_once_the_venue_answers() -> None:
    """The Procfile's `worker` waits for the venue, then execs `qexec worker`: no Celery flags of its own."""
    assert procfile()["worker"] == "qexec wait-for-venue && exec qexec worker"


def test_the_worker_command_line_carries_the_settings_concurrency_and_the_node_name() -> None:
    """By default the worker runs the settings' worker_concurrency threads, as `worker@%h`, at INFO."""
    argv = worker_argv(Settings(worker_concurrency=3))

    assert argv == [
        *(sys.executable, "-m", "celery"),
        *("-A", "qexec", "worker", "--pool", "threads"),
        *("--concurrency", "3", "--loglevel", "INFO", "-n", "worker@%h"),
    ]


def test_a_caller_names_the_program_the_threads_the_node_the_log_level_and_extra_flags() -> None:
    """What callers vary (the benches, the test fixtures, `qexec up`) goes where Celery expects it."""
    argv = worker_argv(
        Settings(worker_concurrency=3),
        concurrency=5,
        node_name="bench-1@%h",
        log_level="DEBUG",
        extra=[*WITHOUT_PEERS, "--task-events"],
        program=["/opt/bin/celery"],
    )

    assert argv == [
        *("/opt/bin/celery", "-A", "qexec", "worker", "--pool", "threads"),
        *("--concurrency", "5", "--loglevel", "DEBUG", "-n", "bench-1@%h"),
        *("--without-gossip", "--without-mingle", "--task-events"),
    ]


def test_qexec_worker_help_names_its_options() -> None:
    """`qexec worker --help` lists the threads, the node name and the log level."""
    done = CliRunner().invoke(main, ["worker", "--help"])

    assert done.exit_code == 0, done.output
    for option in ("--concurrency", "--name", "--log-level"):
        assert option in done.output


def test_qexec_worker_comes_up_on_a_private_redis_and_stops_cleanly_on_sigterm(
    paper_exchange: PaperExchange, tmp_path: Path
) -> None:
    """A real `qexec worker` is Celery's worker itself: the settings' threads, the given name, and SIGTERM reaches
    Celery (a warm shutdown, exit 0), because qexec execs it rather than running it as a child."""
    # Given a Redis of its own and QEXEC_WORKER_CONCURRENCY=3
    extra = {"QEXEC_WORKER_CONCURRENCY": "3"}
    with private_stack(paper_exchange, tmp_path, extra, worker=False, bridge=False) as stack:
        node = f"command-{uuid.uuid4().hex[:6]}"
        # When `qexec worker` starts
        argv = [*qexec_command(), "worker", "-n", f"{node}@%h", *WITHOUT_PEERS]
        worker = stack.spawn("worker", argv, "ready.")
        # Then Celery's worker runs with the settings' three threads, under the given name
        log = stack.log("worker")
        assert "concurrency: 3 (thread)" in log, log[-3000:]
        assert f"{node}@" in log and "ready." in log
        # And a SIGTERM to the process qexec started is Celery's own warm shutdown
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, stack.log("worker")[-3000:]
        assert "Warm shutdown" in stack.log("worker")
