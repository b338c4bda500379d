"""Beat's housekeeping: reclaim stuck stream entries, finish orders no chain watches, check the venue."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from qexec import constants, logs
from qexec.errors import VenueError
from qexec.models import Ticket
from qexec.pipeline import execution
from qexec.pipeline.bridge import Bridge, Dispatch
from qexec.pipeline.execution import Context, Pending
from qexec.positions import monitor

log = logging.getLogger(__name__)

HEARTBEAT_KEY = constants.HEARTBEAT_KEY
RECONCILE_GRACE_S = 30.0


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
            done = execution.confirm(ticket, ctx)
        except Pending as pending:
            log.warning("RECONCILE_PENDING intent_id=%s reason=%s", intent_id, pending.reason)
            continue
        execution.publish(done, ctx)
        logs.proof("RECONCILED", level=logging.WARNING, intent_id=intent_id, order_id=state.get("order_id"))
        finished.append(intent_id)
    return finished


def watch_positions(ctx: Context) -> dict[str, list[str]]:
    """The exit monitor's pass (`monitor.watch`), logged when it did anything."""
    report = monitor.watch(ctx)
    acted = {kind: names for kind, names in report.items() if names and kind != "busy"}
    if acted:
        log.info("EXIT_MONITOR %s", " ".join(f"{kind}={','.join(names)}" for kind, names in acted.items()))
    return report


def venue_heartbeat(ctx: Context) -> dict[str, Any]:
    """Run the venue self-test and record it (and the dead-letter count) under the heartbeat key."""
    dead_letters = int(ctx.redis.xlen(ctx.settings.dlq_stream))
    previous: Any = ctx.redis.hgetall(HEARTBEAT_KEY)
    record: dict[str, Any] = {"at": ctx.now().isoformat(), "dead_letters": dead_letters}
    try:
        report = ctx.venue.check()
    except VenueError as exc:
        record.update(ok=0, error=str(exc))
        log.error("VENUE_HEARTBEAT_FAILED venue=%s error=%s", ctx.venue.label, exc)
    else:
        record.update(ok=1, error="", report=json.dumps(report))
        log.info("VENUE_HEARTBEAT_OK venue=%s offset_ms=%s", ctx.venue.label, report["clock_offset_ms"])
    grown = dead_letters - int(previous.get("dead_letters") or 0)
    if previous and grown > 0:
        log.warning("DEAD_LETTERS_GROWING stream=%s count=%d new=%d", ctx.settings.dlq_stream, dead_letters, grown)
    ctx.redis.hset(HEARTBEAT_KEY, mapping={k: str(v) for k, v in record.items()})
    return record
