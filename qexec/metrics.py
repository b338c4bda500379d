"""Deployment-wide figures: counters and histograms kept in Redis, served as Prometheus text by the bridge.

Workers run in other processes and on other machines, so nothing is counted in process memory: every event
is a pipelined HINCRBY into one Redis hash per metric family (`constants.METRICS_KEY`), and the collector
reads those hashes (and a few live gauges) at scrape time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIServer

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from qexec import constants
from qexec.config import Settings
from qexec.models import RejectKind, utcnow
from qexec.venue.limiter import Limiter

log = logging.getLogger(__name__)

UNLABELLED = "total"  # the hash field of a counter without labels


@dataclass(frozen=True)
class Family:
    """One metric family: its Redis hash, its exposed name and help, and its one label (if any)."""

    key: str
    name: str
    help: str
    label: str | None = None

    @property
    def redis_key(self) -> str:
        """The hash that holds this family's figures."""
        return constants.METRICS_KEY.format(family=self.key)


@dataclass(frozen=True)
class HistogramFamily:
    """A histogram kept as one hash: a count per bucket (not cumulative), `sum` and `count`."""

    key: str
    name: str
    help: str
    buckets_s: tuple[float, ...]

    @property
    def redis_key(self) -> str:
        """The hash that holds this histogram."""
        return constants.METRICS_KEY.format(family=self.key)


# Each stream entry (or `submit_intent` task) is counted once, when first taken in, and then ends in exactly one of:
# a result, in flight, a dead letter, a duplicate. So received = results + in flight + dead letters + duplicates,
# and a redelivery (a reclaimed entry, a re-read PEL, a task run again) counts as a redelivery only.
# The counts are made by the scripts that claim and dead-letter (qexec/redis_streams.py), atomically with them.
INTENTS_RECEIVED = Family(
    "intents_received",
    "qexec_intents_received_total",
    "Intents taken in (stream entries or submit_intent tasks, valid or not), once each.",
)
INTENTS_DUPLICATE = Family(
    "intents_duplicate", "qexec_intents_duplicate_total", "Intents dropped because their id was already dispatched."
)
INTENTS_REDELIVERED = Family(
    "intents_redelivered",
    "qexec_intents_redelivered_total",
    "Deliveries of an entry (or task) already taken in: reclaimed, re-read or run again; not counted as received.",
)
INTENTS_REJECTED = Family(
    "intents_rejected", "qexec_intents_rejected_total", "Intents rejected without an order, by reason.", "reason_kind"
)
INTENTS_DEAD_LETTERED = Family(
    "intents_dead_lettered", "qexec_intents_dead_lettered_total", "Stream entries written to the dead-letter stream."
)
ORDERS_PLACED = Family("orders_placed", "qexec_orders_placed_total", "Entry orders acknowledged by the venue.")
FILLS = Family("fills", "qexec_fills_total", "Entry orders whose fill result was published, by status.", "status")
RESULTS_PUBLISHED = Family(
    "results_published", "qexec_results_published_total", "Results written to the result stream, by status.", "status"
)
VENUE_RATE_LIMITED = Family(
    "venue_rate_limited",
    "qexec_venue_rate_limited_total",
    "Answers of the venue that said a rate limit was hit (HTTP 429, or 418 for a ban), by HTTP status.",
    "http_status",
)
# Counted by qexec/alerts.py and qexec/ops/notify.py into `alerts.ALERTS_METRIC_KEY` (the same hash: the limiter,
# which this module imports, raises alerts, so alerts cannot import this module).
ALERTS = Family(
    "alerts",
    "qexec_alerts_total",
    "Alerts by outcome: enqueued, duplicate, filtered, enqueue_failed, sent, failed, rate_limited, given_up, bad_url.",
    "outcome",
)
COUNTERS = (
    INTENTS_RECEIVED,
    INTENTS_DUPLICATE,
    INTENTS_REDELIVERED,
    INTENTS_REJECTED,
    INTENTS_DEAD_LETTERED,
    ORDERS_PLACED,
    FILLS,
    RESULTS_PUBLISHED,
    VENUE_RATE_LIMITED,
    ALERTS,
)

FILL_LATENCY = HistogramFamily(
    "fill_latency",
    "qexec_fill_latency_seconds",
    "From the entry order's submit to its fill's result on the result stream.",
    (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
INTENT_TO_RESULT = HistogramFamily(
    "intent_to_result",
    "qexec_intent_to_result_seconds",
    "From the intent's arrival at the bridge to its result on the result stream.",
    (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
HISTOGRAMS = (FILL_LATENCY, INTENT_TO_RESULT)

# Bounded label values: a rejection's reason text is classified, never used as a label.
REASON_KINDS = tuple(kind.value for kind in RejectKind)  # the label's values: bounded, whatever the reason says


# -- writing (from wherever the event happens) ------------------------------------------------------------


def _bucket_field(bound_s: float) -> str:
    return f"{bound_s:g}"


Counts = list[tuple[Family, str]]
Observations = list[tuple[HistogramFamily, float]]


def _queue(pipe: redis.client.Pipeline, counts: Counts, observations: Observations) -> None:
    for family, field in counts:
        pipe.hincrby(family.redis_key, field, 1)
    for histogram, observed_s in observations:
        seconds = max(observed_s, 0.0)  # clocks of different machines may disagree a little
        bucket = next((b for b in histogram.buckets_s if seconds <= b), None)
        if bucket is not None:
            pipe.hincrby(histogram.redis_key, _bucket_field(bucket), 1)
        pipe.hincrby(histogram.redis_key, "count", 1)
        pipe.hincrbyfloat(histogram.redis_key, "sum", seconds)


def _write(
    r: redis.Redis, counts: Counts, observations: Observations, pipe: redis.client.Pipeline | None = None
) -> None:
    # A metrics write must never break the pipeline: Redis errors (and anything else) are logged and dropped. With
    # `pipe`, the figures ride along with the caller's own commands (one round trip), which run whatever happens.
    try:
        pipe = pipe if pipe is not None else r.pipeline(transaction=False)
        _queue(pipe, counts, observations)
        pipe.execute()
    except Exception as exc:
        log.warning("METRICS_WRITE_FAILED %s: %s", type(exc).__name__, exc)


def _seconds(start: datetime | None, end: datetime) -> list[float]:
    return [] if start is None else [(end - start).total_seconds()]


def intent_rejected(r: redis.Redis, kind: RejectKind) -> None:
    """Count an intent rejected without an order, by the kind of its reason."""
    _write(r, [(INTENTS_REJECTED, kind.value)], [])


def venue_rate_limited(r: redis.Redis, http_status: int | None) -> None:
    """Count a 429/418 answer of the venue."""
    _write(r, [(VENUE_RATE_LIMITED, str(http_status or "unknown"))], [])


def queue_placed(pipe: redis.client.Pipeline) -> None:
    """Count an entry order the venue acknowledged, in the caller's pipeline (see `dropped`)."""
    _queue(pipe, [(ORDERS_PLACED, UNLABELLED)], [])


def dropped(replies: list[Any]) -> None:
    """Log the figures a caller's pipeline could not write (`execute(raise_on_error=False)`): they are dropped."""
    for reply in replies:
        if isinstance(reply, Exception):
            log.warning("METRICS_WRITE_FAILED %s: %s", type(reply).__name__, reply)
            return


FILL_STATUSES = ("filled", "partially_filled")


def _result(
    status: str, received_at: datetime, published_at: datetime, placed_at: datetime | None
) -> tuple[Counts, Observations]:
    counts: Counts = [(RESULTS_PUBLISHED, status)]
    observations: Observations = [(INTENT_TO_RESULT, s) for s in _seconds(received_at, published_at)]
    if status in FILL_STATUSES:
        counts.append((FILLS, status))
        observations += [(FILL_LATENCY, s) for s in _seconds(placed_at, published_at)]
    return counts, observations


def result_published(
    r: redis.Redis, *, status: str, received_at: datetime, published_at: datetime, placed_at: datetime | None = None
) -> None:
    """Count a result written to the result stream and observe its intent-to-result latency; a fill result also
    counts its fill and observes the fill's latency from the order's submit (`placed_at`)."""
    _write(r, *_result(status, received_at, published_at, placed_at))


def queue_result(
    pipe: redis.client.Pipeline,
    *,
    status: str,
    received_at: datetime,
    published_at: datetime,
    placed_at: datetime | None = None,
) -> None:
    """`result_published`, in the caller's pipeline (see `dropped`)."""
    _queue(pipe, *_result(status, received_at, published_at, placed_at))


# -- reading (at scrape time) --------------------------------------------------------------------------------


def without_result(r: redis.Redis) -> int:
    """Intents taken in that have no result yet and are neither dead letters nor duplicates: received - results -
    dead letters - duplicates (deployment-wide, since the counters began). Submits still in flight count too.

    Only results of intents taken in by a bridge or `submit_intent` keep it exact: steps run by hand (tests, tools)
    publish results nothing took in, and can push it below zero."""
    pipe = r.pipeline(transaction=False)
    for family in (INTENTS_RECEIVED, RESULTS_PUBLISHED, INTENTS_DEAD_LETTERED, INTENTS_DUPLICATE):
        pipe.hgetall(family.redis_key)
    received, results, dead, duplicates = (sum(_number(v) for v in counts.values()) for counts in pipe.execute())
    return int(received - results - dead - duplicates)


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0


class RedisCollector(Collector):
    """Reads the figures from Redis at every scrape: counters, histograms and live gauges."""

    def __init__(self, settings: Settings, r: redis.Redis, now: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.redis = r
        self.now = now

    def collect(self) -> Iterator[Metric]:
        """Every qexec metric family; `qexec_redis_up 0` alone when Redis does not answer."""
        try:
            metrics = list(self._read())
        except redis.RedisError as exc:
            log.warning("METRICS_READ_FAILED %s: %s", type(exc).__name__, exc)
            metrics = []
            up = 0.0
        else:
            up = 1.0
        yield GaugeMetricFamily("qexec_redis_up", "1 when qexec's Redis answered this scrape, else 0.", value=up)
        yield from metrics

    def _read(self) -> Iterator[Metric]:
        s, r = self.settings, self.redis
        pipe = r.pipeline(transaction=False)
        for family in (*COUNTERS, *HISTOGRAMS):
            pipe.hgetall(family.redis_key)
        for stream in (s.intent_stream, s.result_stream, s.dlq_stream):
            pipe.xlen(stream)
        pipe.zcard(constants.INFLIGHT_KEY)
        pipe.hgetall(constants.HEARTBEAT_KEY)
        replies: list[Any] = pipe.execute()
        counter_hashes = replies[: len(COUNTERS)]
        histogram_hashes = replies[len(COUNTERS) : len(COUNTERS) + len(HISTOGRAMS)]
        intent_len, result_len, dlq_len, inflight, heartbeat = replies[len(COUNTERS) + len(HISTOGRAMS) :]

        for family, values in zip(COUNTERS, counter_hashes, strict=True):
            labels = [family.label] if family.label else []
            counter = CounterMetricFamily(family.name, family.help, labels=labels)
            for field, value in sorted(values.items()):
                if family.label:
                    counter.add_metric([field], _number(value))
                elif field == UNLABELLED:
                    counter.add_metric([], _number(value))
            if not family.label and UNLABELLED not in values:
                counter.add_metric([], 0.0)
            yield counter

        for histogram, values in zip(HISTOGRAMS, histogram_hashes, strict=True):
            cumulative, buckets = 0.0, []
            for bound in histogram.buckets_s:
                cumulative += _number(values.get(_bucket_field(bound)))
                buckets.append((repr(float(bound)), cumulative))  # `le="1.0"`, as prometheus_client writes it
            buckets.append(("+Inf", _number(values.get("count"))))
            yield HistogramMetricFamily(
                histogram.name, histogram.help, buckets=buckets, sum_value=_number(values.get("sum"))
            )

        lengths = GaugeMetricFamily("qexec_stream_length", "Entries in qexec's streams.", labels=["stream"])
        for role, length in (("intent", intent_len), ("result", result_len), ("dlq", dlq_len)):
            lengths.add_metric([role], float(length))
        yield lengths
        yield GaugeMetricFamily(
            "qexec_inflight_intents", "Intents with an order placed and no result yet.", value=float(inflight)
        )
        yield from self._group_gauges()
        yield from self._heartbeat_gauges(heartbeat)
        yield from self._unprotected_gauges()
        yield from self._budget_gauges()
        yield from self._feed_gauges()

    def _budget_gauges(self) -> Iterator[Metric]:
        limiter = Limiter(self.redis, self.settings)
        used = GaugeMetricFamily(
            "qexec_venue_budget_used",
            "Venue budget spent in each rate window by the whole deployment (weight-1m: request weight in the last "
            "minute; orders-10s, orders-1m: new orders), as the shared limiter counts it.",
            labels=["window"],
        )
        limit = GaugeMetricFamily(
            "qexec_venue_budget_limit",
            "The limiter's ceiling for each rate window (venue limit x margin).",
            labels=["window"],
        )
        for window, spent in limiter.used().items():
            used.add_metric([window], float(spent))
        for rate_window, ceiling in limiter.limits.items():
            limit.add_metric([rate_window.name], float(ceiling))
        yield used
        yield limit

    def _feed_gauges(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "qexec_venue_stream_up",
            "1 while a worker process's user-data stream to the venue is live, else 0 (one series per process).",
            labels=["process"],
        )
        live = GaugeMetricFamily(
            "qexec_venue_stream_live_seconds",
            "Seconds the process's user-data stream has been live.",
            labels=["process"],
        )
        prefix = constants.FEED_STATE_KEY.format(process="")
        for key in sorted(self.redis.scan_iter(match=prefix + "*", count=1000)):
            state: Any = self.redis.hgetall(key)
            if not state:
                continue
            process = str(key).removeprefix(prefix)
            up.add_metric([process], _number(state.get("live")))
            live.add_metric([process], _number(state.get("live_for_s")))
        yield up
        yield live

    def _unprotected_gauges(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "qexec_position_unprotected_seconds",
            "Seconds a position has been without its stop-loss or take-profit because the venue could not take them "
            "(0 series: every position is protected).",
            labels=["symbol", "direction", "account"],
        )
        now_s = self.now().timestamp()
        for account in self.settings.account_names:
            key_of = constants.account_key(constants.UNPROTECTED_KEY, account)
            spells: Any = self.redis.zrange(key_of, 0, -1, withscores=True)
            for key, since_ms in spells:
                symbol, _, direction = str(key).partition(":")
                gauge.add_metric([symbol, direction, account], max(now_s - float(since_ms) / 1000, 0.0))
        yield gauge

    def _heartbeat_gauges(self, heartbeat: dict[str, str]) -> Iterator[Metric]:
        try:
            at = datetime.fromisoformat(heartbeat["at"])
        except (KeyError, ValueError):  # beat has not run yet (or wrote something else): no figure
            return
        yield GaugeMetricFamily(
            "qexec_venue_heartbeat_age_seconds",
            "Seconds since beat's last venue self-test.",
            value=max((self.now() - at).total_seconds(), 0.0),
        )
        ok = _number(heartbeat.get("ok"))
        yield GaugeMetricFamily("qexec_venue_heartbeat_ok", "1 when the last venue self-test passed, else 0.", value=ok)

    def _group_gauges(self) -> Iterator[Metric]:
        s = self.settings
        try:
            groups: Any = self.redis.xinfo_groups(s.intent_stream)
        except redis.ResponseError:  # no stream yet: no group, nothing pending
            groups = []
        group = next((g for g in groups if g.get("name") == s.consumer_group), None)
        pending = float(group.get("pending") or 0) if group else 0.0
        yield GaugeMetricFamily(
            "qexec_intent_pending_entries",
            "Intent entries delivered to a consumer of the group and not yet acknowledged.",
            value=pending,
        )
        # `lag` exists from Redis 7 on, and is nil when Redis cannot tell (after deletions): then it is left out.
        lag = group.get("lag") if group else None
        if lag is not None:
            yield GaugeMetricFamily(
                "qexec_intent_group_lag", "Intent entries not yet delivered to the consumer group.", value=float(lag)
            )


FEED_REPORT_EVERY_S = 5.0  # how often a worker process writes its stream's state; it expires after three misses
_feed_reporters: set[tuple[int, str]] = set()  # the processes (pids) and accounts whose reporter runs


def report_feed(r: redis.Redis, process: str, status: dict[str, Any]) -> None:
    """Write one process's stream state (`Feed.status()`) where the bridge's collector reads it."""
    key = constants.FEED_STATE_KEY.format(process=process)
    try:
        pipe = r.pipeline(transaction=False)
        pipe.hset(key, mapping={"live": int(bool(status.get("live"))), "live_for_s": status.get("live_for_s") or 0})
        pipe.expire(key, int(FEED_REPORT_EVERY_S * 3))
        pipe.execute()
    except redis.RedisError as exc:
        log.debug("feed state not written: %s", exc)


def report_feed_every(
    r: redis.Redis, status: Callable[[], dict[str, Any]], account: str = constants.DEFAULT_ACCOUNT
) -> None:
    """Start this process's daemon thread that reports its stream state (of `account`'s feed) every
    `FEED_REPORT_EVERY_S` (once); another account's series is the process's name with `@<account>`."""
    pid = os.getpid()
    if (pid, account) in _feed_reporters:
        return
    _feed_reporters.add((pid, account))
    process = f"{socket.gethostname()}:{pid}"
    if account != constants.DEFAULT_ACCOUNT:
        process += f"@{account}"

    def loop() -> None:
        while True:
            report_feed(r, process, status())
            time.sleep(FEED_REPORT_EVERY_S)

    threading.Thread(target=loop, name="qexec-feed-state", daemon=True).start()


def registry(settings: Settings, r: redis.Redis) -> CollectorRegistry:
    """A private registry holding only qexec's Redis-backed figures."""
    private = CollectorRegistry(auto_describe=False)
    private.register(RedisCollector(settings, r))
    return private


def serve(settings: Settings, r: redis.Redis) -> tuple[WSGIServer, threading.Thread] | None:
    """Serve `/metrics` on `metrics_host:metrics_port` in a daemon thread; None when off or the port is taken."""
    if settings.metrics_port == 0:
        return None
    try:
        server, thread = start_http_server(settings.metrics_port, settings.metrics_host, registry=registry(settings, r))
    except OSError as exc:
        # The figures live in Redis, so any one process serving them is enough: a second bridge on this host
        # keeps bridging without its own endpoint.
        log.warning(
            "METRICS_NOT_SERVED %s:%d: %s (set QEXEC_METRICS_PORT to another port, or 0)",
            settings.metrics_host,
            settings.metrics_port,
            exc,
        )
        return None
    log.info("serving metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return server, thread
