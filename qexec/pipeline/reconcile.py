"""Beat's reconcile: finish intents whose order is placed but whose chain died (confirm or cancel, then publish)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from qexec import constants, logs
from qexec.context import Context, Pending
from qexec.errors import UnknownAccount
from qexec.models import Ticket
from qexec.pipeline import confirm, order_record, publish

log = logging.getLogger(__name__)


RECONCILE_GRACE_S = 30.0


def overdue_confirmations(ctx: Context, limit: int = 100) -> list[Ticket]:
    """The tickets of orders whose next confirm_fill should have started `QEXEC_CONFIRM_OVERDUE_S` ago and has not
    (its message was lost with a worker, e.g. popped from the queue by one killed before it recorded it): each is
    expected again two margins from now, so that it is sent once per margin at most."""
    r = ctx.redis
    now = time.time()
    overdue: Any = r.zrangebyscore(constants.CONFIRM_DUE_KEY, 0, now, start=0, num=limit)
    resumed: list[Ticket] = []
    for intent_id in overdue:
        pipe = r.pipeline(transaction=False)
        pipe.exists(constants.PUBLISHED_KEY.format(intent_id=intent_id))
        pipe.hget(constants.ORDER_KEY.format(intent_id=intent_id), "ticket_json")
        published, ticket_json = pipe.execute()
        if published or not ticket_json:
            r.zrem(constants.CONFIRM_DUE_KEY, intent_id)  # done, or nothing to confirm: reconcile's business
            continue
        order_record.expect_confirmation(r, intent_id, ctx.settings, ctx.settings.confirm_overdue_s)
        logs.proof("CONFIRM_RESUMED", level=logging.WARNING, intent_id=intent_id, reason="its confirmation is overdue")
        resumed.append(Ticket.model_validate_json(ticket_json))
    return resumed


def overdue_placements(ctx: Context, limit: int = 100) -> list[Ticket]:
    """The tickets of intents dispatched `QEXEC_PLACE_OVERDUE_S` ago whose place_order never started (its message
    was lost with a worker): each is expected again a margin from now. One that started after all (an order record,
    a result, its place lock held) is dropped from the list instead."""
    r = ctx.redis
    overdue: Any = r.zrangebyscore(constants.PLACE_DUE_KEY, 0, time.time(), start=0, num=limit)
    resumed: list[Ticket] = []
    for intent_id in overdue:
        pipe = r.pipeline(transaction=False)
        pipe.exists(
            constants.PUBLISHED_KEY.format(intent_id=intent_id),
            constants.ORDER_KEY.format(intent_id=intent_id),
            constants.PLACE_LOCK_KEY.format(intent_id=intent_id),
        )
        pipe.hget(constants.PLACE_DUE_TICKETS_KEY, intent_id)
        started, ticket_json = pipe.execute()
        if started or not ticket_json:
            drop = r.pipeline(transaction=False)
            drop.zrem(constants.PLACE_DUE_KEY, intent_id)
            drop.hdel(constants.PLACE_DUE_TICKETS_KEY, intent_id)
            drop.execute()
            continue
        r.zadd(constants.PLACE_DUE_KEY, {intent_id: time.time() + ctx.settings.place_overdue_s})
        logs.proof("PLACE_RESUMED", level=logging.WARNING, intent_id=intent_id, reason="its place_order never started")
        resumed.append(Ticket.model_validate_json(ticket_json))
    return resumed


def reconcile_orders(
    ctx: Context, limit: int = 100, *, context_of: Callable[[str], Context] | None = None
) -> list[str]:
    """Finish intents whose order is placed but whose result is overdue: confirm or cancel, then publish; each with
    its account's context (`context_of(account)`; `ctx` without it)."""
    s = ctx.settings
    cutoff = ctx.now() - timedelta(seconds=s.fill_timeout_s + RECONCILE_GRACE_S)
    overdue: Any = ctx.redis.zrangebyscore(constants.INFLIGHT_KEY, 0, cutoff.timestamp(), start=0, num=limit)
    finished: list[str] = []
    for intent_id in overdue:
        if ctx.redis.exists(constants.PUBLISHED_KEY.format(intent_id=intent_id)):
            ctx.redis.zrem(constants.INFLIGHT_KEY, intent_id)
            continue
        state: Any = ctx.redis.hgetall(constants.ORDER_KEY.format(intent_id=intent_id))
        if not state.get("ticket_json"):
            log.error("RECONCILE_SKIPPED intent_id=%s reason=%s", intent_id, "no ticket recorded")
            ctx.redis.zrem(constants.INFLIGHT_KEY, intent_id)
            continue
        ticket = Ticket.model_validate_json(state["ticket_json"])
        try:
            own = context_of(ticket.intent.account_name) if context_of is not None else ctx
            done = confirm.confirm(ticket, own)
        except Pending as pending:
            log.warning("RECONCILE_PENDING intent_id=%s reason=%s", intent_id, pending.reason)
            continue
        except UnknownAccount as exc:  # a worker that has the account finishes it
            log.error("RECONCILE_SKIPPED intent_id=%s reason=%s", intent_id, exc)
            continue
        publish.publish(done, own)
        logs.proof("RECONCILED", level=logging.WARNING, intent_id=intent_id, order_id=state.get("order_id"))
        finished.append(intent_id)
    return finished
