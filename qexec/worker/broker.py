"""The Celery broker transport for Redis: kombu's own, made to survive a Redis that goes away.

celery 5.7 handles a lost broker connection by `collect()`-ing the connection, which clears the transport's
client, and then closing it. Anything that later touches the old channel - the close pushing unacknowledged
messages back, or a task that ran through the outage acknowledging or rejecting its message - needs that client,
and kombu 5.7.0 raises AttributeError there, which stops the worker with "Unrecoverable error". Skipping that
work is safe: the messages stay in the broker's unacked hash. A close, ack or reject that meets Redis down before
celery tears the connection down fails instead; its messages are in the same place. They are not left to the
visibility-timeout sweep (minutes, with production settings): the process remembers which ones it held, and the
first channel of its next connection queues those again and removes the ones it acknowledged meanwhile - seconds
after Redis is back. Every task is idempotent, so one that was still running then may run once more.

A worker that dies (SIGKILL, a lost host) cannot give its messages back. So that they are not left to the visibility
timeout either, each delivery records its holder - this process's node id (qexec/liveness.py) - beside kombu's
`unacked` hash, in the same round trip, and its acknowledgement removes it; beat's takeover
(qexec/worker/takeover.py) queues the messages of a node that stopped beating again at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

from qexec import constants, liveness

log = logging.getLogger(__name__)


class _Orphans:
    """Delivery tags of the messages this process held when its broker connection broke: `held` go back to their
    queue, `done` (acknowledged or rejected during the outage) leave the unacked hash, once a connection is back."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: set[str] = set()
        self.done: set[str] = set()

    def keep(self, tags: Any) -> None:
        with self.lock:
            self.held.update(tags)

    def finish(self, tag: str) -> None:
        with self.lock:
            self.held.discard(tag)
            self.done.add(tag)

    def settle(self, qos: kombu_redis.QoS) -> None:
        """Queue the held messages again and drop the finished ones, through a live channel's QoS."""
        with self.lock:
            held, done = set(self.held), set(self.done)
        if not held and not done:
            return
        try:
            for tag in done:
                qos._remove_from_indices(tag).execute()  # type: ignore[no-untyped-call]
            for tag in held:
                qos.restore_by_tag(tag, leftmost=True)  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            log.warning("broker back but not ready (%s): held messages are queued again on the next connection", exc)
            return
        with self.lock:
            self.held -= held
            self.done -= done
        log.warning(
            "broker connection back: %d message(s) this worker held queued again, %d finished meanwhile acknowledged",
            len(held),
            len(done),
        )


_orphans = _Orphans()
# What a Redis that went away raises from a channel's commands.
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


class RedisQoS(kombu_redis.QoS):
    """kombu's Redis QoS, leaving messages to the visibility sweep once their connection is torn down, and recording
    which node holds each message it delivers."""

    def append(self, message: Any, delivery_tag: str) -> None:
        """kombu's `append` (the message into the unacked hash and its index), with its holder, in one round trip."""
        delivery = message.delivery_info
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(
                self.unacked_key,
                delivery_tag,
                dumps([message._raw, delivery["exchange"], delivery["routing_key"]]),  # type: ignore[no-untyped-call]
            )
            node = liveness.current()
            if node is not None:
                pipe.hset(constants.BROKER_HOLDERS_KEY, delivery_tag, node)
            pipe.execute()
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        """kombu's removal from the unacked hash and index (ack, reject, restore), with the message's holder."""
        queued = super()._remove_from_indices(delivery_tag, pipe)  # type: ignore[no-untyped-call]
        return queued.hdel(constants.BROKER_HOLDERS_KEY, delivery_tag)

    def _torn_down(self) -> bool:
        transport = getattr(self.channel, "connection", None)
        return getattr(transport, "client", None) is None

    def restore_unacked(self, client: Any = None) -> None:
        """Push this channel's unacknowledged messages back, unless the connection is gone."""
        if client is None and self._torn_down():
            self._orphan_delivered()
            return
        try:
            super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except _UNREACHABLE as exc:
            # The connection broke before celery tore it down (the close met Redis down): the messages are still
            # in the unacked hash, and go back once a connection is.
            log.warning("broker unreachable while closing (%s): its messages are queued again once it is back", exc)
            self._orphan_delivered()

    def _orphan_delivered(self) -> None:
        log.warning(
            "broker connection closed: %d unacknowledged message(s) are queued again once it is back",
            len(self._delivered),
        )
        _orphans.keep(self._delivered)
        self._delivered.clear()

    def ack(self, delivery_tag: Any) -> None:
        """Acknowledge a message, unless its connection is gone (then it is acknowledged once one is back)."""
        if self._torn_down():
            log.warning(
                "broker connection closed before message %s was acknowledged: done once it is back", delivery_tag
            )
            self._settle_later(delivery_tag, requeue=False)
            return
        try:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        except _UNREACHABLE:
            # Done, but Redis went away before it heard: acknowledged once a connection is back, not run again.
            self._settle_later(delivery_tag, requeue=False)
            raise

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        """Reject a message, unless its connection is gone (then it is settled once one is back)."""
        if self._torn_down():
            log.warning("broker connection closed before message %s was rejected: done once it is back", delivery_tag)
            self._settle_later(delivery_tag, requeue=requeue)
            return
        try:
            super().reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]
        except _UNREACHABLE:
            self._settle_later(delivery_tag, requeue=requeue)
            raise

    def _settle_later(self, delivery_tag: Any, *, requeue: bool) -> None:
        """What Redis could not hear now is done by the next connection's first channel: the message queued again
        (`requeue`) or removed; this channel forgets it."""
        if requeue:
            _orphans.keep([delivery_tag])
        else:
            _orphans.finish(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]


class RedisChannel(kombu_redis.Channel):
    """kombu's Redis channel with `RedisQoS`, and one synchronous client per connection pool."""

    QoS = RedisQoS
    _sync_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # kombu pings Redis: it is up
        _orphans.settle(self.qos)

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu builds a new redis-py client (cheap to use, dear to build) for every publish and ack; reuse one.

        A redis-py client is safe to share between threads (each command takes a connection from the pool); a new
        pool (after a reconnect) gets a new client.
        """
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()  # type: ignore[no-untyped-call]
        return client


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with `RedisChannel`."""

    Channel = RedisChannel


class SentinelChannel(RedisChannel, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (its pool follows the group's master) with `RedisChannel`'s changes."""


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with `SentinelChannel`: `QEXEC_BROKER_URL=sentinel://…` (qexec/sentinel.py)."""

    Channel = SentinelChannel
