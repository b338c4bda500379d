"""Redis locks held by a token: taken with `SET NX PX`, released only by their holder, with one script."""

from __future__ import annotations

from typing import Any

import redis

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def release(client: redis.Redis | redis.client.Pipeline, key: str, token: str) -> Any:
    """Delete `key` if it still holds `token` (a lock that expired and was taken by another is left alone).

    On a pipeline the release is queued; on a client it runs now and returns 1 when it released the lock.
    """
    return client.eval(_RELEASE, 1, key, token)
