"""The exchange's accounts by name, each with its own engine, over one market: symbols, marks, settings, id
sequences. Moving a mark runs every account's resting orders and triggers against it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal

from qexec.paper import errors
from qexec.paper.account import DEFAULT_ACCOUNT
from qexec.paper.catalogue import Symbol
from qexec.paper.decimals import round_to
from qexec.paper.engine import Engine, Sequences, Settings, now_ms
from qexec.paper.orders import Fill
from qexec.paper.prices import PriceBook


class UnknownAccount(KeyError):
    """Raised when an account name is not one the exchange serves."""


class Accounts:
    """Every account's engine by name (``default`` first), the marks they share and which marks moved."""

    def __init__(
        self, symbols: dict[str, Symbol], prices: PriceBook, names: Iterable[str], balance: Decimal, settings: Settings
    ) -> None:
        self.symbols = symbols
        self.prices = prices
        self.ids = Sequences()
        self.moved: set[str] = set()  # marks changed since the state store last saved
        ordered = [DEFAULT_ACCOUNT, *(n for n in names if n != DEFAULT_ACCOUNT)]
        self.by_name = {name: Engine(symbols, prices, balance, settings, name=name, ids=self.ids) for name in ordered}

    def __iter__(self) -> Iterator[Engine]:
        return iter(self.by_name.values())

    @property
    def default(self) -> Engine:
        """The account of the default key pair."""
        return self.by_name[DEFAULT_ACCOUNT]

    def get(self, name: str | None) -> Engine:
        """The account ``name`` (None: ``default``); ``UnknownAccount`` when there is none of that name."""
        found = self.by_name.get(name or DEFAULT_ACCOUNT)
        if found is None:
            raise UnknownAccount(name)
        return found

    def apply_settings(self, settings: Settings) -> None:
        """Give every account the same fees, slippage and retention."""
        for engine in self:
            engine.settings = settings

    def set_price(self, name: str, price: Decimal) -> None:
        """Move the mark of ``name`` and run every account's limit orders and triggers it crosses."""
        symbol = self.default.symbol(name)
        price = round_to(price, symbol.tick_size)
        if price <= 0:
            raise errors.invalid("price")
        self.prices.set(name, price, now_ms())
        self.moved.add(name)
        self.evaluate(name)

    def tick(self) -> None:
        """One step of the random walk, then every account's evaluation of the symbols that moved."""
        for name in self.prices.walk(now_ms()):
            self.moved.add(name)
            self.evaluate(name)

    def evaluate(self, name: str) -> None:
        """Run the resting orders and triggers of every account on ``name`` at its mark."""
        for engine in self:
            engine.evaluate(name)

    def last_fill(self, symbol: str) -> Fill | None:
        """The symbol's most recent fill of any account (the market's only trades)."""
        latest = [fills[-1] for engine in self if (fills := engine.fills.get(symbol))]
        return max(latest, key=lambda f: f.trade_id) if latest else None

    def listen_key_owner(self, key: str, now: int) -> Engine | None:
        """The account whose active listen key ``key`` is, or None."""
        for engine in self:
            if key and engine.active_listen_key(now) == key:
                return engine
        return None

    def fill_count(self) -> int:
        """Fills of every account since the last reset."""
        return sum(engine.fill_count for engine in self)
