"""The `qexec up --demo` run: seed-shaped intents in, a live table of their results out."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, cast

import redis
import requests

from qexec import sentinel
from qexec.config import Settings
from qexec.models import ResultStatus, Side, utcnow

log = logging.getLogger(__name__)

# (symbol, side, position_size_usd): the seed producer's kind of intents, one per line of the table.
DEMO_ORDERS: tuple[tuple[str, Side, float], ...] = (
    ("AVAXUSDT", Side.BUY, 100.0),
    ("BTCUSDT", Side.BUY, 200.0),
    ("ETHUSDT", Side.SELL, 150.0),
    ("NEARUSDT", Side.BUY, 60.0),
    ("LINKUSDT", Side.SELL, 80.0),
    ("AXSUSDT", Side.BUY, 50.0),
)
DEMO_LEVERAGE = 2.0
DEMO_CONFIDENCE = 0.72
STOP_LOSS_FRACTION = 0.025
TAKE_PROFIT_FRACTION = 0.03
READY_WAIT_S = 120.0
RESULT_WAIT_S = 60.0
POLL_S = 0.25
BLOCK_MS = 500
HEADER = f"{'intent':<18} {'symbol':<10} {'side':<4} {'status':<17} {'price':>12} {'quantity':>12} {'latency':>9}"

Say = Callable[[str], None]
Entries = list[tuple[str, dict[str, str]]]  # stream entries as a decode_responses client returns them


def demo_intent(
    intent_id: str, symbol: str, side: Side, *, size_usd: float, mark_price: float, now: datetime
) -> dict[str, Any]:
    """One intent in the seed producer's shape; stop-loss 2.5 % and take-profit 3 % from the mark."""
    direction = 1 if side is Side.BUY else -1
    return {
        "intent_id": intent_id,
        "symbol": symbol,
        "side": side.value,
        "position_size_usd": size_usd,
        "leverage": DEMO_LEVERAGE,
        "entry_price": mark_price,
        "stop_loss": _tidy(mark_price * (1 - direction * STOP_LOSS_FRACTION)),
        "take_profit": _tidy(mark_price * (1 + direction * TAKE_PROFIT_FRACTION)),
        "confidence": DEMO_CONFIDENCE,
        "timestamp": now.isoformat(),
    }


def result_row(result: Mapping[str, Any], injected_at: datetime | None) -> str:
    """One table line for a result: intent, symbol, side, status, price, quantity, latency (and why)."""
    latency = "-"
    published = result.get("published_at")
    if injected_at is not None and isinstance(published, str):
        try:
            latency_ms = (datetime.fromisoformat(published) - injected_at).total_seconds() * 1000
            latency = f"{latency_ms:.0f} ms"
        except (ValueError, TypeError):
            latency = "?"
    row = (
        f"{result.get('intent_id', '?')!s:<18} {result.get('symbol', '?')!s:<10} "
        f"{result.get('action', '?')!s:<4} {result.get('status', '?')!s:<17} "
        f"{_number(result.get('entry_price')):>12} {_number(result.get('quantity')):>12} {latency:>9}"
    )
    reason = result.get("reason")
    if reason and result.get("status") not in (ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED):
        row += f"  {reason}"
    return row


def parse_result(fields: Mapping[str, str]) -> dict[str, Any] | None:
    """The result in a result-stream entry (its JSON `payload`, else its flat fields); None if unreadable."""
    if "payload" not in fields:
        return dict(fields) if "intent_id" in fields else None
    try:
        payload = json.loads(fields["payload"])
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def mark_price(venue_url: str, symbol: str, timeout_s: float = 5.0) -> float:
    """The venue's current mark price of `symbol` (GET /fapi/v1/premiumIndex)."""
    response = requests.get(f"{venue_url}/fapi/v1/premiumIndex", params={"symbol": symbol}, timeout=timeout_s)
    response.raise_for_status()
    return float(response.json()["markPrice"])


def bridge_group_exists(client: redis.Redis, settings: Settings) -> bool:
    """True when the bridge's consumer group is on the intent stream (it reads from id 0: nothing is lost)."""
    try:
        groups = client.xinfo_groups(settings.intent_stream)
    except redis.ResponseError:  # no stream yet
        return False
    # Consumers are no readiness signal: Redis < 7.2 neither creates one on an empty blocking read
    # nor refreshes its idle time there.
    return any(group["name"] == settings.consumer_group for group in groups)


class WorkerProbe:
    """Asks the broker whether any Celery worker answers a ping."""

    def __init__(self, settings: Settings) -> None:
        from celery import Celery  # noqa: PLC0415 - only --demo pays Celery's import cost

        from qexec.worker.celeryconf import celery_config  # noqa: PLC0415 - it imports kombu, which only --demo needs

        self.app = Celery("qexec-demo", set_as_current=False)
        # One connection attempt per ping, so the readiness wait keeps its own deadline.
        self.app.conf.update(celery_config(settings), broker_connection_max_retries=1)

    def __call__(self) -> bool:
        """True when at least one worker answered."""
        return bool(self.app.control.ping(timeout=1.0))

    def close(self) -> None:
        """Release the broker connections."""
        self.app.close()


class Demo:
    """One demo run: the demo intents with fresh ids, then the results that answer them."""

    def __init__(self, client: redis.Redis, settings: Settings, say: Say, *, run_id: str | None = None) -> None:
        self.client = client
        self.settings = settings
        self.say = say
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.injected_at: dict[str, datetime] = {}
        self.results: dict[str, dict[str, Any]] = {}

    def inject(self, marks: Mapping[str, float]) -> str:
        """XADD one intent per demo order that has a mark; the result stream's last id before them."""
        last = cast(Entries, self.client.xrevrange(self.settings.result_stream, count=1))
        start_id = last[0][0] if last else "0-0"
        for number, (symbol, side, size_usd) in enumerate(DEMO_ORDERS, start=1):
            if symbol not in marks:
                continue
            intent_id = f"demo-{self.run_id}-{number}"
            now = utcnow()
            intent = demo_intent(intent_id, symbol, side, size_usd=size_usd, mark_price=marks[symbol], now=now)
            self.client.xadd(self.settings.intent_stream, {"payload": json.dumps(intent)})
            self.injected_at[intent_id] = now
        return start_id

    def missing(self) -> list[str]:
        """The injected intent ids that have no result yet."""
        return [intent_id for intent_id in self.injected_at if intent_id not in self.results]

    def follow(self, start_id: str, stop: threading.Event, timeout_s: float = RESULT_WAIT_S) -> list[str]:
        """Print a row per result of ours as it arrives, until all have one; the ids still missing."""
        deadline = time.monotonic() + timeout_s
        last_id = start_id
        self.say(HEADER)
        while self.missing() and not stop.is_set() and time.monotonic() < deadline:
            reply = self.client.xread({self.settings.result_stream: last_id}, count=100, block=BLOCK_MS)
            for _stream, entries in cast(list[tuple[str, Entries]], reply or []):
                for entry_id, fields in entries:
                    last_id = entry_id
                    self._take(fields)
        return self.missing()

    def summary(self, elapsed_s: float) -> str:
        """One line: how many intents have results, by status, and how long it took."""
        counts: dict[str, int] = {}
        for result in self.results.values():
            counts[str(result.get("status"))] = counts.get(str(result.get("status")), 0) + 1
        by_status = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        return (
            f"demo: {len(self.results)} of {len(self.injected_at)} intents have results after "
            f"{elapsed_s:.1f} s ({by_status or 'none'}); the stack keeps running, Ctrl-C stops it"
        )

    def _take(self, fields: Mapping[str, str]) -> None:
        if fields.get("kind") == "protection":
            return  # the stop-loss / take-profit event that follows a result
        result = parse_result(fields)
        if result is None:
            log.error("RESULT_UNREADABLE stream entry is not a result: %s", dict(fields))
            return
        intent_id = str(result.get("intent_id"))
        if intent_id not in self.injected_at:
            return
        self.say(result_row(result, self.injected_at[intent_id]))
        if result.get("status") != ResultStatus.PROTECTION_UPDATED:
            self.results.setdefault(intent_id, result)


def wait_until(condition: Callable[[], bool], timeout_s: float, stop: threading.Event) -> bool:
    """Poll `condition` until it holds (True), or until the timeout or `stop` (False)."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        try:
            if condition():
                return True
        except (redis.RedisError, OSError):
            pass  # not up yet: the broker or Redis may still be starting
        if time.monotonic() > deadline:
            return False
        stop.wait(POLL_S)
    return False


def run_demo(
    settings: Settings,
    say: Say,
    stop: threading.Event,
    *,
    ready_timeout_s: float = READY_WAIT_S,
    result_timeout_s: float = RESULT_WAIT_S,
) -> None:
    """The whole demo: wait for worker and bridge, inject, follow, summarise. It reports; it never raises."""
    client = sentinel.from_url(settings.redis_url, decode_responses=True)
    probe: WorkerProbe | None = None
    try:
        say("demo: waiting for the worker and the bridge")
        probe = WorkerProbe(settings)
        ready = wait_until(lambda: bridge_group_exists(client, settings), ready_timeout_s, stop) and wait_until(
            probe, ready_timeout_s, stop
        )
        if not ready:
            if not stop.is_set():
                say(f"demo: worker or bridge not up within {ready_timeout_s:g} s; no intent sent")
            return
        marks: dict[str, float] = {}
        for symbol, _side, _size in DEMO_ORDERS:
            try:
                marks[symbol] = mark_price(settings.venue_url, symbol)
            except (requests.RequestException, KeyError, ValueError) as exc:
                say(f"demo: no mark price for {symbol} from {settings.venue_url} ({exc}); skipping it")
        demo = Demo(client, settings, say)
        started = time.monotonic()
        start_id = demo.inject(marks)
        say(f"demo: sent {len(demo.injected_at)} intents to {settings.intent_stream} (run {demo.run_id})")
        missing = demo.follow(start_id, stop, result_timeout_s)
        if stop.is_set():
            return
        if missing:
            say(f"demo: no result within {result_timeout_s:g} s for {', '.join(missing)}; see the logs above")
        say(demo.summary(time.monotonic() - started))
    except Exception as exc:  # the demo is a guest in the supervisor: it must not take the stack down
        if not stop.is_set():
            say(f"demo: stopped by an error: {exc!r}")
    finally:
        if probe is not None:
            probe.close()
        client.close()


def _tidy(price: float) -> float:
    return float(f"{price:.10g}")  # no float noise like 12.450750000000001 in the payload


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return f"{value:.8g}"
    return str(value)
