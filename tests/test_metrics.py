"""Metrics: figures kept in Redis by whichever process saw the event, served as Prometheus text by the bridge."""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import requests
from paper_fixtures import free_port
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from stack_fixtures import Stack, add_fault, seed_intent, unique_id

from qexec import constants, metrics
from qexec.config import Settings
from qexec.context import Context
from qexec.errors import RateLimited
from qexec.models import Intent, RejectKind, ResultStatus, client_order_id, utcnow
from qexec.ops import selftest
from qexec.pipeline import admission, publish
from qexec.venue.binance import BinanceVenue

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]

FAMILIES = {
    "qexec_redis_up": "gauge",
    "qexec_intents_received": "counter",
    "qexec_intents_duplicate": "counter",
    "qexec_intents_redelivered": "counter",
    "qexec_intents_rejected": "counter",
    "qexec_intents_dead_lettered": "counter",
    "qexec_orders_placed": "counter",
    "qexec_fills": "counter",
    "qexec_results_published": "counter",
    "qexec_fill_latency_seconds": "histogram",
    "qexec_intent_to_result_seconds": "histogram",
    "qexec_stream_length": "gauge",
    "qexec_inflight_intents": "gauge",
    "qexec_intent_pending_entries": "gauge",
}


def parse(text: str) -> Figures:
    """Every sample of a Prometheus text exposition, by name and labels."""
    figures: Figures = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            figures[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return figures


def scrape(stack: Stack) -> Figures:
    """The bridge's `/metrics`, parsed."""
    response = requests.get(stack.metrics_url, timeout=10)
    response.raise_for_status()
    return parse(response.text)


def figure(figures: Figures, name: str, **labels: str) -> float:
    """One sample's value (0 when it is not exposed yet)."""
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Figures, after: Figures, name: str, **labels: str) -> float:
    """How much one sample grew between two scrapes."""
    return figure(after, name, **labels) - figure(before, name, **labels)


def wait_for_dead_letters(stack: Stack, count: int, timeout_s: float = 15) -> None:
    """Wait until the dead-letter stream holds `count` entries."""
    deadline = time.monotonic() + timeout_s
    while len(stack.dead_letters()) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(stack.dead_letters()) >= count


@pytest.mark.slow
def test_the_bridge_serves_every_qexec_family_as_prometheus_text(stack: Stack) -> None:
    """`/metrics` on the bridge's metrics port parses, and holds every family with its type and Redis up."""
    response = requests.get(stack.metrics_url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    types = {family.name: family.type for family in text_string_to_metric_families(response.text)}
    assert {name: types.get(name) for name in FAMILIES} == FAMILIES
    assert figure(parse(response.text), "qexec_redis_up") == 1.0


@pytest.mark.slow
def test_a_filled_intent_moves_received_placed_fills_published_and_both_histograms(stack: Stack) -> None:
    """One filled intent counts as received, placed, filled and published, and adds to both latency histograms."""
    before = scrape(stack)
    iid = unique_id("metrics-fill")
    stack.inject(seed_intent(iid))
    assert stack.wait_result(iid)["status"] == "filled"
    after = scrape(stack)
    assert moved(before, after, "qexec_intents_received_total") >= 1
    assert moved(before, after, "qexec_orders_placed_total") >= 1
    assert moved(before, after, "qexec_fills_total", status="filled") >= 1
    assert moved(before, after, "qexec_results_published_total", status="filled") >= 1
    for histogram in ("qexec_fill_latency_seconds", "qexec_intent_to_result_seconds"):
        assert moved(before, after, f"{histogram}_count") >= 1
        assert moved(before, after, f"{histogram}_sum") > 0
        assert figure(after, f"{histogram}_bucket", le="+Inf") == figure(after, f"{histogram}_count")


@pytest.mark.slow
def test_a_partial_fill_is_counted_as_partially_filled(stack: Stack) -> None:
    """A fill cut short at the deadline moves the fills counter under `partially_filled`."""
    before = scrape(stack)
    iid = unique_id("metrics-part")
    add_fault(stack, kind="partial_fill", ratio=0.5, client_order_id=client_order_id(iid), count=1)
    stack.inject(seed_intent(iid, symbol="BTCUSDT", position_size_usd=500.0))
    assert stack.wait_result(iid)["status"] == "partially_filled"
    after = scrape(stack)
    assert moved(before, after, "qexec_fills_total", status="partially_filled") >= 1
    assert moved(before, after, "qexec_results_published_total", status="partially_filled") >= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"position_size_usd": 1.0}, "min_size"),
        ({"symbol": "NOSUCHUSDT"}, "unknown_symbol"),
        ({"timestamp": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}, "stale"),
        ({"position_size_usd": 60000.0}, "risk"),
        ({"leverage": 50}, "risk"),
    ],
)
def test_a_rejected_intent_moves_the_rejected_counter_under_its_reason_kind(
    stack: Stack, change: dict[str, Any], kind: str
) -> None:
    """Each kind of rejection is counted under its bounded `reason_kind`, never under the reason's text."""
    before = scrape(stack)
    iid = unique_id("metrics-rej")
    stack.inject(seed_intent(iid, **change))
    assert stack.wait_result(iid)["status"] == "rejected"
    after = scrape(stack)
    assert moved(before, after, "qexec_intents_rejected_total", reason_kind=kind) >= 1
    assert moved(before, after, "qexec_results_published_total", status="rejected") >= 1
    kinds = {dict(labels)["reason_kind"] for name, labels in after if name == "qexec_intents_rejected_total"}
    assert kinds <= set(metrics.REASON_KINDS)


@pytest.mark.slow
def test_a_venue_rejection_is_counted_as_a_venue_rejection(stack: Stack) -> None:
    """An order the venue refuses moves the rejected counter under `venue`."""
    before = scrape(stack)
    iid = unique_id("metrics-venue")
    add_fault(stack, kind="reject", code=-2019, msg="Margin is insufficient.", client_order_id=client_order_id(iid))
    stack.inject(seed_intent(iid))
    assert stack.wait_result(iid)["status"] == "rejected"
    assert moved(before, scrape(stack), "qexec_intents_rejected_total", reason_kind="venue") >= 1


@pytest.mark.slow
def test_a_malformed_entry_moves_the_dead_letter_counter_and_the_dlq_length(stack: Stack) -> None:
    """A malformed entry is counted as dead-lettered and shows in the dead-letter stream's length."""
    before = scrape(stack)
    count = len(stack.dead_letters())
    stack.redis.xadd(stack.settings.intent_stream, {"payload": "{not json"})
    wait_for_dead_letters(stack, count + 1)
    after = scrape(stack)
    assert moved(before, after, "qexec_intents_dead_lettered_total") >= 1
    assert figure(after, "qexec_stream_length", stream="dlq") == stack.redis.xlen(stack.settings.dlq_stream)


@pytest.mark.slow
def test_the_same_intent_twice_moves_the_duplicate_counter(stack: Stack) -> None:
    """A second entry with an already dispatched intent id is counted as a duplicate."""
    before = scrape(stack)
    iid = unique_id("metrics-dup")
    stack.inject(seed_intent(iid))
    stack.inject(seed_intent(iid))
    stack.wait_result(iid)
    deadline = time.monotonic() + 10
    while moved(before, scrape(stack), "qexec_intents_duplicate_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    after = scrape(stack)
    assert moved(before, after, "qexec_intents_duplicate_total") >= 1
    assert moved(before, after, "qexec_intents_received_total") >= 2


@pytest.mark.slow
def test_a_result_published_twice_is_counted_once(stack: Stack) -> None:
    """Publishing an intent's result again writes nothing, and counts nothing."""
    ctx = Context(settings=stack.settings, redis=stack.redis, venue=BinanceVenue(stack.settings))
    intent = Intent.from_fields(seed_intent(unique_id("metrics-once")), default_id="unused")
    ticket = admission.new_ticket(intent, entry_id=None).decide(ResultStatus.SKIPPED, "counted once")
    before = scrape(stack)
    publish.publish(ticket, ctx)
    publish.publish(ticket, ctx)
    assert moved(before, scrape(stack), "qexec_results_published_total", status="skipped") == 1


@pytest.mark.slow
def test_gauges_show_stream_lengths_pending_lag_and_in_flight_intents_live(stack: Stack) -> None:
    """The gauges are read at scrape time: stream lengths, the group's pending entries and lag, in-flight intents."""
    iid = unique_id("metrics-gauge")
    stack.inject(seed_intent(iid))
    stack.wait_result(iid)
    figures = scrape(stack)
    s = stack.settings
    assert figure(figures, "qexec_stream_length", stream="result") == stack.redis.xlen(s.result_stream)
    assert figure(figures, "qexec_stream_length", stream="intent") == stack.redis.xlen(s.intent_stream)
    assert figure(figures, "qexec_intent_pending_entries") == 0
    assert figure(figures, "qexec_inflight_intents") == stack.redis.zcard(constants.INFLIGHT_KEY)
    if int(stack.redis.info("server")["redis_version"].split(".")[0]) >= 7:
        assert ("qexec_intent_group_lag", ()) in figures


@pytest.mark.slow
def test_the_heartbeat_age_and_result_appear_once_beat_has_checked_the_venue(stack: Stack) -> None:
    """After beat's venue heartbeat, the scrape shows its age in seconds and that it passed."""
    ctx = Context(settings=stack.settings, redis=stack.redis, venue=BinanceVenue(stack.settings))
    selftest.venue_heartbeat(ctx)
    figures = scrape(stack)
    assert 0 <= figure(figures, "qexec_venue_heartbeat_age_seconds") < 30
    assert figure(figures, "qexec_venue_heartbeat_ok") == 1.0


def closed_redis() -> redis.Redis:
    """A client for a port nobody listens on."""
    return redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, decode_responses=True)


def test_a_metrics_write_to_a_redis_that_does_not_answer_is_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The pipeline never fails because of a metric: the write's error is logged and swallowed."""
    with caplog.at_level(logging.WARNING, logger="qexec.metrics"):
        metrics.intent_rejected(closed_redis(), RejectKind.STALE)
        metrics.result_published(closed_redis(), status="filled", received_at=utcnow(), published_at=utcnow())
    assert caplog.text.count("METRICS_WRITE_FAILED") == 2


def test_a_scrape_while_redis_is_down_reports_redis_up_zero_instead_of_failing() -> None:
    """With Redis unreachable the exposition still renders, with `qexec_redis_up 0` and nothing made up."""
    figures = parse(generate_latest(metrics.registry(Settings(), closed_redis())).decode())
    assert figures == {("qexec_redis_up", ()): 0.0}


def test_metrics_port_zero_serves_nothing() -> None:
    """`QEXEC_METRICS_PORT=0` turns the endpoint off."""
    assert metrics.serve(Settings(metrics_port=0), closed_redis()) is None


def test_a_metrics_port_already_taken_is_logged_and_the_caller_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    """A second bridge on the same host keeps bridging without an endpoint of its own."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="qexec.metrics"):
            assert metrics.serve(Settings(metrics_port=port), closed_redis()) is None
    assert "METRICS_NOT_SERVED" in caplog.text


def test_histogram_observations_land_in_the_first_bucket_that_holds_them(redis_url: str) -> None:
    """Buckets are kept per bound in Redis and exposed cumulatively, with `+Inf` equal to the count."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.delete(metrics.FILL_LATENCY.redis_key)
    placed = utcnow()
    for seconds in (0.01, 0.3, 0.3, 100.0):
        metrics.result_published(
            r, status="filled", received_at=placed, published_at=placed + timedelta(seconds=seconds), placed_at=placed
        )
    figures = parse(generate_latest(metrics.registry(Settings(redis_url=redis_url), r)).decode())
    bucket = "qexec_fill_latency_seconds_bucket"
    assert figure(figures, bucket, le="0.05") == 1
    assert figure(figures, bucket, le="0.25") == 1
    assert figure(figures, bucket, le="0.5") == 3
    assert figure(figures, bucket, le="60.0") == 3
    assert figure(figures, bucket, le="+Inf") == 4 == figure(figures, "qexec_fill_latency_seconds_count")
    assert figure(figures, "qexec_fill_latency_seconds_sum") == pytest.approx(100.61)


def test_rejection_kinds_are_the_bounded_set_the_dashboards_read() -> None:
    """The `reason_kind` label takes these values only (a metrics contract), whatever a reason's text says: each
    rejection carries its kind from where it is decided, not from its wording."""
    assert metrics.REASON_KINDS == (
        "stale",
        "unknown_symbol",
        "min_size",
        "price_band",
        "risk",
        "halted",
        "venue",
        "other",
    )


@pytest.mark.slow
def test_the_bridge_serves_venue_weight_used_rate_limit_answers_and_each_workers_stream_state(stack: Stack) -> None:
    """The shared limiter's weight used against its ceiling, a 429 from the venue counted by status, and the worker's
    user-data stream reported up (the dashboard's weight, 429 and stream-uptime panels read these)."""
    before = scrape(stack)
    venue = BinanceVenue(stack.settings, stack.redis)
    venue.server_time_ms()  # spends 1 weight from the shared budget
    add_fault(stack, kind="reject", endpoint="GET /fapi/v1/premiumIndex", symbol="XRPUSDT", code=-1003, status=429)
    try:
        with pytest.raises(RateLimited):
            venue.mark_price("XRPUSDT")
    finally:
        stack.redis.delete(constants.LIMIT_PAUSE_KEY)  # the 1 s pause it set would slow the next tests only
    deadline = time.monotonic() + 20
    while True:  # each worker process writes its stream's state every few seconds
        after = scrape(stack)
        up = {labels: value for (name, labels), value in after.items() if name == "qexec_venue_stream_up"}
        if any(value == 1.0 for value in up.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert any(value == 1.0 for value in up.values()), up
    assert all(labels[0][0] == "process" for labels in up), up
    ceiling = int(stack.settings.weight_per_min * stack.settings.limit_margin)
    assert figure(after, "qexec_venue_budget_limit", window="weight-1m") == ceiling
    assert 1 <= figure(after, "qexec_venue_budget_used", window="weight-1m") <= ceiling
    assert moved(before, after, "qexec_venue_rate_limited_total", http_status="429") == 1
