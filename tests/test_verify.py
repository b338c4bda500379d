"""`qexec verify`: test intents through the real pipeline, each order looked up at the venue, a proof file out."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from paper_fixtures import PaperExchange, free_port, qexec_command
from position_helpers import FlatSymbol, context
from stack_fixtures import ROOT, Stack, clean_env

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 120


def verify(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `qexec verify` to its end; stdout (the proof, unless --out) and stderr (progress) kept apart."""
    return subprocess.run(
        [*qexec_command(), "verify", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def read_proof(path: Path) -> dict[str, Any]:
    """A proof file's JSON."""
    proof: dict[str, Any] = json.loads(path.read_text())
    return proof


@pytest.fixture(scope="module")
def proven(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One `qexec verify --count 3` run against the stack, shared by the tests that read its proof."""
    # verify refuses a symbol that already holds a position; other tests on this shared account may have left one.
    client = stack.paper.client()
    client.futures_cancel_all_open_orders(symbol="ETHUSDT", conditional=True)
    for position in client.futures_position_information(symbol="ETHUSDT"):
        amount = Decimal(position["positionAmt"])
        if amount:
            client.futures_create_order(
                symbol="ETHUSDT",
                side="SELL" if amount > 0 else "BUY",
                type="MARKET",
                quantity=str(abs(amount)),
                reduceOnly="true",
            )
    out = tmp_path_factory.mktemp("verify") / "proof.json"
    done = verify(stack.env, "--count", "3", "--out", str(out), "--timeout-s", "60")
    return out, done


def test_verify_sends_three_intents_and_proves_each_order_at_the_venue(
    stack: Stack, proven: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    """Three test intents are filled, and the proof lists each order exactly as the venue reports it."""
    out, done = proven
    assert done.returncode == 0, done.stderr
    proof = read_proof(out)
    assert proof["problems"] == []
    assert proof["mode"] == "paper"
    assert proof["endpoint"] == stack.paper.url
    assert proof["stream"] == stack.settings.result_stream
    assert proof["timestamp"]
    orders = proof["verified_orders"]
    assert [order["side"] for order in orders] == ["BUY", "SELL", "BUY"]
    assert len({order["intent_id"] for order in orders}) == 3
    client = stack.paper.client()
    for order in orders:
        # Given the proof's order, when the venue is asked for it by id through a client of our own ...
        venue = client.futures_get_order(symbol=order["symbol"], orderId=order["orderId"])
        # ... then it says the same.
        assert venue["status"] == order["status"] == "FILLED"
        assert Decimal(venue["avgPrice"]) == Decimal(order["avgPrice"]) > 0
        assert Decimal(venue["executedQty"]) == Decimal(order["executedQty"]) > 0
        assert venue["side"] == order["side"]
        # And the message id is the result stream entry that reported this very order.
        [(_id, fields)] = stack.redis.xrange(stack.settings.result_stream, order["message_id"], order["message_id"])
        result = json.loads(fields["payload"])
        assert result["intent_id"] == order["intent_id"]
        assert result["order_id"] == order["orderId"]
        assert Decimal(str(result["entry_price"])) == Decimal(order["avgPrice"])
    assert "verify: 3 of 3 results match their orders at" in done.stderr


def test_verify_sizes_its_intents_just_above_the_minimum_notional(
    proven: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """Each test order is small: above ETHUSDT's 20 USDT minimum notional on the paper exchange, and not far."""
    out, _done = proven
    for order in read_proof(out)["verified_orders"]:
        notional = Decimal(order["avgPrice"]) * Decimal(order["executedQty"])
        assert Decimal(20) <= notional < Decimal(60)


def test_check_only_against_a_venue_without_those_orders_fails_and_names_them(
    stack: Stack,
    proven: tuple[Path, subprocess.CompletedProcess[str]],
    start_paper_server: Callable[..., PaperExchange],
    tmp_path: Path,
) -> None:
    """Results re-checked against another venue, which never saw those orders, fail with each order id named."""
    out, _done = proven
    orders = read_proof(out)["verified_orders"]
    # Given a second, fresh paper exchange that holds none of the orders the stack placed ...
    elsewhere = start_paper_server("--tick-ms", "0")
    env = dict(stack.env, QEXEC_EXCHANGE_URL=elsewhere.url)
    # ... when the earlier proof's results are checked against it ...
    recheck = tmp_path / "recheck.json"
    done = verify(env, "--check-only", str(out), "--out", str(recheck))
    # ... then every order is reported missing, by id, and verify fails.
    assert done.returncode == 1, done.stderr
    proof = read_proof(recheck)
    assert proof["verified_orders"] == []
    assert proof["endpoint"] == elsewhere.url
    assert {problem["orderId"] for problem in proof["problems"]} == {order["orderId"] for order in orders}
    for problem in proof["problems"]:
        assert f"order {problem['orderId']} (ETHUSDT) is not at the venue" in problem["problem"]
        assert f"order {problem['orderId']} (ETHUSDT) is not at the venue" in done.stderr


def test_check_only_of_the_same_results_at_the_same_venue_passes(
    stack: Stack, proven: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    """Re-checking results by message id and by intent id at the venue that filled them passes."""
    out, _done = proven
    first, second, _third = read_proof(out)["verified_orders"]
    done = verify(stack.env, "--check-only", f"{first['message_id']},{second['intent_id']}")
    assert done.returncode == 0, done.stderr
    proof = json.loads(done.stdout)
    assert [order["orderId"] for order in proof["verified_orders"]] == [first["orderId"], second["orderId"]]


def test_a_result_whose_price_differs_from_the_venue_is_reported(
    stack: Stack, proven: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    """A result claiming another price than the venue's avgPrice for its order fails verification."""
    out, _done = proven
    order = read_proof(out)["verified_orders"][0]
    [(_id, fields)] = stack.redis.xrange(stack.settings.result_stream, order["message_id"], order["message_id"])
    # Given a result on the stream that names a real order but not its real price ...
    claimed = json.loads(fields["payload"])
    claimed["entry_price"] = float(Decimal(order["avgPrice"]) + 1)
    claimed["intent_id"] = "verify-tampered-" + order["intent_id"]
    message_id = stack.redis.xadd(
        stack.settings.result_stream, {"payload": json.dumps(claimed), "intent_id": claimed["intent_id"]}
    )
    # ... verify says which order differs, and how.
    done = verify(stack.env, "--check-only", str(message_id))
    stack.redis.xdel(stack.settings.result_stream, message_id)  # the forgery is gone: the stream's contract holds
    assert done.returncode == 1
    [problem] = json.loads(done.stdout)["problems"]
    assert problem["orderId"] == order["orderId"] and problem["message_id"] == message_id
    assert f"order {order['orderId']} (ETHUSDT) differs at the venue: price: result entry_price" in problem["problem"]


def test_results_that_never_arrive_fail_verification(paper_exchange: PaperExchange, redis_url: str) -> None:
    """With no worker or bridge on that Redis, the first leg gets no result: verify fails and sends nothing more."""
    env = clean_env({"QEXEC_REDIS_URL": redis_url, "QEXEC_EXCHANGE_URL": paper_exchange.url})
    done = verify(env, "--count", "2", "--timeout-s", "1", "--symbol", "TRXUSDT")
    assert done.returncode == 1
    proof = json.loads(done.stdout)
    assert proof["verified_orders"] == []
    assert len(proof["problems"]) == 1
    assert all("no result on quantum:stream:trade.execution.res within 1 s" in p["problem"] for p in proof["problems"])
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert client.xlen("quantum:stream:trade.intent") == 1
    finally:
        client.close()


def test_verify_refuses_mainnet_without_allow_mainnet(redis_url: str) -> None:
    """In (armed) mainnet mode verify sends nothing unless --allow-mainnet is given."""
    env = clean_env(
        {
            "QEXEC_REDIS_URL": redis_url,
            "QEXEC_MODE": "mainnet",
            "QEXEC_MAINNET_CONFIRM": "I_UNDERSTAND",
            "QEXEC_API_KEY": "k" * 64,
            "QEXEC_API_SECRET": "s" * 64,
            "QEXEC_EXCHANGE_URL": f"http://127.0.0.1:{free_port()}",
        }
    )
    done = verify(env, "--count", "1")
    assert done.returncode == 2
    assert "--allow-mainnet" in done.stderr
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.exists("quantum:stream:trade.intent") == 0
    finally:
        client.close()


def test_verify_against_a_dead_venue_exits_with_fatal_venue_unavailable(redis_url: str) -> None:
    """A venue that does not answer stops verify before it sends anything."""
    url = f"http://127.0.0.1:{free_port()}"
    done = verify(clean_env({"QEXEC_REDIS_URL": redis_url, "QEXEC_EXCHANGE_URL": url}), "--count", "1")
    assert done.returncode == 3
    assert f"FATAL_VENUE_UNAVAILABLE mode=paper url={url}" in done.stderr


def test_verify_refuses_a_symbol_that_already_holds_a_position(stack: Stack) -> None:
    """An open position on the verify symbol is the user's: verify sends nothing and says how to proceed."""
    client = stack.paper.client()
    client.futures_create_order(symbol="TRXUSDT", side="BUY", type="MARKET", quantity="100")
    try:
        before = stack.redis.xlen(stack.settings.intent_stream)
        done = verify(stack.env, "--count", "2", "--symbol", "TRXUSDT")
        assert done.returncode == 2
        assert "TRXUSDT already holds a position" in done.stderr
        assert stack.redis.xlen(stack.settings.intent_stream) == before
    finally:
        client.futures_create_order(symbol="TRXUSDT", side="SELL", type="MARKET", quantity="100", reduceOnly="true")


def position_amount(stack: Stack, symbol: str) -> Decimal:
    """The symbol's position amount at the venue (0 when flat)."""
    return sum(
        (Decimal(p["positionAmt"]) for p in stack.paper.client().futures_position_information(symbol=symbol)),
        Decimal(0),
    )


def test_verify_closes_the_position_it_leaves_so_it_can_run_again(
    stack: Stack, proven: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    """`--count 3` ends on a BUY: verify closes what the venue says is left, says so in the proof, and a second
    `qexec verify` on the same symbol runs (it used to refuse: "already holds a position")."""
    out, done = proven
    assert done.returncode == 0, done.stderr
    [closed] = read_proof(out)["closed"]
    assert closed["symbol"] == "ETHUSDT" and closed["status"] == "FILLED"
    assert Decimal(closed["quantity"]) == Decimal(read_proof(out)["verified_orders"][2]["executedQty"])
    assert position_amount(stack, "ETHUSDT") == 0
    again = verify(stack.env, "--count", "1", "--timeout-s", "60")
    assert again.returncode == 0, again.stderr
    assert position_amount(stack, "ETHUSDT") == 0


def test_verify_keep_leaves_the_test_position_open(stack: Stack, flat_symbol: FlatSymbol) -> None:
    """With `--keep`, the last BUY's position stays, and the proof lists nothing closed."""
    flat_symbol(context(stack.settings), "LINKUSDT")  # verify refuses a symbol other tests left a position on
    done = verify(stack.env, "--count", "1", "--symbol", "LINKUSDT", "--keep", "--timeout-s", "60")
    try:
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["closed"] == []
        assert position_amount(stack, "LINKUSDT") > 0
    finally:
        amount = position_amount(stack, "LINKUSDT")
        if amount:
            stack.paper.client().futures_create_order(
                symbol="LINKUSDT", side="SELL", type="MARKET", quantity=str(amount), reduceOnly="true"
            )


def test_check_only_reads_an_old_protection_event_on_the_result_stream_as_such(stack: Stack) -> None:
    """History written by a qexec that put protection events on the result stream: `--check-only` on one says what
    it is, and does not count it as a failed result."""
    event = {"intent_id": "old-protected", "symbol": "ETHUSDT", "status": "placed", "sl_order_id": 1}
    message_id = stack.redis.xadd(
        stack.settings.result_stream,
        {"payload": json.dumps(event), "kind": "protection", "intent_id": "old-protected", "status": "placed"},
    )
    try:
        done = verify(stack.env, "--check-only", str(message_id))
    finally:
        stack.redis.xdel(stack.settings.result_stream, message_id)
    assert done.returncode == 0, done.stderr
    assert f"NOTE {message_id} is a protection event for intent old-protected" in done.stderr
    assert json.loads(done.stdout)["problems"] == []
