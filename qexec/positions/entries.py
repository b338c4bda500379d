"""The entry-ordering registry: entries on a symbol between their checks and their protection, in arrival order."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from qexec import constants, logs
from qexec.context import Context
from qexec.models import Ticket
from qexec.positions.store import LONG, SHORT, direction_of

ENTRY_WAIT = "ENTRY_WAIT"


ENTRY_POLL_S = 0.005  # how often an entry waiting for an earlier one's answer asks again


EARLIER_READ = 50  # earlier entries read per direction


# The entries registered on a symbol at or before one of them (KEYS: the LONG and SHORT entries; ARGV: its intent id,
# its own key's index (1, 2), how many to read): its time, then per direction the number of entries and the nearest
# ones at or before it, nearest first.
_READ_EARLIER = """
local mine = redis.call('ZSCORE', KEYS[tonumber(ARGV[2])], ARGV[1])
if not mine then mine = '+inf' end
local out = {mine}
for i = 1, 2 do
  out[#out + 1] = redis.call('ZCARD', KEYS[i])
  out[#out + 1] = redis.call('ZREVRANGEBYSCORE', KEYS[i], mine, '-inf', 'WITHSCORES', 'LIMIT', 0, ARGV[3])
end
return out
"""


# Register an entry (KEYS: as above, then its place lock and its order record; ARGV: as above, then the window and
# the lock's token) at the Redis server's clock, dropping entries older than the window, then read as above. An entry
# deciding now (holding its lock, nothing submitted yet) takes a fresh place; otherwise it keeps the one it had.
_REGISTER_ENTRY = (
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[4])
local own = KEYS[tonumber(ARGV[2])]
for i = 1, 2 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window) end
if redis.call('GET', KEYS[3]) == ARGV[5] and not redis.call('HGET', KEYS[4], 'phase') then
  redis.call('ZADD', own, now, ARGV[1])
else
  redis.call('ZADD', own, 'NX', now, ARGV[1])
end
redis.call('EXPIRE', own, math.ceil(window))
"""
    + _READ_EARLIER
)


def _entering_s(ctx: Context) -> int:
    """How long an entry counts as on its way at most (its chain may have died without saying it is done)."""
    return int(ctx.settings.fill_timeout_s + ctx.settings.unknown_lookup_s + 120)


def mark_entering(ctx: Context, ticket: Ticket, pipe: redis.client.Pipeline) -> None:
    """Say (in `pipe`) that the ticket's entry is about to go out: the monitor does not adopt its position."""
    pipe.set(ctx.key(constants.ADOPT_HOLD_KEY, symbol=ticket.intent.symbol), "1", ex=_entering_s(ctx))


@dataclass(frozen=True)
class OnTheWay:
    """Other intents' entries on a symbol, registered between their checks and their protection."""

    directions: frozenset[str] = frozenset()  # the directions in which there is at least one
    earlier: tuple[tuple[str, str], ...] = ()  # (direction, intent id) of those registered before this entry


def _entry_keys(ctx: Context, ticket: Ticket) -> tuple[list[str], int]:
    """The symbol's LONG and SHORT entry keys, and the index (1, 2) of the ticket's own among them."""
    symbol = ticket.intent.symbol
    keys = [ctx.key(constants.ENTRY_ORDER_KEY, symbol=symbol, direction=d) for d in (LONG, SHORT)]
    return keys, 1 if direction_of(ticket.intent.side) == LONG else 2


def queue_entry_registration(ctx: Context, ticket: Ticket, pipe: redis.client.Pipeline, token: str = "") -> None:
    """Queue in `pipe` the registration of the ticket's entry on its symbol, which also reads the others
    (`on_the_way_from` reads its reply). An entry stays registered until `done_entering`, or the window's end.

    Registration and read are one atomic step at the Redis server's clock: of two entries racing on a symbol, the
    second always sees the first, whichever worker runs them. `token`: the intent's place lock, when this run holds
    it (queued before this in `pipe`): a run about to decide takes a fresh place, so that an entry that had to retry
    before submitting waits for those that went ahead of it meanwhile.
    """
    keys, own = _entry_keys(ctx, ticket)
    keys += [
        constants.PLACE_LOCK_KEY.format(intent_id=ticket.intent_id),
        constants.ORDER_KEY.format(intent_id=ticket.intent_id),
    ]
    pipe.eval(_REGISTER_ENTRY, 4, *keys, ticket.intent_id, own, EARLIER_READ, _entering_s(ctx), token or "-")


def register_entry(ctx: Context, ticket: Ticket, token: str) -> OnTheWay:
    """`queue_entry_registration` on its own round trip (a run deciding again, e.g. after "not placed")."""
    pipe = ctx.redis.pipeline(transaction=False)
    queue_entry_registration(ctx, ticket, pipe, token)
    return on_the_way_from(pipe.execute()[0], ticket)


def on_the_way_from(reply: list[Any], ticket: Ticket) -> OnTheWay:
    """The other entries on the symbol, from the reply of `queue_entry_registration` (or `_READ_EARLIER`)."""
    mine, own = (float(reply[0]), ticket.intent_id), direction_of(ticket.intent.side)
    directions: set[str] = set()
    earlier: list[tuple[str, str]] = []
    for index, direction in enumerate((LONG, SHORT)):
        count, listed = int(reply[1 + 2 * index]), reply[2 + 2 * index]
        if count - (direction == own) > 0:
            directions.add(direction)
        for member, score in zip(listed[::2], listed[1::2], strict=True):
            if member != ticket.intent_id and (float(score), str(member)) < mine:
                earlier.append((direction, str(member)))
    return OnTheWay(frozenset(directions), tuple(earlier))


def _earlier_now(ctx: Context, ticket: Ticket) -> OnTheWay:
    """The entries registered before the ticket's, read again (an entry that retried has a fresh place)."""
    keys, own = _entry_keys(ctx, ticket)
    return on_the_way_from(ctx.redis.eval(_READ_EARLIER, 2, *keys, ticket.intent_id, own, EARLIER_READ), ticket)


def wait_for_earlier(ctx: Context, ticket: Ticket, on_the_way: OnTheWay) -> bool:
    """Wait, up to `QEXEC_ENTRY_WAIT_S`, until no entry registered on the symbol before this one, in a direction its
    policy looks at, is placing its order (its place lock, held from its checks until the venue's answer is recorded,
    is gone): what it opened is then at the venue. True when it waited (what was read before is stale).

    The other side always decides; the intent's own side unless the policy is `add` (a position there changes
    nothing then), so scale-in bursts do not wait for each other.
    """
    if ticket.intent.reduce_only:
        return False
    wanted = direction_of(ticket.intent.side)
    looked_at = {LONG, SHORT} - ({wanted} if ctx.settings.same_side_policy == "add" else set())
    earlier = [iid for direction, iid in on_the_way.earlier if direction in looked_at]
    ids: dict[str, Any] = {"intent_id": ticket.intent_id, "symbol": ticket.intent.symbol}
    started = time.monotonic()
    waited = False
    while earlier and ctx.redis.exists(*(constants.PLACE_LOCK_KEY.format(intent_id=iid) for iid in earlier)):
        waited_ms = int((time.monotonic() - started) * 1000)
        if waited_ms >= ctx.settings.entry_wait_s * 1000:
            # Rare (a venue call that hangs): go on with the venue's positions as they are now.
            waiting_for = ",".join(earlier[:5])
            logs.proof(
                ENTRY_WAIT, level=logging.WARNING, outcome="gave_up", waited_ms=waited_ms, earlier=waiting_for, **ids
            )
            return True
        waited = True
        time.sleep(ENTRY_POLL_S)
        earlier = [iid for direction, iid in _earlier_now(ctx, ticket).earlier if direction in looked_at]
    if waited:
        logs.proof(ENTRY_WAIT, outcome="answered", waited_ms=int((time.monotonic() - started) * 1000), **ids)
    return waited


def entering(ctx: Context, symbol: str) -> bool:
    """True while an entry on `symbol` is between its checks and its protection."""
    return bool(ctx.redis.exists(ctx.key(constants.ADOPT_HOLD_KEY, symbol=symbol)))


def done_entering(ctx: Context, ticket: Ticket) -> None:
    """The ticket's entry is protected (or ended): the monitor may judge the symbol's position again."""
    symbol = ticket.intent.symbol
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.delete(ctx.key(constants.ADOPT_HOLD_KEY, symbol=symbol))
    pipe.zrem(
        ctx.key(constants.ENTRY_ORDER_KEY, symbol=symbol, direction=direction_of(ticket.intent.side)), ticket.intent_id
    )
    pipe.execute()
