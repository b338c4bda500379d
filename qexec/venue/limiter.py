"""The deployment's one rate limiter: every worker on every machine spends the account's venue budget in Redis.

Binance counts request weight per minute and new orders per 10 seconds and per minute (reference §3.5). Before
each call a worker spends the call's cost with one atomic Lua script; when a budget is spent it sleeps in small
steps until the oldest spending leaves the window. The windows slide over short buckets, so no window the venue
may use (fixed, aligned to the clock or to its first request) ever holds more than the limit. The venue's
`X-MBX-*` headers correct the counters upwards (spending qexec did not see), and a 429/418 sets a pause every
worker honours until `Retry-After` has passed. Redis being unreachable never blocks a call: the venue still
enforces its limits, and the pause is best effort.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from qexec import alerts, constants
from qexec.config import Settings
from qexec.errors import RateLimited

log = logging.getLogger(__name__)

SLACK_MS = 500  # a request reaches the venue up to this long after it was counted here
STEP_S = 0.5  # the longest single sleep while waiting for budget
JITTER_S = 0.05  # spread waiters that wake together


@dataclass(frozen=True)
class Cost:
    """What one venue call spends: request weight (per IP) and new orders (per account)."""

    weight: int
    orders: int = 0


ORDER = Cost(weight=0, orders=1)
SPENT = (0, "")  # a `first` reply for `Limiter.acquire` that says the cost is spent already (no wait, no spending)

# python-binance method -> cost (reference §1.4, §3.5); a pair is (with `symbol`, without).
CALL_COSTS: dict[str, Cost | tuple[Cost, Cost]] = {
    "futures_ping": Cost(1),
    "futures_time": Cost(1),
    "futures_exchange_info": Cost(1),
    "futures_mark_price": (Cost(1), Cost(10)),
    "futures_symbol_ticker": (Cost(1), Cost(2)),
    "futures_create_order": ORDER,
    "futures_create_algo_order": ORDER,
    "futures_get_order": Cost(1),
    "futures_get_algo_order": Cost(1),
    "futures_cancel_order": Cost(1),
    "futures_cancel_algo_order": Cost(1),
    "futures_cancel_all_open_orders": Cost(1),
    "futures_cancel_all_algo_open_orders": Cost(1),
    "futures_countdown_cancel_all": Cost(10),
    "futures_get_open_orders": (Cost(1), Cost(40)),
    "futures_get_open_algo_orders": (Cost(1), Cost(40)),
    "futures_get_all_orders": Cost(5),
    "futures_get_all_algo_orders": Cost(5),
    "futures_account": Cost(5),
    "futures_account_balance": Cost(5),
    "futures_position_information": Cost(5),
    "futures_account_trades": Cost(5),
    "futures_change_leverage": Cost(1),
    "futures_change_margin_type": Cost(1),
    "futures_get_position_mode": Cost(30),
    "futures_change_position_mode": Cost(1),
    "futures_stream_get_listen_key": Cost(1),
    "futures_stream_keepalive": Cost(1),
}
UNLISTED_COST = Cost(weight=5)  # a method missing from the table is charged like the dearer account reads


def cost_of(method: str, params: Mapping[str, Any]) -> Cost:
    """The cost of calling a python-binance `Client` method with these parameters."""
    cost = CALL_COSTS.get(method, UNLISTED_COST)
    if isinstance(cost, tuple):
        return cost[0] if params.get("symbol") else cost[1]
    return cost


@dataclass(frozen=True)
class Window:
    """One of the venue's counters: its length, our bucket size, and the response header that reports it."""

    name: str
    length_ms: int
    bucket_ms: int
    header: str


WEIGHT_1M = Window("weight-1m", 60_000, 1_000, "X-MBX-USED-WEIGHT-1M")
ORDERS_10S = Window("orders-10s", 10_000, 250, "X-MBX-ORDER-COUNT-10S")
ORDERS_1M = Window("orders-1m", 60_000, 1_000, "X-MBX-ORDER-COUNT-1M")
WINDOWS = (WEIGHT_1M, ORDERS_10S, ORDERS_1M)

# Shared by both scripts: the Redis clock in ms, and the buckets a window spans (its length plus SLACK_MS).
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slack = tonumber(ARGV[1])
local function span_of(length, bucket_ms) return math.ceil((length + slack) / bucket_ms) end
local function read(key, cur, span)
  local fields = {}
  for b = cur - span, cur do fields[#fields + 1] = tostring(b) end
  local values = redis.call('HMGET', key, unpack(fields))
  local used = 0
  for j = 1, #values do values[j] = tonumber(values[j]) or 0; used = used + values[j] end
  return used, values
end
local function add(key, cur, span, bucket_ms, amount)
  redis.call('HINCRBY', key, tostring(cur), amount)
  redis.call('PEXPIRE', key, (span + 2) * bucket_ms)
  if redis.call('HLEN', key) > span + 8 then
    for _, f in ipairs(redis.call('HKEYS', key)) do
      if tonumber(f) < cur - span then redis.call('HDEL', key, f) end
    end
  end
end
"""

# KEYS: pause, then one counter per window. ARGV: slack_ms, then per window: cost, limit, bucket_ms, length_ms.
# Returns {0, ''} when spent, else {ms to wait, what is in the way}; nothing is spent unless all windows have room.
_ACQUIRE = (
    _PRELUDE
    + """
local paused = redis.call('PTTL', KEYS[1])
if paused > 0 then return {paused, 'pause'} end
local wait, blocked, plan = 0, '', {}
for i = 2, #KEYS do
  local base = 2 + (i - 2) * 4
  local cost, limit = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
  local bucket_ms, length = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  if cost > 0 then
    local cur = math.floor(now / bucket_ms)
    local span = span_of(length, bucket_ms)
    local used, values = read(KEYS[i], cur, span)
    local need = used + cost - limit
    if need > used then need = used end  -- a call dearer than the whole budget goes alone
    if need > 0 then
      local freed = 0
      for j = 1, #values do
        freed = freed + values[j]
        if freed >= need then
          local free_at = (cur + j) * bucket_ms  -- bucket cur-span+j-1 leaves the window then
          if free_at - now > wait then wait, blocked = free_at - now, KEYS[i] end
          break
        end
      end
    end
    plan[#plan + 1] = {KEYS[i], cur, span, bucket_ms, cost}
  end
end
if wait > 0 then return {wait, blocked} end
for _, p in ipairs(plan) do add(p[1], p[2], p[3], p[4], p[5]) end
return {0, ''}
"""
)

# KEYS: one counter per window. ARGV: slack_ms, then per window: the venue's count (-1 if absent), bucket_ms,
# length_ms. Raises a counter to the venue's figure when the venue counted more than qexec spent.
_OBSERVE = (
    _PRELUDE
    + """
local raised = {}
for i = 1, #KEYS do
  local base = 2 + (i - 1) * 3
  local venue, bucket_ms, length = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  raised[i] = 0
  if venue >= 0 then
    local cur = math.floor(now / bucket_ms)
    local span = span_of(length, bucket_ms)
    local used = read(KEYS[i], cur, span)
    if venue > used then
      add(KEYS[i], cur, span, bucket_ms, venue - used)
      raised[i] = venue - used
    end
  end
end
return raised
"""
)

# KEYS: pause. ARGV: ms, reason. Only ever lengthens a pause.
_PAUSE = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
  return 1
end
return 0
"""


class Limiter:
    """Spends the account's venue budget in Redis before each call, shared by every worker that uses this Redis."""

    def __init__(self, r: redis.Redis, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.redis = r
        self.settings = settings
        self.max_wait_s = settings.limit_max_wait_s
        self.limits = {
            WEIGHT_1M: max(1, int(settings.weight_per_min * settings.limit_margin)),
            ORDERS_10S: max(1, int(settings.orders_per_10s * settings.limit_margin)),
            ORDERS_1M: max(1, int(settings.orders_per_min * settings.limit_margin)),
        }
        self._sleep = sleep
        self._acquire = r.register_script(_ACQUIRE)
        self._observe = r.register_script(_OBSERVE)
        self._pause = r.register_script(_PAUSE)
        # Request weight is the IP's, shared by every account; order counts are each account's own.
        self._keys = [
            constants.LIMIT_COUNTER_KEY.format(window=w.name)
            if w is WEIGHT_1M
            else constants.account_key(constants.LIMIT_COUNTER_KEY.format(window=w.name), settings.account)
            for w in WINDOWS
        ]

    def _args(self, cost: Cost) -> list[Any]:
        args: list[Any] = [SLACK_MS]
        for window in WINDOWS:
            spend = cost.weight if window is WEIGHT_1M else cost.orders
            args += [spend, self.limits[window], window.bucket_ms, window.length_ms]
        return args

    def spend_in(self, pipe: redis.client.Pipeline, cost: Cost) -> None:
        """Queue a first try at spending `cost` in the caller's pipeline; its reply goes to `acquire(cost, first=…)`.

        It saves the caller's step a round trip of its own. The script must be loaded already (any earlier `acquire`
        loads it); when it is not, the reply is an error and `acquire` simply tries again itself.
        """
        keys = [constants.LIMIT_PAUSE_KEY, *self._keys]
        pipe.evalsha(self._acquire.sha, len(keys), *keys, *self._args(cost))

    def acquire(self, cost: Cost, first: Any = None) -> float:
        """Wait until every window has room for `cost`, then spend it; returns the seconds waited.

        `first` is the reply of a try made with `spend_in`, if any. Raises `RateLimited` (nothing was sent) when no
        room came within `limit_max_wait_s`.
        """
        args = self._args(cost)
        started = time.monotonic()
        deadline = started + self.max_wait_s
        while True:
            try:
                if isinstance(first, list | tuple) and len(first) == 2:
                    wait_ms, blocked = first
                else:
                    wait_ms, blocked = self._acquire(keys=[constants.LIMIT_PAUSE_KEY, *self._keys], args=args)
                first = None
            except redis.RedisError as exc:
                log.warning("RATE_LIMITER_UNAVAILABLE error=%r: calling without the shared budget", exc)
                return time.monotonic() - started
            waited_s = time.monotonic() - started
            if int(wait_ms) <= 0:
                if waited_s >= 1:
                    log.info("RATE_LIMIT_WAITED waited_s=%.2f weight=%d orders=%d", waited_s, cost.weight, cost.orders)
                return waited_s
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                what = "a rate-limit pause" if blocked == "pause" else f"the {blocked} budget"
                raise RateLimited(
                    f"waited {waited_s:.1f}s for {what}; about {int(wait_ms) / 1000:.1f}s more to go",
                    retry_after_s=max(0.1, int(wait_ms) / 1000),
                )
            self._sleep(min(int(wait_ms) / 1000, STEP_S, remaining_s) + random.uniform(0, JITTER_S))

    def observe(self, headers: Mapping[str, str]) -> dict[str, int]:
        """Raise the shared counters to the venue's `X-MBX-*` figures where it counted more; returns the raises."""
        args: list[Any] = [SLACK_MS]
        worth_a_look = False
        for window in WINDOWS:
            value = headers.get(window.header)
            number = int(value) if value is not None and str(value).isdigit() else -1
            # Below half of our limit a correction cannot matter yet (it is made once the venue's count passes
            # half): that spares a Redis round trip on almost every call.
            worth_a_look = worth_a_look or number > self.limits[window] // 2
            args += [number, window.bucket_ms, window.length_ms]
        if not worth_a_look:
            return {}
        try:
            raised = self._observe(keys=self._keys, args=args)
        except redis.RedisError as exc:
            log.warning("RATE_LIMITER_UNAVAILABLE error=%r: venue headers not recorded", exc)
            return {}
        return {w.name: int(n) for w, n in zip(WINDOWS, raised, strict=True) if int(n) > 0}

    def pause(self, seconds: float, reason: str) -> None:
        """Stop every worker's venue calls for `seconds` (a 429/418 from the venue); never shortens a pause."""
        ms = max(1, int(seconds * 1000))
        try:
            if self._pause(keys=[constants.LIMIT_PAUSE_KEY], args=[ms, reason]):
                log.warning("RATE_LIMIT_PAUSE seconds=%.1f reason=%s", seconds, reason)
                paused = alerts.rate_limit_pause(seconds, reason, self.settings.alert_repeat_s)
                alerts.raise_alert(self.redis, self.settings, paused)
        except redis.RedisError as exc:
            log.warning("RATE_LIMITER_UNAVAILABLE error=%r: pause of %.1fs not shared", exc, seconds)

    def paused_s(self) -> float:
        """Seconds left of the deployment-wide pause (0 when none)."""
        ms: Any = self.redis.pttl(constants.LIMIT_PAUSE_KEY)
        return max(0, int(ms)) / 1000

    def used(self) -> dict[str, int]:
        """What each window holds right now (its length plus the slack), by window name."""
        seconds, micros = self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        out: dict[str, int] = {}
        for window, key in zip(WINDOWS, self._keys, strict=True):
            first = (now_ms - window.length_ms - SLACK_MS) // window.bucket_ms
            values: Any = self.redis.hgetall(key)
            out[window.name] = sum(int(v) for f, v in values.items() if int(f) >= first)
        return out
