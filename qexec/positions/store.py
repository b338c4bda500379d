"""Positions qexec tracks (in Redis), and what an intent does to a position already open on its symbol."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import redis
from pydantic import BaseModel, ConfigDict, Field

from qexec import constants, ids, logs
from qexec.errors import OrderNotFound
from qexec.models import OrderState, OrderStatus, OrderType, PositionRisk, ResultStatus, Side, Ticket
from qexec.venue.rules import plain

if TYPE_CHECKING:
    from qexec.pipeline.execution import Context

log = logging.getLogger(__name__)

POSITION_POLICY = "POSITION_POLICY"
POSITION_TRACKED = "POSITION_TRACKED"
POSITION_ADOPTED = "POSITION_ADOPTED"
ENTRY_WAIT = "ENTRY_WAIT"

LONG, SHORT = "LONG", "SHORT"
_RELEASE_LOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
LOCK_MS = 30_000
LOCK_POLL_S = 0.01  # how often a step waiting for a position's lock asks again
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


class PositionBusy(Exception):
    """Raised when another step holds the position's lock."""


def direction_of(side: Side) -> str:
    """The position an order on `side` opens: BUY → LONG, SELL → SHORT."""
    return LONG if side is Side.BUY else SHORT


def opening_side(direction: str) -> Side:
    """The order side that opens (or adds to) a position in `direction`."""
    return Side.BUY if direction == LONG else Side.SELL


def closing_side(direction: str) -> Side:
    """The order side that reduces a position in `direction`."""
    return Side.SELL if direction == LONG else Side.BUY


class Guard(BaseModel):
    """One protective algo order qexec wants at the venue: its id, trigger and generation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_algo_id: str
    trigger: Decimal
    generation: int
    algo_id: int | None = None


class Tracked(BaseModel):
    """A position qexec tracks: where it came from, the levels it wants, and its protective orders."""

    model_config = ConfigDict(extra="forbid")

    position_id: str
    symbol: str
    direction: str  # LONG or SHORT
    position_side: str  # what orders send: BOTH in one-way mode, LONG/SHORT in hedge mode
    owner: str  # the intent (or adoption) whose id the protective orders' clientAlgoIds derive from
    intent_ids: list[str] = Field(default_factory=list)
    entry_price: Decimal
    quantity: Decimal
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    trailing_stop_pct: float | None = None
    best_price: Decimal | None = None  # the most favourable mark seen (trailing stops follow it)
    trailed: bool = False
    sl: Guard | None = None
    tp: Guard | None = None
    opened_ms: int
    adopted: bool = False
    as_of_ms: int | None = None  # the venue time of the position change `quantity` reflects (its updateTime)
    # The arrival (`Ticket.arrival`) of the intent whose levels the position holds: an older intent protecting late
    # (a redelivery, a busy position) never overwrites a newer one's.
    levels_arrival: tuple[int, int] | None = None

    @property
    def key(self) -> str:
        """`SYMBOL:DIRECTION`, the member of the tracked set."""
        return f"{self.symbol}:{self.direction}"


def position_key(symbol: str, direction: str) -> str:
    """The Redis key of a tracked position."""
    return constants.POSITION_KEY.format(symbol=symbol, direction=direction)


def load(r: redis.Redis, symbol: str, direction: str) -> Tracked | None:
    """The tracked position, or None."""
    text: Any = r.get(position_key(symbol, direction))
    return Tracked.model_validate_json(text) if text else None


def save(r: redis.Redis, tracked: Tracked) -> None:
    """Record a tracked position (and list it)."""
    pipe = r.pipeline()
    pipe.set(position_key(tracked.symbol, tracked.direction), tracked.model_dump_json())
    pipe.sadd(constants.POSITIONS_KEY, tracked.key)
    pipe.execute()


def forget(r: redis.Redis, tracked: Tracked) -> None:
    """Stop tracking a position."""
    pipe = r.pipeline()
    pipe.delete(position_key(tracked.symbol, tracked.direction))
    pipe.srem(constants.POSITIONS_KEY, tracked.key)
    pipe.zrem(constants.UNPROTECTED_KEY, tracked.key)
    pipe.execute()


def unprotected_since_ms(r: redis.Redis, tracked: Tracked) -> int | None:
    """Since when (epoch ms) the position is known to lack protection the venue could not take yet, or None."""
    score: Any = r.zscore(constants.UNPROTECTED_KEY, tracked.key)
    return int(score) if score is not None else None


def tracked_keys(r: redis.Redis) -> set[tuple[str, str]]:
    """(symbol, direction) of every tracked position."""
    members: Any = r.smembers(constants.POSITIONS_KEY)
    return {(m.split(":")[0], m.split(":")[1]) for m in members}


@contextlib.contextmanager
def locked(r: redis.Redis, symbol: str, direction: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the position's lock, waiting up to `wait_s` for it (raises `PositionBusy` when another step keeps it)."""
    key = constants.POSITION_LOCK_KEY.format(symbol=symbol, direction=direction)
    token = uuid.uuid4().hex
    give_up_at = time.monotonic() + wait_s
    while not r.set(key, token, nx=True, px=LOCK_MS):
        if time.monotonic() >= give_up_at:
            raise PositionBusy(f"{symbol} {direction} is busy")
        time.sleep(LOCK_POLL_S)
    try:
        yield
    finally:
        r.eval(_RELEASE_LOCK, 1, key, token)


def open_positions(
    ctx: Context, symbol: str | None = None, *, after_ms: int | None = None, rest: bool = False
) -> dict[tuple[str, str], PositionRisk]:
    """The venue's non-zero positions by (symbol, direction).

    They come from the venue's stream when it can vouch for them (qexec/venue/feed.py) - with `after_ms`, only once it
    has reported `symbol` as of that venue time, waiting `stream_wait_s` at most - and over REST otherwise, or
    always with `rest`.
    """
    rows: list[PositionRisk] | None = None
    live = None if rest else ctx.venue.feed
    if live is not None:
        if after_ms is not None and symbol is not None:
            rows = live.wait_positions(symbol, after_ms, ctx.settings.stream_wait_s)
        else:
            rows = live.positions(symbol)
    if rows is None:
        rows = [PositionRisk.model_validate(raw) for raw in ctx.venue.positions(symbol)]
    return {(p.symbol, p.direction): p for p in rows if p.positionAmt != 0}


def position_side_for(dual: bool, direction: str) -> str | None:
    """`positionSide` to send for a position in `direction` (None in one-way mode)."""
    return direction if dual else None


# -- the policy for an intent meeting an open position ----------------------------------------------


def entry_plan(
    ticket: Ticket, ctx: Context, *, quantity: Decimal, dual: bool, on_the_way: OnTheWay
) -> tuple[Ticket, Decimal]:
    """Apply the same-side / opposite-side policy: the ticket (with a verdict when no order is to go) and quantity.

    `on_the_way`: other intents' entries on the symbol, from this entry's registration, after `wait_for_earlier`.
    Raises `Pending` while a reversing close is still working at the venue.
    """
    intent, s = ticket.intent, ctx.settings
    if intent.reduce_only:
        return ticket, quantity
    wanted = direction_of(intent.side)
    other = LONG if wanted == SHORT else SHORT
    positions = open_positions(ctx, intent.symbol)
    # Another entry on the symbol may have filled a moment ago, before the stream could say so: then only the venue
    # itself can tell whether there is a position.
    opposite_may_be = (intent.symbol, other) in positions or other in on_the_way.directions
    same_may_be = (intent.symbol, wanted) in positions or wanted in on_the_way.directions
    resting: dict[str, list[str]] = {}
    if opposite_may_be or (same_may_be and s.same_side_policy != "add"):
        # The position decides whether an order goes out, or how big it is: confirm it with the venue itself
        # (with `add`, a position on the intent's own side changes neither). An entry order resting at the venue (a
        # LIMIT not filled yet) is exposure too: it is counted like a position.
        positions = open_positions(ctx, intent.symbol, rest=True)
        resting = resting_entries(ctx, intent.symbol, dual=dual, own=ticket.client_order_id)
    same = positions.get((intent.symbol, wanted))
    opposite = positions.get((intent.symbol, other))
    ids: dict[str, Any] = {"intent_id": ticket.intent_id, "symbol": intent.symbol, "side": intent.side.value}
    if s.opposite_side_policy == "hedge" and dual and (opposite is not None or resting.get(other)):
        # Hedge mode holds a long and a short at once: the other side does not stand in this intent's way.
        logs.proof(POSITION_POLICY, decision="hedge", existing=other, intent_id=ticket.intent_id, symbol=intent.symbol)
        opposite = None
        resting.pop(other, None)
    if same is None and opposite is None and resting.get(other):
        reason = (
            f"{', '.join(resting[other])} resting at the venue would open a {other} position, and this intent is on "
            "the other side: refused while it rests (cancel it first)"
        )
        logs.proof(POSITION_POLICY, decision="reject", existing=f"resting {other}", **ids)
        return ticket.decide(ResultStatus.REJECTED, reason), quantity
    if same is None and resting.get(wanted) and s.same_side_policy != "add":
        held = f"{', '.join(resting[wanted])} resting at the venue will open a {wanted} position"
        logs.proof(POSITION_POLICY, decision=s.same_side_policy, existing=f"resting {wanted}", **ids)
        if s.same_side_policy == "skip":
            return ticket.decide(ResultStatus.SKIPPED, f"{held} (QEXEC_SAME_SIDE_POLICY=skip)"), quantity
        reason = f"{held}; its own intent protects it when it fills (QEXEC_SAME_SIDE_POLICY=update_protection)"
        return ticket.decide(ResultStatus.REJECTED, reason), quantity
    if same is not None:
        same_policy = s.same_side_policy
        held = f"a {wanted} position of {abs(same.positionAmt)} {intent.symbol} is already open"
        _record_policy(ctx, ticket, same_policy)
        logs.proof(POSITION_POLICY, decision=same_policy, existing=wanted, existing_qty=abs(same.positionAmt), **ids)
        if same_policy == "skip":
            return ticket.decide(ResultStatus.SKIPPED, f"{held} (QEXEC_SAME_SIDE_POLICY=skip)"), quantity
        if same_policy == "update_protection":
            problem = _update_problem(ticket, ctx, wanted, same)
            if problem:
                return ticket.decide(ResultStatus.REJECTED, f"{held}; protection not updated: {problem}"), quantity
            return ticket.decide(ResultStatus.PROTECTION_UPDATED, f"{held}: stop-loss and take-profit re-placed"), (
                quantity
            )
        return ticket, quantity  # add: scale in; protection is re-placed for the whole position
    if opposite is not None:
        policy = s.opposite_side_policy
        other = opposite.direction
        held = f"a {other} position of {abs(opposite.positionAmt)} {intent.symbol} is open"
        _record_policy(ctx, ticket, policy)
        logs.proof(POSITION_POLICY, decision=policy, existing=other, existing_qty=abs(opposite.positionAmt), **ids)
        if policy == "reject":
            reason = f"{held} and this intent is on the other side (QEXEC_OPPOSITE_SIDE_POLICY=reject)"
            return ticket.decide(ResultStatus.REJECTED, reason), quantity
        if policy == "hedge":  # here only on a one-way account: it cannot hold both sides
            reason = (
                f"{held} and this intent is on the other side: QEXEC_OPPOSITE_SIDE_POLICY=hedge holds both only on a "
                "hedge-mode account, and this one is one-way"
            )
            return ticket.decide(ResultStatus.REJECTED, reason), quantity
        if policy == "close":
            # The entry order itself closes the position: reduce-only (one-way) / positionSide of the old side.
            closing = ticket.model_copy(update={"intent": intent.model_copy(update={"reduce_only": True})})
            return closing, abs(opposite.positionAmt)
        closed = _close_first(ticket, ctx, opposite, dual)
        note = (
            f"reverse: closed the {other} position of {plain(closed.executedQty)} {intent.symbol} first "
            f"(order {closed.orderId} {closed.clientOrderId}, {closed.status.value})"
        )
        return ticket.model_copy(update={"closed_first": note}), quantity
    return ticket, quantity


def resting_entries(ctx: Context, symbol: str, *, dual: bool, own: str) -> dict[str, list[str]]:
    """The symbol's open orders that would open (or add to) a position when they fill, by direction, described
    (`BUY LIMIT 0.5 (order 123)`); reduce-only and closing orders, and the intent's own order `own`, left out."""
    found: dict[str, list[str]] = {}
    for raw in ctx.venue.open_orders(symbol):
        if raw.get("clientOrderId") == own or str(raw.get("reduceOnly")).lower() == "true" or raw.get("closePosition"):
            continue
        side, position_side = Side(str(raw["side"])), str(raw.get("positionSide") or "BOTH")
        if dual and position_side in (LONG, SHORT):
            if closing_side(position_side) is side:
                continue  # a hedge-mode order on the closing side of its position side
            direction = position_side
        else:
            direction = direction_of(side)
        left = Decimal(str(raw.get("origQty") or 0)) - Decimal(str(raw.get("executedQty") or 0))
        found.setdefault(direction, []).append(f"{side.value} {raw.get('type')} {plain(left)} (order {raw['orderId']})")
    return found


def _record_policy(ctx: Context, ticket: Ticket, policy: str) -> None:
    key = constants.ORDER_KEY.format(intent_id=ticket.intent_id)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.hset(key, "policy", policy)
    pipe.expire(key, ctx.settings.intent_state_ttl_s)
    pipe.execute()


def recorded_policy(ctx: Context, intent_id: str) -> str | None:
    """The policy decision `entry_plan` recorded for an intent, if a position was open."""
    value: Any = ctx.redis.hget(constants.ORDER_KEY.format(intent_id=intent_id), "policy")
    return str(value) if value else None


def _entering_s(ctx: Context) -> int:
    """How long an entry counts as on its way at most (its chain may have died without saying it is done)."""
    return int(ctx.settings.fill_timeout_s + ctx.settings.unknown_lookup_s + 120)


def mark_entering(ctx: Context, ticket: Ticket, pipe: redis.client.Pipeline) -> None:
    """Say (in `pipe`) that the ticket's entry is about to go out: the monitor does not adopt its position."""
    pipe.set(constants.ENTERING_KEY.format(symbol=ticket.intent.symbol), "1", ex=_entering_s(ctx))


@dataclass(frozen=True)
class OnTheWay:
    """Other intents' entries on a symbol, registered between their checks and their protection."""

    directions: frozenset[str] = frozenset()  # the directions in which there is at least one
    earlier: tuple[tuple[str, str], ...] = ()  # (direction, intent id) of those registered before this entry


def _entry_keys(ticket: Ticket) -> tuple[list[str], int]:
    """The symbol's LONG and SHORT entry keys, and the index (1, 2) of the ticket's own among them."""
    symbol = ticket.intent.symbol
    keys = [constants.ENTRIES_KEY.format(symbol=symbol, direction=d) for d in (LONG, SHORT)]
    return keys, 1 if direction_of(ticket.intent.side) == LONG else 2


def queue_entry_registration(ctx: Context, ticket: Ticket, pipe: redis.client.Pipeline, token: str = "") -> None:
    """Queue in `pipe` the registration of the ticket's entry on its symbol, which also reads the others
    (`on_the_way_from` reads its reply). An entry stays registered until `done_entering`, or the window's end.

    Registration and read are one atomic step at the Redis server's clock: of two entries racing on a symbol, the
    second always sees the first, whichever worker runs them. `token`: the intent's place lock, when this run holds
    it (queued before this in `pipe`): a run about to decide takes a fresh place, so that an entry that had to retry
    before submitting waits for those that went ahead of it meanwhile.
    """
    keys, own = _entry_keys(ticket)
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
    keys, own = _entry_keys(ticket)
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
    return bool(ctx.redis.exists(constants.ENTERING_KEY.format(symbol=symbol)))


def done_entering(ctx: Context, ticket: Ticket) -> None:
    """The ticket's entry is protected (or ended): the monitor may judge the symbol's position again."""
    symbol = ticket.intent.symbol
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.delete(constants.ENTERING_KEY.format(symbol=symbol))
    pipe.zrem(constants.ENTRIES_KEY.format(symbol=symbol, direction=direction_of(ticket.intent.side)), ticket.intent_id)
    pipe.execute()


def _update_problem(ticket: Ticket, ctx: Context, direction: str, position: PositionRisk) -> str | None:
    """Why the intent's levels cannot protect the open position (None when they can)."""
    from qexec.positions import protection  # noqa: PLC0415 - protection builds on this module

    intent = ticket.intent
    if intent.stop_loss is None and intent.take_profit is None:
        return "the intent carries neither stop_loss nor take_profit"
    mark = ctx.venue.mark_price(intent.symbol)
    sl = Decimal(str(intent.stop_loss)) if intent.stop_loss is not None else None
    tp = Decimal(str(intent.take_profit)) if intent.take_profit is not None else None
    problems = protection.level_problems(direction, sl, tp, reference=mark, what="the mark")
    return "; ".join(problems) or None


def _close_first(ticket: Ticket, ctx: Context, opposite: PositionRisk, dual: bool) -> OrderState:
    """Reverse: close the opposite position with a closing market order (looked up first); the order, once ended."""
    from qexec.pipeline.execution import Pending  # noqa: PLC0415 - execution imports this module

    intent, venue = ticket.intent, ctx.venue
    cid = ids.reverse_close(ticket.intent_id)
    try:
        order = venue.get_order(intent.symbol, client_order_id=cid)
    except OrderNotFound:
        logs.proof(
            POSITION_POLICY,
            decision="reverse",
            step="close_opposite",
            client_order_id=cid,
            quantity=abs(opposite.positionAmt),
            intent_id=ticket.intent_id,
            symbol=intent.symbol,
        )
        order = venue.place_order(
            symbol=intent.symbol,
            side=closing_side(opposite.direction),
            order_type=OrderType.MARKET,
            quantity=abs(opposite.positionAmt),
            client_order_id=cid,
            reduce_only=not dual,
            position_side=opposite.direction if dual else None,
        )
    if order.status is not OrderStatus.FILLED and not order.status.terminal:
        raise Pending(0.5, f"closing the {opposite.direction} position before reversing: {order.status.value}")
    return order


def describe(tracked: Tracked) -> str:
    """A one-line JSON summary for logs."""
    return json.dumps(
        {
            "position_id": tracked.position_id,
            "qty": str(tracked.quantity),
            "sl": str(tracked.sl.trigger) if tracked.sl else None,
            "tp": str(tracked.tp.trigger) if tracked.tp else None,
        }
    )
