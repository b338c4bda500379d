"""The Celery broker transport for Redis: kombu's own, made to survive a Redis that goes away.

celery 5.7 handles a lost broker connection by `collect()`-ing the connection, which clears the transport's
client, and then closing it. Anything that later touches the old channel - the close pushing unacknowledged
messages back, or a task that ran through the outage acknowledging or rejecting its message - needs that client,
and kombu 5.7.0 raises AttributeError there, which stops the worker with "Unrecoverable error". Skipping that
work is safe: the messages stay in the broker's unacked hash and the visibility-timeout sweep queues them again
(every task is idempotent, so one that already ran may run once more).
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

log = logging.getLogger(__name__)


class RedisQoS(kombu_redis.QoS):
    """kombu's Redis QoS, leaving messages to the visibility sweep once their connection is torn down."""

    def _torn_down(self) -> bool:
        transport = getattr(self.channel, "connection", None)
        return getattr(transport, "client", None) is None

    def restore_unacked(self, client: Any = None) -> None:
        """Push this channel's unacknowledged messages back, unless the connection is gone."""
        if client is None and self._torn_down():
            log.warning(
                "broker connection closed: %d unacknowledged message(s) return with the visibility timeout",
                len(self._delivered),
            )
            self._delivered.clear()
            return
        super().restore_unacked(client)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: Any) -> None:
        """Acknowledge a message, unless its connection is gone (then it returns with the visibility timeout)."""
        if self._torn_down():
            log.warning("broker connection closed before message %s was acknowledged; it will run again", delivery_tag)
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
            return
        super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        """Reject a message, unless its connection is gone (then it returns with the visibility timeout)."""
        if self._torn_down():
            log.warning("broker connection closed before message %s was rejected; it will run again", delivery_tag)
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
            return
        super().reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]


class RedisChannel(kombu_redis.Channel):
    """kombu's Redis channel with `RedisQoS`, and one synchronous client per connection pool."""

    QoS = RedisQoS
    _sync_client: Any = None

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
