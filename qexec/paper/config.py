"""The paper exchange's run-time knobs: set by command-line flags, changed through the admin API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from typing import Any

TRADE_RETENTION_S = 180 * 24 * 3600.0  # Binance: userTrades "only support querying trade in the past 6 months"


@dataclass
class Config:
    """Everything ``POST /paper/v1/config`` can change, with the command line's values as defaults."""

    fill_delay_ms: int = 0
    result_wait_ms: int = 2000
    latency_ms: int = 0
    slippage_bps: float = 1.0
    taker_fee_rate: float = 0.0005
    maker_fee_rate: float = 0.0002
    tick_ms: int = 1000
    weight_limit: int = 2400
    orders_per_min: int = 1200
    orders_per_10s: int = 300
    ban_after: int = 10
    ban_s: float = 120.0
    listen_key_ttl_s: float = 3600.0  # a listen key lives this long after its POST or last PUT
    ws_queue_limit: int = 10_000  # frames a websocket may have unsent before it is cut
    trade_retention_s: float = TRADE_RETENTION_S  # userTrades returns no fill older than this
    # Answer new orders without `avgPrice` and `cumQuote`, as Binance's own SDK spec of 2026 describes the response
    # (not confirmed on the live venue): a client must then learn the fill's price elsewhere (the user-data stream).
    order_answer_without_price: bool = False
    # Whether a countdownCancelAll that runs out also cancels the symbol's algo (SL/TP) orders: Binance does not say.
    countdown_cancels_algo: bool = False
    chaos: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The configuration as the admin API shows it."""
        body = asdict(self)
        body["limits"] = {
            "weight_per_min": self.weight_limit,
            "orders_per_min": self.orders_per_min,
            "orders_per_10s": self.orders_per_10s,
            "ban_after": self.ban_after,
            "ban_s": self.ban_s,
        }
        return body

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial configuration (flat keys, a ``limits`` object, a ``chaos`` object)."""
        changes = dict(changes)
        limits = changes.pop("limits", None) or {}
        aliases = {"weight_per_min": "weight_limit"}
        for key, value in limits.items():
            changes[aliases.get(key, key)] = value
        known = {f.name: f for f in fields(self)}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown config key {key!r}")
            if key == "chaos":
                if value is not None and not isinstance(value, dict):
                    raise ValueError("chaos must be an object")
                self.chaos = dict(value or {})
                continue
            current = getattr(self, key)
            setattr(self, key, type(current)(value))

    def fee_decimals(self) -> tuple[Decimal, Decimal, Decimal]:
        """Slippage (bps), taker and maker fee rates as decimals for the engine."""
        return Decimal(str(self.slippage_bps)), Decimal(str(self.taker_fee_rate)), Decimal(str(self.maker_fee_rate))
