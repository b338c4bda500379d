"""The worker's command line (`celery -A qexec worker` on the threads pool), written once for every caller."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from qexec.config import Settings, get_settings

# How Celery is started by default: with this interpreter, so no activated venv or PATH entry is needed.
CELERY = (sys.executable, "-m", "celery")
NODE_NAME = "worker@%h"  # Celery expands %h to the host name
LOG_LEVEL = "INFO"
# A worker that neither syncs with (mingle) nor watches (gossip) its peers at start-up: tests and benches, which
# start and stop workers by the dozen.
WITHOUT_PEERS = ("--without-gossip", "--without-mingle")


def worker_argv(
    settings: Settings | None = None,
    *,
    concurrency: int | None = None,
    node_name: str = NODE_NAME,
    log_level: str = LOG_LEVEL,
    extra: Sequence[str] = (),
    program: Sequence[str] = CELERY,
) -> list[str]:
    """`program -A qexec worker --pool threads ...`: `concurrency` threads (default: the settings' worker_concurrency),
    named `node_name`, logging at `log_level`, then `extra` flags as they are."""
    threads = concurrency if concurrency is not None else (settings or get_settings()).worker_concurrency
    return [
        *program,
        "-A",
        "qexec",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(threads),
        "--loglevel",
        log_level,
        "-n",
        node_name,
        *extra,
    ]
