"""Beat's scheduler: celery-redbeat's, kept alive through a Redis restart, and never one of two beats sending.

celery-redbeat holds a lock in Redis (`redbeat_lock_timeout`, 30 s) that beat takes once at start (the `beat_init`
signal, blocking while another beat holds it) and extends at the start of every tick. A tick that cannot reach
Redis raises `ConnectionError`, and celery beat's loop lets it end the process. Here such a tick sends nothing,
logs one WARNING, and is tried again every RETRY_S. Once Redis answers, the tick goes on as before when the lock
is still ours (a Redis with an append-only file keeps it across a restart); when it is not (it expired while
Redis was away, or Redis lost it), beat takes it again before it sends anything (and installs the schedule again,
which such a Redis may have lost too), and stands by, sending nothing, while another beat holds it.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, get_redis
from redis.exceptions import LockNotOwnedError

log = logging.getLogger(__name__)

RETRY_S = 1.0  # how often a beat that cannot reach Redis tries again
TRANSIENT = (redis.ConnectionError, redis.TimeoutError)


class ResilientRedBeatScheduler(RedBeatScheduler):  # type: ignore[misc]  # celery-redbeat ships no type information
    """`redbeat.RedBeatScheduler` whose tick outlives a Redis outage and a lost lock."""

    lock: Any = None  # redis-py's Lock once taken (redbeat's `beat_init` receiver sets it, or `_take_lock`)
    _unreachable = False  # a WARNING was logged for the current outage
    _standing_by = False  # another beat held the lock at the last try, and that was logged
    _lost = False  # the lock is not ours: take it before sending anything

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One pass of the schedule; the seconds until the next, as redbeat's own tick returns."""
        try:
            if self.lock_key and (self.lock is None or self._lost) and not self._take_lock():
                return float(self.max_interval)
            try:
                interval = float(super().tick(*args, **kwargs))
            except LockNotOwnedError:
                # redbeat's extend found another token, or none: the lock expired while this beat could not
                # extend it. Nothing was sent in this tick; the next one takes the lock first.
                log.warning(
                    "beat: the lock %s is no longer ours; taking it again before sending anything", self.lock_key
                )
                self._lost = True
                return 0.0
        except TRANSIENT as exc:
            if not self._unreachable:
                log.warning("beat: Redis does not answer (%s); sending nothing, trying again every %g s", exc, RETRY_S)
                self._unreachable = True
            return RETRY_S
        if self._unreachable:
            log.warning("beat: Redis answers again; the schedule runs again")
            self._unreachable = False
        return interval

    def close(self) -> None:
        """Release the lock if it is ours; a Redis that does not answer at shutdown lets it expire instead."""
        try:
            super().close()
        except TRANSIENT as exc:
            log.warning("beat: could not release the lock %s (%s); it expires by itself", self.lock_key, exc)

    def _take_lock(self) -> bool:
        """Take the lock without waiting, as redbeat's `beat_init` receiver does (with its extend script)."""
        if self.lock is None:
            client = get_redis(self.app)
            self.lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
            self.lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
        if not self.lock.acquire(blocking=False):
            if not self._standing_by:
                log.warning("beat: another beat holds the lock %s; standing by, sending nothing", self.lock_key)
                self._standing_by = True
            return False
        # A Redis that lost the lock may have lost the schedule with it (one without an append-only file): install
        # the static entries again, as at start; entries that are still there keep their last run.
        self.setup_schedule()
        log.warning("beat: took the lock %s; sending the schedule", self.lock_key)
        self._lost = self._standing_by = False
        return True
