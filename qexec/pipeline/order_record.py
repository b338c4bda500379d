"""The intent's order record in Redis (`qexec:order:<id>`) and its place lock: what a re-run reads to adopt a submit."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from qexec import constants, locks
from qexec.config import Settings
from qexec.context import Context
from qexec.models import (
    Ticket,
)


@dataclass
class Placement:
    """An order the venue acknowledged to this run, which still holds the intent's place lock."""

    lock: PlaceLock
    first: bool  # this run is the first to learn of the order: it counts it (a re-run adopting it does not)

    def record(self, pipe: redis.client.Pipeline, ticket: Ticket, ctx: Context, *, in_flight: bool) -> None:
        """Queue the record of the order (phase `placed`) and the lock's release in `pipe`.

        `in_flight`: the result is still to come; the intent is listed (with its ticket) so that beat's reconcile
        can finish it should its chain die.
        """
        assert ticket.order is not None and ticket.placed_at is not None
        key = order_key(ticket)
        state = {"phase": "placed", "order_id": ticket.order.orderId, "placed_at": ticket.placed_at.timestamp()}
        if in_flight:
            pipe.zadd(constants.INFLIGHT_KEY, {ticket.intent_id: ticket.placed_at.timestamp()})
            expect_confirmation(pipe, ticket.intent_id, ctx.settings, 0.0)
            state["ticket_json"] = ticket.model_dump_json()
        pipe.hset(key, mapping={k: str(v) for k, v in state.items()})
        pipe.expire(key, ctx.settings.intent_state_ttl_s)
        self.lock.release(pipe)


@dataclass
class PlaceLock:
    """The intent's place lock (our token in Redis): released once, with the placement's last writes or at the end."""

    key: str
    token: str
    held: bool = True

    def release(self, pipe: redis.client.Pipeline) -> None:
        """Queue the release in `pipe`."""
        locks.release(pipe, self.key, self.token)
        self.held = False


def expect_confirmation(
    client: redis.Redis | redis.client.Pipeline, intent_id: str, settings: Settings, countdown_s: float
) -> None:
    """Say when the intent's next confirm_fill must have started: `countdown_s` from now, plus the overdue margin
    (queued on a pipeline, or sent now)."""
    due = time.time() + countdown_s + settings.confirm_overdue_s
    client.zadd(constants.CONFIRM_DUE_KEY, {intent_id: due})


def order_key(ticket: Ticket) -> str:
    return constants.ORDER_KEY.format(intent_id=ticket.intent_id)


def save_state(ticket: Ticket, ctx: Context, **fields: Any) -> None:
    """Record the intent's order state."""
    key = order_key(ticket)
    pipe = ctx.redis.pipeline()
    pipe.hset(key, mapping={k: str(v) for k, v in fields.items()})
    pipe.expire(key, ctx.settings.intent_state_ttl_s)
    pipe.execute()
