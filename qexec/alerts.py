"""Alerts for the operator: what happened, in one line with its ids, raised from wherever it happens.

`raise_alert` never blocks or slows the step that calls it: it filters by `QEXEC_ALERT_MIN_LEVEL` and hands the alert
to this process's outbox thread, which de-duplicates it per event in Redis (`SET NX` with a TTL) and enqueues the
`qexec.send_alert` task on its own queue. Delivery (apprise, retries, the rate limit per destination) is the task's:
qexec/ops/notify.py. Nothing here raises into the caller; a failure is logged and counted (`qexec_alerts_total`).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import time
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

import redis
from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]
from pydantic import BaseModel, ConfigDict, Field

from qexec import constants, sentinel
from qexec.config import Settings
from qexec.models import ExecutionResult, ExitEvent, ExitReason, ProtectionEvent, ResultStatus, utcnow

log = logging.getLogger(__name__)

ALERT_QUEUE = "qexec.alerts"  # the worker consumes it beside the chain's queues (qexec/worker/celeryconf.py)
SEND_TASK = "qexec.send_alert"
OUTBOX_SIZE = 10_000  # alerts waiting for the outbox thread; beyond it they are dropped (logged)
FLUSH_AT_EXIT_S = 3.0  # how long a process that ends waits for its outbox (`qexec halt` raises one, then exits)
# The publish's own retries, inside the outbox thread (the broker restarting): never in a step.
PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


class Severity(StrEnum):
    """How grave an alert is; `QEXEC_ALERT_MIN_LEVEL` keeps those at or above it."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info up to 3 for critical."""
        return list(Severity).index(self)


class Kind(StrEnum):
    """What an alert is about."""

    ENTRY_FILLED = "entry_filled"
    ENTRY_PARTIALLY_FILLED = "entry_partially_filled"
    ENTRY_REJECTED = "entry_rejected"
    EXIT = "exit"
    PROTECTION_LATE = "protection_late"
    PROTECTION_REPAIRED = "protection_repaired"
    PROTECTION_FAILED = "protection_failed"
    POSITION_UNPROTECTED = "position_unprotected"
    EMERGENCY_CLOSE = "emergency_close"
    HALT = "halt"
    RESUME = "resume"
    VENUE_HEARTBEAT_FAILED = "venue_heartbeat_failed"
    STREAM_DOWN = "stream_down"
    RATE_LIMIT_PAUSE = "rate_limit_pause"
    DEAD_LETTER = "dead_letter"


class Alert(BaseModel):
    """One alert: its kind, severity, a one-line text and the ids it concerns (never a secret).

    `event` names the event for de-duplication: the same event raised twice is delivered once, and a lasting
    condition raised again is delivered again only after `repeat_s` (otherwise once per QEXEC_INTENT_STATE_TTL_S).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind
    severity: Severity
    text: str
    event: str
    ids: dict[str, str] = Field(default_factory=dict)
    repeat_s: float | None = None
    at: datetime = Field(default_factory=utcnow)

    @property
    def title(self) -> str:
        """The notification's title: `qexec ERROR position_unprotected`."""
        return f"qexec {self.severity.value.upper()} {self.kind.value}"

    @property
    def body(self) -> str:
        """The notification's body: the text, then the ids as `key=value`."""
        ids = " ".join(f"{key}={value}" for key, value in self.ids.items())
        return f"{self.text}\n{ids}" if ids else self.text


def _ids(**ids: Any) -> dict[str, str]:
    return {key: str(value) for key, value in ids.items() if value is not None and value != ""}


def _named(account: str | None) -> str | None:
    """An account for an alert's ids: named unless it is `default` (alerts stay as they were with one account)."""
    return None if account in (None, constants.DEFAULT_ACCOUNT) else account


# -- the events (each a one-line text with its ids) -----------------------------------------------------------


_RESULT_KINDS = {
    ResultStatus.FILLED: (Kind.ENTRY_FILLED, Severity.INFO),
    ResultStatus.PARTIALLY_FILLED: (Kind.ENTRY_PARTIALLY_FILLED, Severity.WARNING),
    ResultStatus.REJECTED: (Kind.ENTRY_REJECTED, Severity.WARNING),
}


def for_result(result: ExecutionResult) -> Alert | None:
    """The alert of an intent's result: filled, partially filled or rejected (None for the other statuses)."""
    found = _RESULT_KINDS.get(result.status)
    if found is None:
        return None
    kind, severity = found
    what = f"{result.action.value} {result.symbol}"
    if result.status.is_fill:
        text = f"{what} {result.status.value}: {result.quantity:g} at {result.entry_price:g}"
    else:
        text = f"{what} rejected: {result.reason or '?'}"
    if result.status is ResultStatus.PARTIALLY_FILLED and result.reason:
        text += f" ({result.reason})"
    ids = _ids(intent_id=result.intent_id, symbol=result.symbol, order_id=result.order_id)
    ids.update(_ids(client_order_id=result.client_order_id, mode=result.mode, account=_named(result.account)))
    return Alert(kind=kind, severity=severity, text=text, event=f"result:{result.intent_id}", ids=ids)


_EXIT_SEVERITY = {
    ExitReason.TAKE_PROFIT: Severity.INFO,
    ExitReason.SIGNAL: Severity.INFO,
    ExitReason.TRAILING_STOP: Severity.INFO,
    ExitReason.STOP_LOSS: Severity.WARNING,
    ExitReason.HALT: Severity.WARNING,
    ExitReason.PROTECTION_FAILED: Severity.ERROR,
    ExitReason.MANUAL_OR_LIQUIDATION: Severity.ERROR,
}


def for_exit(event: ExitEvent) -> Alert:
    """The alert of a closed position: its reason and PnL."""
    price = f" at {event.exit_price:g}" if event.exit_price is not None else ""
    text = (
        f"{event.side} {event.symbol} closed ({event.reason.value}){price}: "
        f"PnL {event.realized_pnl:+.4f} USDT, fees {event.commission:.4f}"
    )
    ids = _ids(position_id=event.position_id, symbol=event.symbol, intent_ids=",".join(event.intent_ids))
    ids.update(
        _ids(order_ids=",".join(str(o) for o in event.order_ids), mode=event.mode, account=_named(event.account))
    )
    severity = _EXIT_SEVERITY.get(event.reason, Severity.WARNING)
    return Alert(kind=Kind.EXIT, severity=severity, text=text, event=f"exit:{event.position_id}", ids=ids)


def _protection_ids(event: ProtectionEvent) -> dict[str, str]:
    ids = _ids(intent_id=event.intent_id, symbol=event.symbol, position_side=event.position_side)
    ids.update(_ids(sl_order_id=event.sl_order_id, tp_order_id=event.tp_order_id, entry_order_id=event.entry_order_id))
    ids.update(_ids(account=_named(event.account)))
    return ids


def for_protection(event: ProtectionEvent) -> Alert | None:
    """The alert of a protection event: repaired or failed (None for the others)."""
    stamp = event.published_at.timestamp()
    if event.status == "repaired":
        text = f"{event.symbol} {event.position_side}: protection repaired ({event.reason or 'SL/TP in place again'})"
        kind, severity = Kind.PROTECTION_REPAIRED, Severity.WARNING
    elif event.status == "failed":
        text = f"{event.symbol} {event.position_side}: protection failed, action {event.action}: {event.reason}"
        kind, severity = Kind.PROTECTION_FAILED, Severity.CRITICAL
    else:
        return None
    event_key = f"protection:{event.status}:{event.intent_id}:{stamp:.0f}"
    return Alert(kind=kind, severity=severity, text=text, event=event_key, ids=_protection_ids(event))


def protection_late(event: ProtectionEvent, filled_at: datetime | None, late_s: float) -> Alert | None:
    """The alert of SL/TP placed more than `late_s` after the fill (None when on time, or not a placement)."""
    if event.status != "placed" or filled_at is None:
        return None
    after_s = (event.published_at - filled_at).total_seconds()
    if after_s < late_s:
        return None
    text = f"{event.symbol} {event.position_side}: SL/TP placed {after_s:.1f} s after the fill"
    return Alert(
        kind=Kind.PROTECTION_LATE,
        severity=Severity.WARNING,
        text=text,
        event=f"protection:late:{event.intent_id}",
        ids=_protection_ids(event),
    )


def position_unprotected(key: str, position_id: str, since_ms: int, reason: str, repeat_s: float) -> Alert:
    """POSITION_UNPROTECTED for a tracked position (`SYMBOL:DIRECTION`) without SL/TP since `since_ms`: raised at once
    and, while it lasts, again every `repeat_s`."""
    unprotected_s = max(0.0, time.time() - since_ms / 1000)
    symbol, _, direction = key.partition(":")
    return Alert(
        kind=Kind.POSITION_UNPROTECTED,
        severity=Severity.CRITICAL,
        text=f"POSITION_UNPROTECTED {symbol} {direction} for {unprotected_s:.0f} s: {reason}",
        event=f"unprotected:{key}:{since_ms}",
        ids=_ids(symbol=symbol, direction=direction, position_id=position_id),
        repeat_s=repeat_s,
    )


def emergency_close(symbol: str, direction: str, position_id: str, outcome: str, reason: str) -> Alert:
    """The emergency market close of a position that could not be protected (`outcome`: closed, or close_failed)."""
    return Alert(
        kind=Kind.EMERGENCY_CLOSE,
        severity=Severity.CRITICAL,
        text=f"emergency close of {symbol} {direction}: {outcome} ({reason})",
        event=f"emergency:{position_id}:{outcome.partition(':')[0]}",
        ids=_ids(symbol=symbol, direction=direction, position_id=position_id),
    )


def halted(record: dict[str, Any]) -> Alert:
    """The kill switch was set (`record`: the halt record: reason, flatten, by, where, at)."""
    flatten = " and flatten" if record.get("flatten") else ""
    account = record.get("account")
    whose = f"account {account}'s new intents are" if account else "new intents are"
    text = f"HALT{flatten}: {whose} rejected ({record.get('reason') or 'no reason given'})"
    ids = _ids(by=record.get("by"), where=record.get("where"), at=record.get("at"), account=account)
    event = f"halt:{account or 'all'}:{record.get('at')}"
    return Alert(kind=Kind.HALT, severity=Severity.WARNING, text=text, event=event, ids=ids)


def resumed(by: str | None, where: str | None, account: str | None = None) -> Alert:
    """The kill switch was lifted (every account's, or `account`'s own)."""
    at = utcnow()
    ids = _ids(by=by, where=where, at=at.isoformat(), account=account)
    text = (
        f"RESUME: account {account}'s new intents are placed again"
        if account
        else "RESUME: new intents are placed again"
    )
    event = f"resume:{account or 'all'}:{at.isoformat()}"
    return Alert(kind=Kind.RESUME, severity=Severity.INFO, text=text, event=event, ids=ids, at=at)


def heartbeat_failed(venue: str, error: str, repeat_s: float) -> Alert:
    """The venue's self-test (beat's heartbeat) failed; repeated every `repeat_s` while it keeps failing."""
    return Alert(
        kind=Kind.VENUE_HEARTBEAT_FAILED,
        severity=Severity.ERROR,
        text=f"venue heartbeat failed on {venue}: {error}",
        event=f"heartbeat:{venue}",
        ids=_ids(venue=venue),
        repeat_s=repeat_s,
    )


def stream_down(stream: str, url: str, down_s: float, reason: str, repeat_s: float) -> Alert:
    """The venue's `stream` (user-data) has been down for `down_s`; repeated every `repeat_s` while it stays down."""
    return Alert(
        kind=Kind.STREAM_DOWN,
        severity=Severity.ERROR,
        text=f"the venue's {stream} stream has been down for {down_s:.0f} s ({reason}); qexec asks over REST",
        event=f"stream-down:{stream}:{url}",
        ids=_ids(stream=stream, url=url, pid=os.getpid()),
        repeat_s=repeat_s,
    )


def rate_limit_pause(seconds: float, reason: str, repeat_s: float) -> Alert:
    """Every venue call paused for `seconds` after a 429/418."""
    severity = Severity.ERROR if "418" in reason else Severity.WARNING
    return Alert(
        kind=Kind.RATE_LIMIT_PAUSE,
        severity=severity,
        text=f"venue calls paused for {seconds:.0f} s: {reason}",
        event="rate-limit-pause",
        ids=_ids(seconds=f"{seconds:.1f}"),
        repeat_s=max(repeat_s, seconds),
    )


def dead_letter(dlq_id: str, error: str, source: str, entry_id: str | None) -> Alert:
    """An intent written to the dead-letter stream."""
    return Alert(
        kind=Kind.DEAD_LETTER,
        severity=Severity.WARNING,
        text=f"intent dead-lettered: {error[:300]}",
        event=f"dead-letter:{dlq_id}",
        ids=_ids(dlq_id=dlq_id, entry_id=entry_id, source=source),
    )


def raise_lasting_unprotected(r: redis.Redis, settings: Settings) -> int:
    """POSITION_UNPROTECTED again for every position still on the unprotected list (beat's exit monitor calls this
    each pass; the event's TTL lets one through every QEXEC_ALERT_REPEAT_S); how many were raised."""
    if not enabled(settings):
        return 0
    raised = 0
    try:
        for account in settings.account_names:
            spells: Any = r.zrange(constants.account_key(constants.UNPROTECTED_KEY, account), 0, -1, withscores=True)
            for member, since in spells:
                key = member.decode() if isinstance(member, bytes) else str(member)
                symbol, _, direction = key.partition(":")
                position = constants.POSITION_KEY.format(symbol=symbol, direction=direction)
                text: Any = r.get(constants.account_key(position, account))
                position_id = json.loads(text).get("position_id", "") if text else ""
                why = "still without its stop-loss or take-profit"
                named = constants.account_named(key, account)
                alert = position_unprotected(named, position_id, int(since), why, settings.alert_repeat_s)
                raised += raise_alert(r, settings, alert)
    except redis.RedisError as exc:
        log.warning("ALERT_FAILED kind=position_unprotected error=%r: the unprotected list is unreadable", exc)
    return raised


# -- raising ------------------------------------------------------------------------------------------------


def enabled(settings: Settings) -> bool:
    """True when at least one destination is configured."""
    return bool(settings.alert_url_list)


def raise_alert(r: redis.Redis | None, settings: Settings, alert: Alert | None) -> bool:
    """Hand `alert` to this process's outbox, which de-duplicates and enqueues it; True when handed over.

    Never blocks, never raises: no destination, a level under QEXEC_ALERT_MIN_LEVEL or a full outbox return False.
    `r` is the caller's Redis client (None: one of the outbox's own, for QEXEC_REDIS_URL).
    """
    try:
        if alert is None or not enabled(settings):
            return False
        if alert.severity.rank < Severity(settings.alert_min_level).rank:
            log.debug("alert %s below QEXEC_ALERT_MIN_LEVEL=%s", alert.kind.value, settings.alert_min_level)
            _outbox().put(r, settings, alert, filtered=True)
            return False
        return _outbox().put(r, settings, alert)
    except Exception:
        log.exception("ALERT_FAILED kind=%s: not handed to the outbox", getattr(alert, "kind", "?"))
        return False


def count(r: redis.Redis, outcome: str) -> None:
    """Count an alert's outcome in `qexec_alerts_total{outcome}` (errors logged, never raised)."""
    try:
        r.hincrby(ALERTS_METRIC_KEY, outcome, 1)
    except redis.RedisError as exc:
        log.warning("ALERT_COUNT_FAILED outcome=%s error=%r", outcome, exc)


# The hash metrics.ALERTS reads (metrics imports the limiter, which raises alerts: so the key is spelt here too).
ALERTS_METRIC_KEY = constants.METRICS_KEY.format(family="alerts")


def flush(timeout_s: float = FLUSH_AT_EXIT_S) -> bool:
    """Wait until this process's outbox has handed every alert on (True), or `timeout_s` passes."""
    return _outbox().flush(timeout_s)


class _Outbox:
    """One thread per process that takes alerts off a queue, de-duplicates them in Redis and enqueues their task."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[redis.Redis | None, Settings, Alert, bool]] = queue.Queue(OUTBOX_SIZE)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def put(self, r: redis.Redis | None, settings: Settings, alert: Alert, *, filtered: bool = False) -> bool:
        self._ensure_thread()
        try:
            self._queue.put_nowait((r, settings, alert, filtered))
        except queue.Full:
            log.error("ALERT_DROPPED kind=%s event=%s: the outbox is full", alert.kind.value, alert.event)
            return False
        return not filtered

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            if self._pid != os.getpid():  # a forked child: the parent's thread and queue are not ours
                self._queue = queue.Queue(OUTBOX_SIZE)
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="qexec-alerts", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            r, settings, alert, filtered = self._queue.get()
            try:
                _hand_over(r or _redis(settings.redis_url), settings, alert, filtered=filtered)
            except Exception:
                log.exception("ALERT_FAILED kind=%s event=%s", alert.kind.value, alert.event)
            finally:
                self._queue.task_done()


def _hand_over(r: redis.Redis, settings: Settings, alert: Alert, *, filtered: bool) -> None:
    """De-duplicate the alert by its event, then enqueue its delivery; counted either way."""
    if filtered:
        count(r, "filtered")
        return
    ttl_s = max(1, int(alert.repeat_s or settings.intent_state_ttl_s))
    try:
        first = r.set(constants.ALERT_EVENT_KEY.format(event=alert.event), alert.kind.value, nx=True, ex=ttl_s)
    except redis.RedisError as exc:
        first = True  # better twice than never: Redis away is also when an operator most needs to hear
        log.warning("ALERT_DEDUPE_UNAVAILABLE kind=%s error=%r: enqueued without de-duplication", alert.kind, exc)
    if not first:
        count(r, "duplicate")
        return
    try:
        _sender(settings.effective_broker_url).send_task(
            SEND_TASK,
            kwargs={"alert": alert.model_dump(mode="json")},
            queue=ALERT_QUEUE,
            retry=True,
            retry_policy=PUBLISH_RETRY,
        )
    except Exception as exc:
        log.error("ALERT_ENQUEUE_FAILED kind=%s event=%s error=%r", alert.kind.value, alert.event, exc)
        count(r, "enqueue_failed")
        return
    log.info("ALERT_RAISED kind=%s severity=%s event=%s", alert.kind.value, alert.severity.value, alert.event)
    count(r, "enqueued")


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    return sentinel.from_url(url, socket_timeout=5, socket_connect_timeout=2)


@lru_cache(maxsize=4)
def _sender(broker_url: str) -> Celery:
    """A Celery app that only sends `qexec.send_alert` (any process can raise alerts: the bridge, `qexec halt`...;
    the worker's app imports the modules that raise them)."""
    sender = Celery("qexec-alerts", set_as_current=False)
    if sentinel.is_sentinel(broker_url):  # kombu's own Sentinel transport: this app only publishes
        sender.conf.update(broker_transport_options=sentinel.kombu_options(broker_url))
        broker_url = sentinel.kombu_url(broker_url)
    sender.conf.update(
        broker_url=broker_url,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        task_serializer="json",
        accept_content=["json"],
        # The worker's queues, so the alert queue is bound the way the worker declares it.
        task_default_queue="qexec",
        task_queues=(Queue(ALERT_QUEUE),),  # type: ignore[no-untyped-call]
    )
    return sender


_OUTBOX = _Outbox()  # its thread starts with the first alert


def _outbox() -> _Outbox:
    return _OUTBOX


atexit.register(_OUTBOX.flush, FLUSH_AT_EXIT_S)
