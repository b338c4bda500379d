"""Positions qexec tracks, in Redis: one record per (symbol, direction), its stop-loss and take-profit, and its lock."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field

from qexec import constants, locks
from qexec.config import get_settings
from qexec.models import Side

log = logging.getLogger(__name__)


POSITION_TRACKED = "POSITION_TRACKED"


POSITION_ADOPTED = "POSITION_ADOPTED"


LONG, SHORT = "LONG", "SHORT"


LOCK_MS = 30_000


TAKE_OVER_LOOK_S = 0.5  # how often a step waiting for a position's lock asks whether its holder died
LOCK_POLL_S = 0.01  # how often a step waiting for a position's lock asks again


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


def position_key(account: str, symbol: str, direction: str) -> str:
    """The Redis key of an account's tracked position."""
    return constants.account_key(constants.POSITION_KEY.format(symbol=symbol, direction=direction), account)


def _positions(account: str) -> str:
    return constants.account_key(constants.POSITIONS_KEY, account)


def unprotected_key(account: str) -> str:
    """The account's sorted set of positions known to lack protection (constants.UNPROTECTED_KEY)."""
    return constants.account_key(constants.UNPROTECTED_KEY, account)


def load(r: redis.Redis, account: str, symbol: str, direction: str) -> Tracked | None:
    """The account's tracked position, or None."""
    text: Any = r.get(position_key(account, symbol, direction))
    return Tracked.model_validate_json(text) if text else None


def save(r: redis.Redis, account: str, tracked: Tracked) -> None:
    """Record an account's tracked position (and list it)."""
    pipe = r.pipeline()
    pipe.set(position_key(account, tracked.symbol, tracked.direction), tracked.model_dump_json())
    pipe.sadd(_positions(account), tracked.key)
    pipe.execute()


def forget(r: redis.Redis, account: str, tracked: Tracked) -> None:
    """Stop tracking an account's position."""
    pipe = r.pipeline()
    pipe.delete(position_key(account, tracked.symbol, tracked.direction))
    pipe.srem(_positions(account), tracked.key)
    pipe.zrem(unprotected_key(account), tracked.key)
    pipe.execute()


def unprotected_since_ms(r: redis.Redis, account: str, tracked: Tracked) -> int | None:
    """Since when (epoch ms) the position is known to lack protection the venue could not take yet, or None."""
    score: Any = r.zscore(unprotected_key(account), tracked.key)
    return int(score) if score is not None else None


def tracked_keys(r: redis.Redis, account: str) -> set[tuple[str, str]]:
    """(symbol, direction) of every position the account has tracked."""
    members: Any = r.smembers(_positions(account))
    return {(m.split(":")[0], m.split(":")[1]) for m in members}


@contextlib.contextmanager
def locked(r: redis.Redis, account: str, symbol: str, direction: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the account's position's lock, waiting up to `wait_s` for it (raises `PositionBusy` when another step
    keeps it)."""
    key = constants.account_key(constants.POSITION_LOCK_KEY.format(symbol=symbol, direction=direction), account)
    with locks.running_token() as token:
        give_up_at = time.monotonic() + wait_s
        look_at = time.monotonic()
        while not r.set(key, token, nx=True, px=LOCK_MS):
            if time.monotonic() >= look_at:  # a dead holder's lock would keep the position LOCK_MS: take it
                if locks.take_over(r, key, token, LOCK_MS, get_settings().node_beat_s):
                    break
                look_at = time.monotonic() + TAKE_OVER_LOOK_S
            if time.monotonic() >= give_up_at:
                raise PositionBusy(f"{symbol} {direction} is busy")
            time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            locks.release(r, key, token)


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
