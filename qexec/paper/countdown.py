"""The venue's dead-man switch (`POST /fapi/v1/countdownCancelAll`): a countdown per symbol that cancels the symbol's
open orders when it runs out before the client renews it.

Binance's documentation does not say whether the countdown also cancels algo (stop-loss, take-profit) orders, so
`Config.countdown_cancels_algo` chooses: off (the default) cancels regular orders only, as `allOpenOrders` does; on
cancels the symbol's waiting algo orders too. Countdowns live in memory: a restart of the paper exchange ends them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from qexec.paper.config import Config
from qexec.paper.engine import Engine, now_ms

log = logging.getLogger("qexec.paper")


class Countdowns:
    """The running countdowns, by symbol; each fires once on the event loop unless renewed or ended first."""

    def __init__(self, engine: Engine, config: Config, commit: Callable[[], None]) -> None:
        self.engine = engine
        self.config = config
        self.commit = commit
        self.deadlines_ms: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.fired = 0  # countdowns that ran out, since start or the last reset

    def arm(self, symbol: str, countdown_ms: int) -> None:
        """Start (or restart) the symbol's countdown; 0 ends it."""
        timer = self._timers.pop(symbol, None)
        if timer is not None:
            timer.cancel()
        if countdown_ms <= 0:
            self.deadlines_ms.pop(symbol, None)
            return
        self.deadlines_ms[symbol] = now_ms() + countdown_ms
        self._timers[symbol] = asyncio.get_running_loop().call_later(countdown_ms / 1000, self._expire, symbol)

    def clear(self) -> None:
        """End every countdown (a reset, or the exchange stopping)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.deadlines_ms.clear()
        self.fired = 0

    def _expire(self, symbol: str) -> None:
        self._timers.pop(symbol, None)
        self.deadlines_ms.pop(symbol, None)
        self.fired += 1
        orders = self.engine.cancel_all(symbol)
        algos = self.engine.cancel_all_algos(symbol) if self.config.countdown_cancels_algo else 0
        self.commit()
        log.warning("countdownCancelAll ran out for %s: canceled %d order(s), %d algo order(s)", symbol, orders, algos)
