"""Rate limits as Binance applies them: IP weight per minute (shared by every account behind the IP), orders per
10 s and per minute (per account), bans (per IP)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from qexec.paper import errors
from qexec.paper.config import Config
from qexec.paper.stats import Stats

MINUTE_MS = 60_000
TEN_SECONDS_MS = 10_000


@dataclass
class Window:
    """A fixed window that opens with its first request after the previous one expired."""

    length_ms: int
    start_ms: int = 0
    used: int = 0
    refused: int = 0

    def roll(self, now_ms: int) -> None:
        """Start a new window when the current one has expired."""
        if now_ms - self.start_ms >= self.length_ms:
            self.start_ms = now_ms
            self.used = 0
            self.refused = 0

    def retry_after_s(self, now_ms: int) -> int:
        """Whole seconds until the window ends."""
        return max(1, math.ceil((self.start_ms + self.length_ms - now_ms) / 1000))


@dataclass
class OrderWindows:
    """One account's new-order counters: per 10 seconds and per minute."""

    ten_s: Window = field(default_factory=lambda: Window(TEN_SECONDS_MS))
    minute: Window = field(default_factory=lambda: Window(MINUTE_MS))


class RateLimiter:
    """Counts request weight per IP and new orders per account, and refuses what goes over."""

    def __init__(self, config: Config, stats: Stats) -> None:
        self.config = config
        self.stats = stats
        self.reset()

    def reset(self) -> None:
        """Forget all counters and bans."""
        self.weight: dict[str, Window] = {}
        self.orders: dict[str, OrderWindows] = {}
        self.banned_until: dict[str, tuple[int, int]] = {}

    def reset_account(self, account: str) -> None:
        """Forget one account's order counters."""
        self.orders.pop(account, None)

    def order_windows(self, account: str) -> OrderWindows:
        """The account's two order counters, opened on first use."""
        found = self.orders.get(account)
        if found is None:
            found = self.orders[account] = OrderWindows()
        return found

    def ban(self, ip: str, status: int, seconds: float) -> None:
        """Refuse every request from ``ip`` with ``status`` (429 or 418) for ``seconds``."""
        self.banned_until[ip] = (status, int(time.time() * 1000 + seconds * 1000))

    def admit(self, ip: str, weight: int, now_ms: int) -> None:
        """Count ``weight`` for ``ip``, or raise the 429/418 Binance would send."""
        banned = self.banned_until.get(ip)
        if banned is not None:
            status, until = banned
            if now_ms < until:
                self._refused(status)
                raise self._ban_error(status, until, now_ms)
            del self.banned_until[ip]
        window = self.weight.get(ip)
        if window is None:
            window = self.weight[ip] = Window(MINUTE_MS)
        window.roll(now_ms)
        if window.used + weight > self.config.weight_limit:
            window.refused += 1
            self.stats.limit_violations += 1
            if window.refused > self.config.ban_after:
                until = now_ms + int(self.config.ban_s * 1000)
                self.banned_until[ip] = (418, until)
                self._refused(418)
                raise self._ban_error(418, until, now_ms)
            self._refused(429)
            raise errors.VenueError(
                -1003,
                f"Too many requests; current limit of IP({ip}) is {self.config.weight_limit} requests per minute. "
                "Please use the websocket for live updates to avoid polling the API.",
                429,
                {"Retry-After": str(window.retry_after_s(now_ms))},
            )
        window.used += weight

    def admit_order(self, account: str, now_ms: int) -> None:
        """Count one new order on both of the account's order counters, or raise -1015 with HTTP 429."""
        windows = self.order_windows(account)
        for window, limit, label in (
            (windows.ten_s, self.config.orders_per_10s, "10 SECOND"),
            (windows.minute, self.config.orders_per_min, "1 MINUTE"),
        ):
            window.roll(now_ms)
            if window.used + 1 > limit:
                self.stats.limit_violations += 1
                self._refused(429)
                raise errors.VenueError(
                    -1015,
                    f"Too many new orders; current limit is {limit} orders per {label}.",
                    429,
                    {"Retry-After": str(window.retry_after_s(now_ms))},
                )
        windows.ten_s.used += 1
        windows.minute.used += 1

    def headers(self, ip: str, order: bool, account: str) -> dict[str, str]:
        """The ``X-MBX-USED-WEIGHT-1M`` header, plus the account's order counters on order responses."""
        window = self.weight.get(ip)
        body = {"X-MBX-USED-WEIGHT-1M": str(window.used if window else 0)}
        if order:
            windows = self.order_windows(account)
            body["X-MBX-ORDER-COUNT-10S"] = str(windows.ten_s.used)
            body["X-MBX-ORDER-COUNT-1M"] = str(windows.minute.used)
        return body

    def _refused(self, status: int) -> None:
        if status == 418:
            self.stats.http_418 += 1
        else:
            self.stats.http_429 += 1

    @staticmethod
    def _ban_error(status: int, until: int, now_ms: int) -> errors.VenueError:
        retry = {"Retry-After": str(max(1, math.ceil((until - now_ms) / 1000)))}
        if status == 418:
            return errors.VenueError(
                -1003,
                f"Way too many requests; IP banned until {until}. "
                "Please use the websocket for live updates to avoid bans.",
                418,
                retry,
            )
        return errors.VenueError(
            -1003,
            "Too many requests; current limit is exceeded. "
            "Please use the websocket for live updates to avoid polling the API.",
            429,
            retry,
        )
