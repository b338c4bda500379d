"""Pytest fixtures: a private Redis server for the test run, and a fresh database on it per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import redis

from qexec.redisserver import LocalRedis

# Database 0 is left alone; tests take 1..15 in turn, so a straggler from one test lands elsewhere.
_databases = itertools.cycle(range(1, 16))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """A redis-server of our own on a free port for the whole run (never the machine's Redis)."""
    with LocalRedis() as server:
        yield server


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
