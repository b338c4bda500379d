"""A paper account: USDT wallet, per-symbol leverage and margin type, position mode and positions."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from qexec.paper.catalogue import Symbol
from qexec.paper.decimals import ZERO, fmt

DEFAULT_LEVERAGE = 20
MAINT_MARGIN_RATE = Decimal("0.004")
ACCOUNT_ALIAS = "SgsRpaper"
DEFAULT_ACCOUNT = "default"  # the account of --api-key/--api-secret
ACCOUNT_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")


@dataclass
class Position:
    """A position on one symbol and position side (BOTH, LONG or SHORT); ``amt`` is signed."""

    symbol: str
    side: str
    amt: Decimal = ZERO
    entry: Decimal = ZERO
    update_time_ms: int = 0
    realized: Decimal = ZERO  # accumulated realised PnL before fees (not stored: rebuilt from the fills)

    def apply(self, side: str, qty: Decimal, price: Decimal) -> Decimal:
        """Add a fill of ``qty`` at ``price``; returns the realised PnL of the part that reduced the position."""
        delta = qty if side == "BUY" else -qty
        amt = self.amt
        if amt == 0 or (amt > 0) == (delta > 0):
            new = amt + delta
            self.entry = (abs(amt) * self.entry + qty * price) / abs(new)
            self.amt = new
            return ZERO
        closing = min(qty, abs(amt))
        realized = closing * (price - self.entry) * (1 if amt > 0 else -1)
        new = amt + delta
        if new == 0:
            self.entry = ZERO
        elif (new > 0) != (amt > 0):
            self.entry = price  # flipped through zero: the rest opens at the fill price
        self.amt = new
        return realized

    def unrealized(self, mark: Decimal) -> Decimal:
        """Unrealised PnL at ``mark``."""
        return self.amt * (mark - self.entry) if self.amt else ZERO


class Account:
    """Balances, settings and positions of one paper account."""

    def __init__(self, balance: Decimal, dual_side: bool = False) -> None:
        self.wallet = balance
        self.dual_side = dual_side
        self.leverage: dict[str, int] = {}
        self.margin_type: dict[str, str] = {}
        self.positions: dict[tuple[str, str], Position] = {}
        self.update_time_ms = 0

    def leverage_of(self, symbol: str) -> int:
        """The symbol's leverage (default 20)."""
        return self.leverage.get(symbol, DEFAULT_LEVERAGE)

    def position(self, symbol: str, side: str) -> Position:
        """The position on ``symbol``/``side``, created flat on first use."""
        key = (symbol, side)
        found = self.positions.get(key)
        if found is None:
            found = self.positions[key] = Position(symbol, side)
        return found

    def reducible(self, symbol: str, side: str, position_side: str) -> Decimal:
        """How much an order of ``side`` can reduce the position it targets."""
        pos = self.positions.get((symbol, position_side))
        if pos is None or pos.amt == 0:
            return ZERO
        if (side == "SELL" and pos.amt > 0) or (side == "BUY" and pos.amt < 0):
            return abs(pos.amt)
        return ZERO

    def open_positions(self) -> Iterable[Position]:
        """Positions that are not flat."""
        return (p for p in self.positions.values() if p.amt != 0)

    def position_sides(self) -> tuple[str, ...]:
        """The position sides of the current mode."""
        return ("LONG", "SHORT") if self.dual_side else ("BOTH",)

    def totals(self, mark: Callable[[str], Decimal], order_margin: Decimal) -> dict[str, Decimal]:
        """Wallet, unrealised PnL, margins and available balance at the current marks."""
        unrealized = ZERO
        position_margin = ZERO
        maint = ZERO
        for pos in self.open_positions():
            price = mark(pos.symbol)
            unrealized += pos.unrealized(price)
            notional = abs(pos.amt) * price
            position_margin += notional / self.leverage_of(pos.symbol)
            maint += notional * MAINT_MARGIN_RATE
        available = self.wallet + unrealized - position_margin - order_margin
        return {
            "wallet": self.wallet,
            "unrealized": unrealized,
            "position_margin": position_margin,
            "order_margin": order_margin,
            "maint": maint,
            "available": available,
        }

    def balance_wire(self, totals: dict[str, Decimal]) -> list[dict[str, Any]]:
        """``GET /fapi/v2|v3/balance``."""
        available = max(totals["available"], ZERO)
        return [
            {
                "accountAlias": ACCOUNT_ALIAS,
                "asset": "USDT",
                "balance": fmt(self.wallet, 8),
                "crossWalletBalance": fmt(self.wallet, 8),
                "crossUnPnl": fmt(totals["unrealized"], 8),
                "availableBalance": fmt(available, 8),
                "maxWithdrawAmount": fmt(min(available, self.wallet), 8),
                "marginAvailable": True,
                "updateTime": self.update_time_ms,
            }
        ]

    def position_wire(self, pos: Position, symbol: Symbol, mark: Decimal, version: int) -> dict[str, Any]:
        """One ``positionRisk`` entry (v2 has leverage and margin type, v3 has margins instead)."""
        leverage = self.leverage_of(pos.symbol)
        notional = pos.amt * mark
        margin = abs(notional) / leverage
        isolated = self.margin_type.get(pos.symbol, "CROSSED") == "ISOLATED"
        pp = max(symbol.price_places, 5)
        body: dict[str, Any] = {
            "symbol": pos.symbol,
            "positionSide": pos.side,
            "positionAmt": fmt(pos.amt, symbol.qty_places),
            "entryPrice": fmt(pos.entry, pp),
            "breakEvenPrice": fmt(pos.entry, pp),
            "markPrice": fmt(mark, 8),
            "unRealizedProfit": fmt(pos.unrealized(mark), 8),
            "liquidationPrice": "0",
            "isolatedMargin": fmt(margin if isolated else ZERO, 8),
            "notional": fmt(notional, 8),
            "isolatedWallet": fmt(margin if isolated else ZERO, 8),
            "updateTime": pos.update_time_ms,
        }
        if version == 2:
            body.update(
                {
                    "marginType": "isolated" if isolated else "cross",
                    "isAutoAddMargin": "false",
                    "leverage": str(leverage),
                    "maxNotionalValue": max_notional(leverage),
                }
            )
        else:
            body.update(
                {
                    "marginAsset": "USDT",
                    "initialMargin": fmt(margin, 8),
                    "maintMargin": fmt(abs(notional) * MAINT_MARGIN_RATE, 8),
                    "positionInitialMargin": fmt(margin, 8),
                    "openOrderInitialMargin": "0",
                    "adl": 0,
                    "bidNotional": "0",
                    "askNotional": "0",
                }
            )
        return body


def max_notional(leverage: int) -> str:
    """The notional cap of the leverage bracket ``leverage`` falls into."""
    return str(max(50_000, 250_000_000 // max(leverage, 1) // 50 * 50))
