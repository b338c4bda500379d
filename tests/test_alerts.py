"""Alerts: every kind delivered end to end through apprise's generic JSON URL to a real local HTTP receiver, by the
real worker's `qexec.send_alert` (raised in the worker's chain where the event happens there); de-duplicated, filtered
by level, rate-limited, a failing destination counted without harm to the pipeline, and no token in any log or body."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from celery import Celery
from paper_fixtures import PaperExchange, free_port, start_paper
from position_helpers import context, flatten, position_amt
from private_stack import private_stack
from stack_fixtures import Stack, unique_id

from qexec import alerts, constants
from qexec.config import Settings
from qexec.ops import notify, selftest
from qexec.positions import monitor
from qexec.venue.feed import Feed
from qexec.worker.celeryconf import celery_config

pytestmark = pytest.mark.slow

TOKEN = "tok3nS3cretAbc123"  # the receiver URL's token, which must never be printed


class Receiver:
    """A local webhook: collects every POSTed JSON body, answering `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.paths.append(self.path)
                outer.bodies.append(json.loads(raw or b"{}"))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, token: str = TOKEN) -> str:
        """The receiver as an apprise generic JSON URL, its token in the path."""
        return f"json://127.0.0.1:{self.port}/hook/{token}"

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """The bodies whose title names `kind`."""
        return [b for b in self.bodies if b.get("title", "").endswith(" " + kind)]

    def wait_for(self, kind: str, needle: str = "", timeout_s: float = 30, count: int = 1) -> list[dict[str, Any]]:
        """The bodies of `kind` (holding `needle`), once at least `count` have arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [b for b in self.of_kind(kind) if needle in b.get("message", "")]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no {count} {kind} alert(s) with {needle!r}; got {[b['title'] for b in self.bodies]}")

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """The destination that takes every alert."""
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def failing() -> Iterator[Receiver]:
    """A destination that answers every alert with HTTP 500."""
    server = Receiver(status=500)
    yield server
    server.close()


@pytest.fixture(scope="module")
def alert_paper() -> Iterator[PaperExchange]:
    """This module's own paper exchange (its faults must not reach other tests)."""
    exchange = start_paper("--tick-ms", "0")
    try:
        yield exchange
    finally:
        exchange.stop()


@pytest.fixture(scope="module")
def alert_stack(
    alert_paper: PaperExchange, receiver: Receiver, failing: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A worker and a bridge whose alerts go to `receiver`, to `failing` (500s) and to a port nobody listens on."""
    down = f"json://127.0.0.1:{free_port()}/gone/{TOKEN}down"
    extra = {
        "QEXEC_ALERT_URLS": f"{receiver.url()}, {failing.url(TOKEN + 'x')} {down}",
        "QEXEC_ALERT_RATE_PER_MIN": "1000",
        "QEXEC_ALERT_REPEAT_S": "1",
        "QEXEC_ALERT_PROTECTION_LATE_S": "0.5",
        "QEXEC_PROTECTION_RETRIES": "2",
        "QEXEC_PROTECTION_GRACE_S": "600",
        "QEXEC_SAME_SIDE_POLICY": "add",
    }
    with private_stack(alert_paper, tmp_path_factory.mktemp("alerts"), extra) as running:
        yield running


def fresh_intent(symbol: str, **fields: Any) -> dict[str, Any]:
    """A MARKET BUY intent of 100 USDT at leverage 2, in the seed producer's shape."""
    body = {"intent_id": unique_id("al"), "symbol": symbol, "side": "BUY", "position_size_usd": 100.0, "leverage": 2}
    return body | {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())} | fields


def counted(r: redis.Redis, outcome: str) -> int:
    """`qexec_alerts_total{outcome}` as kept in Redis."""
    return int(r.hget(alerts.ALERTS_METRIC_KEY, outcome) or 0)


def send_to_worker(stack: Stack, task: str, **kwargs: Any) -> None:
    """Send a task to the stack's worker (as `celery call` does)."""
    sender = Celery(broker=stack.settings.effective_broker_url, set_as_current=False)
    sender.send_task(task, kwargs=kwargs, queue="qexec")


def test_entry_filled_partially_filled_and_rejected_are_alerted_from_the_worker(
    alert_stack: Stack, receiver: Receiver
) -> None:
    """The worker's publish step raises one alert per result: filled (info), partially filled, rejected."""
    stack, symbol = alert_stack, "ADAUSDT"
    stack.paper.set_price(symbol, "0.500")
    filled = fresh_intent(symbol)
    stack.inject(filled)
    assert stack.wait_result(filled["intent_id"])["status"] == "filled"
    [body] = receiver.wait_for("entry_filled", f"intent_id={filled['intent_id']}")
    assert body["title"] == "qexec INFO entry_filled" and f"BUY {symbol} filled" in body["message"]

    stack.paper.add_fault(kind="partial_fill", symbol=symbol, ratio=0.5)
    partial = fresh_intent(symbol)
    stack.inject(partial)
    assert stack.wait_result(partial["intent_id"])["status"] == "partially_filled"
    receiver.wait_for("entry_partially_filled", f"intent_id={partial['intent_id']}")

    stack.paper.add_fault(kind="reject", symbol=symbol)
    rejected = fresh_intent(symbol)
    stack.inject(rejected)
    assert stack.wait_result(rejected["intent_id"])["status"] == "rejected"
    receiver.wait_for("entry_rejected", f"intent_id={rejected['intent_id']}")
    flatten(context(stack.settings), symbol)


def test_protection_that_fails_alerts_protection_failed_and_the_emergency_close(
    alert_stack: Stack, receiver: Receiver
) -> None:
    """Every algo order refused: the worker closes the position at market; both are alerted, with the ids."""
    stack, symbol = alert_stack, "ATOMUSDT"
    stack.paper.set_price(symbol, "4.500")
    stack.paper.add_fault(kind="reject", endpoint="POST /fapi/v1/algoOrder", symbol=symbol, count=0)
    try:
        body = fresh_intent(symbol, stop_loss=4.3, take_profit=4.8)
        stack.inject(body)
        stack.wait_result(body["intent_id"])
        [failed] = receiver.wait_for("protection_failed", f"intent_id={body['intent_id']}")
        assert failed["title"] == "qexec CRITICAL protection_failed" and "action closed" in failed["message"]
        [closed] = receiver.wait_for("emergency_close", f"symbol={symbol}")
        assert "closed" in closed["message"]
    finally:
        stack.paper.admin("DELETE", "/paper/v1/faults")
        flatten(context(stack.settings), symbol)


def test_an_unprotected_position_is_alerted_at_once_again_while_it_lasts_then_repaired_and_its_exit(
    alert_stack: Stack, receiver: Receiver
) -> None:
    """503s on the algo endpoint: POSITION_UNPROTECTED from the worker at once, again after the repeat interval (the
    exit monitor's pass), `protection_repaired` once the venue takes SL/TP, then the exit with its reason and PnL."""
    stack, symbol = alert_stack, "FILUSDT"
    ctx = context(stack.settings)
    stack.paper.set_price(symbol, "2.500")
    stack.paper.add_fault(kind="unavailable", endpoint="POST /fapi/v1/algoOrder", symbol=symbol, count=0)
    try:
        body = fresh_intent(symbol, stop_loss=2.4, take_profit=2.7)
        stack.inject(body)
        assert stack.wait_result(body["intent_id"])["status"] == "filled"
        receiver.wait_for("position_unprotected", f"symbol={symbol}")
        # Given it lasts longer than QEXEC_ALERT_REPEAT_S (1 s), When the exit monitor passes, Then it is alerted again
        time.sleep(1.2)
        alerts.raise_lasting_unprotected(ctx.redis, ctx.settings)
        assert alerts.flush()
        receiver.wait_for("position_unprotected", f"symbol={symbol}", count=2)
        stack.paper.admin("DELETE", "/paper/v1/faults")
        assert monitor.watch(ctx, symbols={symbol})["repaired"] == [f"{symbol}:LONG"]
        receiver.wait_for("protection_repaired", f"intent_id={body['intent_id']}")
        # When the position is closed at the venue, Then the monitor's exit is alerted with its reason and PnL
        flatten_at_venue(ctx, symbol)
        monitor.watch(ctx, symbols={symbol})
        [exit_alert] = receiver.wait_for("exit", f"symbol={symbol}")
        assert "PnL" in exit_alert["message"] and "manual_or_liquidation" in exit_alert["message"]
    finally:
        stack.paper.admin("DELETE", "/paper/v1/faults")
        flatten(ctx, symbol)


def flatten_at_venue(ctx: Any, symbol: str) -> None:
    """Close the symbol's position with a plain market order, as someone at the venue's UI would."""
    amount = position_amt(ctx, symbol)
    side = "SELL" if amount > 0 else "BUY"
    ctx.venue._client.futures_create_order(symbol=symbol, side=side, type="MARKET", quantity=str(abs(amount)))


def test_protection_placed_late_is_alerted(alert_stack: Stack, receiver: Receiver) -> None:
    """Two 503s before the venue takes SL/TP: placed after the in-place retries, later than 0.5 s after the fill."""
    stack, symbol = alert_stack, "LINKUSDT"
    stack.paper.set_price(symbol, "15.00")
    stack.paper.add_fault(kind="unavailable", endpoint="POST /fapi/v1/algoOrder", symbol=symbol, count=2)
    try:
        body = fresh_intent(symbol, stop_loss=14.5, take_profit=16.0)
        stack.inject(body)
        stack.wait_result(body["intent_id"])
        [late] = receiver.wait_for("protection_late", f"intent_id={body['intent_id']}")
        assert "s after the fill" in late["message"]
    finally:
        stack.paper.admin("DELETE", "/paper/v1/faults")
        flatten(context(stack.settings), symbol)


def test_halt_and_resume_through_the_worker_are_alerted(alert_stack: Stack, receiver: Receiver) -> None:
    """`qexec.halt` and `qexec.resume`, run by the worker: each alerted with who asked."""
    send_to_worker(alert_stack, "qexec.halt", reason="alert drill", by="alice")
    [halted] = receiver.wait_for("halt", "alert drill")
    assert "by=alice" in halted["message"]
    send_to_worker(alert_stack, "qexec.resume", by="bob")
    receiver.wait_for("resume", "by=bob")


def test_a_rate_limit_pause_is_alerted_and_the_intent_still_fills(alert_stack: Stack, receiver: Receiver) -> None:
    """The venue answers 429 for two seconds: the worker's limiter pauses every call and says so; the intent fills
    after the pause."""
    stack, symbol = alert_stack, "DOTUSDT"
    stack.paper.set_price(symbol, "7.000")
    stack.paper.add_fault(kind="rate_limit", endpoint="POST /fapi/v1/order", status=429, seconds=2)
    body = fresh_intent(symbol)
    stack.inject(body)
    [paused] = receiver.wait_for("rate_limit_pause", "HTTP 429")
    assert paused["title"] == "qexec WARNING rate_limit_pause"
    assert stack.wait_result(body["intent_id"], timeout_s=60)["status"] == "filled"
    flatten(context(stack.settings), symbol)


def test_a_dead_lettered_intent_is_alerted_by_the_bridge(alert_stack: Stack, receiver: Receiver) -> None:
    """A malformed entry goes to the dead-letter stream, and its alert names the DLQ entry."""
    entry_id = alert_stack.redis.xadd(alert_stack.settings.intent_stream, {"payload": "{not json"})
    [letter] = receiver.wait_for("dead_letter", f"entry_id={entry_id}")
    assert "dlq_id=" in letter["message"]


def test_a_failing_venue_heartbeat_is_alerted(alert_stack: Stack, receiver: Receiver) -> None:
    """Beat's heartbeat (here run in-process on the stack's settings) fails on 503s: alerted, sent by the worker."""
    ctx = context(alert_stack.settings)
    alert_stack.paper.add_fault(kind="unavailable", endpoint="*", count=5)
    try:
        assert selftest.venue_heartbeat(ctx)["ok"] == 0
        assert alerts.flush()
        receiver.wait_for("venue_heartbeat_failed", "heartbeat failed")
    finally:
        alert_stack.paper.admin("DELETE", "/paper/v1/faults")


class UnreachableVenue:
    """The feed's REST seam for a venue that cannot be reached: every listen key fails."""

    def new_listen_key(self) -> str:
        raise OSError("venue unreachable")

    def keepalive_listen_key(self, key: str) -> None:
        raise OSError("venue unreachable")

    def clock_offset_ms(self) -> int:
        return 0

    def positions(self, symbol: str | None = None) -> list[Any]:
        return []

    def close(self) -> None:
        pass


def test_the_user_data_stream_down_for_longer_than_the_threshold_is_alerted(
    alert_stack: Stack, receiver: Receiver
) -> None:
    """A feed whose venue cannot be reached: once it has been down for QEXEC_ALERT_STREAM_DOWN_S, alerted once (the
    event's key holds the repeats back for QEXEC_ALERT_REPEAT_S)."""
    settings = alert_stack.settings.model_copy(update={"alert_stream_down_s": 0.4, "alert_repeat_s": 60.0})
    feed = Feed(settings, UnreachableVenue).start()
    try:
        receiver.wait_for("stream_down", "user-data stream has been down")
        time.sleep(2.0)  # more failed attempts, each past the threshold
    finally:
        feed.stop()
    assert alerts.flush()
    assert len(receiver.of_kind("stream_down")) == 1


def alert_of(kind: alerts.Kind, severity: alerts.Severity, event: str) -> alerts.Alert:
    """An alert raised from the test, with a unique event."""
    return alerts.Alert(kind=kind, severity=severity, text=f"drill {event}", event=event, ids={"drill": event})


def test_the_same_event_raised_twice_is_delivered_once(alert_stack: Stack, receiver: Receiver) -> None:
    """De-duplication per event: two raises, one enqueue, one delivery; the second counted as `duplicate`."""
    r, event = alert_stack.redis, unique_id("dup")
    before = counted(r, "duplicate")
    for _ in range(2):
        assert alerts.raise_alert(r, alert_stack.settings, alert_of(alerts.Kind.HALT, alerts.Severity.ERROR, event))
    assert alerts.flush()
    receiver.wait_for("halt", f"drill={event}")
    time.sleep(1.0)
    assert len([b for b in receiver.bodies if f"drill={event}" in b["message"]]) == 1
    assert counted(r, "duplicate") == before + 1


def test_alerts_below_the_minimum_level_are_not_sent(alert_stack: Stack, receiver: Receiver) -> None:
    """QEXEC_ALERT_MIN_LEVEL=error: a warning is filtered (counted), an error goes out."""
    r = alert_stack.redis
    settings = alert_stack.settings.model_copy(update={"alert_min_level": "error"})
    low, high = unique_id("low"), unique_id("high")
    before = counted(r, "filtered")
    assert not alerts.raise_alert(r, settings, alert_of(alerts.Kind.RESUME, alerts.Severity.WARNING, low))
    assert alerts.raise_alert(r, settings, alert_of(alerts.Kind.RESUME, alerts.Severity.ERROR, high))
    assert alerts.flush()
    receiver.wait_for("resume", f"drill={high}")
    assert not [b for b in receiver.bodies if f"drill={low}" in b["message"]]
    assert counted(r, "filtered") == before + 1


def test_a_destination_over_its_rate_drops_warnings_and_defers_errors(
    redis_client: redis.Redis, receiver: Receiver
) -> None:
    """QEXEC_ALERT_RATE_PER_MIN=1: the first alert is sent, a second warning dropped, a second error left to retry."""
    settings = Settings(redis_url="redis://127.0.0.1:1/0", alert_urls=receiver.url(), alert_rate_per_min=1)
    event = unique_id("rate")
    first = alert_of(alerts.Kind.EXIT, alerts.Severity.WARNING, event + "a").model_dump(mode="json")
    assert notify.deliver(redis_client, settings, first) == []
    warning = alert_of(alerts.Kind.EXIT, alerts.Severity.WARNING, event + "b").model_dump(mode="json")
    assert notify.deliver(redis_client, settings, warning) == []
    error = alert_of(alerts.Kind.EXIT, alerts.Severity.ERROR, event + "c").model_dump(mode="json")
    assert notify.deliver(redis_client, settings, error) == [notify.destination_id(receiver.url())]
    delivered = [b for b in receiver.bodies if f"drill={event}" in b["message"]]
    assert len(delivered) == 1
    assert int(redis_client.hget(alerts.ALERTS_METRIC_KEY, "rate_limited") or 0) == 2


def test_failing_destinations_are_retried_and_counted_and_the_pipeline_still_publishes(
    alert_stack: Stack, receiver: Receiver, failing: Receiver
) -> None:
    """One destination answers 500 and one is down: the result is published, the good one gets the alert, and the
    failed sends are counted and retried (the 500 destination is asked again)."""
    stack, symbol = alert_stack, "XRPUSDT"
    stack.paper.set_price(symbol, "0.600")
    body = fresh_intent(symbol)
    stack.inject(body)
    assert stack.wait_result(body["intent_id"])["status"] == "filled"
    receiver.wait_for("entry_filled", f"intent_id={body['intent_id']}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        tries = [b for b in failing.bodies if body["intent_id"] in b.get("message", "")]
        if len(tries) >= 2:
            break
        time.sleep(0.2)
    assert len(tries) >= 2, "the 500 destination is retried"
    assert counted(stack.redis, "failed") >= 3  # the first try to each of the two bad destinations, then retries
    assert "ALERT_SEND_FAILED" in stack.log("worker")
    flatten(context(stack.settings), symbol)


def test_the_url_token_is_in_no_worker_or_bridge_log_and_no_delivered_body(
    alert_stack: Stack, receiver: Receiver, failing: Receiver
) -> None:
    """After every alert above: the token is in none of the worker's or bridge's log lines, nor in any body; the
    failing destinations are printed masked."""
    text = alert_stack.log("worker") + alert_stack.log("bridge")
    assert "ALERT_SEND_FAILED" in text and "json://***#" in text
    assert TOKEN not in text
    assert receiver.bodies and all(TOKEN not in json.dumps(b) for b in receiver.bodies + failing.bodies)
    assert all(TOKEN in path for path in receiver.paths), "the token did travel, in the URL only"


def test_a_failing_send_prints_no_token_even_at_debug_level(
    redis_client: redis.Redis, failing: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """In a process logging everything at DEBUG with no qexec handler (here, pytest's): apprise's lines and the HTTP
    client's request lines under it carry no token; qexec's own name the destination masked."""
    settings = Settings(redis_url="redis://127.0.0.1:1/0", alert_urls=failing.url(TOKEN + "y"))
    event = alert_of(alerts.Kind.EXIT, alerts.Severity.ERROR, unique_id("mask")).model_dump(mode="json")
    with caplog.at_level(logging.DEBUG):
        assert notify.deliver(redis_client, settings, event)
    assert "ALERT_SEND_FAILED" in caplog.text and "json://***#" in caplog.text
    assert "urllib3" in caplog.text and "apprise" in caplog.text, "the lines that could leak were logged"
    assert TOKEN not in caplog.text


def test_the_alert_queue_is_consumed_by_the_worker_and_never_carries_a_url() -> None:
    """`qexec.send_alert` is routed to `qexec.alerts`, a queue of the worker's; its arguments hold the alert only."""
    conf = celery_config(Settings())
    assert alerts.ALERT_QUEUE in {q.name for q in conf["task_queues"]}
    assert conf["task_routes"][alerts.SEND_TASK] == {"queue": alerts.ALERT_QUEUE}
    assert set(alerts.Alert.model_fields) == {"kind", "severity", "text", "event", "ids", "repeat_s", "at"}


def test_masked_destinations_keep_only_the_scheme_and_an_id() -> None:
    """`tgram://BOTTOKEN/CHAT` prints as `tgram://***#<id>`; the log filter's pieces hold the token, not addresses."""
    url = "tgram://123456789:AAbbCCddEEff/987654"
    settings = Settings(alert_urls=f"{url},json://127.0.0.1:9/x/{TOKEN}")
    assert notify.masked(url) == f"tgram://***#{notify.destination_id(url)}"
    assert "AAbbCCddEEff" in notify.url_secrets(settings) and TOKEN in notify.url_secrets(settings)
    assert "127.0.0.1" not in notify.url_secrets(settings)
    assert settings.alert_url_list == [url, f"json://127.0.0.1:9/x/{TOKEN}"]
    assert "AAbbCCddEEff" not in repr(settings)
    assert constants.ALERT_EVENT_KEY.format(event="x") == "qexec:alert:x"
