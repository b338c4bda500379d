"""The deployment's rate limiter: shared counters in a real Redis, and venues in several processes held under the
paper exchange's limits."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from stack_fixtures import ROOT, Stack, clean_env, unique_id

from qexec import constants
from qexec.config import Settings
from qexec.errors import RateLimited
from qexec.venue import limiter
from qexec.venue.binance import BinanceVenue
from qexec.venue.limiter import Cost, Limiter


def settings_for(**change: Any) -> Settings:
    """Settings with exact limits (no safety margin) unless changed."""
    return Settings(**({"limit_margin": 1.0, "limit_max_wait_s": 0.1} | change))


def test_a_call_spends_its_weight_and_its_orders_in_the_shared_counters(redis_client: redis.Redis) -> None:
    """Weight goes to the minute counter, an order to both order counters."""
    limits = Limiter(redis_client, settings_for())
    limits.acquire(Cost(weight=5))
    limits.acquire(limiter.ORDER)
    assert limits.used() == {"weight-1m": 5, "orders-10s": 1, "orders-1m": 1}


def test_a_spent_order_budget_raises_rate_limited_after_the_bounded_wait(redis_client: redis.Redis) -> None:
    """Three orders per 10 s: the fourth waits `limit_max_wait_s`, then RateLimited says when room comes."""
    limits = Limiter(redis_client, settings_for(orders_per_10s=3))
    for _ in range(3):
        limits.acquire(limiter.ORDER)
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        limits.acquire(limiter.ORDER)
    assert 0.1 <= time.monotonic() - started < 1.0
    assert 9.0 <= caught.value.retry_after_s <= 11.0
    assert limits.used()["orders-10s"] == 3


def test_a_call_dearer_than_the_whole_budget_goes_alone(redis_client: redis.Redis) -> None:
    """A 40-weight call under a 30 budget is let through on an empty window, and then nothing else is."""
    limits = Limiter(redis_client, settings_for(weight_per_min=30))
    limits.acquire(Cost(weight=40))
    with pytest.raises(RateLimited):
        limits.acquire(Cost(weight=1))


def test_the_safety_margin_keeps_part_of_each_limit_unspent(redis_client: redis.Redis) -> None:
    """With the default 95 % margin, 20 orders per 10 s allow 19."""
    limits = Limiter(redis_client, Settings(orders_per_10s=20, limit_max_wait_s=0.1))
    for _ in range(19):
        limits.acquire(limiter.ORDER)
    with pytest.raises(RateLimited):
        limits.acquire(limiter.ORDER)


def test_threads_racing_for_the_budget_never_spend_more_than_it(redis_client: redis.Redis) -> None:
    """Eight threads ask for 80 weight against a budget of 50: exactly 50 is granted."""
    limits = Limiter(redis_client, settings_for(weight_per_min=50))
    granted: list[int] = []

    def spend() -> None:
        for _ in range(10):
            try:
                limits.acquire(Cost(weight=1))
                granted.append(1)
            except RateLimited:
                pass

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 50
    assert limits.used()["weight-1m"] == 50


def test_a_pause_holds_every_call_until_it_expires(redis_client: redis.Redis) -> None:
    """A pause set by one worker makes another's call wait for it, then go."""
    limits = Limiter(redis_client, settings_for(limit_max_wait_s=5))
    Limiter(redis_client, settings_for()).pause(0.8, "test")
    waited = limits.acquire(Cost(weight=1))
    assert 0.6 <= waited < 3
    assert limits.paused_s() == 0


def test_a_pause_is_only_ever_lengthened(redis_client: redis.Redis) -> None:
    """A shorter Retry-After never cuts a longer ban short."""
    limits = Limiter(redis_client, settings_for())
    limits.pause(30, "ban")
    limits.pause(1, "429")
    assert limits.paused_s() > 25
    with pytest.raises(RateLimited, match="pause") as caught:
        limits.acquire(Cost(weight=1))
    assert caught.value.retry_after_s > 25


def test_venue_headers_raise_the_counters_to_what_the_venue_counted(redis_client: redis.Redis) -> None:
    """Weight the venue saw and we did not (another client) is added; a lower venue figure changes nothing."""
    limits = Limiter(redis_client, settings_for(weight_per_min=40))
    limits.acquire(Cost(weight=10))
    # Under half of the limit a venue figure is not worth a round trip yet: the correction comes past half.
    assert limits.observe({"X-MBX-USED-WEIGHT-1M": "18"}) == {}
    assert limits.used()["weight-1m"] == 10
    raised = limits.observe({"X-MBX-USED-WEIGHT-1M": "25", "X-MBX-ORDER-COUNT-10S": "0"})
    assert raised == {"weight-1m": 15}
    assert limits.observe({"X-MBX-USED-WEIGHT-1M": "3"}) == {}
    assert limits.used()["weight-1m"] == 25
    assert limits.observe({"Content-Type": "application/json"}) == {}


def test_without_redis_calls_go_through_unthrottled() -> None:
    """Redis unreachable: the limiter steps aside (the venue still enforces its limits) instead of failing calls."""
    dead = redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    limits = Limiter(dead, settings_for())
    assert limits.acquire(Cost(weight=1)) < 1
    limits.pause(5, "test")
    assert limits.observe({"X-MBX-USED-WEIGHT-1M": "7"}) == {}


def test_every_client_method_the_venue_calls_has_a_cost() -> None:
    """Each python-binance method the Binance venue calls is in the cost table (a new one must be priced there)."""
    source = (ROOT / "qexec" / "venue" / "binance.py").read_text()
    called = set(re.findall(r"self\._client\.(futures_\w+)", source))
    assert called, "venue/binance.py calls no client method?"
    assert called <= set(limiter.CALL_COSTS), called - set(limiter.CALL_COSTS)


@pytest.mark.parametrize(
    ("method", "params", "cost"),
    [
        ("futures_create_order", {"symbol": "BTCUSDT"}, Cost(0, 1)),
        ("futures_get_open_orders", {"symbol": "BTCUSDT"}, Cost(1)),
        ("futures_get_open_orders", {}, Cost(40)),
        ("futures_mark_price", {}, Cost(10)),
        ("futures_get_position_mode", {}, Cost(30)),
        ("futures_position_information", {}, Cost(5)),
        ("futures_something_new", {}, limiter.UNLISTED_COST),
    ],
)
def test_each_endpoint_costs_its_venue_weight(method: str, params: dict[str, Any], cost: Cost) -> None:
    """The weight table follows reference §1.4/§3.5, with symbol-dependent weights."""
    assert limiter.cost_of(method, params) == cost


# -- against the paper exchange ---------------------------------------------------------------------------


def test_a_429_with_retry_after_pauses_the_other_workers(paper: Any, redis_url: str) -> None:
    """One venue gets 429 (Retry-After 2): the pause key holds a second venue back until the ban is over."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    settings = Settings(exchange_url=paper.url, limit_max_wait_s=6)
    first, second = BinanceVenue(settings, r), BinanceVenue(settings, r)
    first.sync_clock()
    paper.add_fault(endpoint="*", kind="rate_limit", status=429, seconds=2)
    with pytest.raises(RateLimited) as caught:
        first.mark_price("BTCUSDT")
    assert caught.value.retry_after_s >= 1
    assert r.pttl(constants.LIMIT_PAUSE_KEY) > 0
    started = time.monotonic()
    assert second.mark_price("BTCUSDT") > 0
    assert time.monotonic() - started >= 1.0
    stats = paper.stats()
    assert stats["http_429"] == 1, "the second venue never sent a request during the ban"
    assert stats["http_418"] == 0


def test_weight_spent_by_a_client_outside_qexec_is_learnt_from_the_headers(paper: Any, redis_url: str) -> None:
    """Another client spends 80 of qexec's 150-weight budget; qexec's next call reads the header and counts it."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    venue = BinanceVenue(Settings(exchange_url=paper.url, weight_per_min=150), r)
    outsider = paper.client()
    outsider.futures_get_open_orders()  # 40 without a symbol
    outsider.futures_get_open_orders()
    venue.mark_price("BTCUSDT")
    assert venue.limiter is not None
    assert venue.limiter.used()["weight-1m"] >= 81


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_processes_offered_twice_the_budget_stay_under_the_venues_limits(
    start_paper_server: Callable[..., Any], redis_url: str, tmp_path: Path
) -> None:
    """Two load processes ask for 2x the order budget and 1.8x the weight budget: the venue refuses nothing."""
    # Given a venue that allows 100 weight a minute and 20 orders per 10 s, and qexec told the same limits
    paper = start_paper_server("--tick-ms", "0")
    paper.admin("POST", "/paper/v1/config", {"limits": {"weight_per_min": 100, "orders_per_10s": 20}})
    env = clean_env(
        {
            "QEXEC_EXCHANGE_URL": paper.url,
            "QEXEC_REDIS_URL": redis_url,
            "QEXEC_WEIGHT_PER_MIN": "100",
            "QEXEC_ORDERS_PER_10S": "20",
        }
    )
    # When two processes each place 20 orders and read the balance 18 times (5 weight each) as fast as they can
    logs = [tmp_path / f"load-{n}.log" for n in range(2)]
    procs = []
    for log_path in logs:
        with log_path.open("wb") as handle:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(ROOT / "tests" / "limiter_load.py"), "20", "18"],
                    cwd=ROOT,
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            )
    for proc in procs:
        proc.wait(200)
    outputs = [path.read_text() for path in logs]
    # Then all the work is done, and the venue saw no request over its limits
    assert all(proc.returncode == 0 for proc in procs), outputs
    assert all("LOAD_DONE orders=20 weight_calls=18" in out for out in outputs), outputs
    stats = paper.stats()
    print(
        "limiter load:",
        [out.strip().splitlines()[-1] for out in outputs],
        {k: stats[k] for k in ("http_429", "http_418", "limit_violations")},
    )
    assert stats["http_429"] == 0
    assert stats["http_418"] == 0
    assert stats["limit_violations"] == 0
    assert len(paper.orders(symbol="BTCUSDT")) == 40


def test_a_pause_in_redis_holds_the_real_workers_orders_back(stack: Stack) -> None:
    """The stack's worker honours the deployment-wide pause key: an intent injected during it is placed after it."""
    iid = unique_id("paused")
    stack.redis.set(constants.LIMIT_PAUSE_KEY, "test", px=1500)
    paused_until = time.time() + 1.5
    stack.inject(
        {
            "intent_id": iid,
            "symbol": "LINKUSDT",
            "side": "BUY",
            "position_size_usd": 50.0,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        }
    )
    result = stack.wait_result(iid)
    assert result["status"] == "filled", result
    orders = stack.paper.orders(clientOrderId=result["client_order_id"])
    assert len(orders) == 1
    assert Decimal(str(orders[0]["time"])) / 1000 >= Decimal(str(paused_until)) - Decimal("0.1")
    assert stack.redis.hlen(constants.LIMIT_COUNTER_KEY.format(window="orders-10s")) >= 1
