"""Counters of what the paper exchange did, for tests and the chaos suite."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Requests per endpoint, orders, refusals, faults and websocket frames sent since the last reset."""

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[int] = field(default_factory=Counter)
    faults_fired: Counter[str] = field(default_factory=Counter)
    orders_placed: int = 0
    algo_orders_placed: int = 0
    orders_by_account: Counter[str] = field(default_factory=Counter)
    algo_orders_by_account: Counter[str] = field(default_factory=Counter)
    http_429: int = 0
    http_418: int = 0
    limit_violations: int = 0
    ws_events: int = 0

    def order_placed(self, account: str) -> None:
        """Count a new order of ``account``."""
        self.orders_placed += 1
        self.orders_by_account[account] += 1

    def algo_order_placed(self, account: str) -> None:
        """Count a new algo order of ``account``."""
        self.algo_orders_placed += 1
        self.algo_orders_by_account[account] += 1

    def to_json(self, fills: dict[str, int], ws_connections: int) -> dict[str, Any]:
        """The counters as ``GET /paper/v1/stats`` shows them (``fills``: per account; ``ws_connections``:
        websockets open now); totals first, then ``accounts`` with each account's own counts."""
        accounts = {
            name: {
                "orders_placed": self.orders_by_account[name],
                "algo_orders_placed": self.algo_orders_by_account[name],
                "fills": count,
            }
            for name, count in fills.items()
        }
        return {
            "requests": dict(self.requests),
            "orders_placed": self.orders_placed,
            "algo_orders_placed": self.algo_orders_placed,
            "fills": sum(fills.values()),
            "accounts": accounts,
            "http_429": self.http_429,
            "http_418": self.http_418,
            "limit_violations": self.limit_violations,
            "faults_fired": dict(self.faults_fired),
            "faults_fired_total": sum(self.faults_fired.values()),
            "errors": {str(k): v for k, v in self.errors.items()},
            "ws_connections": ws_connections,
            "ws_events": self.ws_events,
        }
