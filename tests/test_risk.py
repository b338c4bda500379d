"""Risk limits and the kill switch (qexec/pipeline/risk.py, qexec/ops/halt.py) through a real worker and bridge.

The limits' pipeline has its own Redis and paper exchange, started with symbol lists, a total-notional limit and an
open-positions limit that the session's `stack` does not have; an intent's age and the halt's exception for
reductions are checked on the session's `stack`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from paper_fixtures import PaperExchange, start_paper
from position_helpers import FlatSymbol, context
from private_stack import private_stack
from stack_fixtures import ROOT, Stack, unique_id

from qexec import constants
from qexec.models import client_order_id
from qexec.ops import halt

pytestmark = pytest.mark.slow

RISK_ENV = {
    "QEXEC_SYMBOL_ALLOW": "BTCUSDT,ETHUSDT,SOLUSDT,LINKUSDT,DOGEUSDT",
    "QEXEC_SYMBOL_DENY": "DOGEUSDT",
    "QEXEC_MAX_TOTAL_NOTIONAL_USD": "2000",
    "QEXEC_MAX_OPEN_POSITIONS": "2",
    "QEXEC_POSITIONS_CACHE_S": "0",
}


@pytest.fixture(scope="module")
def risky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A worker and a bridge with the risk limits above, on a Redis and a paper exchange of their own."""
    paper = start_paper("--tick-ms", "0")
    try:
        with private_stack(paper, tmp_path_factory.mktemp("risk-logs"), RISK_ENV) as running:
            yield running
    finally:
        paper.stop()


@pytest.fixture
def fresh(risky: Stack) -> Stack:
    """The risk stack with a fresh paper account and no halt in force."""
    risky.paper.admin("POST", "/paper/v1/reset")
    risky.redis.delete(constants.HALT_KEY)
    return risky


def intent(symbol: str, size_usd: float, side: str = "BUY", **change: Any) -> dict[str, Any]:
    """A fresh market intent with its own id."""
    return {
        "intent_id": unique_id(symbol.lower()),
        "symbol": symbol,
        "side": side,
        "position_size_usd": size_usd,
        "leverage": 2,
        "timestamp": datetime.now(UTC).isoformat(),
    } | change


def run(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    """Inject an intent and wait for its result."""
    stack.inject(body)
    return stack.wait_result(body["intent_id"], timeout_s=45)


def placed(stack: Stack, intent_id: str) -> list[dict[str, Any]]:
    """Orders the venue holds under the intent's client order id."""
    return list(stack.paper.orders(clientOrderId=client_order_id(intent_id)))


def qexec(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a `qexec` command with the stack's settings."""
    return subprocess.run(
        [sys.executable, "-m", "qexec.cli", *args],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.parametrize(
    ("symbol", "reason"),
    [("DOGEUSDT", "deny list"), ("NEARUSDT", "not on the allow list")],
)
def test_symbols_off_the_allow_list_or_on_the_deny_list_are_rejected(fresh: Stack, symbol: str, reason: str) -> None:
    """QEXEC_SYMBOL_DENY wins over QEXEC_SYMBOL_ALLOW; a symbol outside the allow list is refused too."""
    body = intent(symbol, 50.0)
    result = run(fresh, body)
    assert result["status"] == "rejected", result
    assert reason in result["reason"]
    assert placed(fresh, body["intent_id"]) == []


def test_the_total_notional_limit_counts_the_open_positions_at_the_venue(fresh: Stack) -> None:
    """1500 USDT open in BTC: a 600 USDT ETH intent would make 2100 > 2000 and is rejected; 400 USDT passes."""
    assert run(fresh, intent("BTCUSDT", 1500.0))["status"] == "filled"
    over = intent("ETHUSDT", 600.0)
    result = run(fresh, over)
    assert result["status"] == "rejected", result
    assert "total notional" in result["reason"] and "above the limit 2000" in result["reason"]
    assert placed(fresh, over["intent_id"]) == []
    assert run(fresh, intent("ETHUSDT", 400.0))["status"] == "filled"


def test_the_open_positions_limit_refuses_a_position_in_a_third_symbol(fresh: Stack) -> None:
    """Two symbols held and a limit of two: a third symbol's intent is rejected."""
    assert run(fresh, intent("BTCUSDT", 300.0))["status"] == "filled"
    assert run(fresh, intent("ETHUSDT", 100.0))["status"] == "filled"
    third = intent("SOLUSDT", 100.0)
    result = run(fresh, third)
    assert result["status"] == "rejected", result
    assert "above the limit of 2 open positions" in result["reason"]
    assert placed(fresh, third["intent_id"]) == []


def test_halt_rejects_new_intents_as_halted_until_resume(fresh: Stack) -> None:
    """`qexec halt` sets the flag: the next intent ends `rejected` with reason `halted`; `qexec resume` lifts it."""
    halted = qexec(fresh, "halt", "--reason", "drill")
    assert halted.returncode == 0, halted.stderr
    assert "HALTED" in halted.stdout
    blocked = intent("BTCUSDT", 300.0)
    result = run(fresh, blocked)
    assert result["status"] == "rejected", result
    assert result["reason"] == "halted: drill"
    assert placed(fresh, blocked["intent_id"]) == []
    resumed = qexec(fresh, "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "RESUMED" in resumed.stdout
    assert run(fresh, intent("BTCUSDT", 300.0))["status"] == "filled"


def open_book(paper: PaperExchange, *, hedge: bool) -> None:
    """Positions in three symbols (one short), a resting limit order and a waiting stop, straight at the venue."""
    client = paper.client()
    extra: dict[str, str] = {}
    for symbol, side, qty in (("BTCUSDT", "BUY", "0.01"), ("ETHUSDT", "SELL", "0.2"), ("SOLUSDT", "BUY", "3")):
        if hedge:
            extra = {"positionSide": "LONG" if side == "BUY" else "SHORT"}
        client.futures_create_order(symbol=symbol, side=side, type="MARKET", quantity=qty, **extra)
    mark = Decimal(client.futures_mark_price(symbol="BTCUSDT")["markPrice"])
    limit_side = {"positionSide": "LONG"} if hedge else {}
    client.futures_create_order(
        symbol="BTCUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.01",
        price=str(round(mark * Decimal("0.5"), 1)),
        **limit_side,
    )
    stop: dict[str, str] = {"positionSide": "LONG"} if hedge else {}
    client.futures_create_order(
        symbol="BTCUSDT",
        side="SELL",
        type="STOP_MARKET",
        stopPrice=str(round(mark * Decimal("0.8"), 1)),
        closePosition="true",
        **stop,
    )


@pytest.mark.parametrize("hedge", [False, True], ids=["one-way", "hedge"])
def test_halt_flatten_closes_every_position_and_cancels_every_order(fresh: Stack, hedge: bool) -> None:
    """`qexec halt --flatten`: no position, no open order and no algo order is left, and new intents are halted."""
    # Given positions long and short, a resting limit order and a stop-loss algo order
    fresh.paper.admin("POST", "/paper/v1/reset", {"dual_side": hedge})
    open_book(fresh.paper, hedge=hedge)
    client = fresh.paper.client()
    assert len([p for p in client.futures_position_information() if Decimal(p["positionAmt"]) != 0]) == 3
    assert client.futures_get_open_orders() and client.futures_get_open_orders(conditional=True)
    # When the operator halts and flattens
    done = qexec(fresh, "halt", "--flatten", "--reason", "flatten drill")
    # Then everything at the venue is closed and new intents are refused
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FLAT" in done.stdout
    assert [p for p in client.futures_position_information() if Decimal(p["positionAmt"]) != 0] == []
    assert client.futures_get_open_orders() == []
    assert client.futures_get_open_orders(conditional=True) == []
    blocked = intent("BTCUSDT", 300.0)
    assert run(fresh, blocked)["reason"] == "halted: flatten drill"
    assert qexec(fresh, "resume").returncode == 0


def test_an_intent_without_timestamp_is_as_old_as_its_stream_entry(stack: Stack, tmp_path: Path) -> None:
    """An intent queued 10 minutes ago with no `timestamp` (a bridge outage) is rejected as stale, not traded at
    today's price; one with a fresh `timestamp` in an old entry too (the earlier of the two counts)."""
    with private_stack(stack.paper, tmp_path, {}, bridge=False) as own:
        written_ms = int(time.time() * 1000) - 600_000
        bare, stamped = unique_id("old"), unique_id("oldts")
        body = {"symbol": "NEARUSDT", "side": "BUY", "position_size_usd": 50}
        own.redis.xadd(own.settings.intent_stream, {"payload": json.dumps(body | {"intent_id": bare})}, id=written_ms)
        fresh = body | {"intent_id": stamped, "timestamp": datetime.now(UTC).isoformat()}
        own.redis.xadd(own.settings.intent_stream, {"payload": json.dumps(fresh)}, id=written_ms + 1)
        orders = stack.paper.stats()["orders_placed"]
        own.start_bridge()
        for iid in (bare, stamped):
            result = own.wait_result(iid)
            assert result["status"] == "rejected", result
            assert re.match(r"stale: intent is 6\d\ds old", result["reason"]), result["reason"]
        assert stack.paper.stats()["orders_placed"] == orders


def test_a_halt_stops_new_exposure_but_lets_a_reduction_through(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """During `qexec halt`, a BUY is rejected as halted while a reduce-only SELL of the open long is filled."""
    symbol = "AVAXUSDT"
    ctx = context(stack.settings)
    flat_symbol(ctx, symbol)
    opened = unique_id("pre")
    stack.inject({"intent_id": opened, "symbol": symbol, "side": "BUY", "position_size_usd": 100, "leverage": 2})
    assert stack.wait_result(opened)["status"] == "filled"
    halt.halt(stack.redis, reason="drill")
    try:
        more, less = unique_id("more"), unique_id("less")
        stack.inject({"intent_id": more, "symbol": symbol, "side": "BUY", "position_size_usd": 50})
        reduce = {"intent_id": less, "symbol": symbol, "side": "SELL", "position_size_usd": 50, "reduce_only": True}
        stack.inject(reduce)
        assert stack.wait_result(more)["reason"] == "halted: drill"
        assert stack.wait_result(less)["status"] == "filled"
    finally:
        halt.resume(stack.redis)
