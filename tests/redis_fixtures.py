"""Pytest fixtures: a private Redis server for the test run, and a fresh database on it per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import redis

from qexec.ops.redisserver import EMBEDDED_ENV, LocalRedis, RedisServerNotFound, describe_server, embedded_mode

# Database 0 is left alone; tests take 1..15 in turn, so a straggler from one test lands elsewhere.
_databases = itertools.cycle(range(1, 16))
# What the session's server said it is (INFO server), for the closing summary and tests/test_redisserver.py.
SESSION_SERVER: dict[str, str] = {}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """A redis-server of our own on a free port for the whole run (never the machine's Redis)."""
    try:
        server = LocalRedis().start()
    except RedisServerNotFound as exc:
        pytest.exit(f"the tests start a Redis of their own and found no redis-server to start:\n{exc}")
    SESSION_SERVER.update(server.info)
    with server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which server the suite ran on, and why that one."""
    if SESSION_SERVER:
        description = describe_server(SESSION_SERVER)
        terminalreporter.write_line(f"redis: the suite ran on {description} ({EMBEDDED_ENV}={embedded_mode()})")


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> str:
    """The URL of a database on our own server, flushed just before the test."""
    url = f"redis://127.0.0.1:{redis_server.port}/{next(_databases)}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test's database that decodes replies to str."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()
