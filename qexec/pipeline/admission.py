"""Admission: an intent read from the stream (or submitted by hand) starts its chain once, whatever the redelivery."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis

from qexec import constants, logs, redis_streams
from qexec.config import Settings
from qexec.models import (
    Intent,
    Ticket,
    client_order_id,
    utcnow,
)


def new_ticket(intent: Intent, *, entry_id: str | None, received_at: datetime | None = None) -> Ticket:
    """A fresh ticket for an intent that has just been read."""
    return Ticket(
        intent=intent,
        entry_id=entry_id,
        received_at=received_at or utcnow(),
        client_order_id=client_order_id(intent.id),
    )


# Proof-log names of admissions that take nothing in: a redelivery, and a delivery that is not this consumer's to end.
INTENT_REDELIVERED = "INTENT_REDELIVERED"


INTENT_NOT_OWNED = "INTENT_NOT_OWNED"


Settle = Callable[[redis.client.Pipeline], None]


def expect_placement(pipe: redis.client.Pipeline, ticket: Ticket, settings: Settings) -> None:
    """Queue the ticket's due time for its place_order to have started (place_order's first round trip removes it),
    and the ticket itself, for beat's takeover should the message be lost (qexec/pipeline/reconcile.py)."""
    pipe.zadd(constants.PLACE_DUE_KEY, {ticket.intent_id: time.time() + settings.place_overdue_s})
    pipe.hset(constants.PLACE_DUE_TICKETS_KEY, ticket.intent_id, ticket.model_dump_json())


def admit(
    intents: list[Intent],
    *,
    entry_id: str | None,
    owner: str,
    r: redis.Redis,
    settings: Settings,
    dispatch: Callable[[Ticket], None],
    received_at: datetime | None = None,
    lease: redis_streams.Lease | None = None,
    settle: Settle | None = None,
) -> bool:
    """Start the chains of a valid intent - one per account it names, `per_account`'s list - unless another entry
    holds an id or this entry's chain was started; True when any was dispatched. `settle` queues what ends the
    delivery (the bridge's XACK): with the started marks after the dispatches, alone when there is nothing to
    start, never when the delivery is not the caller's to end (`lease` lost the entry to another consumer, or
    another live bridge is starting its chain)."""
    pipe = r.pipeline(transaction=False)
    dispatched = False
    for one in intents:
        admitted = _admit_one(one, pipe, entry_id=entry_id, owner=owner, r=r, settings=settings, lease=lease)
        if admitted is None:  # not this delivery's to end: what was dispatched is still marked started
            if len(pipe):
                pipe.execute()
            return False
        if admitted:
            ticket = new_ticket(one, entry_id=entry_id, received_at=received_at)
            dispatch(ticket)
            redis_streams.mark_started(pipe, one.id, owner)
            expect_placement(pipe, ticket, settings)
            dispatched = True
    if settle is not None:
        settle(pipe)
    if len(pipe):
        pipe.execute()
    return dispatched


def per_account(intent: Intent, settings: Settings) -> list[Intent]:
    """The intents `intent` trades, one per account, each sized by its account's multiplier (`Intent.per_account`);
    IntentError when one of them is not a valid intent."""

    def multiplier(account: str) -> float:
        known = account in settings.account_names
        return settings.for_account(account).size_multiplier if known else 1.0  # an unknown one is rejected

    return intent.per_account(multiplier)


def _admit_one(
    intent: Intent,
    pipe: redis.client.Pipeline,
    *,
    entry_id: str | None,
    owner: str,
    r: redis.Redis,
    settings: Settings,
    lease: redis_streams.Lease | None,
) -> bool | None:
    """Claim the dispatch of one account's intent: True to start its chain, False when there is nothing to start,
    None when the delivery is not the caller's (another consumer or bridge has it)."""
    ids: dict[str, Any] = {"intent_id": intent.id, "entry_id": entry_id, "symbol": intent.symbol, "owner": owner}
    if intent.account is not None:
        ids["account"] = intent.account
    claim, holder = redis_streams.claim_dispatch(r, settings, intent.id, owner, lease=lease, entry_id=entry_id)
    if claim in (redis_streams.Claim.LOST, redis_streams.Claim.BUSY):
        reason = (
            "another consumer owns the entry now" if claim is redis_streams.Claim.LOST else f"{holder} is starting it"
        )
        logs.proof(INTENT_NOT_OWNED, reason=reason, consumer=lease.consumer if lease else None, **ids)
        return None
    if claim is redis_streams.Claim.NEW:
        logs.proof(logs.INTENT_RECEIVED, side=intent.side.value, size_usd=intent.position_size_usd, **ids)
    elif claim is redis_streams.Claim.DUPLICATE:
        logs.proof(logs.INTENT_RECEIVED, side=intent.side.value, size_usd=intent.position_size_usd, **ids)
        logs.proof(
            logs.INTENT_DUPLICATE,
            level=logging.WARNING,
            reason=f"this intent id was already dispatched by another entry ({holder})",
            **ids,
        )
    else:
        started = claim is redis_streams.Claim.STARTED
        logs.proof(
            INTENT_REDELIVERED,
            level=logging.INFO if started else logging.WARNING,
            action="none: its chain was started" if started else "start its chain again: it was never started",
            **ids,
        )
    return claim in (redis_streams.Claim.NEW, redis_streams.Claim.AGAIN)
