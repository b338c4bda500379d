"""Redis locks held by a token: taken with `SET NX PX`, released only by their holder, with one script; a lock whose
holder's node died (qexec/liveness.py) is taken over instead of waited out."""

from __future__ import annotations

from typing import Any

import redis

from qexec import liveness

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_TAKE_OVER = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end "
    "return false"
)


def new_token() -> str:
    """A fresh token, naming this process's node when it beats (its locks are taken over should it die)."""
    return liveness.token()


def release(client: redis.Redis | redis.client.Pipeline, key: str, token: str) -> Any:
    """Delete `key` if it still holds `token` (a lock that expired and was taken by another is left alone).

    On a pipeline the release is queued; on a client it runs now and returns 1 when it released the lock.
    """
    return client.eval(_RELEASE, 1, key, token)


def take_over(r: redis.Redis, key: str, token: str, px_ms: int, beat_s: float) -> bool:
    """Take `key` for `token` when its holder's node is dead (never one of a process that does not beat): True
    when it is ours now. The swap is atomic: a holder that released it meanwhile leaves it to the next `SET NX`."""
    held: Any = r.get(key)
    node = liveness.node_of(held)
    if node is None or node == liveness.current() or not liveness.dead(r, {node}, beat_s):
        return False
    return bool(r.eval(_TAKE_OVER, 1, key, held, token, px_ms))
