"""Risk limits checked before every entry order: the first one an intent breaks is its rejection reason."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import redis

from qexec import constants
from qexec.config import Settings
from qexec.models import Intent, PositionRisk, Refusal, RejectKind, stream_position

if TYPE_CHECKING:
    from qexec.venue.base import Venue

HALTED = "halted"

_positions: dict[str, tuple[float, list[PositionRisk]]] = {}
_positions_lock = threading.Lock()


class _Unread:
    """The kill switch has not been read yet: `breach` reads it."""


UNREAD = _Unread()
Halt = dict[str, Any] | None | _Unread


def breach(
    intent: Intent,
    settings: Settings,
    r: redis.Redis,
    venue: Venue,
    now: datetime,
    *,
    halt: Halt = UNREAD,
    entry_id: str | None = None,
) -> Refusal | None:
    """Why this intent may not be placed now (the first limit it breaks), or None; may raise `VenueError`.

    `halt` is the kill switch's record when the caller read it already (`halt_record`); `entry_id` is the intent's
    stream entry id, whose time is when the intent was written.
    """
    if intent.account_name != settings.account:  # the worker had no settings of that account: it is not configured
        return Refusal(
            RejectKind.OTHER,
            f"unknown account {intent.account_name!r}: the accounts are {', '.join(settings.account_names)}",
        )
    if isinstance(halt, _Unread):
        halt = halted(r, settings.account)
    if halt is not None and not (intent.reduce_only and settings.halt_allows_reduce_only):
        return Refusal(RejectKind.HALTED, HALTED + (f": {halt['reason']}" if halt.get("reason") else ""))
    reason = _intent_breach(intent, settings, now, written_at(entry_id))
    if reason is None and not intent.reduce_only:
        reason = _exposure_breach(intent, settings, venue)
    return reason


def halted(r: redis.Redis, account: str | None = None) -> dict[str, Any] | None:
    """The kill switch's record while `qexec halt` is in force for every account (or for `account`), else None."""
    if account is None:
        return halt_record(r.get(constants.HALT_KEY))
    return halt_record(*r.mget(constants.halt_key(None), constants.halt_key(account)))


def halted_accounts(r: redis.Redis, accounts: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The accounts halted on their own (`qexec halt --account`), each with its record."""
    raws = r.mget([constants.halt_key(name) for name in accounts])
    return {name: record for name, raw in zip(accounts, raws, strict=True) if (record := halt_record(raw))}


def halt_record(*raws: Any) -> dict[str, Any] | None:
    """The kill switch's record from the values of its keys, the first set (None when none is set)."""
    for raw in raws:
        if raw is None:
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        return record if isinstance(record, dict) else {"reason": str(raw)}
    return None


def written_at(entry_id: str | None) -> datetime | None:
    """When a stream entry was written, from its id (`<ms>-<seq>`); None for an id of another kind."""
    position = stream_position(entry_id)
    return datetime.fromtimestamp(position[0] / 1000, tz=UTC) if position else None


def _intent_breach(intent: Intent, s: Settings, now: datetime, written: datetime | None) -> Refusal | None:
    if intent.timestamp is not None:
        ahead_s = (intent.timestamp - now).total_seconds()
        if ahead_s > 60:
            return Refusal(RejectKind.STALE, f"timestamp is {ahead_s:.0f}s in the future")
    # An intent is as old as its timestamp says, or as its stream entry when that is older (or it has no timestamp):
    # after a bridge outage, a queued intent must not trade at that moment's prices.
    born = min((t for t in (intent.timestamp, written) if t is not None), default=None)
    if born is not None:
        age_s = (now - born).total_seconds()
        if age_s > s.intent_max_age_s:
            return Refusal(RejectKind.STALE, f"stale: intent is {age_s:.0f}s old (limit {s.intent_max_age_s:.0f}s)")
    denied, allowed = symbols(s.symbol_deny), symbols(s.symbol_allow)
    if intent.symbol in denied:
        return Refusal(RejectKind.RISK, f"symbol {intent.symbol} is on the deny list (QEXEC_SYMBOL_DENY)")
    if allowed and intent.symbol not in allowed:
        return Refusal(RejectKind.RISK, f"symbol {intent.symbol} is not on the allow list (QEXEC_SYMBOL_ALLOW)")
    if intent.leverage is not None and intent.leverage > s.max_leverage:
        return Refusal(RejectKind.RISK, f"leverage {intent.leverage} is above the limit {s.max_leverage}")
    if intent.position_size_usd > s.max_notional_usd:
        return Refusal(
            RejectKind.RISK,
            f"notional {intent.position_size_usd:g} USDT is above the per-order limit {s.max_notional_usd:g} USDT",
        )
    return None


def _exposure_breach(intent: Intent, s: Settings, venue: Venue) -> Refusal | None:
    if s.max_total_notional_usd is None and s.max_open_positions is None:
        return None  # no venue call when neither limit is set
    open_positions = [p for p in positions(venue, s.positions_cache_s, s.account) if p.positionAmt != 0]
    if s.max_total_notional_usd is not None:
        held = sum(_notional(p) for p in open_positions)
        total = held + Decimal(str(intent.position_size_usd))
        if total > Decimal(str(s.max_total_notional_usd)):
            return Refusal(
                RejectKind.RISK,
                f"total notional {total:.2f} USDT (open positions {held:.2f} + this order "
                f"{intent.position_size_usd:g}) is above the limit {s.max_total_notional_usd:g} USDT",
            )
    if s.max_open_positions is not None:
        held_symbols = {p.symbol for p in open_positions}
        if intent.symbol not in held_symbols and len(held_symbols) >= s.max_open_positions:
            return Refusal(
                RejectKind.RISK,
                f"a new position in {intent.symbol} would be above the limit of {s.max_open_positions} open "
                f"positions ({len(held_symbols)} open)",
            )
    return None


def positions(venue: Venue, max_age_s: float, account: str) -> list[PositionRisk]:
    """The account's positions at the venue (positionRisk), shared by this process's threads for up to `max_age_s`
    (each account's own: another account's positions say nothing of this one's exposure)."""
    where = f"{account}@{venue.url}"
    with _positions_lock:
        cached = _positions.get(where)
    if cached is not None and time.monotonic() - cached[0] < max_age_s:
        return cached[1]
    fresh = venue.positions()
    with _positions_lock:
        _positions[where] = (time.monotonic(), fresh)
    return fresh


@lru_cache(maxsize=16)
def symbols(text: str) -> frozenset[str]:
    """A comma-separated symbol list (`QEXEC_SYMBOL_ALLOW`/`_DENY`) as a set of upper-case symbols."""
    return frozenset(part.strip().upper() for part in text.split(",") if part.strip())


def _notional(position: PositionRisk) -> Decimal:
    if position.notional is not None:
        return abs(position.notional)
    return abs(position.positionAmt * position.markPrice)
