"""`qexec up --demo`: seed-shaped intents with fresh ids in, one table row per result out."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from qexec.config import Settings
from qexec.models import ExecutionResult, Intent, ResultStatus, Side, utcnow
from qexec.ops.demo import DEMO_ORDERS, HEADER, Demo, demo_intent, result_row, run_demo

SEED_KEYS = {
    "symbol",
    "side",
    "position_size_usd",
    "leverage",
    "entry_price",
    "stop_loss",
    "take_profit",
    "confidence",
    "timestamp",
}
MARKS = {symbol: 10.0 * number for number, (symbol, _side, _size) in enumerate(DEMO_ORDERS, start=1)}


def settings_for(redis_url: str) -> Settings:
    """Default stream names on the test's Redis, whatever the test process's QEXEC_* say."""
    return Settings.model_validate({"redis_url": redis_url})


class Lines:
    """Collects what the demo says."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        self.lines.append(text)

    def text(self) -> str:
        """Everything said, one line each."""
        return "\n".join(self.lines)


def publish_result(client: redis.Redis, settings: Settings, fields: dict[str, str], status: ResultStatus) -> None:
    """Answer one intent entry the way the pipeline does: an ExecutionResult on the result stream."""
    intent = Intent.from_fields(fields)
    now = utcnow()
    filled = status.is_fill
    result = ExecutionResult(
        intent_id=intent.id,
        symbol=intent.symbol,
        action=intent.side,
        status=status,
        order_id=1 if filled else None,
        entry_price=intent.entry_price if filled else None,
        quantity=1.5 if filled else None,
        position_size_usd=intent.position_size_usd if filled else None,
        reason=None if filled else "notional under the minimum",
        mode="paper",
        venue="http://127.0.0.1:8800",
        received_at=now,
        filled_at=now if filled else None,
        published_at=now + timedelta(milliseconds=40),
    )
    client.xadd(settings.result_stream, result.stream_fields())


@pytest.fixture
def fake_pipeline(redis_client: redis.Redis, redis_url: str) -> Iterator[threading.Event]:
    """A stand-in pipeline: every intent gets a result, `filled` except AXSUSDT which is `rejected`."""
    settings = settings_for(redis_url)
    stop = threading.Event()

    def answer() -> None:
        last_id = "0-0"  # the database is fresh: every intent in it is this test's
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        while not stop.is_set():
            for _stream, entries in client.xread({settings.intent_stream: last_id}, block=100) or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    rejected = json.loads(fields["payload"])["symbol"] == "AXSUSDT"
                    status = ResultStatus.REJECTED if rejected else ResultStatus.FILLED
                    publish_result(client, settings, fields, status)
        client.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield stop
    stop.set()
    thread.join(5)


def test_demo_intents_have_the_seed_producers_shape_and_parse_as_intents() -> None:
    """Each demo intent carries the seed's fields plus its own id, and qexec's Intent model accepts it."""
    now = utcnow()

    intent = demo_intent("demo-x-1", "AVAXUSDT", Side.BUY, size_usd=100.0, mark_price=12.77, now=now)

    assert set(intent) == SEED_KEYS | {"intent_id"}
    parsed = Intent.from_fields({"payload": json.dumps(intent)})
    assert parsed.id == "demo-x-1"
    assert parsed.leverage == 2
    assert intent["timestamp"] == now.isoformat()


@pytest.mark.parametrize(("side", "stop_loss", "take_profit"), [(Side.BUY, 97.5, 103.0), (Side.SELL, 102.5, 97.0)])
def test_stop_loss_and_take_profit_sit_on_the_right_side_of_the_mark(
    side: Side, stop_loss: float, take_profit: float
) -> None:
    """Stop-loss 2.5 % against the position, take-profit 3 % with it."""
    intent = demo_intent("demo-x-1", "BTCUSDT", side, size_usd=200.0, mark_price=100.0, now=utcnow())

    assert intent["entry_price"] == 100.0
    assert intent["stop_loss"] == stop_loss
    assert intent["take_profit"] == take_profit


def test_every_run_injects_fresh_intent_ids(redis_client: redis.Redis, redis_url: str) -> None:
    """Two runs write twelve intents with twelve different ids, so a second demo is never a duplicate."""
    settings = settings_for(redis_url)

    for _run in range(2):
        Demo(redis_client, settings, Lines()).inject(MARKS)

    entries = redis_client.xrange(settings.intent_stream)
    ids = {json.loads(fields["payload"])["intent_id"] for _entry_id, fields in entries}
    assert len(entries) == 2 * len(DEMO_ORDERS)
    assert len(ids) == len(entries)


def test_results_appear_as_rows_and_end_in_a_summary(
    redis_client: redis.Redis, redis_url: str, fake_pipeline: threading.Event
) -> None:
    """Each result of ours prints a row with price, quantity and latency; then one summary line."""
    settings = settings_for(redis_url)
    said = Lines()
    demo = Demo(redis_client, settings, said)

    start_id = demo.inject(MARKS)
    missing = demo.follow(start_id, threading.Event(), timeout_s=30)

    assert missing == []
    assert said.lines[0] == HEADER
    rows = said.lines[1:]
    assert len(rows) == len(DEMO_ORDERS)
    avax = next(row for row in rows if "AVAXUSDT" in row)
    assert avax.split()[2:6] == ["BUY", "filled", "10", "1.5"]
    assert avax.endswith(" ms")
    axs = next(row for row in rows if "AXSUSDT" in row)
    assert "rejected" in axs and "notional under the minimum" in axs
    assert demo.summary(0.5).startswith("demo: 6 of 6 intents have results after 0.5 s (5 filled, 1 rejected)")


def test_results_of_earlier_runs_and_other_intents_are_ignored(
    redis_client: redis.Redis, redis_url: str, fake_pipeline: threading.Event
) -> None:
    """Only results for this run's intent ids, published after its injection, make rows."""
    settings = settings_for(redis_url)
    earlier = Demo(redis_client, settings, Lines(), run_id="earlier")
    assert earlier.follow(earlier.inject(MARKS), threading.Event(), timeout_s=30) == []
    someone_else = demo_intent("someone-else-1", "ETHUSDT", Side.BUY, size_usd=150.0, mark_price=3000.0, now=utcnow())
    redis_client.xadd(settings.intent_stream, {"payload": json.dumps(someone_else)})
    said = Lines()
    demo = Demo(redis_client, settings, said, run_id="now")

    demo.follow(demo.inject({"BTCUSDT": 50_000.0}), threading.Event(), timeout_s=30)

    rows = said.lines[1:]
    assert len(rows) == 1
    assert rows[0].startswith("demo-now-2 ")


def test_missing_results_are_named_when_the_wait_ends(redis_client: redis.Redis, redis_url: str) -> None:
    """With no pipeline answering, follow() returns every injected id once its time is up."""
    demo = Demo(redis_client, settings_for(redis_url), Lines(), run_id="lonely")

    missing = demo.follow(demo.inject(MARKS), threading.Event(), timeout_s=0.3)

    assert missing == [f"demo-lonely-{n}" for n in range(1, 7)]


def test_the_demo_sends_nothing_while_no_bridge_listens(redis_client: redis.Redis, redis_url: str) -> None:
    """run_demo waits for the bridge's consumer group; without one it says so and injects nothing."""
    settings = settings_for(redis_url)
    said = Lines()

    run_demo(settings, said, threading.Event(), ready_timeout_s=0.3)

    assert "worker or bridge not up within 0.3 s; no intent sent" in said.text()
    assert redis_client.xlen(settings.intent_stream) == 0


def test_a_row_shows_dashes_for_what_a_result_does_not_have() -> None:
    """A result without price or quantity prints `-`; without a publish time, no latency."""
    row = result_row({"intent_id": "demo-x-1", "symbol": "ETHUSDT", "action": "SELL", "status": "failed"}, None)

    assert row.split() == ["demo-x-1", "ETHUSDT", "SELL", "failed", "-", "-", "-"]
