"""The worker process's resources: its client for qexec's Redis, its per-thread venue, the context a step runs with."""

from __future__ import annotations

import threading

import redis

from qexec import constants, redis_streams
from qexec.config import get_settings
from qexec.context import Context
from qexec.venue.binance import thread_venue

_redis: redis.Redis | None = None
_redis_lock = threading.Lock()


def qexec_redis() -> redis.Redis:
    """This process's client for qexec's own Redis (streams and intent state)."""
    global _redis  # noqa: PLW0603 - one connection pool per process
    if _redis is not None:  # every step asks: no lock once it is made
        return _redis
    with _redis_lock:
        if _redis is None:
            _redis = redis_streams.connect(get_settings().redis_url)
        return _redis


def context(account: str = constants.DEFAULT_ACCOUNT) -> Context:
    """The context a step for `account` runs with in this worker thread; `default`'s for an account not configured
    (place_order rejects its intent before it reaches the venue)."""
    base = get_settings()
    settings = base.for_account(account) if account in base.account_names else base
    r = qexec_redis()
    return Context(settings=settings, redis=r, venue=thread_venue(settings, r))


def contexts() -> list[Context]:
    """One context per configured account, for beat's passes over every account."""
    return [context(name) for name in get_settings().account_names]
