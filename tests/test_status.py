"""`qexec status`: one screen on the running stack — streams, consumers, dead letters, workers, beat, venue."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from paper_fixtures import free_port
from stack_fixtures import ROOT, Stack, seed_intent, unique_id, wait_for_line

from qexec.cli import main
from qexec.context import Context
from qexec.models import client_order_id
from qexec.ops import selftest
from qexec.ops.status import EXIT_REDIS_UNAVAILABLE, EXIT_VENUE_UNAVAILABLE
from qexec.venue.binance import BinanceVenue

pytestmark = pytest.mark.slow


def status_argv() -> list[str]:
    """`qexec status` once the command is registered on the CLI; the module's own command until then."""
    if "status" in main.commands:
        return [sys.executable, "-m", "qexec.cli", "status"]
    return [sys.executable, "-m", "qexec.ops.status"]


def run_status(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `qexec status` with the stack's environment (plus `env`) and capture what it prints."""
    return subprocess.run(
        [*status_argv(), *args],
        cwd=ROOT,
        env=dict(stack.env, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def status_json(stack: Stack, **env: str) -> tuple[int, dict[str, Any]]:
    """`qexec status --json`: its exit code and the report."""
    out = run_status(stack, "--json", **env)
    return out.returncode, json.loads(out.stdout)


@pytest.fixture(scope="module")
def filled(stack: Stack) -> dict[str, Any]:
    """A filled DOTUSDT intent, so the venue holds a position."""
    iid = unique_id("status")
    stack.inject(seed_intent(iid, symbol="DOTUSDT", position_size_usd=60.0))
    result = stack.wait_result(iid)
    assert result["status"] == "filled", result
    return result


@pytest.fixture
def resting_orders(stack: Stack, filled: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A resting LIMIT far below the mark and a stop-loss algo order, cancelled afterwards."""
    client = stack.paper.client()
    mark = Decimal(client.futures_mark_price(symbol="ETHUSDT")["markPrice"])
    tag = uuid.uuid4().hex[:10]
    order = client.futures_create_order(
        symbol="ETHUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.050",
        price=str((mark / 2).quantize(Decimal("0.01"))),
        newClientOrderId=f"status-{tag}",
    )
    dot_mark = Decimal(client.futures_mark_price(symbol="DOTUSDT")["markPrice"])
    algo = client.futures_create_order(  # not closePosition: the DOTUSDT position's own stop-loss is one
        symbol="DOTUSDT",
        side="SELL",
        type="STOP_MARKET",
        stopPrice=str((dot_mark / 2).quantize(Decimal("0.001"))),
        quantity="1.0",
        reduceOnly="true",
        clientAlgoId=f"status-sl-{tag}",
    )
    try:
        yield {"order": order, "algo": algo}
    finally:
        client.futures_cancel_order(symbol="ETHUSDT", orderId=order["orderId"])
        client.futures_cancel_algo_order(algoId=algo["algoId"])


def test_status_shows_the_streams_the_live_worker_and_the_venues_positions(
    stack: Stack, filled: dict[str, Any]
) -> None:
    """One screen: the three streams with their lengths, the bridge as a consumer, the worker, DOTUSDT's position."""
    out = run_status(stack)
    assert out.returncode == 0, out.stdout + out.stderr
    s = stack.settings
    for stream in (s.intent_stream, s.result_stream, s.dlq_stream):
        assert stream in out.stdout
    assert f"consumer group {s.consumer_group}" in out.stdout
    assert "bridge" in out.stdout
    assert "workers: 1 answered" in out.stdout
    assert "worker-" in out.stdout
    positions = out.stdout.split("positions (", 1)[1].split("open orders", 1)[0]
    assert "DOTUSDT" in positions


def test_status_json_reports_streams_consumers_workers_and_positions(stack: Stack, filled: dict[str, Any]) -> None:
    """`--json` prints the same report as JSON, with the streams' lengths as Redis has them."""
    code, report = status_json(stack)
    assert code == 0
    s = stack.settings
    assert report["streams"]["result"] == {"name": s.result_stream, "length": stack.redis.xlen(s.result_stream)}
    assert report["streams"]["dlq"]["name"] == s.dlq_stream
    assert report["group"]["exists"] and report["group"]["pending"] == 0
    assert "bridge" in [c["name"] for c in report["group"]["consumers"]]
    assert report["workers"]["ok"] and report["workers"]["names"]
    assert report["venue"]["ok"]
    dot = [p for p in report["venue"]["positions"] if p["symbol"] == "DOTUSDT"]
    assert dot and Decimal(dot[0]["amount"]) != 0
    assert report["inflight"]["placed"] >= 0 and isinstance(report["inflight"]["count"], int)


def test_status_lists_open_orders_and_open_algo_orders_at_the_venue(
    stack: Stack, resting_orders: dict[str, Any]
) -> None:
    """A resting LIMIT shows under open orders and a stop-loss under open algo orders, by their client ids."""
    code, report = status_json(stack)
    assert code == 0
    assert resting_orders["order"]["clientOrderId"] in [o["client_id"] for o in report["venue"]["open_orders"]]
    assert resting_orders["algo"]["clientAlgoId"] in [o["client_id"] for o in report["venue"]["open_algo_orders"]]
    text = run_status(stack).stdout
    assert resting_orders["order"]["clientOrderId"] in text
    assert resting_orders["algo"]["clientAlgoId"] in text


def test_status_shows_the_dead_letter_count_and_the_last_errors(stack: Stack) -> None:
    """A malformed entry shows up among the last dead letters, with its entry id and error."""
    bad_id = stack.redis.xadd(stack.settings.intent_stream, {"payload": "{not json"})
    deadline = time.monotonic() + 15
    while not any(d["entry_id"] == bad_id for d in stack.dead_letters()) and time.monotonic() < deadline:
        time.sleep(0.1)
    code, report = status_json(stack)
    assert code == 0
    letters = report["dead_letters"]
    assert letters["count"] == stack.redis.xlen(stack.settings.dlq_stream) >= 1
    assert letters["last"][0]["entry_id"] == bad_id
    assert letters["last"][0]["error"]
    assert bad_id in run_status(stack).stdout


def test_status_shows_beats_heartbeat_age_and_result(stack: Stack) -> None:
    """After beat's venue heartbeat, status shows how long ago it ran and that it passed."""
    selftest.venue_heartbeat(Context(settings=stack.settings, redis=stack.redis, venue=BinanceVenue(stack.settings)))
    code, report = status_json(stack)
    assert code == 0
    assert report["heartbeat"]["ok"] is True
    assert 0 <= report["heartbeat"]["age_s"] < 30
    assert "beat heartbeat:" in run_status(stack).stdout


def test_status_exits_non_zero_when_the_venue_does_not_answer_and_still_prints_the_redis_part(stack: Stack) -> None:
    """A venue that refuses connections is shown as not answering; streams are still shown; the exit code says so."""
    down = f"http://127.0.0.1:{free_port()}"
    out = run_status(stack, QEXEC_EXCHANGE_URL=down)
    assert out.returncode == EXIT_VENUE_UNAVAILABLE, out.stdout + out.stderr
    assert "NOT ANSWERING" in out.stdout
    assert stack.settings.intent_stream in out.stdout
    assert "workers: 1 answered" in out.stdout
    code, report = status_json(stack, QEXEC_EXCHANGE_URL=down)
    assert code == EXIT_VENUE_UNAVAILABLE
    assert report["venue"]["ok"] is False and report["venue"]["error"]
    assert report["streams"]["intent"]["length"] >= 1


def test_status_exits_non_zero_when_redis_does_not_answer(stack: Stack) -> None:
    """With Redis unreachable, status says so, still asks the venue, and exits with its own code."""
    out = run_status(stack, QEXEC_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert out.returncode == EXIT_REDIS_UNAVAILABLE, out.stdout + out.stderr
    assert "redis: NOT ANSWERING" in out.stdout
    assert "workers: no answer" in out.stdout
    assert "ok" in out.stdout.split("venue ", 1)[1]


def test_status_names_the_protection_of_the_newest_entries(stack: Stack, filled: dict[str, Any]) -> None:
    """The protection stream's newest events, with the intent, its entry order and both algo ids: "is it protected"
    answered without joining streams by guesswork."""
    deadline = time.monotonic() + 15
    while not stack.protection_events(filled["intent_id"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    [event] = stack.protection_events(filled["intent_id"])
    code, report = status_json(stack)
    assert code == 0
    assert report["streams"]["protection"]["name"] == stack.settings.protection_stream
    [row] = [row for row in report["protection"] if row["intent_id"] == filled["intent_id"]]
    assert row["entry_order_id"] == filled["order_id"]
    assert (row["sl_order_id"], row["tp_order_id"]) == (event["sl_order_id"], event["tp_order_id"])
    assert row["sl_order_id"] is not None and row["tp_order_id"] is not None
    assert re.search(rf"{filled['intent_id']}\s+DOTUSDT\s+placed\s", run_status(stack).stdout)


def test_status_counts_an_intent_whose_submit_is_still_on_its_way_as_in_flight(stack: Stack) -> None:
    """An intent whose order submit has not been answered yet (the venue is slow) has no result and no placed
    order: `in flight` counts it all the same (it used to say 0 for every intent in its `submitting` phase)."""
    _code, before = status_json(stack)
    iid = unique_id("slowsub")
    body = seed_intent(iid, symbol="DOTUSDT", position_size_usd=60.0)
    stack.paper.add_fault(kind="slow", delay_ms=4000, client_order_id=client_order_id(iid), count=1)
    stack.inject(body)
    submitted = re.compile(rf"ORDER_SUBMIT .*intent_id={iid} ")
    wait_for_line(stack.logs_dir / "worker.log", submitted, stack.processes["worker"], 15)
    _code, during = status_json(stack)
    assert during["inflight"]["count"] == before["inflight"]["count"] + 1, (before["inflight"], during["inflight"])
    assert stack.wait_result(iid)["status"] == "filled"
    _code, after = status_json(stack)
    assert after["inflight"]["count"] == before["inflight"]["count"]
