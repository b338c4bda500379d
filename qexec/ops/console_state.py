"""What the console page shows: `qexec status`'s Redis report, the latest results and exits, the kill switch, the
rate budget, and the venue's positions with their SL/TP state (refreshed by one thread for every viewer)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import redis

from qexec import constants
from qexec.config import Settings
from qexec.errors import VenueError
from qexec.models import PositionRisk, utcnow
from qexec.ops.status import Report, position_row, redis_report
from qexec.positions import store
from qexec.positions.store import Guard, Tracked
from qexec.venue import view
from qexec.venue.limiter import Limiter
from qexec.venue.rules import plain

if TYPE_CHECKING:
    from qexec.venue.base import Venue

log = logging.getLogger(__name__)

LAST_RESULTS = 25
LAST_EXITS = 10
LAST_DEAD_LETTERS = 10
INFLIGHT_SHOWN = 20
PLACED, MISSING, REPAIRING = "placed", "missing", "repairing"


def _payload(fields: dict[str, str]) -> dict[str, Any]:
    try:
        found = json.loads(fields.get("payload") or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _ms_between(start: str | None, end: str | None) -> int | None:
    """Milliseconds from one ISO time to another, or None when either is missing or unreadable."""
    if not start or not end:
        return None
    try:
        return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000)
    except ValueError:
        return None


def result_row(entry_id: str, fields: dict[str, str]) -> Report:
    """One result stream entry as a row: its ids, status, price, and intent-to-result latency."""
    p = _payload(fields)
    keys = ("intent_id", "symbol", "action", "status", "entry_price", "quantity", "order_id", "reason", "published_at")
    row = {"id": entry_id} | {key: p.get(key) for key in keys}
    row["intent_id"] = row["intent_id"] or fields.get("intent_id")
    row["status"] = row["status"] or fields.get("status")
    row["latency_ms"] = _ms_between(p.get("received_at"), p.get("published_at"))
    return row


def exit_row(entry_id: str, fields: dict[str, str]) -> Report:
    """One exit stream entry as a row: reason, quantity, price, PnL, and how long after the close it was published."""
    p = _payload(fields)
    keys = ("position_id", "symbol", "side", "reason", "quantity", "entry_price", "exit_price", "realized_pnl")
    row = {"id": entry_id} | {key: p.get(key) for key in keys}
    published = datetime.fromtimestamp(int(entry_id.split("-", maxsplit=1)[0]) / 1000, utcnow().tzinfo).isoformat()
    row["closed_at"] = p.get("closed_at")
    row["latency_ms"] = _ms_between(p.get("closed_at"), published)
    return row


def headroom(limiter: Limiter) -> Report:
    """Each window of the shared venue budget: spent, limit, and the share left; and any deployment-wide pause."""
    used = limiter.used()
    windows = {
        window.name: {
            "used": used.get(window.name, 0),
            "limit": limit,
            "headroom_pct": round(100 * max(0, limit - used.get(window.name, 0)) / limit, 1),
        }
        for window, limit in limiter.limits.items()
    }
    return {"windows": windows, "paused_s": round(limiter.paused_s(), 1)}


def redis_part(settings: Settings, r: redis.Redis, now: datetime) -> Report:
    """Everything the page reads from Redis: `qexec status`'s report, results, exits, kill switch, unprotected."""
    report = redis_report(settings, r, now, LAST_DEAD_LETTERS)
    pipe = r.pipeline(transaction=False)
    pipe.xrevrange(settings.result_stream, count=LAST_RESULTS)
    pipe.xrevrange(settings.exit_stream, count=LAST_EXITS)
    pipe.zrange(constants.INFLIGHT_KEY, 0, INFLIGHT_SHOWN - 1, withscores=True)
    pipe.zrange(constants.UNPROTECTED_KEY, 0, -1, withscores=True)
    results, exits, inflight, unprotected = pipe.execute()
    now_ms = now.timestamp() * 1000
    spells = [{"key": key, "age_s": round((now_ms - float(since)) / 1000, 1)} for key, since in unprotected]
    report["inflight"]["intents"] = [
        {"intent_id": iid, "age_s": round(now.timestamp() - float(at), 1)} for iid, at in inflight
    ]
    report.update(
        now=now.isoformat(),
        halt=report["kill_switch"]["all"],
        halted_accounts=report["kill_switch"]["accounts"],
        results=[result_row(i, f) for i, f in results],
        exits=[exit_row(i, f) for i, f in exits],
        unprotected={"positions": spells, "oldest_s": max((s["age_s"] for s in spells), default=None)},
    )
    return report


def guard_state(guard: Guard | None, live: set[str], repairing: bool) -> str:
    """`placed` when the venue holds the guard's order, `repairing` while the monitor re-places it, else `missing`."""
    if guard is not None and guard.client_algo_id in live:
        return PLACED
    return REPAIRING if repairing else MISSING


def marked(risk: PositionRisk, mark: Decimal) -> Report:
    """The mark and the unrealised PnL at it (the user-data stream's position events carry neither, live)."""
    return {"mark_price": plain(mark), "unrealized_pnl": plain((mark - risk.entryPrice) * risk.positionAmt)}


def position_rows(
    venue: Venue, positions: dict[tuple[str, str], PositionRisk], tracked: list[Tracked], unprotected: set[str]
) -> list[Report]:
    """One row per open position at the venue and per tracked one: prices, PnL, leverage and SL/TP state."""
    by_key = {(t.symbol, t.direction): t for t in tracked}
    rows = []
    for symbol, direction in sorted(set(positions) | set(by_key)):
        risk, mine = positions.get((symbol, direction)), by_key.get((symbol, direction))
        guards = [g.client_algo_id for g in (mine.sl, mine.tp) if g is not None] if mine else []
        live = set(view.live_algo_orders(venue, symbol, guards)) if guards else set()
        repairing = f"{symbol}:{direction}" in unprotected
        row: Report = position_row(risk) if risk else {"symbol": symbol, "amount": None, "entry_price": None}
        if risk is not None:
            row.update(marked(risk, view.mark_price(venue, symbol)))
        row.update(
            direction=direction,
            at_venue=risk is not None,
            tracked=mine is not None,
            adopted=bool(mine and mine.adopted),
            leverage=view.current_leverage(venue, symbol) if risk else None,
            stop_loss=str(mine.sl.trigger) if mine and mine.sl else None,
            take_profit=str(mine.tp.trigger) if mine and mine.tp else None,
            sl_state=guard_state(mine.sl if mine else None, live, repairing),
            tp_state=guard_state(mine.tp if mine else None, live, repairing),
        )
        rows.append(row)
    return rows


def venue_part(venue: Venue, r: redis.Redis, account: str = constants.DEFAULT_ACCOUNT) -> Report:
    """The venue's side of an account: who it is, its clock, its stream, and the open positions with their
    protection."""
    live = venue.feed
    part: Report = {
        "mode": venue.mode,
        "host": venue.host,
        "url": venue.url,
        "stream": live.status() if live is not None else None,
        "ok": False,
        "error": None,
    }
    try:
        offset_ms = venue.sync_clock()
        tracked = [t for s, d in sorted(store.tracked_keys(r, account)) if (t := store.load(r, account, s, d))]
        unprotected: Any = r.zrange(store.unprotected_key(account), 0, -1)
        rows = position_rows(venue, view.open_positions(venue), tracked, set(unprotected))
    except (VenueError, redis.RedisError) as exc:
        part["error"] = f"{type(exc).__name__}: {exc}"
        return part
    part.update(ok=True, clock_offset_ms=offset_ms, positions=rows, as_of=utcnow().isoformat())
    return part


class VenueWatch:
    """One thread that reads the venue's side every `every_s` (the same figures for every viewer, one budget)."""

    def __init__(self, read: Callable[[], Report], every_s: float) -> None:
        self._read = read
        self.every_s = every_s
        self._latest: Report = {"ok": False, "error": "not read yet", "positions": []}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="console-venue", daemon=True)

    def start(self) -> VenueWatch:
        """Start reading."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading (the thread ends after its current read)."""
        self._stop.set()
        self._wake.set()

    def refresh(self) -> None:
        """Read again now (after an action changed the venue)."""
        self._wake.set()

    @property
    def latest(self) -> Report:
        """The last reading."""
        with self._lock:
            return self._latest

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                found = self._read()
            except Exception as exc:  # never let the page's venue view die: say what went wrong instead
                log.exception("console: reading the venue failed")
                found = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "positions": []}
            with self._lock:
                self._latest = found
            self._wake.wait(self.every_s)
            self._wake.clear()


def snapshot(settings: Settings, r: redis.Redis, watch: VenueWatch, limiter: Limiter) -> Report:
    """The whole page's data, as JSON-ready values."""
    report: Report = {"mode": settings.venue.name, "venue": watch.latest}
    try:
        report["redis"] = {"ok": True, "error": None}
        report.update(redis_part(settings, r, utcnow()))
        report["limits"] = headroom(limiter)
    except redis.RedisError as exc:
        report["redis"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    plain: Report = json.loads(json.dumps(report, default=_plain))
    return plain


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal | datetime) else repr(value)
