"""The bridge: reads intents from the stream with a consumer group and starts one Celery chain per intent.

Delivery is at-least-once: an entry is acknowledged only after its chain is enqueued (or it is
dead-lettered), and entries a dead bridge left pending are reclaimed with XAUTOCLAIM.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from qexec import execution, logs, streams
from qexec.config import Settings
from qexec.errors import IntentError
from qexec.models import Intent, Ticket, utcnow

log = logging.getLogger(__name__)

Dispatch = Callable[[Ticket], None]


class Bridge:
    """One consumer of the intent stream's group (run several side by side with distinct names)."""

    def __init__(self, settings: Settings, r: redis.Redis, dispatch: Dispatch, consumer: str | None = None) -> None:
        self.settings = settings
        self.redis = r
        self.dispatch = dispatch
        self.consumer = consumer or settings.consumer_name
        self.stream = settings.intent_stream
        self.group = settings.consumer_group
        self._next_claim_at = 0.0
        self.handled = 0

    def start(self) -> None:
        """Create the group if needed, then take back this consumer's own unacknowledged entries."""
        streams.ensure_group(self.redis, self.stream, self.group)
        while True:
            replies: Any = self.redis.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=100)
            entries = replies[0][1] if replies else []
            if not entries:
                break
            for entry_id, fields in entries:
                self.handle(entry_id, fields)

    def run(self, stop: threading.Event) -> None:
        """Read, validate and dispatch until `stop` is set; Redis outages are waited out, not fatal."""
        backoff_s = 0.5
        started = False
        while not stop.is_set():
            try:
                if not started:
                    self.start()
                    started = True
                self.step()
                backoff_s = 0.5
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, backoff_s)
                stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)
            except Exception:
                # The broker refused the chain, or a bug: the entry stays pending and is reclaimed later
                # (and dead-lettered after `max_deliveries`), so nothing is lost by carrying on.
                log.exception("bridge cycle failed; retrying in %.1fs", backoff_s)
                stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)

    def step(self) -> int:
        """One cycle: reclaim stale entries when due, then read and handle a batch; returns entries handled."""
        handled = 0
        if time.monotonic() >= self._next_claim_at:
            handled += self.reclaim()
            self._next_claim_at = time.monotonic() + self.settings.claim_idle_ms / 2000
        replies: Any = self.redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=self.settings.bridge_batch,
            block=self.settings.bridge_block_ms,
        )
        for _stream, entries in replies or []:
            for entry_id, fields in entries:
                self.handle(entry_id, fields)
                handled += 1
        return handled

    def reclaim(self) -> int:
        """Take over entries another consumer left unacknowledged for longer than `claim_idle_ms`."""
        handled, cursor = 0, "0-0"
        while True:
            reply: Any = self.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=self.settings.claim_idle_ms,
                start_id=cursor,
                count=100,
            )
            cursor, entries = reply[0], reply[1]
            for entry_id, fields in entries:
                deliveries = self._deliveries(entry_id)
                log.warning("reclaimed intent entry %s (delivery %d)", entry_id, deliveries)
                if deliveries > self.settings.max_deliveries:
                    self._dead_letter(
                        entry_id, fields or {}, f"delivered {deliveries} times without being acknowledged"
                    )
                else:
                    self.handle(entry_id, fields or {})
                handled += 1
            if cursor in ("0-0", b"0-0"):
                return handled

    def _deliveries(self, entry_id: str) -> int:
        pending: Any = self.redis.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
        return int(pending[0]["times_delivered"]) if pending else 1

    def handle(self, entry_id: str, fields: dict[str, Any]) -> None:
        """Validate one entry and dispatch it (or dead-letter it); acknowledge only after that."""
        received_at = utcnow()
        try:
            intent = Intent.from_fields(fields, default_id=entry_id, max_bytes=self.settings.max_intent_bytes)
        except IntentError as exc:
            self._dead_letter(entry_id, fields, str(exc))
            return
        execution.admit(
            intent,
            entry_id=entry_id,
            owner=entry_id,
            r=self.redis,
            settings=self.settings,
            dispatch=self.dispatch,
            received_at=received_at,
        )
        self.redis.xack(self.stream, self.group, entry_id)
        self.handled += 1

    def _dead_letter(self, entry_id: str, fields: dict[str, Any], error: str) -> None:
        dlq_id = streams.dead_letter(
            self.redis, self.settings, error=error, fields=fields, entry_id=entry_id, source=f"stream:{self.stream}"
        )
        logs.proof(logs.INTENT_DEAD_LETTER, level=logging.ERROR, entry_id=entry_id, error=error, dlq_id=dlq_id)
        self.redis.xack(self.stream, self.group, entry_id)
