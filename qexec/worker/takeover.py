"""A dead worker's work taken over in seconds: this process's beat, and beat's sweep of a dead node's messages.

Each worker process beats its node's key (qexec/liveness.py) from a thread of its own, started before it consumes.
Beat sends `qexec.take_over` every `QEXEC_TAKEOVER_EVERY_S`; a live worker runs it: the broker messages a node that
stopped beating held (a countdown's retry waiting for its time, a step it was running) are queued again at once,
instead of after the visibility timeout (minutes, with the production settings). A lock such a node held is taken
by the next step that needs it (qexec/locks.py). Every step is idempotent, so a node taken for dead that was only
slow runs nothing twice that matters: it finds the work done, or its lock taken.

The same task sends a fresh confirmation for every order whose next `confirm_fill` is overdue
(`QEXEC_CONFIRM_OVERDUE_S` past its countdown), and dispatches again every intent whose `place_order` never started
(`QEXEC_PLACE_OVERDUE_S`; both found by qexec/pipeline/reconcile.py): kombu's Redis transport pops a message and
then records it as unacknowledged, so a worker killed between the two loses it with no trace in the broker.

With RabbitMQ the broker itself redelivers a lost consumer's messages when its connection drops; the locks and the
overdue confirmations and placements are taken over there too.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

import redis
from kombu.utils.encoding import bytes_to_str

from qexec import constants, liveness
from qexec.config import Settings

log = logging.getLogger(__name__)

TASK = "qexec.take_over"
QUEUE = "qexec.control"  # beside the intents' queue, so a backlog of new intents does not hold the sweep back


class Beating:
    """This process's beat, in a daemon thread, until `stop`."""

    def __init__(self, r: redis.Redis, settings: Settings, name: str) -> None:
        self.r, self.settings = r, settings
        self.node = liveness.become(name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="qexec-node-beat", daemon=True)

    def start(self) -> Beating:
        self._beat()  # before the first message is consumed, so that nothing is held by a node never seen
        self._thread.start()
        log.info("NODE_BEATING node=%s every_s=%g dead_after_s=%g", self.node, *self._timing())
        return self

    def stop(self) -> None:
        """Stop beating and say so (the messages a cleanly stopping worker held, it gives back itself)."""
        self._stop.set()
        self._thread.join(self.settings.node_beat_s * 2)
        try:
            liveness.leave(self.r, self.node)
        except redis.RedisError as exc:
            log.warning("node %s could not say it left (%s): it is taken for dead after its TTL", self.node, exc)
        liveness.forget()

    def _timing(self) -> tuple[float, float]:
        return self.settings.node_beat_s, self.settings.node_dead_after_s

    def _beat(self) -> None:
        try:
            liveness.beat(self.r, self.node, self.settings.node_dead_after_s)
        except redis.RedisError as exc:  # Redis away: the beat resumes with it
            log.debug("node beat failed: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.node_beat_s):
            self._beat()


_beating: Beating | None = None


def start_beating(r: redis.Redis, settings: Settings, name: str) -> Beating:
    """Start this worker process's beat (once)."""
    global _beating  # noqa: PLW0603 - one beat per process
    if _beating is None:
        _beating = Beating(r, settings, name).start()
    return _beating


def stop_beating() -> None:
    global _beating  # noqa: PLW0603 - one beat per process
    if _beating is not None:
        _beating.stop()
        _beating = None


def sweep(channel: Any, r: redis.Redis, settings: Settings) -> dict[str, int]:
    """Queue again the broker messages held by dead nodes, through a kombu Redis `channel` of qexec's transport
    (qexec/worker/broker.py); returns how many per node. `r` is qexec's Redis, where the nodes beat."""
    prefix = getattr(channel, "global_keyprefix", "") or ""
    with channel.conn_or_acquire() as client:
        raw: Any = client.hgetall(prefix + constants.BROKER_HOLDERS_KEY)  # HGETALL is not prefixed by kombu
    holders = {bytes_to_str(tag): bytes_to_str(node) for tag, node in raw.items()}  # type: ignore[no-untyped-call]
    gone = liveness.dead(r, set(holders.values()) - {liveness.current()}, settings.node_beat_s)
    taken: Counter[str] = Counter()
    for tag, node in holders.items():
        if node in gone:
            channel.qos.restore_by_tag(tag)  # to the head of its queue: the next message a worker takes
            taken[node] += 1
    for node, count in taken.items():
        log.warning("TAKEOVER node=%s messages=%d: queued again for a live worker", node, count)
    return dict(taken)


def schedule(settings: Settings) -> dict[str, Any]:
    """Beat's entry for the takeover (its broker sweep runs on a Redis broker only: RabbitMQ redelivers a dead
    consumer's messages itself; overdue confirmations are sent again on either)."""
    every_s = settings.takeover_every_s
    return {"take-over": {"task": TASK, "schedule": every_s, "options": {"expires": every_s * 2}}}
