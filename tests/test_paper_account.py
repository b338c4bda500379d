"""The paper account: balances, leverage, margin type, positions, PnL and hedge mode."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from binance.exceptions import BinanceAPIException
from paper_fixtures import PaperExchange


def test_fresh_account_holds_ten_thousand_usdt(paper: PaperExchange) -> None:
    """The default wallet is 10,000 USDT, all of it available."""
    client = paper.client()
    (usdt,) = client.futures_account_balance()
    assert (usdt["asset"], usdt["balance"], usdt["availableBalance"]) == ("USDT", "10000.00000000", "10000.00000000")
    account = client.futures_account()
    assert account["totalWalletBalance"] == "10000.00000000"
    assert account["assets"][0]["asset"] == "USDT"
    v2_balance = client.futures_account_balance(version=2)
    assert v2_balance[0]["balance"] == usdt["balance"]


def test_reset_accepts_a_balance_and_position_mode(paper: PaperExchange) -> None:
    """POST /paper/v1/reset can start with another balance and in hedge mode."""
    paper.admin("POST", "/paper/v1/reset", {"balance": 500, "dual_side": True})
    client = paper.client()
    assert client.futures_account_balance()[0]["balance"] == "500.00000000"
    assert client.futures_get_position_mode() == {"dualSidePosition": True}


def test_leverage_is_changed_per_symbol_and_bounded(paper: PaperExchange) -> None:
    """Leverage 1..max is accepted and shown in positionRisk v2; 0 and 200 get -4028."""
    client = paper.client()
    changed = client.futures_change_leverage(symbol="BTCUSDT", leverage=5)
    assert (changed["leverage"], changed["symbol"]) == (5, "BTCUSDT")
    risk = client.futures_position_information(symbol="BTCUSDT", version=2)
    assert risk[0]["leverage"] == "5"
    for bad in (0, 200):
        with pytest.raises(BinanceAPIException) as caught:
            client.futures_change_leverage(symbol="BTCUSDT", leverage=bad)
        assert caught.value.code == -4028


def test_initial_margin_is_notional_over_leverage(paper: PaperExchange) -> None:
    """An order whose notional / leverage exceeds the available balance gets -2019."""
    client = paper.client()
    paper.set_price("ETHUSDT", "3300.00")
    client.futures_change_leverage(symbol="ETHUSDT", leverage=1)
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="3.100")
    assert (caught.value.code, caught.value.message) == (-2019, "Margin is insufficient.")
    client.futures_change_leverage(symbol="ETHUSDT", leverage=20)
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="3.100")


def test_scaling_in_averages_the_entry_and_unrealised_pnl_follows_the_mark(paper: PaperExchange) -> None:
    """Two buys give a weighted entry; unrealised PnL is amount x (mark - entry)."""
    paper.admin("POST", "/paper/v1/config", {"slippage_bps": 0})
    client = paper.client()
    paper.set_price("LTCUSDT", "90.00")
    client.futures_create_order(symbol="LTCUSDT", side="BUY", type="MARKET", quantity="1.000")
    paper.set_price("LTCUSDT", "100.00")
    client.futures_create_order(symbol="LTCUSDT", side="BUY", type="MARKET", quantity="3.000")
    paper.set_price("LTCUSDT", "110.00")
    (position,) = client.futures_position_information(symbol="LTCUSDT")
    assert Decimal(position["entryPrice"]) == Decimal("97.5")
    assert Decimal(position["unRealizedProfit"]) == Decimal("50")
    assert Decimal(position["notional"]) == Decimal("440")
    assert "leverage" not in position and "marginType" not in position


def test_closing_realises_pnl_into_the_wallet_net_of_fees(paper: PaperExchange) -> None:
    """Closing a long at a higher price adds the profit minus taker fees to the wallet."""
    paper.admin("POST", "/paper/v1/config", {"slippage_bps": 0})
    client = paper.client()
    paper.set_price("BNBUSDT", "600.000")
    client.futures_create_order(symbol="BNBUSDT", side="BUY", type="MARKET", quantity="1.00")
    paper.set_price("BNBUSDT", "650.000")
    client.futures_create_order(symbol="BNBUSDT", side="SELL", type="MARKET", quantity="1.00")
    fees = (Decimal(600) + Decimal(650)) * Decimal("0.0005")
    wallet = Decimal(client.futures_account_balance()[0]["balance"])
    assert wallet == Decimal(10000) + Decimal(50) - fees


def test_hedge_mode_holds_long_and_short_side_by_side(paper: PaperExchange) -> None:
    """In hedge mode LONG and SHORT positions coexist; BOTH gets -4061 and reduceOnly gets -1106."""
    client = paper.client()
    assert client.futures_change_position_mode(dualSidePosition="true") == {"code": 200, "msg": "success"}
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.100", positionSide="LONG")
    client.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.050", positionSide="SHORT")
    sides = {p["positionSide"]: p["positionAmt"] for p in client.futures_position_information(symbol="ETHUSDT")}
    assert sides == {"LONG": "0.100", "SHORT": "-0.050"}
    with pytest.raises(BinanceAPIException) as both:
        client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.100")
    assert both.value.code == -4061
    with pytest.raises(BinanceAPIException) as reduce_only:
        client.futures_create_order(
            symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.100", positionSide="LONG", reduceOnly="true"
        )
    assert reduce_only.value.code == -1106
    client.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.100", positionSide="LONG")
    sides = {p["positionSide"]: p["positionAmt"] for p in client.futures_position_information(symbol="ETHUSDT")}
    assert sides == {"LONG": "0.000", "SHORT": "-0.050"}
    with pytest.raises(BinanceAPIException) as nothing_to_close:
        client.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.100", positionSide="LONG")
    assert nothing_to_close.value.code == -2022


def test_position_mode_cannot_change_with_a_position_or_to_itself(paper: PaperExchange) -> None:
    """Switching to the current mode gets -4059; switching with an open position gets -4068."""
    client = paper.client()
    with pytest.raises(BinanceAPIException) as same:
        client.futures_change_position_mode(dualSidePosition="false")
    assert same.value.code == -4059
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.100")
    with pytest.raises(BinanceAPIException) as busy:
        client.futures_change_position_mode(dualSidePosition="true")
    assert busy.value.code == -4068


def test_margin_type_changes_once_and_shows_in_position_risk_v2(paper: PaperExchange) -> None:
    """ISOLATED is accepted, shown as "isolated" in v2, and asking again gets -4046."""
    client = paper.client()
    assert client.futures_change_margin_type(symbol="AXSUSDT", marginType="ISOLATED") == {"code": 200, "msg": "success"}
    assert client.futures_position_information(symbol="AXSUSDT", version=2)[0]["marginType"] == "isolated"
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_change_margin_type(symbol="AXSUSDT", marginType="ISOLATED")
    assert caught.value.code == -4046


def test_position_risk_v3_lists_only_symbols_with_a_position_or_open_orders(paper: PaperExchange) -> None:
    """v3 returns active symbols only; v2 returns every symbol with leverage and margin type."""
    client = paper.client()
    paper.set_price("DOGEUSDT", "0.320000")
    client.futures_create_order(symbol="DOGEUSDT", side="BUY", type="MARKET", quantity="100")
    client.futures_create_order(
        symbol="XRPUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="10.0", price="1.0000"
    )
    assert sorted(p["symbol"] for p in client.futures_position_information()) == ["DOGEUSDT", "XRPUSDT"]
    every = client.futures_position_information(version=2)
    assert len(every) >= 20
    assert {"leverage", "marginType", "maxNotionalValue"} <= set(every[0])
    account_v3 = paper.signed("GET", "/fapi/v3/account").json()
    assert [p["symbol"] for p in account_v3["positions"]] == ["DOGEUSDT"]


def test_leverage_bracket_describes_the_symbol(paper: PaperExchange) -> None:
    """leverageBracket for one symbol gives its brackets starting at the maximum leverage."""
    bracket = paper.client().futures_leverage_bracket(symbol="BTCUSDT")
    assert bracket["symbol"] == "BTCUSDT"
    assert bracket["brackets"][0]["initialLeverage"] == 125


def test_lowering_the_leverage_of_an_open_position_beyond_the_margin_gets_2028(paper: PaperExchange) -> None:
    """5 ETH open at 20x; 1x would need more margin than is available: -2028, and the leverage stays 20."""
    client = paper.client()
    paper.set_price("ETHUSDT", "3300.00")
    client.futures_change_leverage(symbol="ETHUSDT", leverage=20)
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="5")
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_change_leverage(symbol="ETHUSDT", leverage=1)
    assert caught.value.code == -2028
    assert client.futures_position_information(symbol="ETHUSDT", version=2)[0]["leverage"] == "20"
    assert client.futures_change_leverage(symbol="ETHUSDT", leverage=10)["leverage"] == 10  # margin enough for 10x


def test_a_funded_asset_and_a_traded_position_carry_the_time_they_last_changed(paper: PaperExchange) -> None:
    """USDT's updateTime (account v2/v3 assets, balance v2/v3) is the funding time, then the last fill's; a
    position's is its last fill's; a symbol never traded keeps 0, as on Binance."""
    client = paper.client()
    before = int(time.time() * 1000)
    paper.admin("POST", "/paper/v1/reset")
    funded = {
        "account v2": client.futures_account(version=2)["assets"][0]["updateTime"],
        "account v3": client.futures_account(version=3)["assets"][0]["updateTime"],
        "balance v2": client.futures_account_balance(version=2)[0]["updateTime"],
        "balance v3": client.futures_account_balance(version=3)[0]["updateTime"],
    }
    assert len(set(funded.values())) == 1 and before <= funded["balance v3"] <= int(time.time() * 1000), funded
    time.sleep(0.01)
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.010")
    (fill,) = client.futures_account_trades(symbol="ETHUSDT")
    assert client.futures_account_balance()[0]["updateTime"] == fill["time"] > funded["balance v3"]
    assert client.futures_account(version=3)["assets"][0]["updateTime"] == fill["time"]
    (position,) = client.futures_position_information(symbol="ETHUSDT")
    assert position["updateTime"] == fill["time"]
    positions = {p["symbol"]: p for p in client.futures_account(version=2)["positions"]}
    assert (positions["ETHUSDT"]["updateTime"], positions["SOLUSDT"]["updateTime"]) == (fill["time"], 0)


def test_raising_the_leverage_past_the_open_positions_bracket_gets_2027(paper: PaperExchange) -> None:
    """30 BTC (2.85M USDT) open at 20x; 125x caps a position at 2M: -2027 and the leverage stays; 50x (5M) is fine."""
    paper.admin("POST", "/paper/v1/reset", {"balance": 1_000_000})
    paper.set_price("BTCUSDT", "95000.00")
    client = paper.client()
    client.futures_change_leverage(symbol="BTCUSDT", leverage=20)
    client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="30")
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_change_leverage(symbol="BTCUSDT", leverage=125)
    assert (caught.value.code, caught.value.message) == (
        -2027,
        "Exceeded the maximum allowable position at current leverage.",
    )
    assert client.futures_position_information(symbol="BTCUSDT", version=2)[0]["leverage"] == "20"
    assert client.futures_change_leverage(symbol="BTCUSDT", leverage=50)["maxNotionalValue"] == "5000000"
