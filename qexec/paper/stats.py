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
    http_429: int = 0
    http_418: int = 0
    limit_violations: int = 0
    ws_events: int = 0

    def to_json(self, fills: int, ws_connections: int) -> dict[str, Any]:
        """The counters as ``GET /paper/v1/stats`` shows them (``ws_connections``: websockets open now)."""
        return {
            "requests": dict(self.requests),
            "orders_placed": self.orders_placed,
            "algo_orders_placed": self.algo_orders_placed,
            "fills": fills,
            "http_429": self.http_429,
            "http_418": self.http_418,
            "limit_violations": self.limit_violations,
            "faults_fired": dict(self.faults_fired),
            "faults_fired_total": sum(self.faults_fired.values()),
            "errors": {str(k): v for k, v in self.errors.items()},
            "ws_connections": ws_connections,
            "ws_events": self.ws_events,
        }
