"""Which worker processes are alive: each beats a key in qexec's Redis, and one whose beat is gone is dead.

A worker process takes a node id when it starts (its Celery node name and a fresh suffix, so that a worker restarted
under the same name is a new node) and beats `NODE_ALIVE_KEY` every `node_beat_s` with a TTL of `node_dead_after_s`
(qexec/worker/takeover.py starts the beat). The messages it holds and the locks it takes name that id
(qexec/worker/broker.py, qexec/locks.py). A node is taken for dead only when its key has been missing for two beats
*as seen by the readers*: a Redis restart that outlived the TTLs makes every node missing at once, and their first
beats after it bring them back before anyone takes their work.

A process that does not beat (a test calling a step directly, `qexec verify`, a prefork pool's child) has no node
id: what it holds is never taken over, and ends with its TTL as before.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import redis

from qexec import constants

MISSING_MARK_MS = 10 * 60 * 1000  # how long a missing node's mark is kept (its work is long taken by then)

_node: str | None = None
_node_pid = 0  # the process that took the id: a forked child (a prefork pool's) is not that node


def current() -> str | None:
    """This process's node id while it beats, else None (also in a child forked from a node: it does not beat)."""
    return _node if _node_pid == os.getpid() else None


def become(name: str) -> str:
    """Take a fresh node id for this process (`name#suffix`); returns it."""
    global _node, _node_pid
    _node, _node_pid = f"{name}#{uuid.uuid4().hex[:8]}", os.getpid()
    return _node


def forget() -> None:
    """Stop being a node (the process no longer beats)."""
    global _node  # noqa: PLW0603 - one identity per process
    _node = None


def beat(r: redis.Redis, node: str, ttl_s: float) -> None:
    """Say `node` is alive for the next `ttl_s`."""
    r.set(constants.NODE_ALIVE_KEY.format(node=node), int(time.time() * 1000), px=max(1, int(ttl_s * 1000)))


def leave(r: redis.Redis, node: str) -> None:
    """A node that stops cleanly says so: what it held it gave back itself."""
    r.delete(constants.NODE_ALIVE_KEY.format(node=node), constants.NODE_MISSING_KEY.format(node=node))


def dead(r: redis.Redis, nodes: set[str], beat_s: float) -> set[str]:
    """Those of `nodes` whose beat (every `beat_s`) has been missing for two beats, as seen by the callers of this
    function: the first call that finds a node's key missing marks when (SET NX), a later one two beats after the
    mark finds it dead. A node whose key is back loses its mark."""
    ordered = sorted(nodes)
    if not ordered:
        return set()
    now_ms = int(time.time() * 1000)
    pipe = r.pipeline(transaction=False)
    for node in ordered:
        pipe.exists(constants.NODE_ALIVE_KEY.format(node=node))
    alive: list[Any] = pipe.execute()
    pipe = r.pipeline(transaction=False)
    missing = [node for node, up in zip(ordered, alive, strict=True) if not up]
    for node in ordered:
        key = constants.NODE_MISSING_KEY.format(node=node)
        if node in missing:
            pipe.set(key, now_ms, nx=True, px=MISSING_MARK_MS)
            pipe.get(key)
        else:
            pipe.delete(key)
    replies: list[Any] = pipe.execute()
    since: dict[str, int] = {}
    at = 0
    for node in ordered:
        if node in missing:
            since[node] = int(replies[at + 1] or now_ms)
            at += 2
        else:
            at += 1
    return {node for node, first_ms in since.items() if now_ms - first_ms >= 2 * beat_s * 1000}


def node_of(token: str | None) -> str | None:
    """The node id in a lock token (`node|random`), or None for a token of a process that does not beat."""
    if not token or "|" not in token:
        return None
    return token.rsplit("|", 1)[0]


def token() -> str:
    """A fresh lock token naming this process's node when it beats (so that its locks can be taken when it dies)."""
    random = uuid.uuid4().hex
    node = current()
    return f"{node}|{random}" if node else random
