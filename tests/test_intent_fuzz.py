"""Bad input, fuzzed with hypothesis: the intent parser, and the bridge fed hundreds of generated entries.

Every entry either parses into a valid `Intent` or raises `IntentError` (never another exception); through a real
`Bridge` on a real Redis each one ends dead-lettered or dispatched, and nothing stays pending.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qexec.config import Settings
from qexec.context import Context
from qexec.errors import IntentError
from qexec.models import ExecutionResult, Intent, ResultStatus, Ticket
from qexec.pipeline import publish
from qexec.pipeline.bridge import Bridge
from qexec.venue import base

MAX_BYTES = 16384

WEIRD = "NaN nan inf -inf Infinity 1e309 -1e309 0 -0 -1 1e15 1e16 0x10 1_000 true null 1e-400 12.77.1"
weird_numbers = st.sampled_from([*WEIRD.split(), "9" * 400, " 12 ", ""])
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    weird_numbers,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
symbols = st.one_of(
    st.sampled_from(
        [
            "BTCUSDT",
            "ethusdt",
            " AVAXUSDT ",
            "\uff22\uff34\uff23\uff35\uff33\uff24\uff34",
            "ßßßß",
            "ﬀUSDT",
            "BTC/USDT",
            "B",
            "X" * 40,
        ]
    ),
    st.text(max_size=12),
    json_scalars,
)
sides = st.one_of(st.sampled_from(["BUY", "SELL", "LONG", "short", "SIDEWAYS", "", " buy "]), json_scalars)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    weird_numbers,
    json_scalars,
)
timestamps = st.one_of(
    st.sampled_from(
        ["2026-01-01T18:47:38.785347+00:00", "yesterday", "1e20", "2026-13-45", "0", "9999-12-31T23:59:59"]
    ),
    st.datetimes().map(lambda d: d.isoformat()),
    numbers,
)
intent_like = st.fixed_dictionaries(
    {},
    optional={
        "symbol": symbols,
        "side": sides,
        "action": sides,
        "position_size_usd": numbers,
        "leverage": numbers,
        "entry_price": numbers,
        "stop_loss": numbers,
        "take_profit": numbers,
        "confidence": numbers,
        "timestamp": timestamps,
        "order_type": st.one_of(st.sampled_from(["MARKET", "limit", "STOP", ""]), json_scalars),
        "reduce_only": json_scalars,
        "intent_id": st.one_of(st.text(max_size=200), json_scalars),
        "client_tag": st.one_of(st.text(max_size=100), json_scalars),
        "unexpected_extra": json_values,
    },
)


def as_field(value: Any) -> str:
    """How a flat stream field carries a value: text."""
    return value if isinstance(value, str) else json.dumps(value)


stream_entries = st.one_of(
    intent_like.map(lambda d: {"payload": json.dumps(d)}),  # JSON with NaN/Infinity literals allowed
    intent_like.map(lambda d: {"data": json.dumps(d)}),
    intent_like.map(lambda d: {k: as_field(v) for k, v in d.items()}),
    json_values.map(lambda v: {"payload": json.dumps(v)}),
    st.text(max_size=200).map(lambda t: {"payload": t}),
    st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=50), max_size=6),
    st.integers(min_value=1, max_value=20_000).map(lambda n: {"payload": "[" * n + "]" * n}),
    st.integers(min_value=MAX_BYTES - 100, max_value=MAX_BYTES * 2).map(
        lambda n: {"payload": json.dumps({"symbol": "BTCUSDT", "side": "BUY", "position_size_usd": 10, "pad": "x" * n})}
    ),
)
raw_entries = st.one_of(
    stream_entries,
    st.dictionaries(st.binary(min_size=1, max_size=12), st.binary(max_size=60), min_size=1, max_size=4),
    st.binary(max_size=200).map(lambda b: {"payload": b}),
)


def check_valid(intent: Intent) -> None:
    """What every parsed intent guarantees downstream."""
    assert intent.id
    assert re.fullmatch(r"[A-Z0-9]{2,30}", intent.symbol)
    assert math.isfinite(intent.position_size_usd) and 0 < intent.position_size_usd <= 1e15
    assert intent.leverage is None or 1 <= intent.leverage <= 125  # None: the symbol keeps its own leverage
    assert isinstance(intent.reduce_only, bool)
    for price in (intent.entry_price, intent.stop_loss, intent.take_profit):
        assert price is None or (math.isfinite(price) and price > 0)


@settings(max_examples=1500, deadline=None)
@given(fields=st.one_of(stream_entries, raw_entries, st.fixed_dictionaries({"payload": json_values})))
def test_every_entry_parses_into_a_valid_intent_or_raises_intent_error(fields: dict[Any, Any]) -> None:
    """Random bytes, wrong types, huge numbers, NaN/inf, unicode, missing, extra and oversized fields."""
    try:
        intent = Intent.from_fields(fields, default_id="1-0", max_bytes=MAX_BYTES)
    except IntentError as exc:
        assert str(exc)
    else:
        check_valid(intent)


class Recorder:
    """A dispatch that records tickets instead of starting chains."""

    def __init__(self) -> None:
        self.tickets: list[Ticket] = []

    def __call__(self, ticket: Ticket) -> None:
        self.tickets.append(ticket)


class NoVenue(base.Venue):
    """What `build_result` reads from a venue: its mode and host (every other call is refused)."""

    mode = "paper"
    host = "fuzz"


@pytest.fixture
def fuzz_bridge(redis_url: str) -> tuple[Bridge, Recorder, redis.Redis, redis.Redis]:
    """A real bridge on a real Redis with a recording dispatch, plus a raw (bytes) client for writing garbage."""
    conf = Settings(redis_url=redis_url, intent_stream="fuzz:intents", bridge_block_ms=10, claim_idle_ms=60_000)
    from qexec import redis_streams  # noqa: PLC0415 - the bridge's own client, as `qexec bridge` makes it

    text = redis_streams.connect(redis_url)
    recorder = Recorder()
    bridge = Bridge(conf, text, recorder, consumer="fuzzer")
    bridge.start()
    return bridge, recorder, text, redis.Redis.from_url(redis_url)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entry=raw_entries.filter(bool))  # a stream entry has at least one field
def test_the_bridge_dead_letters_or_dispatches_every_generated_entry(
    fuzz_bridge: tuple[Bridge, Recorder, redis.Redis, redis.Redis], entry: dict[Any, Any]
) -> None:
    """Each entry is dead-lettered or dispatched as a ticket that can end `rejected`; none stays pending."""
    bridge, recorder, text, raw = fuzz_bridge
    conf = bridge.settings
    before_dlq, before_dispatched = text.xlen(conf.dlq_stream), len(recorder.tickets)
    raw.xadd(conf.intent_stream, entry)
    bridge.step()
    dead_lettered = text.xlen(conf.dlq_stream) - before_dlq
    dispatched = len(recorder.tickets) - before_dispatched
    assert dead_lettered + dispatched <= 1
    if dead_lettered + dispatched == 0:  # only a repeated intent id is dropped (as a duplicate), never anything else
        entry_id, fields = text.xrevrange(conf.intent_stream, count=1)[0]
        repeated = Intent.from_fields(fields, default_id=entry_id, max_bytes=conf.max_intent_bytes)
        assert repeated.id in {t.intent_id for t in recorder.tickets}
    assert text.xpending(conf.intent_stream, conf.consumer_group)["pending"] == 0
    if dispatched:
        ticket = recorder.tickets[-1]
        check_valid(ticket.intent)
        ctx = Context(settings=conf, redis=text, venue=NoVenue())
        result = publish.build_result(ticket.decide(ResultStatus.REJECTED, "fuzzed"), ctx)
        assert ExecutionResult.model_validate_json(result.stream_fields()["payload"]).status is ResultStatus.REJECTED
