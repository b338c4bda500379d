"""The dead-man switch (qexec/ops/deadman.py): beat renews the venue's countdown for the symbols qexec trades; when
qexec stops renewing, the venue cancels their open orders, and qexec puts back any stops that went with them."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from position_helpers import FlatSymbol, context, intent, open_algos, run
from stack_fixtures import Stack, unique_id

from qexec import constants
from qexec.config import Settings
from qexec.context import Context, Pending
from qexec.models import ExecutionResult, Ticket
from qexec.ops import deadman
from qexec.pipeline.admission import new_ticket
from qexec.pipeline.confirm import confirm
from qexec.pipeline.place import place_entry
from qexec.pipeline.publish import publish
from qexec.positions import monitor
from qexec.worker.celeryconf import beat_config

COUNTDOWN_S = 1.5

# The renewal arms every symbol qexec's Redis says is in use: on the session stack's Redis that is whatever the tests
# before left open, whose orders the countdown would then cancel. These tests keep their records in a Redis database
# of their own, so only their symbol is in use.


def end_countdown(ctx: Context, symbol: str) -> None:
    """End the symbol's countdown at the venue and forget it was armed (the session's paper exchange is shared)."""
    ctx.venue.countdown_cancel_all(symbol, 0)
    ctx.redis.srem(constants.DEADMAN_ARMED_KEY, symbol)


def finish(ticket: Ticket, ctx: Context) -> ExecutionResult:
    """Confirm a placed ticket until its order is terminal, then publish its one result."""
    for attempt in range(50):
        try:
            return publish(confirm(ticket, ctx, attempt), ctx)
        except Pending as pending:
            time.sleep(min(pending.countdown_s, 0.3))
    raise AssertionError(f"{ticket.intent_id} did not finish")


def test_the_renewal_is_scheduled_only_when_the_countdown_is_set() -> None:
    """No beat entry by default; with a 120 s countdown, a renewal every 30 s that expires when the next is due."""
    assert "deadman-renew" not in beat_config(Settings())["beat_schedule"]
    assert "deadman-renew" not in beat_config(Settings(deadman_countdown_s=0))["beat_schedule"]
    entry: dict[str, Any] = beat_config(Settings(deadman_countdown_s=120))["beat_schedule"]["deadman-renew"]
    assert (entry["task"], entry["schedule"], entry["options"]) == ("qexec.deadman_renew", 30.0, {"expires": 30.0})


@pytest.mark.slow
def test_stops_the_countdown_took_are_put_back_by_the_monitor_once_qexec_is_back(
    stack: Stack, flat_symbol: FlatSymbol, redis_url: str
) -> None:
    """With `countdown_cancels_algo` on: qexec renews, stops renewing, the countdown runs out and takes the position's
    SL/TP; the monitor's next pass places both again."""
    ctx = context(stack.settings, deadman_countdown_s=COUNTDOWN_S, redis_url=redis_url)
    symbol = "ETCUSDT"
    flat_symbol(ctx, symbol, "17.000")
    stack.paper.admin("POST", "/paper/v1/config", {"countdown_cancels_algo": True})
    try:
        # Given a protected long and qexec renewing its symbol's countdown
        result, _event = run(ctx, intent(unique_id("dm"), symbol, "BUY", 100, stop_loss=16.0, take_profit=18.5))
        assert result.status.value == "filled", result
        assert len(open_algos(ctx, symbol)) == 2
        assert symbol in deadman.renew(ctx)["renewed"]
        # When qexec stops renewing and the countdown runs out
        time.sleep(COUNTDOWN_S + 1.0)
        # Then the venue has taken the stops
        assert open_algos(ctx, symbol) == []
        # And once qexec is back, its exit monitor puts them back
        assert monitor.watch(ctx, symbols={symbol})["repaired"] == [f"{symbol}:LONG"]
        assert sorted(a["orderType"] for a in open_algos(ctx, symbol)) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    finally:
        stack.paper.admin("POST", "/paper/v1/config", {"countdown_cancels_algo": False})
        end_countdown(ctx, symbol)


@pytest.mark.slow
def test_a_stopped_qexecs_resting_limit_entry_is_cancelled_by_the_venue_after_the_countdown(
    stack: Stack, flat_symbol: FlatSymbol, redis_url: str
) -> None:
    """A LIMIT entry rests, qexec renews its symbol once and stops: the venue cancels the order after the countdown.
    qexec then reports it `canceled`, and the next renewal ends the countdown of a symbol it no longer trades."""
    ctx = context(stack.settings, deadman_countdown_s=COUNTDOWN_S, redis_url=redis_url)
    symbol = "INJUSDT"
    flat_symbol(ctx, symbol, "12.000000")
    ticket = new_ticket(intent(unique_id("dm"), symbol, "BUY", 50, order_type="LIMIT", entry_price=10.0), entry_id=None)
    try:
        # Given a resting LIMIT entry, in flight, whose symbol qexec renews
        placed = place_entry(ticket, ctx, 0)
        assert isinstance(placed, Ticket) and placed.order is not None
        assert symbol in deadman.symbols_in_use(ctx.redis)
        assert deadman.renew(ctx)["renewed"] == [symbol]
        # When qexec stops (no renewal, no confirmation) past the countdown
        time.sleep(COUNTDOWN_S + 1.0)
        # Then the venue has cancelled the entry
        order = ctx.venue.get_order(symbol, order_id=placed.order.orderId)
        assert order.status.value == "CANCELED"
        # And qexec, back, reports it and ends the countdown of a symbol it no longer needs
        assert finish(placed, ctx).status.value == "canceled"
        assert deadman.renew(ctx) == {"renewed": [], "ended": [symbol], "failed": []}
        assert not ctx.redis.sismember(constants.DEADMAN_ARMED_KEY, symbol)
    finally:
        end_countdown(ctx, symbol)


def test_the_switch_off_renews_nothing(redis_url: str) -> None:
    """Unset (the default), a renewal pass calls nothing at the venue."""
    ctx = Context(Settings(redis_url=redis_url), redis.Redis.from_url(redis_url), NoVenue())  # type: ignore[arg-type]
    assert deadman.renew(ctx) == {"renewed": [], "ended": [], "failed": []}


class NoVenue:
    """A venue that fails any call: the switch off must not reach it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the venue was called: {name}")
