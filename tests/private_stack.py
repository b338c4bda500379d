"""A pipeline of its own for tests that need settings the session's `stack` does not have: its own Redis server,
a paper exchange the caller chose, and worker and bridge processes started with extra `QEXEC_*` settings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from paper_fixtures import free_port
from stack_fixtures import PIPELINE_ENV, Stack, clean_env, stop_process

from qexec.config import Settings
from qexec.ops.redisserver import LocalRedis


@contextlib.contextmanager
def private_stack(
    paper: Any, logs_dir: Path, extra: dict[str, str], *, worker: bool = True, bridge: bool = True
) -> Iterator[Stack]:
    """A Redis server, then a worker and a bridge on it and on `paper`, with `extra` settings; all stopped after."""
    with LocalRedis() as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        settings_env = dict(
            PIPELINE_ENV, QEXEC_REDIS_URL=url, QEXEC_EXCHANGE_URL=paper.url, QEXEC_METRICS_PORT=str(free_port())
        )
        settings_env.update(extra)
        settings = Settings(**{k.removeprefix("QEXEC_").lower(): v for k, v in settings_env.items()})
        client = redis.Redis.from_url(url, decode_responses=True)
        running = Stack(env=clean_env(settings_env), settings=settings, redis=client, paper=paper, logs_dir=logs_dir)
        try:
            if worker:
                running.start_worker()
            if bridge:
                running.start_bridge()
            yield running
            running.check_result_stream()
        finally:
            for proc in running.processes.values():
                stop_process(proc)
            client.close()
