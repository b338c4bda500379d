"""Redis locks held by a token: taken with `SET NX PX`, released only by their holder, with one script; a lock whose
holder's node died (qexec/liveness.py), or whose holder was a run of this very process that has ended without
releasing it (Redis was away when it tried), is taken over instead of waited out."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import redis

from qexec import liveness

_running: set[str] = set()  # the tokens of this process's runs still going on
_running_lock = threading.Lock()

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_TAKE_OVER = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end "
    "return false"
)


def new_token() -> str:
    """A fresh token, naming this process's node when it beats (its locks are taken over should it die)."""
    return liveness.token()


@contextlib.contextmanager
def running_token() -> Iterator[str]:
    """A fresh token for a run of this process: while the run goes on, no other run of this process takes over a
    lock it holds; once it has ended, one may (its release may have failed)."""
    token = new_token()
    with _running_lock:
        _running.add(token)
    try:
        yield token
    finally:
        with _running_lock:
            _running.discard(token)


def release(client: redis.Redis | redis.client.Pipeline, key: str, token: str) -> Any:
    """Delete `key` if it still holds `token` (a lock that expired and was taken by another is left alone).

    On a pipeline the release is queued; on a client it runs now and returns 1 when it released the lock.
    """
    return client.eval(_RELEASE, 1, key, token)


def take_over(r: redis.Redis, key: str, token: str, px_ms: int, beat_s: float) -> bool:
    """Take `key` for `token` when its holder's node is dead, or is this process and the holder's run has ended
    (never the lock of a process that does not beat): True when it is ours now. The swap is atomic: a holder that
    released it meanwhile leaves it to the next `SET NX`."""
    held: Any = r.get(key)
    node = liveness.node_of(held)
    if node is None:
        return False
    if node == liveness.current():
        with _running_lock:
            if held in _running:
                return False
    elif not liveness.dead(r, {node}, beat_s):
        return False
    return bool(r.eval(_TAKE_OVER, 1, key, held, token, px_ms))
