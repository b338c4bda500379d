"""The venue's bad days on request: scripted faults per endpoint and count, and a seeded random mode."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any

from qexec.paper import errors
from qexec.paper.params import Params

# Faults that answer before the request is carried out, those that shape fills, and those that answer after.
BEFORE = frozenset({"reject", "unknown_before", "unavailable", "timestamp", "rate_limit"})
FILL = frozenset({"fill_delay", "partial_fill"})
AFTER = frozenset({"unknown_after", "slow"})
# Faults whose moment is the ``executed`` flag: after the request ran (the default) or instead of running it.
EXECUTED_OR_NOT = frozenset({"timeout", "drop"})
KINDS = BEFORE | FILL | AFTER | EXECUTED_OR_NOT | {"latency"}
DEFAULT_ENDPOINT = "POST /fapi/v1/order"
WS_PREFIX = "WS "  # a WebSocket API request's endpoint name: "WS order.place"
WS_ONLY = frozenset({"drop"})  # kinds that only a websocket can suffer: the server closes the connection


@dataclass
class Fault:
    """One scripted fault: which requests it hits, how many times, and what it does."""

    kind: str
    endpoint: str = DEFAULT_ENDPOINT
    symbol: str | None = None
    client_order_id: str | None = None
    account: str | None = None  # the account whose requests it hits; None: any account's
    count: int = 1
    delay_ms: int = 0
    ratio: float = 0.5
    code: int | None = None
    msg: str | None = None
    status: int | None = None
    executed: bool = True
    seconds: float = 10.0
    id: int = 0
    fired: int = 0

    @classmethod
    def from_json(cls, body: dict[str, Any], fault_id: int) -> Fault:
        """A fault from its admin-API JSON (ValueError when it is not one)."""
        known = {f.name for f in fields(cls)} - {"id", "fired"}
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if body.get("kind") not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}")
        fault = cls(**body, id=fault_id)
        if fault.count < 0:
            raise ValueError("count must be >= 0 (0 means every matching request)")
        if fault.kind == "partial_fill" and not 0 < fault.ratio < 1:
            raise ValueError("ratio must be between 0 and 1")
        return fault

    @property
    def when(self) -> str:
        """``before``, ``fill`` or ``after``: the moment the fault acts."""
        if self.kind in FILL:
            return "fill"
        if self.kind in AFTER or (self.kind in EXECUTED_OR_NOT and self.executed):
            return "after"
        if self.kind == "latency":
            return "latency"
        return "before"

    def matches(self, endpoint: str, p: Params, account: str) -> bool:
        """True when this fault applies to a request of ``endpoint`` with ``p`` on ``account``."""
        if self.endpoint not in ("*", endpoint):
            return False
        if self.account is not None and self.account != account:
            return False
        if self.kind in WS_ONLY and not endpoint.startswith(WS_PREFIX):
            return False
        if self.symbol is not None and p.get("symbol") != self.symbol:
            return False
        ids = (p.get("newClientOrderId"), p.get("origClientOrderId"), p.get("clientAlgoId"))
        return self.client_order_id is None or self.client_order_id in ids

    def error(self) -> errors.VenueError:
        """The error answer of this fault."""
        defaults: dict[str, tuple[int, str, int]] = {
            "reject": (-2010, "NEW_ORDER_REJECTED", 400),
            "unknown_before": (-1000, errors.UNKNOWN_ERROR_MSG, 503),
            "unknown_after": (-1000, errors.UNKNOWN_ERROR_MSG, 503),
            "unavailable": (-1000, errors.SERVICE_UNAVAILABLE_MSG, 503),
            "timeout": (-1007, errors.TIMEOUT_MSG, 408),
            "drop": (-1007, errors.TIMEOUT_MSG, 408),  # never sent: the connection is closed instead
            "timestamp": (-1021, errors.RECV_WINDOW_MSG, 400),
        }
        code, msg, status = defaults[self.kind]
        return errors.VenueError(
            self.code if self.code is not None else code,
            self.msg if self.msg is not None else msg,
            self.status if self.status is not None else status,
        )

    def to_json(self) -> dict[str, Any]:
        """The fault as the admin API lists it."""
        return asdict(self)


class Faults:
    """The scripted faults in order of arrival, plus the optional random (chaos) mode."""

    def __init__(self) -> None:
        self.scripted: list[Fault] = []
        self.next_id = 1
        self.chaos_rng = random.Random(0)
        self.chaos_seed: object = None

    def add(self, body: dict[str, Any]) -> Fault:
        """Script one fault from its JSON."""
        fault = Fault.from_json(body, self.next_id)
        self.next_id += 1
        self.scripted.append(fault)
        return fault

    def clear(self) -> None:
        """Forget every scripted fault."""
        self.scripted.clear()

    def take(self, endpoint: str, p: Params, chaos: dict[str, Any], account: str) -> Fault | None:
        """The fault that hits this request of ``account``, consumed as it fires (scripted first, then chaos)."""
        for fault in self.scripted:
            if fault.matches(endpoint, p, account):
                fault.fired += 1
                if fault.count and fault.fired >= fault.count:
                    self.scripted.remove(fault)
                return fault
        if chaos.get("probabilities"):
            return self._chaos(endpoint, chaos)
        return None

    def _chaos(self, endpoint: str, chaos: dict[str, Any]) -> Fault | None:
        if chaos.get("seed") != self.chaos_seed:
            self.chaos_seed = chaos.get("seed")
            self.chaos_rng = random.Random(str(self.chaos_seed))
        if endpoint not in chaos.get("endpoints", [DEFAULT_ENDPOINT]):
            return None
        for kind, probability in sorted(chaos["probabilities"].items()):
            if kind in WS_ONLY and not endpoint.startswith(WS_PREFIX):
                continue
            if kind in KINDS and self.chaos_rng.random() < float(probability):
                return Fault(
                    kind=kind,
                    endpoint=endpoint,
                    delay_ms=int(chaos.get("delay_ms", 1500)),
                    ratio=float(chaos.get("ratio", 0.5)),
                    seconds=float(chaos.get("seconds", 5)),
                    executed=kind not in EXECUTED_OR_NOT or self.chaos_rng.random() < 0.5,
                    fired=1,
                )
        return None
