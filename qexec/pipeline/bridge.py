"""The bridge: reads intents from the stream with a consumer group and starts one Celery chain per intent.

Delivery is at-least-once: an entry is acknowledged only after its chain is enqueued (or it is
dead-lettered), and entries a dead bridge left pending are reclaimed with XAUTOCLAIM. A bridge acts on an entry
only while it still owns it (its consumer name's lease, and the group's pending list, checked atomically with the
dispatch claim), so one that froze while another reclaimed its entries does nothing with them when it wakes.

Consumer names are stable: `QEXEC_CONSUMER_NAME` (or `--consumer`) as given, else `<host>-<slot>` with the lowest
free slot on this host. Either way the name is held by a lease in Redis (constants.CONSUMER_LEASE_KEY) that the
loop refreshes, so two bridges never share a name; a restarted bridge takes its name back at once when the
previous holder is a dead process of this host, and reads its own pending entries before new ones.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from qexec import logs, redis_streams
from qexec.config import Settings
from qexec.context import Context
from qexec.errors import IntentError
from qexec.models import Intent, Ticket, utcnow
from qexec.pipeline import admission

log = logging.getLogger(__name__)

Dispatch = Callable[[Ticket], None]

NAME_SLOTS = 64  # default names per host: <host>-1 … <host>-64
NAME_WAIT_POLL_S = 0.5


class ConsumerNameTaken(RuntimeError):
    """Raised when the bridge's consumer name stays held by another live bridge (or every slot of this host is)."""


class _LeaseLost(Exception):
    """Raised when another bridge took this bridge's consumer name while it could not refresh it (it was frozen)."""


class Bridge:
    """One consumer of the intent stream's group (run several side by side: each holds a name of its own)."""

    def __init__(self, settings: Settings, r: redis.Redis, dispatch: Dispatch, consumer: str | None = None) -> None:
        self.settings = settings
        self.redis = r
        self.dispatch = dispatch
        explicit = "consumer_name" in settings.model_fields_set
        self._fixed_name = consumer or (settings.consumer_name if explicit else None)
        self.consumer = self._fixed_name or f"{socket.gethostname()}-<slot>"
        self.stream = settings.intent_stream
        self.group = settings.consumer_group
        self.lease: redis_streams.Lease | None = None
        self._token = redis_streams.lease_token()
        self._next_claim_at = 0.0
        self._next_sweep_at = 0.0
        self._next_refresh_at = 0.0
        self.handled = 0

    # -- the consumer name ------------------------------------------------------------------------------------

    def take_name(self, wait: bool = True) -> bool:
        """Take this bridge's consumer name (the fixed one, else the lowest free slot of this host); with `wait`, a
        fixed name held by another bridge is waited for up to one lease TTL, then ConsumerNameTaken. False when
        not taken without waiting."""
        ttl_s = self.settings.consumer_name_ttl_s
        host = socket.gethostname()
        names = [self._fixed_name] if self._fixed_name else [f"{host}-{n}" for n in range(1, NAME_SLOTS + 1)]
        deadline = time.monotonic() + (ttl_s + 1 if wait and self._fixed_name else 0)
        while True:
            held: dict[str, str] = {}
            for name in names:
                lease = redis_streams.Lease(self.stream, self.group, name, self._token)
                holder = redis_streams.take_lease(self.redis, lease, ttl_s)
                if holder and redis_streams.holder_is_gone(holder):
                    log.warning("consumer name %s was held by %s, a process that is gone: taking it", name, holder)
                    holder = redis_streams.take_lease(self.redis, lease, ttl_s, replace=holder)
                if not holder:
                    self.lease, self.consumer = lease, name
                    self._next_refresh_at = time.monotonic() + ttl_s / 3
                    log.info("BRIDGE_CONSUMER name=%s stream=%s group=%s", name, self.stream, self.group)
                    return True
                held[name] = holder
            if time.monotonic() >= deadline:
                if not wait:
                    return False
                taken = ", ".join(f"{name} by {holder}" for name, holder in held.items())
                raise ConsumerNameTaken(
                    f"consumer name held by another live bridge ({taken}); give this bridge another name "
                    "(QEXEC_CONSUMER_NAME or --consumer) or stop the other one"
                )
            log.warning("consumer name %s is held by %s; waiting up to %.0fs for it", names[0], held[names[0]], ttl_s)
            time.sleep(NAME_WAIT_POLL_S)

    def _refresh_name(self) -> None:
        if self.lease is None or time.monotonic() < self._next_refresh_at:
            return
        holder = redis_streams.take_lease(self.redis, self.lease, self.settings.consumer_name_ttl_s)
        if holder:
            log.warning("BRIDGE_CONSUMER_LOST name=%s now held by %s: taking a name again", self.consumer, holder)
            self.lease = None
            raise _LeaseLost(holder)
        self._next_refresh_at = time.monotonic() + self.settings.consumer_name_ttl_s / 3

    def release(self) -> None:
        """Give the consumer name back, so that a bridge started next takes it (and its pending entries) at once."""
        if self.lease is not None:
            redis_streams.release_lease(self.redis, self.lease)
            self.lease = None

    # -- the loop ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Take a consumer name, create the group if needed, then take back this consumer's own pending entries."""
        if self.lease is None:
            self.take_name()
        redis_streams.ensure_group(self.redis, self.stream, self.group)
        cursor = "0"
        while True:
            replies: Any = self.redis.xreadgroup(self.group, self.consumer, {self.stream: cursor}, count=100)
            entries = replies[0][1] if replies else []
            if not entries:
                break
            for entry_id, fields in entries:
                self.handle(entry_id, fields or {})
            cursor = entries[-1][0]  # entries left pending (another bridge is starting them) are not read again

    def run(self, stop: threading.Event) -> None:
        """Read, validate and dispatch until `stop` is set; Redis outages are waited out, not fatal."""
        backoff_s = 0.5
        started = False
        try:
            while not stop.is_set():
                try:
                    if not started:
                        self.start()
                        started = True
                    self.step()
                    backoff_s = 0.5
                except ConsumerNameTaken:
                    raise
                except _LeaseLost:
                    started = False
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    # Entries read just before it went away may not be dispatched: once it is back, this consumer's
                    # own pending entries are read again first (seconds), not left to the reclaim (claim_idle_ms).
                    started = False
                    log.warning("Redis unavailable (%s); retrying in %.1fs", exc, backoff_s)
                    stop.wait(backoff_s)
                    backoff_s = min(backoff_s * 2, 10.0)
                except Exception:
                    # The broker refused the chain, or a bug: the entry stays pending and is reclaimed later
                    # (and dead-lettered after `max_deliveries`), so nothing is lost by carrying on.
                    log.exception("bridge cycle failed; retrying in %.1fs", backoff_s)
                    stop.wait(backoff_s)
                    backoff_s = min(backoff_s * 2, 10.0)
        finally:
            try:
                self.release()
            except redis.RedisError as exc:  # it lapses on its own after consumer_name_ttl_s
                log.warning("could not release consumer name %s: %s", self.consumer, exc)

    def step(self) -> int:
        """One cycle: keep the name, reclaim and sweep when due, then read and handle a batch; entries handled."""
        self._refresh_name()
        handled = 0
        if time.monotonic() >= self._next_claim_at:
            handled += self.reclaim()
            self._next_claim_at = time.monotonic() + self.settings.claim_idle_ms / 2000
        if time.monotonic() >= self._next_sweep_at:
            self.sweep()
            self._next_sweep_at = time.monotonic() + self.settings.bridge_sweep_every_s
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

    def sweep(self) -> dict[str, Any]:
        """Trim the intent stream (never past a pending or undelivered entry) and the dead letters to their
        retention, and delete consumers idle for `consumer_delete_idle_s` with nothing pending."""
        s = self.settings
        done: dict[str, Any] = {
            "intents_trimmed": redis_streams.trim_intents(self.redis, s),
            "dead_letters_trimmed": redis_streams.trim_dead_letters(self.redis, s),
            "consumers_deleted": redis_streams.forget_idle_consumers(
                self.redis, self.stream, self.group, s.consumer_delete_idle_s, keep=self.consumer
            ),
        }
        if any(done.values()):
            log.info(
                "BRIDGE_SWEEP intents_trimmed=%d dead_letters_trimmed=%d consumers_deleted=%s",
                done["intents_trimmed"],
                done["dead_letters_trimmed"],
                ",".join(done["consumers_deleted"]) or "-",
            )
        return done

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
                self.handle(entry_id, fields or {}, final=deliveries > self.settings.max_deliveries)
                handled += 1
            if cursor in ("0-0", b"0-0"):
                return handled

    def _deliveries(self, entry_id: str) -> int:
        pending: Any = self.redis.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
        return int(pending[0]["times_delivered"]) if pending else 1

    # -- one entry --------------------------------------------------------------------------------------------

    def handle(self, entry_id: str, fields: dict[str, Any], final: bool = False) -> None:
        """Validate one entry and dispatch it (or dead-letter it); acknowledge only after that. `final`: delivered
        more than `max_deliveries` times, it is dead-lettered unless its chain was started already."""
        received_at = utcnow()
        try:
            intent = Intent.from_fields(fields, default_id=entry_id, max_bytes=self.settings.max_intent_bytes)
            intents = admission.per_account(intent, self.settings)
        except IntentError as exc:
            self._dead_letter(entry_id, fields, str(exc))
            return
        if final:
            self._last_delivery(intents, entry_id, fields)
            return
        acked: list[str] = []

        def settle(pipe: redis.client.Pipeline) -> None:
            pipe.xack(self.stream, self.group, entry_id)
            acked.append(entry_id)

        admission.admit(
            intents,
            entry_id=entry_id,
            owner=entry_id,
            r=self.redis,
            settings=self.settings,
            dispatch=self.dispatch,
            received_at=received_at,
            lease=self.lease,
            settle=settle,
        )
        self.handled += len(acked)

    def _last_delivery(self, intents: list[Intent], entry_id: str, fields: dict[str, Any]) -> None:
        """An entry delivered too often: acknowledged when every account's chain was started (or is another entry's),
        else dead-lettered."""
        claims = [
            redis_streams.claim_dispatch(
                self.redis, self.settings, one.id, entry_id, lease=self.lease, entry_id=entry_id, may_dispatch=False
            )[0]
            for one in intents
        ]
        done = (redis_streams.Claim.STARTED, redis_streams.Claim.DUPLICATE)
        if all(claim in done for claim in claims):
            self.redis.xack(self.stream, self.group, entry_id)
        elif any(claim in (redis_streams.Claim.UNCLAIMED, redis_streams.Claim.CLAIMED) for claim in claims):
            error = f"delivered more than {self.settings.max_deliveries} times without being acknowledged"
            unclaimed = all(claim is redis_streams.Claim.UNCLAIMED for claim in claims)
            self._dead_letter(entry_id, fields, error, count_received=unclaimed)

    def _dead_letter(self, entry_id: str, fields: dict[str, Any], error: str, count_received: bool = True) -> None:
        dlq_id = redis_streams.dead_letter(
            self.redis,
            self.settings,
            error=error,
            fields=fields,
            entry_id=entry_id,
            source=f"stream:{self.stream}",
            lease=self.lease,
            count_received=count_received,
        )
        if dlq_id is None:
            logs.proof(admission.INTENT_NOT_OWNED, entry_id=entry_id, consumer=self.consumer)
            return
        logs.proof(logs.INTENT_DEAD_LETTER, level=logging.ERROR, entry_id=entry_id, error=error, dlq_id=dlq_id)
        self.redis.xack(self.stream, self.group, entry_id)
        self.handled += 1


def reclaim_intents(ctx: Context, dispatch: Dispatch) -> int:
    """Take over intent entries that a dead bridge left pending; returns how many were handled."""
    reclaimer = Bridge(ctx.settings, ctx.redis, dispatch, consumer="beat-reclaimer")
    if not reclaimer.take_name(wait=False):  # another reclaim is running (a slow one overlaps the next)
        log.info("RECLAIM_SKIPPED reason=another reclaim holds the consumer name %s", reclaimer.consumer)
        return 0
    try:
        reclaimer.start()
        return reclaimer.reclaim()
    finally:
        reclaimer.release()
