"""One load process for the limiter tests: many venue calls through a `BinanceVenue` that spends the shared budget.

Usage: python tests/limiter_load.py ORDERS WEIGHT_CALLS (settings from QEXEC_* in the environment). Prints
`LOAD_DONE orders=… weight_calls=… waited_s=…` when every call has been answered.
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal

from qexec import redis_streams
from qexec.config import Settings
from qexec.errors import RateLimited
from qexec.models import OrderType, Side
from qexec.venue.binance import BinanceVenue


def main(orders: int, weight_calls: int) -> None:
    """Alternate BUY/SELL market orders with 5-weight balance reads until both counts are done."""
    settings = Settings()
    venue = BinanceVenue(settings, redis_streams.connect(settings.redis_url))
    started = time.monotonic()
    done_orders = done_reads = 0
    tag = f"{time.time_ns() % 10**12:x}"
    while done_orders < orders or done_reads < weight_calls:
        try:
            if done_orders < orders:
                venue.place_order(
                    symbol="BTCUSDT",
                    side=Side.BUY if done_orders % 2 == 0 else Side.SELL,
                    order_type=OrderType.MARKET,
                    quantity=Decimal("0.002"),
                    client_order_id=f"load-{tag}-{done_orders}",
                )
                done_orders += 1
            if done_reads < weight_calls:
                venue.balances()
                done_reads += 1
        except RateLimited as exc:  # the limiter's own bounded wait ran out: the work waits and goes again
            time.sleep(min(exc.retry_after_s, 1.0))
    print(f"LOAD_DONE orders={done_orders} weight_calls={done_reads} waited_s={time.monotonic() - started:.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
