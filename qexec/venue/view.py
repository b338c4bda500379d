"""The venue's state read once: from its websocket stream when the stream vouches for it, else over REST.

Every read that the user-data or mark-price stream can answer goes through here, so the rule "the stream when it
vouches, else ask" is written once (qexec/venue/feed.py says when it vouches).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from qexec.models import AlgoOrder, OrderState, PositionRisk
from qexec.venue.base import Venue


def open_positions(
    venue: Venue, symbol: str | None = None, *, after_ms: int | None = None, rest: bool = False
) -> dict[tuple[str, str], PositionRisk]:
    """The venue's non-zero positions by (symbol, direction).

    They come from the venue's stream when it can vouch for them - with `after_ms`, only once it has reported
    `symbol` as of that venue time, waiting `stream_wait_s` at most - and over REST otherwise, or always with `rest`.
    """
    rows: list[PositionRisk] | None = None
    live = None if rest else venue.feed
    if live is not None:
        if after_ms is not None and symbol is not None:
            rows = live.wait_positions(symbol, after_ms, venue.settings.stream_wait_s)
        else:
            rows = live.positions(symbol)
    if rows is None:
        rows = venue.positions(symbol)
    return {(p.symbol, p.direction): p for p in rows if p.positionAmt != 0}


def mark_price(venue: Venue, symbol: str) -> Decimal:
    """The symbol's current mark price: the stream's when fresh (`mark_max_age_s`), else asked over REST."""
    live = venue.feed
    streamed = live.mark(symbol, venue.settings.mark_max_age_s) if live is not None else None
    return streamed if streamed is not None else venue.mark_price(symbol)


def ensure_leverage(venue: Venue, symbol: str, leverage: int) -> int:
    """Put the symbol at `leverage`; returns the leverage the venue applied.

    No call when the user-data stream vouches that the symbol is there already (every change, whoever makes it, is
    streamed as ACCOUNT_CONFIG_UPDATE); otherwise the venue is asked to set it, and its answer is authoritative.
    """
    live = venue.feed
    if live is not None and live.leverage(symbol) == leverage:
        return leverage
    mark = live.leverage_mark(symbol) if live is not None else None
    applied = venue.set_leverage(symbol, leverage)
    if live is not None:
        live.learn_leverage(symbol, applied, mark)
    return applied


def current_leverage(venue: Venue, symbol: str) -> int:
    """The symbol's leverage as it stands: the stream's when it vouches, else the venue's answer over REST."""
    live = venue.feed
    known = live.leverage(symbol) if live is not None else None
    if known is not None:
        return known
    mark = live.leverage_mark(symbol) if live is not None else None
    found = venue.leverage(symbol)
    if live is not None:
        live.learn_leverage(symbol, found, mark)
    return found


def streamed_order(venue: Venue, client_order_id: str, placed: OrderState, since: datetime) -> OrderState | None:
    """The order as the venue's stream last reported it: a final state whenever the stream has one; a pending state
    (the stream's, or `placed`) only when the stream has been up since `since` (when the order was placed); None
    when the venue must be asked."""
    live = venue.feed
    if live is None:
        return None
    seen = live.order(client_order_id)
    if seen is not None and seen.orderId != placed.orderId:
        seen = None  # the id was used again after an order the venue had forgotten: ask the venue
    if seen is not None and seen.settled:
        return seen
    if live.vouches_for(since):
        return seen or placed
    return None


def live_algo_orders(
    venue: Venue, symbol: str, client_algo_ids: list[str], *, rest: bool = False
) -> dict[str, AlgoOrder]:
    """The working algo orders among `client_algo_ids`, by id: from the stream when it vouches for every one of them
    (it saw them placed, and everything since), else - or always, with `rest` - the symbol's openAlgoOrders."""
    if not client_algo_ids:
        return {}
    live = None if rest else venue.feed
    streamed = live.algo_orders(client_algo_ids) if live is not None else None
    if streamed is not None:
        return {cid: algo for cid, algo in streamed.items() if algo.live}
    return {algo.clientAlgoId: algo for algo in venue.open_algo_orders(symbol)}
