"""Several accounts in one deployment (README "Many accounts") through a real worker, bridge and paper exchange that
serves three accounts, each with its own key pair, balance, positions and order counts: an intent names its account
(or several), each account trades only its own, and a halt can stop one account alone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from binance.client import Client
from paper_fixtures import PaperExchange, free_port, start_paper
from position_helpers import context
from private_stack import private_stack
from stack_fixtures import ROOT, Stack, seed_intent, unique_id

from qexec import alerts, constants
from qexec.config import Settings
from qexec.context import Context
from qexec.errors import UnknownAccount
from qexec.models import Intent
from qexec.ops import halt, selftest
from qexec.pipeline import admission, place
from qexec.pipeline.bridge import Bridge
from qexec.pipeline.order_record import save_state
from qexec.positions import monitor
from qexec.venue.binance import BinanceVenue
from qexec.worker import runtime, tasks

pytestmark = pytest.mark.slow

ACCOUNTS = ("main", "sleeve")
ACCOUNTS_ENV = {
    "QEXEC_ACCOUNTS": ",".join(ACCOUNTS),
    # sleeve trades twice every size (its multiplier), and no leverage above 3
    "QEXEC_ACCOUNT_SLEEVE_SIZE_MULTIPLIER": "2",
    "QEXEC_ACCOUNT_SLEEVE_MAX_LEVERAGE": "3",
    # main holds at most 1,000 USDT of positions; the others 100,000
    "QEXEC_MAX_TOTAL_NOTIONAL_USD": "100000",
    "QEXEC_ACCOUNT_MAIN_MAX_TOTAL_NOTIONAL_USD": "1000",
}


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A worker and a bridge for `default`, `main` and `sleeve`, on a paper exchange serving the three (each with the
    paper keys qexec gives an account without keys of its own)."""
    served = [arg for name in ACCOUNTS for arg in ("--account", ":".join((name, *constants.paper_keys(name))))]
    paper = start_paper("--tick-ms", "0", "--weight-limit", "24000", *served)
    try:
        with private_stack(paper, tmp_path_factory.mktemp("accounts-logs"), ACCOUNTS_ENV) as running:
            yield running
    finally:
        paper.stop()


@pytest.fixture
def fresh(accounts: Stack) -> Stack:
    """The accounts' stack with fresh paper accounts and no halt in force."""
    accounts.paper.admin("POST", "/paper/v1/reset")
    accounts.redis.delete(constants.HALT_KEY, *(constants.halt_key(name) for name in ("default", *ACCOUNTS)))
    return accounts


def client_of(paper: PaperExchange, account: str) -> Client:
    """python-binance on the paper exchange with the account's own keys."""
    key, secret = constants.paper_keys(account)
    return paper.client(api_key=key, api_secret=secret)


def qexec_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The `qexec` command line with the stack's settings, to its end."""
    command = [sys.executable, "-c", "from qexec.cli import main; main()", *args]
    return subprocess.run(command, env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)


def position_amounts(paper: PaperExchange, account: str, symbol: str) -> list[Decimal]:
    """The account's open position amounts on a symbol, as the venue reports them to its keys."""
    rows = client_of(paper, account).futures_position_information(symbol=symbol)
    return [Decimal(p["positionAmt"]) for p in rows if Decimal(p["positionAmt"]) != 0]


def open_algo_types(paper: PaperExchange, account: str, symbol: str) -> list[str]:
    """The types of the account's open algo (protective) orders on a symbol."""
    return sorted(o["orderType"] for o in client_of(paper, account).futures_get_open_algo_orders(symbol=symbol))


def wait_protected(stack: Stack, intent_id: str, timeout_s: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while not (found := stack.protection_events(intent_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def intent(symbol: str, side: str, size: float, price: float, **change: Any) -> dict[str, Any]:
    """A fresh intent near `price` with a stop-loss and take-profit 2 % and 4 % away."""
    sl, tp = (price * 0.98, price * 1.04) if side == "BUY" else (price * 1.02, price * 0.96)
    return (
        seed_intent(
            unique_id("acct"),
            symbol=symbol,
            side=side,
            position_size_usd=size,
            entry_price=price,
            stop_loss=sl,
            take_profit=tp,
            leverage=2,
        )
        | change
    )


def test_two_accounts_trade_one_symbol_each_in_its_own_account(fresh: Stack) -> None:
    """main buys ETHUSDT and sleeve sells it at once: each result names its account, each position and its stop-loss
    and take-profit are at that account alone, and each account's order count is its own."""
    fresh.paper.set_price("ETHUSDT", "3000")
    buy = intent("ETHUSDT", "BUY", 300.0, 3000.0, account="main")
    sell = intent("ETHUSDT", "SELL", 300.0, 3000.0, account="sleeve")
    fresh.inject(buy)
    fresh.inject(sell)

    bought, sold = fresh.wait_result(buy["intent_id"]), fresh.wait_result(sell["intent_id"])
    assert (bought["status"], bought["account"]) == ("filled", "main"), bought
    assert (sold["status"], sold["account"]) == ("filled", "sleeve"), sold
    assert [e["account"] for e in wait_protected(fresh, buy["intent_id"])] == ["main"]
    assert [e["account"] for e in wait_protected(fresh, sell["intent_id"])] == ["sleeve"]

    assert position_amounts(fresh.paper, "main", "ETHUSDT") == [Decimal("0.100")]
    assert position_amounts(fresh.paper, "sleeve", "ETHUSDT") == [Decimal("-0.200")]  # sleeve's multiplier: 2
    assert position_amounts(fresh.paper, "default", "ETHUSDT") == []
    assert open_algo_types(fresh.paper, "main", "ETHUSDT") == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    assert open_algo_types(fresh.paper, "sleeve", "ETHUSDT") == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    assert open_algo_types(fresh.paper, "default", "ETHUSDT") == []
    # each account's entry and its two protective orders, counted in its own budget (the weight is the IP's)
    for name in ACCOUNTS:
        spent = fresh.redis.hgetall(f"qexec:account:{name}:limits:orders-1m")
        assert sum(int(v) for v in spent.values()) >= 3, (name, spent)
    assert fresh.redis.exists("qexec:limits:weight-1m")


def test_a_fan_out_intent_trades_every_account_it_names_with_one_result_each(fresh: Stack) -> None:
    """One signal for default, main and sleeve: three entry orders, three results, each naming its account under a
    derived intent id, each sized for its account (sleeve's multiplier), each protected at its own account."""
    fresh.paper.set_price("SOLUSDT", "150")
    signal = intent("SOLUSDT", "BUY", 150.0, 150.0, accounts=["default", *ACCOUNTS])
    fresh.inject(signal)

    results = {name: fresh.wait_result(f"{signal['intent_id']}:{name}") for name in ("default", *ACCOUNTS)}
    assert {name: (r["status"], r["account"]) for name, r in results.items()} == {
        name: ("filled", name) for name in ("default", *ACCOUNTS)
    }
    assert [r["quantity"] for r in results.values()] == [1.0, 1.0, 2.0]
    assert fresh.results(signal["intent_id"]) == []  # no result under the signal's own id: one per account
    for name in ("default", *ACCOUNTS):
        assert position_amounts(fresh.paper, name, "SOLUSDT") == [Decimal(str(results[name]["quantity"]))]
        assert [e["status"] for e in wait_protected(fresh, f"{signal['intent_id']}:{name}")] == ["placed"]
        assert open_algo_types(fresh.paper, name, "SOLUSDT") == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    client_ids = {r["client_order_id"] for r in results.values()}
    assert len(client_ids) == 3


def test_a_fan_out_with_its_own_size_per_account_trades_those_sizes(fresh: Stack) -> None:
    """`accounts` as a mapping gives each account its own position_size_usd (no multiplier on top)."""
    fresh.paper.set_price("BNBUSDT", "600")
    signal = intent("BNBUSDT", "SELL", 600.0, 600.0, accounts={"main": 600.0, "sleeve": 1200.0})
    fresh.inject(signal)
    main, sleeve = (fresh.wait_result(f"{signal['intent_id']}:{name}") for name in ACCOUNTS)
    assert (main["status"], main["quantity"]) == ("filled", 1.0), main
    assert (sleeve["status"], sleeve["quantity"]) == ("filled", 2.0), sleeve


def test_an_intent_for_an_account_not_configured_is_rejected_with_the_reason(fresh: Stack) -> None:
    """`account: nosuch`: a `rejected` result naming the account and the configured ones; no order anywhere."""
    unknown = intent("ETHUSDT", "BUY", 300.0, 3000.0, account="nosuch")
    fresh.inject(unknown)
    result = fresh.wait_result(unknown["intent_id"])
    assert result["status"] == "rejected" and result["account"] == "nosuch", result
    assert "unknown account 'nosuch'" in result["reason"] and "main" in result["reason"], result
    assert fresh.paper.orders(clientOrderId=result["client_order_id"]) == []


def test_an_account_s_own_limits_apply_to_it_alone(fresh: Stack) -> None:
    """sleeve's QEXEC_ACCOUNT_SLEEVE_MAX_LEVERAGE=3 rejects a 5x intent there; the same intent fills for main."""
    fresh.paper.set_price("LINKUSDT", "15")
    on_sleeve = intent("LINKUSDT", "BUY", 150.0, 15.0, account="sleeve", leverage=5)
    on_main = intent("LINKUSDT", "BUY", 150.0, 15.0, account="main", leverage=5)
    fresh.inject(on_sleeve)
    fresh.inject(on_main)
    rejected, filled = fresh.wait_result(on_sleeve["intent_id"]), fresh.wait_result(on_main["intent_id"])
    assert rejected["status"] == "rejected" and "leverage" in rejected["reason"], rejected
    assert (filled["status"], filled["leverage"]) == ("filled", 5), filled


def test_an_account_s_total_notional_limit_counts_its_own_positions_not_another_account_s(fresh: Stack) -> None:
    """main holds 900 USDT (its limit: 1,000); default's entry reads default's positions; main's next 500 USDT entry
    right after is rejected from main's own positions, not waved through by what was read of default's."""
    fresh.paper.set_price("DOTUSDT", "5")
    held = intent("DOTUSDT", "BUY", 900.0, 5.0, account="main")
    fresh.inject(held)
    assert fresh.wait_result(held["intent_id"])["status"] == "filled"
    time.sleep(2.2)  # older than QEXEC_POSITIONS_CACHE_S (2 s): what main's own check read is stale now
    on_default = intent("DOTUSDT", "BUY", 100.0, 5.0)
    fresh.inject(on_default)
    assert fresh.wait_result(on_default["intent_id"])["status"] == "filled"
    more = intent("DOTUSDT", "BUY", 500.0, 5.0, account="main")
    fresh.inject(more)
    refused = fresh.wait_result(more["intent_id"])
    assert refused["status"] == "rejected" and "total notional" in refused["reason"], refused


def test_a_halt_of_one_account_rejects_its_intents_and_no_others(fresh: Stack) -> None:
    """`qexec halt --account main`: main's intents are rejected `halted`, sleeve's and default's still fill; `qexec
    resume --account main` lifts it; a halt of an account not configured is refused."""

    def qexec(*args: str) -> subprocess.CompletedProcess[str]:
        return qexec_cli(fresh, *args)

    done = qexec("halt", "--account", "main", "--reason", "main's drill")
    assert done.returncode == 0, done.stderr
    assert "account main" in done.stdout
    fresh.paper.set_price("LTCUSDT", "100")
    on_main = intent("LTCUSDT", "BUY", 300.0, 100.0, account="main")
    on_sleeve = intent("LTCUSDT", "BUY", 300.0, 100.0, account="sleeve")
    on_default = intent("LTCUSDT", "BUY", 300.0, 100.0)
    for one in (on_main, on_sleeve, on_default):
        fresh.inject(one)
    halted = fresh.wait_result(on_main["intent_id"])
    assert (halted["status"], halted["reason"]) == ("rejected", "halted: main's drill"), halted
    assert fresh.wait_result(on_sleeve["intent_id"])["status"] == "filled"
    assert fresh.wait_result(on_default["intent_id"])["status"] == "filled"
    status = qexec("status")
    assert "kill switch: HALTED, account main (main's drill)" in status.stdout, status.stdout
    assert "kill switch: HALTED, every account" not in status.stdout

    refused = qexec("halt", "--account", "nosuch")
    assert refused.returncode != 0 and "no account 'nosuch'" in refused.stderr, refused
    assert qexec("resume", "--account", "main").returncode == 0
    assert "kill switch: trading" in qexec("status").stdout
    again = intent("LTCUSDT", "BUY", 300.0, 100.0, account="main")
    fresh.inject(again)
    assert fresh.wait_result(again["intent_id"])["status"] == "filled"


def test_a_flatten_that_fails_at_one_account_still_flattens_the_others(fresh: Stack) -> None:
    """`qexec halt --flatten` with default's venue answering 503: main's and sleeve's positions are still closed, and
    the command fails naming default, whose position is left."""
    fresh.paper.set_price("XRPUSDT", "0.6")
    opened = [intent("XRPUSDT", "BUY", 60.0, 0.6, account=name) for name in ("default", *ACCOUNTS)]
    for one in opened:
        fresh.inject(one)
    for one in opened:
        assert fresh.wait_result(one["intent_id"])["status"] == "filled"
    fresh.paper.add_fault(kind="unavailable", endpoint="GET /fapi/v1/openOrders", account="default", count=0)
    try:
        done = qexec_cli(fresh, "halt", "--flatten", "--reason", "drill", "--wait", "1")
    finally:
        fresh.paper.admin("DELETE", "/paper/v1/faults")
        halt.resume(fresh.redis)
    assert done.returncode != 0 and "not flat: default" in done.stderr, (done.stdout, done.stderr)
    assert "flatten failed at the venue" in done.stderr
    assert position_amounts(fresh.paper, "main", "XRPUSDT") == []
    assert position_amounts(fresh.paper, "sleeve", "XRPUSDT") == []
    assert position_amounts(fresh.paper, "default", "XRPUSDT") != []


def test_a_global_halt_stops_every_account(fresh: Stack) -> None:
    """`qexec halt` (no account): every account's intents are rejected."""
    halt.halt(fresh.redis, reason="all stop")
    try:
        ones = [intent("LTCUSDT", "BUY", 300.0, 100.0, account=name) for name in ACCOUNTS]
        for one in ones:
            fresh.inject(one)
        for one in ones:
            assert fresh.wait_result(one["intent_id"])["reason"] == "halted: all stop"
    finally:
        halt.resume(fresh.redis)


def test_the_worker_refuses_to_start_when_an_account_fails_its_self_test(accounts: Stack, tmp_path: Path) -> None:
    """An account the venue does not know (no key pair there): the worker stops at start with the account named,
    instead of trading the accounts that pass."""
    env = dict(accounts.env, QEXEC_ACCOUNTS="main,sleeve,ghost")
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "qexec", "worker", "--pool", "threads", "-c", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr[-2000:]
    assert "FATAL_VENUE_UNAVAILABLE" in done.stderr and "account=ghost" in done.stderr, done.stderr[-2000:]


def test_beat_s_venue_heartbeat_fails_when_one_account_s_keys_stop_working(accounts: Stack) -> None:
    """The heartbeat checks every account's keys: with one the venue does not know (revoked, say), it records the
    failure naming that account, where `qexec status` and the alerts read it."""
    settings = accounts.settings.model_copy(update={"accounts": "main,sleeve,ghost"})
    ctxs = [
        Context(settings=own, redis=accounts.redis, venue=BinanceVenue(own))
        for own in map(settings.for_account, settings.account_names)
    ]
    record = selftest.venue_heartbeat(*ctxs)
    assert record["ok"] == 0 and record["error"].startswith("account ghost: "), record
    assert accounts.redis.hget(constants.HEARTBEAT_KEY, "ok") == "0"
    assert selftest.venue_heartbeat(*ctxs[:3])["ok"] == 1


def test_celery_call_submit_intent_fans_out_too(accounts: Stack) -> None:
    """`celery call qexec.submit_intent` with `accounts`: each account's result, under its derived id."""
    accounts.paper.set_price("ADAUSDT", "0.5")
    signal = intent("ADAUSDT", "BUY", 50.0, 0.5, accounts=list(ACCOUNTS))
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "qexec", "call", "qexec.submit_intent", "--kwargs", json.dumps(signal)],
        cwd=ROOT,
        env=accounts.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for name in ACCOUNTS:
        result = accounts.wait_result(f"{signal['intent_id']}:{name}")
        assert (result["status"], result["account"]) == ("filled", name), result


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"account": "main", "accounts": ["sleeve"]}, "its account or its accounts, not both"),
        ({"accounts": []}, "at least one account"),
        ({"accounts": ["main", "main"]}, "names an account twice"),
        ({"account": "Main"}, "account"),
        ({"accounts": {"main": True}}, "not a boolean"),
        ({"intent_id": "x" * 126, "accounts": ["main"]}, "as account main's intent: intent_id"),
    ],
    ids=["both", "empty", "twice", "malformed", "boolean-size", "derived-id-too-long"],
)
def test_a_malformed_account_field_is_dead_lettered_with_the_reason(
    accounts: Stack, change: dict[str, Any], error: str
) -> None:
    """A malformed `account`/`accounts` is a dead letter with the reason, acknowledged; nothing is traded."""
    bad = intent("ETHUSDT", "BUY", 300.0, 3000.0, **change)
    entry_id = accounts.inject(bad)
    deadline = time.monotonic() + 15
    while not (found := [d for d in accounts.dead_letters() if d.get("entry_id") == entry_id]):
        assert time.monotonic() < deadline, "no dead letter"
        time.sleep(0.1)
    assert error in found[0]["error"], found[0]
    assert accounts.results(bad["intent_id"]) == []


def test_one_account_s_failing_monitor_pass_does_not_stop_the_others(fresh: Stack) -> None:
    """default's venue does not answer; main's stop-loss was canceled by hand: the monitor's pass over both accounts
    logs default's failure and still re-places main's stop-loss."""
    fresh.paper.set_price("ATOMUSDT", "8")
    own = intent("ATOMUSDT", "BUY", 80.0, 8.0, account="main")
    fresh.inject(own)
    assert fresh.wait_result(own["intent_id"])["status"] == "filled"
    assert [e["status"] for e in wait_protected(fresh, own["intent_id"])] == ["placed"]
    main_client = client_of(fresh.paper, "main")
    [stop] = [o for o in main_client.futures_get_open_algo_orders(symbol="ATOMUSDT") if o["orderType"] == "STOP_MARKET"]
    main_client.futures_cancel_algo_order(symbol="ATOMUSDT", algoId=stop["algoId"])  # a change made outside qexec
    assert open_algo_types(fresh.paper, "main", "ATOMUSDT") == ["TAKE_PROFIT_MARKET"]

    dead = fresh.settings.model_copy(update={"exchange_url": f"http://127.0.0.1:{free_port()}", "use_streams": False})
    main = fresh.settings.for_account("main")
    contexts = [
        Context(settings=dead, redis=fresh.redis, venue=BinanceVenue(dead, fresh.redis)),
        Context(settings=main, redis=fresh.redis, venue=BinanceVenue(main, fresh.redis)),
    ]
    report = monitor.watch_all(contexts)
    assert "ATOMUSDT:LONG" in report["repaired"], report
    assert open_algo_types(fresh.paper, "main", "ATOMUSDT") == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]


def test_a_worker_without_the_account_never_acts_for_it_with_another_account_s_keys(stack: Stack) -> None:
    """A worker whose QEXEC_ACCOUNTS lacks `ghost` (a rolling deploy, an account removed with work in flight) gets a
    ghost intent whose order another worker already sent: it refuses (UnknownAccount: the step waits for a worker
    that has the account) instead of looking the order up, or sending it again, at default's account. An intent
    that has sent nothing yet may still be rejected with default's settings."""
    ctx = context(stack.settings)
    ghost = Intent.from_fields(seed_intent(unique_id("ghost"), symbol="ETHUSDT", account="ghost"))
    ticket = admission.new_ticket(ghost, entry_id=None)
    save_state(ticket, ctx, phase="placed", order_id="123", ticket_json=ticket.model_dump_json())
    with pytest.raises(UnknownAccount):
        place.place_entry(ticket, ctx)
    assert stack.paper.orders(clientOrderId=ticket.client_order_id) == [], "nothing went to default's account"
    with pytest.raises(UnknownAccount):
        runtime.context("ghost")
    assert runtime.context("ghost", or_default=True).account == "default"
    # protecting its filled entry never runs with default's settings; clearing after its rejection may
    as_task = ticket.model_dump(mode="json")
    with pytest.raises(UnknownAccount):
        tasks._protect_context({"status": "filled"}, as_task)
    assert tasks._protect_context({"status": "rejected"}, as_task).account == "default"


def test_alerts_say_which_account_they_are_about() -> None:
    """A halt or resume of one account says so (not "new intents are rejected", which reads as every account's);
    results name a non-default account in their ids; a position's name is the account's own."""
    one = alerts.halted({"account": "main", "reason": "drill", "at": "t"})
    every = alerts.halted({"reason": "drill", "at": "t"})
    assert "account main's new intents are rejected" in one.text and one.ids["account"] == "main"
    assert "account" not in every.text and one.event != every.event
    assert "account main's new intents are placed again" in alerts.resumed("ops", "host", "main").text
    assert constants.account_named("ETHUSDT:LONG", "main") == "main/ETHUSDT:LONG"
    assert constants.account_named("ETHUSDT:LONG", "default") == "ETHUSDT:LONG"


def test_a_fan_out_delivered_too_often_is_acknowledged_once_every_account_s_chain_started(redis_url: str) -> None:
    """A fan-out whose chains all started but whose acknowledgement was lost comes back past QEXEC_MAX_DELIVERIES:
    it is acknowledged, not dead-lettered (a dead letter replayed would look like a signal never traded)."""
    settings = Settings(redis_url=redis_url, accounts="main,sleeve")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    sent: list[Any] = []
    bridge = Bridge(settings, r, sent.append, consumer="fan-out-test")
    bridge.start()
    body = {
        "intent_id": "fan1",
        "symbol": "BTCUSDT",
        "side": "BUY",
        "position_size_usd": 100,
        "accounts": list(ACCOUNTS),
    }
    r.xadd(settings.intent_stream, {"payload": json.dumps(body)})
    [(_stream, [(entry_id, fields)])] = r.xreadgroup(
        settings.consumer_group, bridge.consumer, {settings.intent_stream: ">"}, count=1
    )
    signal = Intent.from_fields(fields, default_id=entry_id)
    admission.admit(
        admission.per_account(signal, settings),
        entry_id=entry_id,
        owner=entry_id,
        r=r,
        settings=settings,
        dispatch=sent.append,
    )
    assert [t.intent_id for t in sent] == ["fan1:main", "fan1:sleeve"]

    bridge.handle(entry_id, fields, final=True)  # its acknowledgement was lost: delivered once too often
    assert r.xlen(settings.dlq_stream) == 0
    assert r.xpending(settings.intent_stream, settings.consumer_group)["pending"] == 0
    assert len(sent) == 2
