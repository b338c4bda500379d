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
    """The running countdowns, by account and symbol; each fires once on the event loop unless renewed or ended
    first."""

    def __init__(self, config: Config, commit: Callable[[], None]) -> None:
        self.config = config
        self.commit = commit
        self.deadlines_ms: dict[tuple[str, str], int] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.fired = 0  # countdowns that ran out, since start or the last reset

    def arm(self, engine: Engine, symbol: str, countdown_ms: int) -> None:
        """Start (or restart) the countdown of ``engine``'s account on ``symbol``; 0 ends it."""
        key = (engine.name, symbol)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if countdown_ms <= 0:
            self.deadlines_ms.pop(key, None)
            return
        self.deadlines_ms[key] = now_ms() + countdown_ms
        self._timers[key] = asyncio.get_running_loop().call_later(countdown_ms / 1000, self._expire, engine, symbol)

    def clear(self, account: str | None = None) -> None:
        """End every countdown (a reset, or the exchange stopping), or only ``account``'s."""
        for key in [k for k in self._timers if account is None or k[0] == account]:
            self._timers.pop(key).cancel()
        for key in [k for k in self.deadlines_ms if account is None or k[0] == account]:
            del self.deadlines_ms[key]
        if account is None:
            self.fired = 0

    def _expire(self, engine: Engine, symbol: str) -> None:
        self._timers.pop((engine.name, symbol), None)
        self.deadlines_ms.pop((engine.name, symbol), None)
        self.fired += 1
        orders = engine.cancel_all(symbol)
        algos = engine.cancel_all_algos(symbol) if self.config.countdown_cancels_algo else 0
        self.commit()
        log.warning(
            "countdownCancelAll ran out for %s of account %s: canceled %d order(s), %d algo order(s)",
            symbol,
            engine.name,
            orders,
            algos,
        )
