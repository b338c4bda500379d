"""What qexec asks of a venue: the calls its steps make, each with a typed answer. `binance.py` is the one that
speaks to Binance; a second venue, or a test double, is a class with these members."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NoReturn, Protocol

from qexec.config import Settings
from qexec.models import AlgoOrder, Balance, OrderState, OrderType, PositionRisk, Side, Trade
from qexec.venue.feed import Feed
from qexec.venue.identity import VenueIdentity
from qexec.venue.limiter import Limiter
from qexec.venue.rules import ExchangeRules


def _not_offered(venue: object, call: str) -> NoReturn:
    raise NotImplementedError(f"{type(venue).__name__} does not offer {call}")


class Venue(Protocol):
    """A USD-M futures venue over REST. Reads that the websocket stream can answer go through `venue/view.py`.

    A class that subclasses this one explicitly gets a refusal (NotImplementedError) for every call it leaves out, so
    a test double names only what its test reaches.
    """

    @property
    def settings(self) -> Settings:
        return _not_offered(self, "settings")

    @property
    def identity(self) -> VenueIdentity:
        return _not_offered(self, "identity")

    @property
    def mode(self) -> str:
        """The venue's name (`paper`, `testnet`, `demo`, `mainnet`)."""
        return _not_offered(self, "mode")

    @property
    def url(self) -> str:
        return _not_offered(self, "url")

    @property
    def host(self) -> str:
        return _not_offered(self, "host")

    @property
    def limiter(self) -> Limiter | None:
        """The deployment's shared rate budget, when the venue spends one."""
        return None

    @property
    def label(self) -> str:
        return f"{self.mode}@{self.host}"

    @property
    def feed(self) -> Feed | None:
        return None

    def close(self) -> None:
        return None

    # -- time, rules and the account's set-up ---------------------------------------------------------
    def sync_clock(self) -> int:
        return _not_offered(self, "sync_clock")

    def server_time_ms(self) -> int:
        return _not_offered(self, "server_time_ms")

    def clock_offset_ms(self) -> int:
        return _not_offered(self, "clock_offset_ms")

    def rules(self, *, refresh: bool = False) -> ExchangeRules:
        return _not_offered(self, "rules")

    def mark_price(self, symbol: str) -> Decimal:
        return _not_offered(self, "mark_price")

    def dual_side(self) -> bool:
        return _not_offered(self, "dual_side")

    def set_leverage(self, symbol: str, leverage: int) -> int:
        return _not_offered(self, "set_leverage")

    def leverage(self, symbol: str) -> int:
        return _not_offered(self, "leverage")

    def check(self, budget_wait_s: float = 60.0) -> dict[str, Any]:
        return _not_offered(self, "check")

    # -- the account ----------------------------------------------------------------------------------
    def balances(self) -> list[Balance]:
        return _not_offered(self, "balances")

    def positions(self, symbol: str | None = None) -> list[PositionRisk]:
        return _not_offered(self, "positions")

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        return _not_offered(self, "open_orders")

    def open_algo_orders(self, symbol: str | None = None) -> list[AlgoOrder]:
        return _not_offered(self, "open_algo_orders")

    def user_trades(
        self, symbol: str, *, start_ms: int | None = None, end_ms: int | None = None, order_id: int | None = None
    ) -> list[Trade]:
        return _not_offered(self, "user_trades")

    def new_listen_key(self) -> str:
        return _not_offered(self, "new_listen_key")

    def keepalive_listen_key(self, key: str) -> None:
        _not_offered(self, "keepalive_listen_key")

    # -- orders ---------------------------------------------------------------------------------------
    def place_order(
        self,
        *,
        symbol: str,
        side: Side,
        order_type: OrderType,
        quantity: Decimal,
        client_order_id: str,
        price: Decimal | None = None,
        reduce_only: bool = False,
        position_side: str | None = None,
        time_in_force: str = "GTC",
        spent: Any = None,
    ) -> OrderState:
        return _not_offered(self, "place_order")

    def get_order(self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None) -> OrderState:
        return _not_offered(self, "get_order")

    def cancel_order(self, symbol: str, *, order_id: int) -> OrderState:
        return _not_offered(self, "cancel_order")

    def cancel_all_orders(self, symbol: str) -> None:
        _not_offered(self, "cancel_all_orders")

    def countdown_cancel_all(self, symbol: str, countdown_ms: int) -> None:
        """The venue's dead-man switch: cancel the symbol's open orders unless renewed within `countdown_ms` (0 ends
        the countdown)."""
        _not_offered(self, "countdown_cancel_all")

    def place_algo_order(
        self,
        *,
        symbol: str,
        side: Side,
        order_type: str,
        trigger_price: Decimal,
        client_algo_id: str,
        position_side: str | None = None,
        quantity: Decimal | None = None,
    ) -> AlgoOrder:
        return _not_offered(self, "place_algo_order")

    def get_algo_order(self, *, client_algo_id: str | None = None, algo_id: int | None = None) -> AlgoOrder:
        return _not_offered(self, "get_algo_order")

    def cancel_algo_order(self, *, client_algo_id: str | None = None, algo_id: int | None = None) -> None:
        _not_offered(self, "cancel_algo_order")
