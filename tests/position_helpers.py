"""Helpers for the position tests: run an intent through the steps in-process, read the venue, flatten a symbol (and
the `flat_symbol` fixture, which flattens it again after the test), contexts with the default policies, a first
entry still at the venue."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import pytest
from stack_fixtures import Stack, unique_id

from qexec import constants, redis_streams
from qexec.config import Settings
from qexec.context import Context, Pending
from qexec.models import ExecutionResult, Intent, Ticket, client_order_id
from qexec.pipeline.admission import new_ticket
from qexec.pipeline.confirm import confirm
from qexec.pipeline.place import place_entry
from qexec.pipeline.publish import publish
from qexec.positions import protection
from qexec.venue.binance import BinanceVenue


def context(settings: Settings, **change: Any) -> Context:
    """A step context on `settings` (changed by `change`), with a fresh venue client and Redis connection."""
    changed = settings.model_copy(update={"adopt_grace_s": 0.0, **change})
    venue = BinanceVenue(changed)
    venue.forget_position_mode()  # tests switch accounts between modes; never trust another test's cache
    return Context(changed, redis_streams.connect(changed.redis_url), venue)


def intent(intent_id: str, symbol: str, side: str, size_usd: float, **fields: Any) -> Intent:
    """A fresh MARKET intent."""
    body = {
        "intent_id": intent_id,
        "symbol": symbol,
        "side": side,
        "position_size_usd": size_usd,
        "leverage": 2,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    return Intent.from_fields(body | fields)


def run(ctx: Context, the_intent: Intent, ticket: Ticket | None = None) -> tuple[ExecutionResult, dict[str, Any]]:
    """place → confirm → publish → protect in this process, as the chain does (with `ticket`, or a fresh one); the
    result and the event."""
    ticket = ticket or new_ticket(the_intent, entry_id=None)
    step: Ticket | ExecutionResult = ticket
    for attempt in range(50):
        try:
            if isinstance(step, Ticket):
                step = place_entry(step, ctx, attempt)
            if isinstance(step, Ticket):  # else the venue's answer was final and place_entry published it
                step = confirm(step, ctx, attempt)
            break
        except Pending as pending:
            time.sleep(min(pending.countdown_s, 0.5))
    result = step if isinstance(step, ExecutionResult) else publish(step, ctx)
    event = protection.protect_step(result.model_dump(mode="json"), ticket.model_dump(mode="json"), ctx)
    return result, event


def open_algos(ctx: Context, symbol: str) -> list[dict[str, Any]]:
    """The symbol's open algo orders at the venue, as it sends them."""
    return list(ctx.venue._client.futures_get_open_orders(symbol=symbol, conditional=True))


def position_amt(ctx: Context, symbol: str, position_side: str | None = None) -> Decimal:
    """The symbol's position amount at the venue (0 when flat)."""
    for position in ctx.venue.positions(symbol):
        if position_side in (None, position.positionSide) and position.positionAmt != 0:
            return position.positionAmt
    return Decimal(0)


def exits(ctx: Context, symbol: str) -> list[dict[str, Any]]:
    """The exit events published for a symbol."""
    return [
        json.loads(fields["payload"])
        for _id, fields in ctx.redis.xrange(ctx.settings.exit_stream)
        if fields.get("symbol") == symbol
    ]


def wait_exits(ctx: Context, symbol: str, timeout_s: float = 10) -> list[dict[str, Any]]:
    """The exit events published for a symbol, once there is one: the stack's worker reports a stop's or a target's
    exit from the venue's events (qexec/pipeline/fill_events.py), maybe while a test's own monitor pass finds the
    position busy."""
    deadline = time.monotonic() + timeout_s
    while not (found := exits(ctx, symbol)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def flatten(ctx: Context, symbol: str) -> None:
    """Cancel the symbol's open and algo orders, close its positions and forget qexec's records of them."""
    client = ctx.venue._client
    client.futures_cancel_all_open_orders(symbol=symbol, conditional=True)
    client.futures_cancel_all_open_orders(symbol=symbol)  # resting LIMIT entries are exposure too
    for position in ctx.venue.positions(symbol):
        amt = position.positionAmt
        if amt == 0:
            continue
        params: dict[str, Any] = {"symbol": symbol, "type": "MARKET", "quantity": str(abs(amt))}
        params["side"] = "SELL" if amt > 0 else "BUY"
        if position.positionSide == "BOTH":
            params["reduceOnly"] = "true"
        else:
            params["positionSide"] = position.positionSide
        client.futures_create_order(**params)
    for direction in ("LONG", "SHORT"):
        ctx.redis.delete(constants.POSITION_KEY.format(symbol=symbol, direction=direction))
        ctx.redis.srem(constants.POSITIONS_KEY, f"{symbol}:{direction}")


class FlatSymbol(Protocol):
    """The `flat_symbol` fixture: called with a context, a symbol and the mark to set."""

    def __call__(self, ctx: Context, symbol: str, mark: str | None = None) -> None: ...


@pytest.fixture
def flat_symbol(stack: Stack) -> Iterator[FlatSymbol]:
    """`flat_symbol(ctx, symbol, mark)`: the symbol flattened (its mark set on the session stack's exchange, when
    given) for the test, and flattened again after it, whatever the test did."""
    used: list[tuple[Context, str]] = []

    def prepare(ctx: Context, symbol: str, mark: str | None = None) -> None:
        flatten(ctx, symbol)
        if mark is not None:
            stack.paper.set_price(symbol, mark)
        used.append((ctx, symbol))

    yield prepare
    for ctx, symbol in reversed(used):
        flatten(ctx, symbol)


def policy_context(stack: Stack, **change: str) -> Context:
    """A context with the default policies unless `change` says otherwise."""
    defaults = {"same_side_policy": "update_protection", "opposite_side_policy": "reject"}
    return context(stack.settings, **(defaults | change))


@contextlib.contextmanager
def first_entry_at_the_venue(stack: Stack, symbol: str) -> Iterator[tuple[Context, str, dict[str, ExecutionResult]]]:
    """A first BUY on `symbol` whose order the venue answers 800 ms late, run in a thread, on its way when this
    yields (a context for the test, its intent id, and where its result lands); the symbol is flattened after."""
    first_ctx, ctx = policy_context(stack), policy_context(stack)
    flatten(ctx, symbol)
    stack.paper.set_price(symbol, "2.5000")
    first = unique_id("wait1")
    stack.paper.add_fault(kind="latency", delay_ms=800, client_order_id=client_order_id(first))
    results: dict[str, ExecutionResult] = {}

    def place_first() -> None:
        results["first"], _ = run(first_ctx, intent(first, symbol, "BUY", 60, stop_loss=2.3, take_profit=2.8))

    thread = threading.Thread(target=place_first)
    try:
        thread.start()
        state = constants.ORDER_KEY.format(intent_id=first)
        deadline = time.monotonic() + 10
        while ctx.redis.hget(state, "phase") != "submitting" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ctx.redis.hget(state, "phase") == "submitting", "the first order is on its way to the venue"
        yield ctx, first, results
        thread.join(30)
        assert results["first"].status.value == "filled", results["first"]
    finally:
        thread.join(30)
        flatten(ctx, symbol)
