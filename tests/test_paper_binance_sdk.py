"""Binance's own Python SDK (binance-sdk-derivatives-trading-usds-futures) against the paper exchange.

Only the SDK's base URLs change: REST ``base_path`` and the websocket streams' ``stream_url``.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from binance_common.configuration import ConfigurationRestAPI, ConfigurationWebSocketStreams
from binance_common.errors import BadRequestError
from binance_sdk_derivatives_trading_usds_futures import DerivativesTradingUsdsFutures
from binance_sdk_derivatives_trading_usds_futures.rest_api import DerivativesTradingUsdsFuturesRestAPI
from binance_sdk_derivatives_trading_usds_futures.rest_api.models import (
    NewAlgoOrderAlgoTypeEnum,
    NewOrderSideEnum,
    NewOrderTimeInForceEnum,
    NewOrderTypeEnum,
)
from binance_sdk_derivatives_trading_usds_futures.websocket_streams.models import MarkPriceStreamUpdateSpeedEnum
from paper_fixtures import PaperExchange

BTC = "BTCUSDT"


def sdk(paper: PaperExchange) -> DerivativesTradingUsdsFutures:
    """The official SDK with its REST and websocket-streams bases on the paper exchange."""
    return DerivativesTradingUsdsFutures(
        config_rest_api=ConfigurationRestAPI(
            api_key=paper.api_key, api_secret=paper.api_secret, base_path=paper.url, timeout=5000, retries=0
        ),
        config_ws_streams=ConfigurationWebSocketStreams(stream_url=paper.ws_url),
    )


def market_order(rest: DerivativesTradingUsdsFuturesRestAPI, side: NewOrderSideEnum, **extra: Any) -> Any:
    """A BTCUSDT MARKET order of 0.002 through the SDK, answered with RESULT (its final state)."""
    placed = rest.new_order(
        symbol=BTC, side=side, type=NewOrderTypeEnum.MARKET, quantity=0.002, new_order_resp_type="RESULT", **extra
    )
    return placed.data()


@pytest.fixture
def rest(paper: PaperExchange) -> DerivativesTradingUsdsFuturesRestAPI:
    """The SDK's REST client on a freshly reset paper exchange."""
    return sdk(paper).rest_api


def test_server_time_is_the_paper_exchanges_clock(rest: DerivativesTradingUsdsFuturesRestAPI) -> None:
    """``check_server_time`` parses ``/fapi/v1/time`` into an integer of ms."""
    server_time = rest.check_server_time().data().server_time
    assert isinstance(server_time, int) and server_time > 1_700_000_000_000


def test_exchange_information_lists_the_paper_symbols_with_filters(rest: DerivativesTradingUsdsFuturesRestAPI) -> None:
    """``exchange_information`` parses every symbol, BTCUSDT with its PRICE_FILTER and LOT_SIZE."""
    info = rest.exchange_information().data()
    assert info.symbols is not None
    btc = next(s for s in info.symbols if s.symbol == BTC)
    assert btc.filters is not None
    assert {"PRICE_FILTER", "LOT_SIZE"} <= {f.filter_type for f in btc.filters}


def test_price_ticker_is_the_mark_the_admin_set(
    paper: PaperExchange, rest: DerivativesTradingUsdsFuturesRestAPI
) -> None:
    """``symbol_price_ticker`` (``/fapi/v1/ticker/price``) reads the paper exchange's price."""
    paper.set_price(BTC, "91500.1")
    ticker = rest.symbol_price_ticker(symbol=BTC).data().actual_instance
    assert ticker is not None
    assert Decimal(ticker.price) == Decimal("91500.1")


def test_24hr_ticker_parses_into_the_sdks_model(
    paper: PaperExchange, rest: DerivativesTradingUsdsFuturesRestAPI
) -> None:
    """``ticker24hr_price_change_statistics`` (``/fapi/v1/ticker/24hr``) parses the paper exchange's answer."""
    paper.set_price(BTC, "91500.1")
    ticker = rest.ticker24hr_price_change_statistics(symbol=BTC).data().actual_instance
    assert ticker is not None and ticker.symbol == BTC
    assert Decimal(ticker.last_price or "0") == Decimal("91500.1")
    assert ticker.count is not None and ticker.open_time is not None


def test_balance_and_account_show_the_paper_wallet(rest: DerivativesTradingUsdsFuturesRestAPI) -> None:
    """``futures_account_balance_v3`` and ``account_information_v3`` parse the fresh account's 10,000 USDT."""
    usdt = next(b for b in rest.futures_account_balance_v3().data() if b.asset == "USDT")
    account = rest.account_information_v3().data()
    assert Decimal(usdt.balance or "0") == Decimal("10000")
    assert Decimal(account.total_wallet_balance or "0") == Decimal("10000")


def test_change_initial_leverage_answers_the_new_leverage(rest: DerivativesTradingUsdsFuturesRestAPI) -> None:
    """``change_initial_leverage`` parses ``{"leverage", "maxNotionalValue", "symbol"}``."""
    changed = rest.change_initial_leverage(symbol=BTC, leverage=7).data()
    assert (changed.symbol, changed.leverage) == (BTC, 7)


def test_market_order_fills_and_shows_in_position_risk(rest: DerivativesTradingUsdsFuturesRestAPI) -> None:
    """A MARKET order with RESULT comes back FILLED; ``position_information_v3`` shows the position."""
    placed = market_order(rest, NewOrderSideEnum.BUY)
    (position,) = rest.position_information_v3(symbol=BTC).data()
    assert (placed.status, placed.executed_qty) == ("FILLED", "0.002")
    assert Decimal(position.position_amt or "0") == Decimal("0.002")


def test_reduce_only_market_order_closes_the_position(rest: DerivativesTradingUsdsFuturesRestAPI) -> None:
    """A reduce-only SELL after a BUY fills and leaves no position."""
    market_order(rest, NewOrderSideEnum.BUY)
    closed = market_order(rest, NewOrderSideEnum.SELL, reduce_only="true")
    positions = rest.position_information_v3(symbol=BTC).data()
    assert (closed.status, closed.reduce_only) == ("FILLED", True)
    assert all(Decimal(p.position_amt or "0") == 0 for p in positions)


def test_limit_order_can_be_queried_and_cancelled(rest: DerivativesTradingUsdsFuturesRestAPI) -> None:
    """A resting LIMIT order: ``query_order`` says NEW, ``cancel_order`` says CANCELED."""
    placed = rest.new_order(
        symbol=BTC,
        side=NewOrderSideEnum.BUY,
        type=NewOrderTypeEnum.LIMIT,
        time_in_force=NewOrderTimeInForceEnum.GTC,
        quantity=0.002,
        price=80000,
    ).data()
    queried = rest.query_order(symbol=BTC, order_id=placed.order_id).data()
    cancelled = rest.cancel_order(symbol=BTC, order_id=placed.order_id).data()
    assert (queried.status, Decimal(queried.price or "0")) == ("NEW", Decimal("80000"))
    assert cancelled.status == "CANCELED"


def test_algo_order_is_placed_queried_and_cancelled(rest: DerivativesTradingUsdsFuturesRestAPI) -> None:
    """``new_algo_order`` (``/fapi/v1/algoOrder``) places a close-all stop; query and cancel find it by algoId."""
    placed = rest.new_algo_order(
        algo_type=NewAlgoOrderAlgoTypeEnum.CONDITIONAL,
        symbol=BTC,
        side="SELL",
        type="STOP_MARKET",
        trigger_price=80000,
        close_position="true",
        working_type="MARK_PRICE",
    ).data()
    queried = rest.query_algo_order(algo_id=placed.algo_id).data()
    cancelled = rest.cancel_algo_order(algo_id=placed.algo_id).data()
    assert (placed.algo_status, placed.order_type, placed.close_position) == ("NEW", "STOP_MARKET", True)
    assert queried.algo_id == placed.algo_id
    assert cancelled.algo_id == placed.algo_id
    assert rest.query_algo_order(algo_id=placed.algo_id).data().algo_status == "CANCELED"


def test_a_rejected_order_raises_with_the_venues_code(rest: DerivativesTradingUsdsFuturesRestAPI) -> None:
    """An unknown symbol raises ``BadRequestError`` carrying -1121 "Invalid symbol." from the paper exchange."""
    with pytest.raises(BadRequestError) as refused:
        rest.new_order(symbol="NOPEUSDT", side=NewOrderSideEnum.BUY, type=NewOrderTypeEnum.MARKET, quantity=1)
    assert (refused.value.status_code, refused.value.error_message) == (-1121, "Invalid symbol.")


def test_websocket_streams_mark_price_subscription_delivers_the_mark(paper: PaperExchange) -> None:
    """``mark_price_stream`` (``/market/stream`` and ``SUBSCRIBE``) delivers parsed markPriceUpdate messages."""
    paper.set_price(BTC, "92000.7")

    async def watch() -> tuple[list[Any], Any]:
        streams = await sdk(paper).websocket_streams.create_connection()
        try:
            got: list[Any] = []
            handle = await streams.mark_price_stream(
                symbol="btcusdt", update_speed=MarkPriceStreamUpdateSpeedEnum("1s")
            )
            handle.on("message", got.append)
            for _ in range(50):
                if got:
                    break
                await asyncio.sleep(0.1)
            return got, await streams.list_subscribe()
        finally:
            await streams.close_connection()

    got, listed = asyncio.run(watch())
    assert got, "no mark price arrived through the SDK"
    assert (got[0].e, got[0].s, Decimal(got[0].p)) == ("markPriceUpdate", BTC, Decimal("92000.7"))
    assert listed["result"] == ["btcusdt@markPrice@1s"]


def test_websocket_streams_user_data_delivers_the_order_events(paper: PaperExchange) -> None:
    """``user_data(listenKey)`` (``/private/stream`` and ``SUBSCRIBE [key]``) delivers an order's events."""
    client = sdk(paper)
    key = client.rest_api.start_user_data_stream().data().listen_key
    assert key is not None

    async def trade_and_watch() -> list[Any]:
        streams = await client.websocket_streams.create_connection()
        try:
            got: list[Any] = []
            handle = await streams.user_data(key)
            handle.on("message", got.append)
            await asyncio.sleep(0.3)  # the SUBSCRIBE is sent after a short delay of the SDK's own
            client.rest_api.new_order(
                symbol=BTC, side=NewOrderSideEnum.BUY, type=NewOrderTypeEnum.MARKET, quantity=0.002
            )
            for _ in range(50):
                if len(got) >= 3:
                    break
                await asyncio.sleep(0.1)
            return got
        finally:
            await streams.close_connection()

    got = asyncio.run(trade_and_watch())
    kinds = [type(event.actual_instance).__name__ for event in got]
    assert kinds == ["OrderTradeUpdate", "OrderTradeUpdate", "AccountUpdate"]
    assert got[1].actual_instance.o.X == "FILLED"
