"""Mark prices: a seeded random walk per symbol, its one-minute history, and views built from it."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import Decimal

from qexec.paper.catalogue import Symbol
from qexec.paper.decimals import ZERO, fmt, plain, round_to

MINUTE_MS = 60_000
HISTORY_MINUTES = 50_000
BACKFILL_MINUTES = 1_000
STEP_SIGMA = 0.0004
FUNDING_PERIOD_MS = 8 * 3_600_000
INTERVAL_MS = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "2h": 120 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "6h": 360 * MINUTE_MS,
    "8h": 480 * MINUTE_MS,
    "12h": 720 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS,
    "3d": 3 * 1440 * MINUTE_MS,
    "1w": 7 * 1440 * MINUTE_MS,
}


@dataclass
class Candle:
    """One minute of a symbol's mark-price history."""

    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = ZERO
    quote_volume: Decimal = ZERO
    trades: int = 0

    def update(self, price: Decimal) -> None:
        """Extend the candle with a new price."""
        self.close = price
        self.high = max(self.high, price)
        self.low = min(self.low, price)


class PriceBook:
    """Mark prices of every symbol, moved by a seeded walk or set exactly."""

    def __init__(self, symbols: dict[str, Symbol], seed: int, now_ms: int) -> None:
        self.symbols = symbols
        self.seed = seed
        self.marks: dict[str, Decimal] = {}
        self.history: dict[str, list[Candle]] = {}  # one-minute candles, oldest first
        self.rng = random.Random(seed)
        self.restart(now_ms)

    def restart(self, now_ms: int, marks: dict[str, Decimal] | None = None) -> None:
        """Start over from the catalogue prices (or ``marks``) with the walk reseeded; history is kept."""
        self.rng = random.Random(self.seed)
        self.marks = {name: s.price for name, s in self.symbols.items()}
        if marks:
            self.marks.update({k: v for k, v in marks.items() if k in self.symbols})
        for name, price in self.marks.items():
            if name not in self.history:
                self.history[name] = self._backfill(name, now_ms)
            self.set(name, price, now_ms)

    def _backfill(self, name: str, now_ms: int) -> list[Candle]:
        # A deterministic past, walked backwards from today's mark, so klines are never empty.
        symbol = self.symbols[name]
        rng = random.Random(f"{self.seed}:{name}")
        price = float(self.marks[name])
        candles: list[Candle] = []
        minute = now_ms - now_ms % MINUTE_MS
        for i in range(BACKFILL_MINUTES, 0, -1):
            close = price
            open_ = price * math.exp(rng.gauss(0, STEP_SIGMA * 6))
            wiggle = abs(rng.gauss(0, STEP_SIGMA * 3))
            high, low = max(open_, close) * (1 + wiggle), min(open_, close) * (1 - wiggle)
            volume = Decimal(str(round(rng.uniform(50, 500) * float(symbol.min_notional) / price, 3)))
            candles.append(
                Candle(
                    minute - i * MINUTE_MS,
                    self._tick(symbol, open_),
                    self._tick(symbol, high),
                    self._tick(symbol, low),
                    self._tick(symbol, close),
                    volume,
                    volume * Decimal(str(price)),
                    rng.randint(10, 200),
                )
            )
            price = open_
        candles.reverse()
        candles.sort(key=lambda c: c.open_ms)
        return candles

    @staticmethod
    def _tick(symbol: Symbol, price: float) -> Decimal:
        return max(round_to(Decimal(str(price)), symbol.tick_size), symbol.tick_size)

    def mark(self, name: str) -> Decimal:
        """The current mark price of ``name``."""
        return self.marks[name]

    def set(self, name: str, price: Decimal, now_ms: int) -> None:
        """Set the mark of ``name`` exactly and record it in the history."""
        self.marks[name] = price
        minute = now_ms - now_ms % MINUTE_MS
        candles = self.history[name]
        if candles and candles[-1].open_ms == minute:
            candles[-1].update(price)
        elif not candles or candles[-1].open_ms < minute:
            candles.append(Candle(minute, price, price, price, price))
            if len(candles) > HISTORY_MINUTES:
                del candles[: len(candles) - HISTORY_MINUTES]

    def walk(self, now_ms: int) -> list[str]:
        """Move every mark one random step; returns the symbols whose mark changed."""
        moved = []
        for name, symbol in self.symbols.items():
            old = self.marks[name]
            new = self._tick(symbol, float(old) * math.exp(self.rng.gauss(0, STEP_SIGMA)))
            if new != old:
                self.set(name, new, now_ms)
                moved.append(name)
        return moved

    def record_trade(self, name: str, qty: Decimal, price: Decimal) -> None:
        """Add a paper fill to the current minute's volume."""
        candle = self.history[name][-1]
        candle.volume += qty
        candle.quote_volume += qty * price
        candle.trades += 1

    def day(self, name: str, now_ms: int) -> list[Candle]:
        """The minute candles of the last 24 hours, oldest first."""
        since = now_ms - 24 * 60 * MINUTE_MS
        return [c for c in self.history[name] if c.open_ms + MINUTE_MS > since]

    def klines(
        self, name: str, interval_ms: int, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[list[object]]:
        """Klines of ``interval_ms`` built from the minute history, oldest first."""
        symbol = self.symbols[name]
        buckets: list[Candle] = []
        for c in self.history[name]:
            if start_ms is not None and c.open_ms + MINUTE_MS <= start_ms - start_ms % interval_ms:
                continue
            if end_ms is not None and c.open_ms > end_ms:
                break
            open_ms = c.open_ms - c.open_ms % interval_ms
            if buckets and buckets[-1].open_ms == open_ms:
                bucket = buckets[-1]
                bucket.update(c.high)
                bucket.update(c.low)
                bucket.close = c.close
                bucket.volume += c.volume
                bucket.quote_volume += c.quote_volume
                bucket.trades += c.trades
            else:
                buckets.append(Candle(open_ms, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades))
        if start_ms is not None:
            buckets = [b for b in buckets if b.open_ms >= start_ms - start_ms % interval_ms][:limit]
        else:
            buckets = buckets[-limit:]
        pp, qp = symbol.price_places, symbol.qty_places
        return [
            [
                b.open_ms,
                fmt(b.open, pp),
                fmt(b.high, pp),
                fmt(b.low, pp),
                fmt(b.close, pp),
                fmt(b.volume, qp),
                b.open_ms + interval_ms - 1,
                fmt(b.quote_volume, 5),
                b.trades,
                fmt(b.volume / 2, qp),
                fmt(b.quote_volume / 2, 5),
                "0",
            ]
            for b in buckets
        ]

    def depth(self, name: str, limit: int, update_id: int) -> dict[str, object]:
        """A plausible order book of ``limit`` levels a side around the mark."""
        symbol = self.symbols[name]
        mark = self.marks[name]
        tick, step = symbol.tick_size, symbol.step_size
        base = max(symbol.min_notional / mark, symbol.min_qty)
        pp, qp = symbol.price_places, symbol.qty_places
        bids, asks = [], []
        for i in range(limit):
            size = round_to(base * (1 + (i * 7919 + update_id) % 37), step) or step
            bid = mark - tick * (i + 1)
            if bid > 0:
                bids.append([fmt(bid, pp), fmt(size, qp)])
            asks.append([fmt(mark + tick * (i + 1), pp), fmt(size, qp)])
        return {"lastUpdateId": update_id, "bids": bids, "asks": asks}

    def premium_index(self, name: str, now_ms: int) -> dict[str, object]:
        """The ``premiumIndex`` entry of ``name``."""
        mark = self.marks[name]
        places = max(self.symbols[name].price_places, 8)
        return {
            "symbol": name,
            "markPrice": fmt(mark, places),
            "indexPrice": fmt(mark, places),
            "estimatedSettlePrice": fmt(mark, places),
            "lastFundingRate": "0.00010000",
            "interestRate": "0.00010000",
            "nextFundingTime": now_ms - now_ms % FUNDING_PERIOD_MS + FUNDING_PERIOD_MS,
            "time": now_ms,
        }

    def ticker(self, name: str, now_ms: int) -> dict[str, object]:
        """The ``ticker/price`` entry of ``name``."""
        return {"symbol": name, "price": plain(self.marks[name]), "time": now_ms}
