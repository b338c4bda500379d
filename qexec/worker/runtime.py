"""The worker process's resources: its client for qexec's Redis, its per-thread venue, the context a step runs with."""

from __future__ import annotations

import threading

import redis

from qexec import constants, redis_streams
from qexec.config import get_settings
from qexec.context import Context
from qexec.errors import UnknownAccount
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


def context(account: str = constants.DEFAULT_ACCOUNT, *, or_default: bool = False) -> Context:
    """The context a step for `account` runs with in this worker thread. UnknownAccount for an account this worker
    has no settings for - never another account's instead - unless `or_default`: for an intent that has placed
    nothing yet, `default`'s, with which place_order rejects it before anything reaches the venue."""
    base = get_settings()
    if account in base.account_names:
        settings = base.for_account(account)
    elif or_default:
        settings = base
    else:
        raise UnknownAccount(
            f"account {account!r} is not one of this worker's accounts ({', '.join(base.account_names)}): "
            "its work waits for a worker that has it (QEXEC_ACCOUNTS)"
        )
    r = qexec_redis()
    return Context(settings=settings, redis=r, venue=thread_venue(settings, r))


def contexts() -> list[Context]:
    """One context per configured account, for beat's passes over every account."""
    return [context(name) for name in get_settings().account_names]
