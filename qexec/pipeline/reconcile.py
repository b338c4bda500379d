"""Beat's reconcile: finish intents whose order is placed but whose chain died (confirm or cancel, then publish)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from qexec import constants, logs
from qexec.context import Context, Pending
from qexec.models import Ticket
from qexec.pipeline import confirm, publish

log = logging.getLogger(__name__)


RECONCILE_GRACE_S = 30.0


def reconcile_orders(ctx: Context, limit: int = 100) -> list[str]:
    """Finish intents whose order is placed but whose result is overdue: confirm or cancel, then publish."""
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
            done = confirm.confirm(ticket, ctx)
        except Pending as pending:
            log.warning("RECONCILE_PENDING intent_id=%s reason=%s", intent_id, pending.reason)
            continue
        publish.publish(done, ctx)
        logs.proof("RECONCILED", level=logging.WARNING, intent_id=intent_id, order_id=state.get("order_id"))
        finished.append(intent_id)
    return finished
