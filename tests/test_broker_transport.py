"""qexec's Redis transport for Celery (qexec/worker/broker.py) through kombu itself, on a Redis this test owns and
really restarts: what a consumer held when Redis went away is queued again once it is back, whichever way kombu's
close met the outage."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import redis
from kombu import Connection
from kombu.message import Message

from qexec.ops.redisserver import LocalRedis, free_port
from qexec.worker.broker import RedisTransport


def two_held(url: str, name: str) -> tuple[Connection, list[Message]]:
    """Two messages published to queue `name`, taken by a consumer of our transport and not acknowledged: its
    connection and the messages (in the broker's unacked hash now)."""
    with Connection(url, transport=RedisTransport) as publisher:
        queue = publisher.SimpleQueue(name)
        queue.put({"n": 1})
        queue.put({"n": 2})
        queue.close()
    consumer = Connection(url, transport=RedisTransport)
    queue = consumer.SimpleQueue(name)
    return consumer, [queue.get(timeout=5), queue.get(timeout=5)]


def test_messages_held_when_a_close_met_redis_down_are_queued_again_once_it_is_back(tmp_path: Path) -> None:
    """A consumer holds two messages; Redis stops; the channel closes while its client still exists (kombu pushes the
    messages back then, and that fails with Redis down). Once Redis is back, the first channel of a new connection
    queues both again: nothing is left in the unacked hash for the visibility sweep minutes later."""
    server = LocalRedis(port=free_port(), data_dir=tmp_path / "redis", appendonly=True).start()
    try:
        r = redis.Redis.from_url(server.url)
        consumer, held = two_held(server.url, "held")
        assert {m.payload["n"] for m in held} == {1, 2}
        assert r.hlen("unacked") == 2 and r.llen("held") == 0

        server.stop()
        with contextlib.suppress(Exception):  # as celery does: a close that fails is the old connection's end
            consumer.default_channel.close()
        server.start()

        with Connection(server.url, transport=RedisTransport) as again:
            again.default_channel  # noqa: B018 - the first channel of the new connection settles
            assert r.hlen("unacked") == 0, r.hkeys("unacked")
            assert r.llen("held") == 2
            queue = again.SimpleQueue("held")
            assert {queue.get(timeout=5).payload["n"] for _ in range(2)} == {1, 2}
            queue.close()
    finally:
        server.stop()


@pytest.mark.parametrize("end", ["ack", "reject"])
def test_an_acknowledgement_redis_never_heard_is_made_once_it_is_back_not_run_again(tmp_path: Path, end: str) -> None:
    """A task done (or rejected for good) as Redis went away: its acknowledgement fails; the close that follows fails
    too. Once Redis is back the message is gone, not queued again for a second run, and the one still held is."""
    server = LocalRedis(port=free_port(), data_dir=tmp_path / "redis", appendonly=True).start()
    try:
        r = redis.Redis.from_url(server.url)
        consumer, (done, held) = two_held(server.url, "acked")

        server.stop()
        with contextlib.suppress(Exception):
            getattr(done, end)()
        with contextlib.suppress(Exception):
            consumer.default_channel.close()
        server.start()

        with Connection(server.url, transport=RedisTransport) as again:
            again.default_channel  # noqa: B018
            assert r.hlen("unacked") == 0, r.hkeys("unacked")
            queue = again.SimpleQueue("acked")
            assert [queue.get(timeout=5).payload] == [held.payload]
            assert r.llen("acked") == 0, "the acknowledged message came back"
            queue.close()
    finally:
        server.stop()
