"""The feed: the venue's websocket streams as a live view of the account, against the paper exchange.

Each test runs a `Feed` in this process against a paper exchange subprocess (its streams on its HTTP port) and
checks what the feed says against what the venue answers over REST through python-binance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from paper_fixtures import PaperExchange
from position_helpers import FlatSymbol, context, exits, intent, open_algos, run
from stack_fixtures import Stack, unique_id

from qexec import constants
from qexec.config import Settings
from qexec.models import ExecutionResult, OrderStatus
from qexec.pipeline.admission import new_ticket
from qexec.pipeline.place import place_entry
from qexec.positions import monitor, protection, store
from qexec.venue import feed, view
from qexec.venue.binance import BinanceVenue, thread_venue


def wait_for(check: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    """The first truthy value of `check()`, polled until `timeout_s` (fails the test after that)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not true within {timeout_s}s: {check}")


@pytest.fixture
def live_feed(paper: PaperExchange) -> Iterator[feed.Feed]:
    """A feed on the (freshly reset) paper exchange, once it is live."""
    settings = Settings(exchange_url=paper.url, stream_ping_s=2)
    started = feed.Feed(settings, lambda: thread_venue(settings)).start()
    try:
        wait_for(lambda: started.live)
        yield started
    finally:
        started.stop()


def market(paper: PaperExchange, symbol: str, side: str, quantity: str, client_id: str) -> dict[str, Any]:
    """A MARKET order with newOrderRespType=RESULT, through python-binance."""
    order: dict[str, Any] = paper.client().futures_create_order(
        symbol=symbol,
        side=side,
        type="MARKET",
        quantity=quantity,
        newClientOrderId=client_id,
        newOrderRespType="RESULT",
    )
    return order


def rest_position(paper: PaperExchange, symbol: str) -> tuple[Decimal, Decimal]:
    """(positionAmt, entryPrice) of a one-way position as positionRisk reports it."""
    rows = paper.client().futures_position_information(symbol=symbol)
    row = next((r for r in rows if r["positionSide"] == "BOTH"), None)
    return (Decimal(row["positionAmt"]), Decimal(row["entryPrice"])) if row else (Decimal(0), Decimal(0))


def feed_position(live: feed.Feed, symbol: str) -> tuple[Decimal, Decimal]:
    """(positionAmt, entryPrice) of a one-way position as the feed has it."""
    rows = live.positions(symbol) or []
    row = next((p for p in rows if p.positionSide == "BOTH"), None)
    return (row.positionAmt, row.entryPrice) if row else (Decimal(0), Decimal(0))


def test_a_fill_reaches_the_feed_with_the_venues_own_price_quantity_and_quote(
    paper: PaperExchange, live_feed: feed.Feed
) -> None:
    """The stream's account of a filled order equals the venue's REST answer: avgPrice, executedQty, cumQuote."""
    answer = market(paper, "BTCUSDT", "BUY", "0.010", "feed-fill-1")
    seen = wait_for(lambda: live_feed.order("feed-fill-1"))
    assert seen.status is OrderStatus.FILLED and seen.settled
    assert seen.orderId == answer["orderId"]
    assert (seen.avgPrice, seen.executedQty) == (Decimal(answer["avgPrice"]), Decimal(answer["executedQty"]))
    assert seen.cumQuote == Decimal(answer["cumQuote"])
    assert seen.updateTime == answer["updateTime"]


def test_a_subscriber_is_called_with_each_event_after_the_view_has_it_and_a_failing_one_stops_nothing(
    paper: PaperExchange, live_feed: feed.Feed
) -> None:
    """`subscribe`: the listener gets the order's final ORDER_TRADE_UPDATE once the feed's `order` already says so; a
    listener that raises is logged, and the stream goes on."""
    seen: list[tuple[str, str, bool]] = []

    def listener(kind: str, event: dict[str, Any]) -> None:
        if kind == "ORDER_TRADE_UPDATE" and event["o"]["X"] == "FILLED":
            known = live_feed.order(event["o"]["c"])
            seen.append((kind, event["o"]["c"], known is not None and known.status is OrderStatus.FILLED))

    def broken(kind: str, event: dict[str, Any]) -> None:
        raise RuntimeError("a listener's bug")

    live_feed.subscribe(broken)
    live_feed.subscribe(listener)
    live_feed.subscribe(listener)  # once only
    market(paper, "BTCUSDT", "BUY", "0.010", "feed-listen-1")
    market(paper, "BTCUSDT", "SELL", "0.010", "feed-listen-2")
    wait_for(lambda: len(seen) == 2)
    assert seen == [("ORDER_TRADE_UPDATE", "feed-listen-1", True), ("ORDER_TRADE_UPDATE", "feed-listen-2", True)]
    assert live_feed.live


def test_positions_follow_every_fill_as_position_risk_reports_them(paper: PaperExchange, live_feed: feed.Feed) -> None:
    """Open, add to and close a position: after each fill the feed's amount and entry equal positionRisk's."""
    for n, (side, quantity) in enumerate((("BUY", "0.010"), ("BUY", "0.020"), ("SELL", "0.030"))):
        market(paper, "BTCUSDT", side, quantity, f"feed-pos-{n}")
        expected = rest_position(paper, "BTCUSDT")
        assert wait_for(lambda expected=expected: feed_position(live_feed, "BTCUSDT") == expected)
    assert feed_position(live_feed, "BTCUSDT") == (Decimal(0), Decimal(0))


def test_positions_opened_before_the_feed_connected_come_from_its_snapshot(paper: PaperExchange) -> None:
    """A position that no event will mention (it was opened earlier) is known from the snapshot taken on connect."""
    market(paper, "ETHUSDT", "SELL", "0.100", "feed-before")
    settings = Settings(exchange_url=paper.url)
    late = feed.Feed(settings, lambda: thread_venue(settings)).start()
    try:
        wait_for(lambda: late.live)
        assert feed_position(late, "ETHUSDT") == rest_position(paper, "ETHUSDT")
        assert feed_position(late, "ETHUSDT")[0] < 0
    finally:
        late.stop()


def test_a_position_update_older_than_the_one_held_does_not_replace_it(
    paper: PaperExchange, live_feed: feed.Feed
) -> None:
    """An update the socket held while the snapshot was read (older than the snapshot's row) is not applied over it;
    a newer one is."""
    market(paper, "BTCUSDT", "BUY", "0.020", "feed-newer")
    assert wait_for(lambda: feed_position(live_feed, "BTCUSDT")[0] == Decimal("0.020"))
    before = now_ms() - 60_000
    live_feed._on_account({"P": [{"s": "BTCUSDT", "pa": "0.010", "ep": "95000", "ps": "BOTH"}]}, before)
    assert feed_position(live_feed, "BTCUSDT") == rest_position(paper, "BTCUSDT")
    live_feed._on_account({"P": [{"s": "BTCUSDT", "pa": "0.030", "ep": "95000", "ps": "BOTH"}]}, now_ms() + 1000)
    assert feed_position(live_feed, "BTCUSDT")[0] == Decimal("0.030")


def test_a_dropped_stream_stops_the_feed_vouching_until_it_is_back(paper: PaperExchange, live_feed: feed.Feed) -> None:
    """While the user stream is down the feed answers None; back up, it vouches only for what began after that."""
    before_drop = datetime.now(UTC)
    time.sleep(feed.VOUCH_MARGIN_S + 0.1)
    assert live_feed.vouches_for(datetime.now(UTC))
    paper.admin("POST", "/paper/v1/ws/drop")
    wait_for(lambda: not live_feed.live)
    assert live_feed.positions("BTCUSDT") is None
    assert not live_feed.vouches_for(datetime.now(UTC))
    wait_for(lambda: live_feed.live)
    assert not live_feed.vouches_for(before_drop), "what happened while it was down was not seen"
    assert live_feed.positions("BTCUSDT") is not None


def test_each_drop_after_a_good_connection_is_reconnected_after_the_shortest_back_off(
    paper: PaperExchange, live_feed: feed.Feed
) -> None:
    """Five drops in a row, each after the stream came back: each time it is back within 3 s (a back-off growing
    over the drops, 0.5 s doubling, would take 4 s and then 8 s for the last two)."""
    for _ in range(5):
        paper.admin("POST", "/paper/v1/ws/drop")
        wait_for(lambda: not live_feed.live)
        wait_for(lambda: live_feed.live, timeout_s=3)


def test_an_expired_listen_key_is_replaced_and_the_feed_comes_back(paper: PaperExchange, live_feed: feed.Feed) -> None:
    """When the venue expires the listen key, the feed goes down, takes a new key and is live again."""
    paper.admin("POST", "/paper/v1/config", {"listen_key_ttl_s": 1})
    paper.client().futures_stream_get_listen_key()  # the new lifetime applies from the next POST
    wait_for(lambda: not live_feed.live, timeout_s=5)
    wait_for(lambda: live_feed.live, timeout_s=5)
    market(paper, "BTCUSDT", "BUY", "0.010", "feed-after-expiry")
    assert wait_for(lambda: live_feed.order("feed-after-expiry"))


def test_marks_come_from_the_stream_and_age_out(paper: PaperExchange, live_feed: feed.Feed) -> None:
    """A mark set at the venue reaches the feed; a mark older than the allowed age is not given out."""
    paper.set_price("SOLUSDT", "151.25")
    assert wait_for(lambda: live_feed.mark("SOLUSDT", max_age_s=5) == Decimal("151.25"))
    time.sleep(0.3)  # the stream's next push comes a second after the one that carried the new price
    assert live_feed.mark("SOLUSDT", max_age_s=0.1) is None
    assert live_feed.mark("SOLUSDT", max_age_s=5) == Decimal("151.25")
    assert live_feed.mark("NOSUCHUSDT", max_age_s=5) is None


def test_the_venue_takes_streamed_marks_instead_of_asking_over_rest(paper: PaperExchange, live_feed: feed.Feed) -> None:
    """With a live feed in the process, `view.mark_price` sends no premiumIndex request."""
    settings = live_feed.settings
    feed.register(live_feed)  # this process's feed for that venue, as the worker registers it
    try:
        paper.set_price("XRPUSDT", "0.6123")
        wait_for(lambda: live_feed.mark("XRPUSDT", 5) == Decimal("0.6123"))
        asked = paper.stats()["requests"].get("GET /fapi/v1/premiumIndex", 0)
        assert view.mark_price(BinanceVenue(settings), "XRPUSDT") == Decimal("0.6123")
        assert paper.stats()["requests"].get("GET /fapi/v1/premiumIndex", 0) == asked
    finally:
        feed.unregister(live_feed)


def test_streams_turned_off_start_no_feed() -> None:
    """QEXEC_USE_STREAMS=false: no feed, so every answer comes from the venue over REST."""
    assert feed.start(Settings(use_streams=False), lambda: BinanceVenue(Settings())) is None


@pytest.mark.parametrize(
    ("mode", "exchange_url", "stream_url", "expected"),
    [
        ("testnet", None, None, "wss://fstream.binancefuture.com"),
        ("mainnet", "https://fapi.binance.com/", None, "wss://fstream.binance.com"),
        ("testnet", "http://127.0.0.1:9100", None, "ws://127.0.0.1:9100"),
        ("testnet", "https://rest.example", "wss://streams.example/", "wss://streams.example"),
        ("paper", "http://127.0.0.1:9200", None, "ws://127.0.0.1:9200"),
    ],
)
def test_the_streams_come_from_the_venue_the_orders_go_to(
    mode: str, exchange_url: str | None, stream_url: str | None, expected: str
) -> None:
    """The mode's stream host only while REST goes to the mode's own host: a venue at another address
    (QEXEC_EXCHANGE_URL) is asked for its own streams, unless QEXEC_STREAM_URL names them."""
    keys = {"api_key": "k", "api_secret": "s"} if mode != "paper" else {}
    arming = {"mainnet_confirm": "I_UNDERSTAND"} if mode == "mainnet" else {}
    settings = Settings(mode=mode, exchange_url=exchange_url, stream_url=stream_url, **keys, **arming)
    assert settings.stream_base_url == expected


def test_algo_orders_are_vouched_for_only_as_reported_on_the_current_connection(
    paper: PaperExchange, live_feed: feed.Feed
) -> None:
    """A stop-loss the stream saw placed (or canceled) is known; after a reconnect, unknown until reported again."""
    client = paper.client()
    placed = client.futures_create_order(
        symbol="BTCUSDT", side="SELL", type="STOP_MARKET", stopPrice="90000", closePosition="true"
    )
    cid = placed["clientAlgoId"]
    seen = wait_for(lambda: live_feed.algo_orders([cid]))
    assert seen[cid].live and seen[cid].algoId == placed["algoId"]
    assert live_feed.algo_orders([cid, "qs-never-placed-1"]) is None, "one unknown order: ask the venue"
    paper.admin("POST", "/paper/v1/ws/drop")
    wait_for(lambda: not live_feed.live)
    wait_for(lambda: live_feed.live)
    assert live_feed.algo_orders([cid]) is None, "reported before the break: it may have changed since"
    client.futures_cancel_order(symbol="BTCUSDT", algoId=placed["algoId"], conditional=True)
    canceled = wait_for(lambda: live_feed.algo_orders([cid]))
    assert not canceled[cid].live


def order_update(execution: str, status: str, last: tuple[str, str], total: str, average: str) -> dict[str, Any]:
    """An ORDER_TRADE_UPDATE as Binance sends it for one limit order: `last` is (last qty, last price)."""
    o = {"s": "BTCUSDT", "c": "feed-parts", "S": "BUY", "o": "LIMIT", "q": "3", "p": "300", "ap": average}
    o.update({"x": execution, "X": status, "i": 77, "l": last[0], "L": last[1], "z": total, "T": now_ms()})
    return {"e": "ORDER_TRADE_UPDATE", "E": now_ms(), "T": now_ms(), "o": o}


@pytest.mark.parametrize("missed", [False, True])
def test_an_orders_quote_is_summed_from_its_fills_only_when_the_stream_saw_every_one(missed: bool) -> None:
    """Three fills of 1 at 100, 200 and 300: cumQuote 600 from the fills; with the middle one missed (the stream was
    down then), the sum would say 400, so the quote is the average price x executed quantity instead."""
    settings = Settings()
    seen = feed.Feed(settings, lambda: thread_venue(settings))  # not started: the venue's events are handed in
    events = [
        order_update("NEW", "NEW", ("0", "0"), "0", "0"),
        order_update("TRADE", "PARTIALLY_FILLED", ("1", "100"), "1", "100"),
        order_update("TRADE", "PARTIALLY_FILLED", ("1", "200"), "2", "150"),
        order_update("TRADE", "FILLED", ("1", "300"), "3", "200"),
    ]
    for event in events[:2] + events[3:] if missed else events:
        seen._on_user_event(event)
    state = seen.order("feed-parts")
    assert state is not None and state.settled
    assert state.fill is not None and state.fill.quote == Decimal(600)
    assert state.cumQuote == (Decimal(0) if missed else Decimal(600))


# -- what the steps do with what the stream says ----------------------------------------------------------


@pytest.fixture
def stack_feed(stack: Stack) -> Iterator[feed.Feed]:
    """A live feed in this process on the stack's venue, registered where this process's steps look for it."""
    settings = stack.settings
    live = feed.Feed(settings, lambda: thread_venue(settings)).start()
    feed.register(live)
    try:
        wait_for(lambda: live.live)
        yield live
    finally:
        feed.unregister(live)
        live.stop()


def now_ms() -> int:
    """This machine's clock, in ms."""
    return int(time.time() * 1000)


def test_a_position_only_the_stream_reports_does_not_hold_an_order_back(
    stack: Stack, stack_feed: feed.Feed, flat_symbol: FlatSymbol
) -> None:
    """The stream says a LONG is open (a close it missed); update_protection would place no order, so the venue is
    asked first: it is flat, and the entry goes out."""
    ctx = context(stack.settings, same_side_policy="update_protection")
    symbol = "DOTUSDT"
    flat_symbol(ctx, symbol)
    stack_feed._on_account({"P": [{"s": symbol, "pa": "10", "ep": "5.0", "ps": "BOTH"}]}, now_ms())
    assert (symbol, "LONG") in view.open_positions(ctx.venue, symbol), "the stream's view (wrong on purpose)"
    result, _event = run(ctx, intent(unique_id("ghost"), symbol, "BUY", 60))
    assert result.status.value == "filled", result


def test_a_close_only_the_stream_reports_publishes_no_exit_and_keeps_the_protection(
    stack: Stack, stack_feed: feed.Feed, flat_symbol: FlatSymbol
) -> None:
    """The stream says a tracked position is flat while the venue still holds it: the exit monitor asks the venue,
    publishes no exit and leaves the stop-loss and take-profit in place."""
    ctx = context(stack.settings)
    symbol = "ATOMUSDT"
    flat_symbol(ctx, symbol)
    result, event = run(ctx, intent(unique_id("held"), symbol, "BUY", 60))
    assert result.status.value == "filled" and event["status"] == "placed"
    earlier_exits = exits(ctx, symbol)  # other tests' positions on the symbol, in this session's stack
    stack_feed._on_account({"P": [{"s": symbol, "pa": "0", "ep": "0", "ps": "BOTH"}]}, now_ms())
    assert view.open_positions(ctx.venue, symbol) == {}, "the stream's view (wrong on purpose)"
    report = monitor.watch(ctx, {symbol})
    assert report["closed"] == []
    assert exits(ctx, symbol) == earlier_exits
    assert len(open_algos(ctx, symbol)) == 2
    assert store.load(ctx.redis, ctx.account, symbol, "LONG") is not None


def test_an_entry_filled_before_the_stream_says_so_is_seen_over_rest_by_the_next_intent(
    stack: Stack, stack_feed: feed.Feed, flat_symbol: FlatSymbol
) -> None:
    """A LONG entry has filled (its protection still to come) and the stream lags, saying flat: a SELL intent right
    after it meets the venue's own answer, the open LONG, and QEXEC_OPPOSITE_SIDE_POLICY=reject refuses it."""
    ctx = context(stack.settings, same_side_policy="update_protection", opposite_side_policy="reject")
    symbol = "DOTUSDT"
    flat_symbol(ctx, symbol)
    first = new_ticket(intent(unique_id("first"), symbol, "BUY", 60), entry_id=None)
    filled = place_entry(first, ctx)
    assert isinstance(filled, ExecutionResult) and filled.status.value == "filled", filled
    stack_feed._on_account({"P": [{"s": symbol, "pa": "0", "ep": "0", "ps": "BOTH"}]}, now_ms())
    assert view.open_positions(ctx.venue, symbol) == {}, "the stream's view (behind the venue on purpose)"

    second, _event = run(ctx, intent(unique_id("second"), symbol, "SELL", 60))

    assert second.status.value == "rejected", second
    assert "QEXEC_OPPOSITE_SIDE_POLICY=reject" in (second.reason or "")
    assert (symbol, "LONG") in view.open_positions(ctx.venue, symbol, rest=True), "the first entry's LONG stands"
    protection.protect_step(filled.model_dump(mode="json"), first.model_dump(mode="json"), ctx)
    entries = constants.ENTRY_ORDER_KEY.format(symbol=symbol, direction="LONG")
    assert ctx.redis.zscore(entries, first.intent_id) is None, "protected: no longer on its way"
