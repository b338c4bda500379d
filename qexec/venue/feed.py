"""The venue's websocket streams kept as a live view of the account: order updates, positions, mark prices.

A worker process runs one `Feed` per venue (`start`), in two daemon threads: the user-data stream
(`ORDER_TRADE_UPDATE`, `ACCOUNT_UPDATE`, `ALGO_UPDATE`, `ACCOUNT_CONFIG_UPDATE`) and the mark-price stream.
Readers never wait on the network: the feed answers from memory, or says None, which means "ask the venue over
REST". It vouches for what it has *not* seen (an order with no fill yet, a symbol with no position) only while its
user stream has been connected without a break since before the thing in question began, and only after a REST
snapshot of the positions taken on that connection; a dropped connection makes it say None until it is back and has
taken a fresh snapshot.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from pydantic import ValidationError
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from qexec import alerts, constants
from qexec.config import Settings
from qexec.errors import OrderNotFound, OrderRejected, VenueError
from qexec.models import AlgoOrder, OrderState, OrderStatus, PositionRisk

log = logging.getLogger(__name__)


class FeedRest(Protocol):
    """The REST calls the feed makes: its listen key, the clock, and the positions snapshot it starts from."""

    def new_listen_key(self) -> str: ...
    def keepalive_listen_key(self, key: str) -> None: ...
    def clock_offset_ms(self) -> int: ...
    def positions(self, symbol: str | None = None) -> list[PositionRisk]: ...
    def close(self) -> None: ...


FEED_LIVE = "FEED_LIVE"
FEED_DOWN = "FEED_DOWN"

MARK_STREAM = "!markPrice@arr@1s"
# Orders (and algo orders) whose latest report is kept, the oldest dropped first. Only orders still being confirmed
# need one (the venue takes at most 1200 orders a minute), and an order's next event brings its report back; until
# then a dropped one is taken as unchanged while the stream vouches, else asked over REST.
MAX_ORDERS = 2_000
ORDER_FIELDS = ("i", "c", "s", "X", "S", "o", "q", "z", "ap", "p", "ps", "T")  # what `_Order.state` reads
ALGO_FIELDS = ("aid", "caid", "s", "S", "ps", "o", "X", "tp", "q", "cp", "R", "wt", "tt", "ai", "ap", "aq")
# The clocks of the machine that placed an order and of this one may differ a little: the feed vouches only for
# orders placed at least this long after its stream came up.
VOUCH_MARGIN_S = 1.0
KEEPALIVE_S = 30 * 60  # listen keys live 60 minutes unless kept alive
RECV_STEP_S = 1.0  # how often a reader thread looks up from its socket (stop requests, keep-alives)
BACKOFF_MAX_S = 30.0
DOWN_LOG_EVERY_S = 300.0  # a stream that stays down is logged again this often


class _Reconnect(Exception):
    """Raised inside a stream thread when the connection must be started again (e.g. the listen key expired)."""


# Events are kept as the venue sent them and read into models only when asked for: the stream's thread competes for
# the GIL with the step whose order caused the event, at the very moment that step gets its answer.
TERMINAL = frozenset(status.value for status in OrderStatus if status.terminal)
# The venue sends only these (and listenKeyExpired).
USER_EVENTS = "ORDER_TRADE_UPDATE/ACCOUNT_UPDATE/ALGO_UPDATE/ACCOUNT_CONFIG_UPDATE"


@dataclass
class _Order:
    update: dict[str, Any]  # the order's latest ORDER_TRADE_UPDATE `o`
    quote: Decimal  # sum of last-qty x last-price over the fills seen
    filled: Decimal  # sum of last-qty over the same fills
    whole: bool  # its NEW came first and no fill was unreadable: `quote` is its cumQuote if `filled` is all of `z`

    def cum_quote(self) -> Decimal:
        """The order's cumQuote from the fills seen, or 0 when some fill was missed (e.g. while the stream was
        down between two of them) - the fill's quote is then average price x executed quantity."""
        try:
            complete = self.whole and self.filled == Decimal(str(self.update.get("z") or 0))
        except InvalidOperation:
            complete = False
        return self.quote if complete else Decimal(0)

    def state(self) -> OrderState | None:
        o = self.update
        try:
            return OrderState(
                orderId=o["i"],
                clientOrderId=o["c"],
                symbol=o["s"],
                status=o["X"],
                side=o["S"],
                type=o.get("o") or "",
                origQty=o["q"],
                executedQty=o.get("z") or 0,
                avgPrice=o.get("ap") or 0,
                cumQuote=self.cum_quote(),
                price=o.get("p") or 0,
                positionSide=o.get("ps") or "BOTH",
                updateTime=o.get("T") or 0,
            )
        except (KeyError, ValidationError) as exc:  # e.g. a liquidation's own statuses
            log.debug("feed cannot read an order update: %s", exc)
            return None


def _algo(o: dict[str, Any]) -> AlgoOrder | None:
    try:
        return AlgoOrder(
            algoId=o["aid"],
            clientAlgoId=o["caid"],
            symbol=o["s"],
            side=o["S"],
            positionSide=o.get("ps") or "BOTH",
            orderType=o["o"],
            algoStatus=o["X"],
            triggerPrice=o.get("tp") or 0,
            quantity=o.get("q") or 0,
            closePosition=bool(o.get("cp")),
            reduceOnly=bool(o.get("R")),
            workingType=o.get("wt") or "CONTRACT_PRICE",
            triggerTime=o.get("tt") or 0,
            actualOrderId=o.get("ai"),
            actualPrice=o.get("ap"),
            actualQty=o.get("aq"),
        )
    except (KeyError, ValidationError) as exc:
        log.debug("feed cannot read an algo order update: %s", exc)
        return None


def _position(p: dict[str, Any], at_ms: int) -> PositionRisk | None:
    try:
        return PositionRisk(
            symbol=p["s"],
            positionSide=p.get("ps") or "BOTH",
            positionAmt=p["pa"],
            entryPrice=p.get("ep") or 0,
            unRealizedProfit=p.get("up") or 0,
            updateTime=at_ms,
        )
    except (KeyError, ValidationError) as exc:
        log.warning("feed cannot read a position update: %s", exc)
        return None


class Feed:
    """A live, in-memory view of one venue account, fed by its websocket streams (one per process)."""

    def __init__(self, settings: Settings, rest: Callable[[], FeedRest]) -> None:
        self.settings = settings
        self.url = settings.stream_base_url
        # what its log lines add to name its account (nothing for `default`'s)
        self._named = "" if settings.account == constants.DEFAULT_ACCOUNT else f" account={settings.account}"
        self._rest = rest
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._orders: OrderedDict[str, _Order] = OrderedDict()
        # clientAlgoId -> (its latest ALGO_UPDATE `o`, the connection it came on): only the current connection's
        # reports are known to be current.
        self._algos: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self._connection = 0  # counts the user stream's connections
        self._positions: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}  # (symbol, side) -> (update, ms)
        self._symbol_ms: dict[str, int] = {}  # the venue time of the last position update per symbol
        self._as_of_ms = 0  # the venue time of the positions snapshot: every symbol is known up to it
        self._marks: dict[str, tuple[str, float]] = {}  # symbol -> (mark, time.monotonic() received)
        # symbol -> (leverage, connection): what the venue said of a symbol's leverage. Every change, whoever makes it
        # (another worker, the venue's UI), comes as an ACCOUNT_CONFIG_UPDATE, so a value learnt on the current
        # connection stays true until that connection breaks.
        self._leverage: dict[str, tuple[int, int]] = {}
        self._config_events: dict[str, int] = {}  # symbol -> ACCOUNT_CONFIG_UPDATEs received for it
        self._live_since: float | None = None  # time.time() the user stream came up; None while down
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pid = os.getpid()
        self._down_said: dict[str, float] = {}  # stream -> when its being down was last logged
        self._down_since = time.monotonic()  # when the user stream was last live (or the feed began)
        self.events = 0  # user-stream events applied, for status and tests
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Feed:
        """Start the two stream threads (a second call does nothing)."""
        if self._threads:
            return self
        for name, target in (("user", self._user_loop), ("marks", self._mark_loop)):
            thread = threading.Thread(target=target, name=f"qexec-feed-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the threads and forget the view."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._set_down("stopped")

    @property
    def running(self) -> bool:
        """True in the process that started the feed, until it is stopped."""
        return bool(self._threads) and not self._stop.is_set() and self._pid == os.getpid()

    def subscribe(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Have `listener(kind, event)` called with each user-stream event (`ORDER_TRADE_UPDATE`, ...) once the view
        has applied it (a second call with the same listener does nothing).

        It runs in the stream's thread, between two events: it must return at once - no network, no Redis, no lock
        held for long - and hand any work to a thread of its own.
        """
        if listener not in self._listeners:
            self._listeners.append(listener)

    # -- reads --------------------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        """True while the user stream is connected and its positions snapshot is in place."""
        return self._live_since is not None

    def vouches_for(self, since: datetime) -> bool:
        """True when the user stream has been up without a break since before `since`: it saw all that followed."""
        live_since = self._live_since
        return live_since is not None and live_since + VOUCH_MARGIN_S <= since.timestamp()

    def order(self, client_order_id: str) -> OrderState | None:
        """The order's latest state as the stream reported it, or None when the stream said nothing of it."""
        with self._lock:
            found = self._orders.get(client_order_id)
        return found.state() if found is not None else None

    def algo_orders(self, client_algo_ids: list[str]) -> dict[str, AlgoOrder] | None:
        """These algo orders as they stand, when the stream has reported each of them on its current connection (so
        it saw everything that happened to them since); else None."""
        with self._lock:
            if self._live_since is None:
                return None
            updates = []
            for cid in client_algo_ids:
                found = self._algos.get(cid)
                if found is None or found[1] != self._connection:
                    return None
                updates.append(found[0])
        algos = [_algo(o) for o in updates]
        if any(a is None for a in algos):
            return None
        return {a.clientAlgoId: a for a in algos if a is not None}

    def positions(self, symbol: str | None = None, *, since_ms: int | None = None) -> list[PositionRisk] | None:
        """The account's positions (of `symbol`) as of now, or None when the feed cannot vouch for them.

        With `since_ms`, None also when the stream has not yet reported `symbol` as of that venue time (a fill
        that has just happened, whose position update is still on its way).
        """
        with self._lock:
            return self._positions_locked(symbol, since_ms)

    def wait_positions(self, symbol: str, since_ms: int, timeout_s: float) -> list[PositionRisk] | None:
        """`positions(symbol, since_ms=…)`, waiting up to `timeout_s` for the stream to catch up."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = self._positions_locked(symbol, since_ms)
                remaining = deadline - time.monotonic()
                if found is not None or self._live_since is None or remaining <= 0:
                    return found
                self._changed.wait(remaining)

    def _positions_locked(self, symbol: str | None, since_ms: int | None) -> list[PositionRisk] | None:
        if self._live_since is None:
            return None
        if (
            since_ms is not None
            and symbol is not None
            and max(self._symbol_ms.get(symbol, 0), self._as_of_ms) < since_ms
        ):
            return None
        found = (_position(p, at) for (s, _side), (p, at) in self._positions.items() if symbol is None or s == symbol)
        return [p for p in found if p is not None]

    def leverage(self, symbol: str) -> int | None:
        """The symbol's leverage as the venue last said on the current connection, or None (ask the venue)."""
        with self._lock:
            found = self._leverage.get(symbol)
            if self._live_since is None or found is None or found[1] != self._connection:
                return None
            return found[0]

    def leverage_mark(self, symbol: str) -> tuple[int, int] | None:
        """Where the stream stands for a symbol's leverage, taken before asking the venue (see `learn_leverage`)."""
        with self._lock:
            if self._live_since is None:
                return None
            return self._connection, self._config_events.get(symbol, 0)

    def learn_leverage(self, symbol: str, leverage: int, mark: tuple[int, int] | None) -> None:
        """Keep the leverage a REST answer gave, unless the stream broke or reported a change since `mark` (then the
        stream's own, later, report stands)."""
        with self._lock:
            if mark is None or mark != (self._connection, self._config_events.get(symbol, 0)):
                return
            if self._live_since is not None:
                self._leverage[symbol] = (leverage, self._connection)

    def mark(self, symbol: str, max_age_s: float) -> Decimal | None:
        """The symbol's mark price from the stream, when it is at most `max_age_s` old."""
        found = self._marks.get(symbol)
        if found is None or time.monotonic() - found[1] > max_age_s:
            return None
        try:
            return Decimal(found[0])
        except InvalidOperation:
            return None

    def status(self) -> dict[str, Any]:
        """What the feed knows, for logs and `qexec status`."""
        with self._lock:
            orders = len(self._orders)
            positions = sum(1 for p, _at in self._positions.values() if Decimal(str(p.get("pa") or 0)))
        newest = max((at for _price, at in self._marks.values()), default=None)
        return {
            "live": self.live,
            "live_for_s": round(time.time() - self._live_since, 1) if self._live_since else None,
            "events": self.events,
            "orders": orders,
            "open_positions": positions,
            "marks": len(self._marks),
            "mark_age_s": round(time.monotonic() - newest, 1) if newest is not None else None,
        }

    # -- the user-data stream -------------------------------------------------------------------------

    def _user_loop(self) -> None:
        backoff_s = 0.5
        venue = None
        try:
            while not self._stop.is_set():
                connections = self._connection
                try:
                    venue = self._rest()
                    self._user_session(venue)
                except (OSError, TimeoutError, WebSocketException, VenueError, _Reconnect, ValueError) as exc:
                    self._set_down(f"{type(exc).__name__}: {exc}")
                except Exception:
                    log.exception("%s user stream failed", FEED_DOWN)
                    self._set_down("unexpected error")
                if self._connection != connections:
                    backoff_s = 0.5  # that connection came up: a drop after it starts the back-off again
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
        finally:
            if venue is not None:
                venue.close()

    def _user_session(self, venue: FeedRest) -> None:
        key = venue.new_listen_key()
        with self._connect(f"{self.url}/private/ws?listenKey={key}&events={USER_EVENTS}") as ws:
            came_up = time.time()
            # Events that arrive while the snapshot is read wait in the socket and are applied after it: position
            # updates carry absolute amounts, so replaying them over the snapshot leaves the current state.
            as_of_ms = int(time.time() * 1000) + venue.clock_offset_ms()
            snapshot = venue.positions()
            rows = {(p.symbol, p.positionSide): _snapshot_row(p) for p in snapshot}
            with self._changed:
                self._connection += 1
                self._leverage.clear()  # what changed while the stream was down is unknown: the venue is asked
                self._positions = rows
                self._symbol_ms.clear()
                self._as_of_ms = as_of_ms
                self._live_since = came_up
                self._changed.notify_all()
            held = sum(1 for p in snapshot if p.positionAmt)
            log.info("%s stream=user url=%s open_positions=%d%s", FEED_LIVE, self.url, held, self._named)
            keepalive_at = time.monotonic() + KEEPALIVE_S
            while not self._stop.is_set():
                if time.monotonic() >= keepalive_at:
                    self._keepalive(venue, key)
                    keepalive_at = time.monotonic() + KEEPALIVE_S
                raw = _recv(ws)
                if raw is not None:
                    self._on_user_event(json.loads(raw))

    def _keepalive(self, venue: FeedRest, key: str) -> None:
        try:
            venue.keepalive_listen_key(key)
        except (OrderNotFound, OrderRejected) as exc:  # -1125: the key is gone; start again with a new one
            raise _Reconnect(f"listen key refused on keep-alive: {exc}") from exc

    def _on_user_event(self, event: Any) -> None:
        kind = event.get("e") if isinstance(event, dict) else None
        if kind == "ORDER_TRADE_UPDATE":
            self._on_order(event.get("o") or {})
        elif kind == "ACCOUNT_UPDATE":
            self._on_account(event.get("a") or {}, int(event.get("T") or event.get("E") or 0))
        elif kind == "ALGO_UPDATE":
            self._on_algo(event.get("o") or {})
        elif kind == "ACCOUNT_CONFIG_UPDATE":
            self._on_config(event.get("ac") or {})
        elif kind == "listenKeyExpired":
            raise _Reconnect("the listen key expired")
        else:
            return
        self.events += 1
        for listener in self._listeners:
            try:
                listener(kind, event)
            except Exception:  # a listener's bug must not take the stream down
                log.exception("feed listener %r failed on %s", listener, kind)

    def _on_order(self, o: dict[str, Any]) -> None:
        cid, order_id, execution = o.get("c"), o.get("i"), o.get("x")
        if not isinstance(cid, str) or order_id is None:
            return
        with self._changed:
            known = self._orders.get(cid)
            if known is not None and known.update.get("i") == order_id:
                if known.update.get("X") in TERMINAL and o.get("X") not in TERMINAL:
                    return  # never let an older report undo a final one
                quote, filled, whole = known.quote, known.filled, known.whole
            else:
                quote, filled, whole = Decimal(0), Decimal(0), execution == "NEW"
            if execution == "TRADE":
                try:
                    last_qty = Decimal(o["l"])
                    quote += last_qty * Decimal(o["L"])
                    filled += last_qty
                except (KeyError, InvalidOperation, TypeError):
                    whole = False  # cumQuote unknown: the fill's price is the average price instead
            self._orders[cid] = _Order({k: o[k] for k in ORDER_FIELDS if k in o}, quote, filled, whole)
            self._orders.move_to_end(cid)
            while len(self._orders) > MAX_ORDERS:
                self._orders.popitem(last=False)
            self._changed.notify_all()

    def _on_algo(self, o: dict[str, Any]) -> None:
        cid = o.get("caid")
        if not isinstance(cid, str):
            return
        with self._lock:
            self._algos[cid] = ({k: o[k] for k in ALGO_FIELDS if k in o}, self._connection)
            self._algos.move_to_end(cid)
            while len(self._algos) > MAX_ORDERS:
                self._algos.popitem(last=False)

    def _on_config(self, ac: dict[str, Any]) -> None:
        symbol, leverage = ac.get("s"), ac.get("l")
        if not isinstance(symbol, str):
            return  # e.g. the multi-assets mode (`ai`): not a leverage change
        with self._lock:
            self._config_events[symbol] = self._config_events.get(symbol, 0) + 1
            try:
                self._leverage[symbol] = (int(str(leverage)), self._connection)
            except ValueError:
                self._leverage.pop(symbol, None)  # unreadable: the venue is asked

    def _on_account(self, a: dict[str, Any], at_ms: int) -> None:
        with self._changed:
            for p in a.get("P") or []:
                if isinstance(p, dict) and "s" in p:
                    key = (p["s"], p.get("ps") or "BOTH")
                    held = self._positions.get(key)
                    if held is not None and at_ms < held[1]:
                        continue  # older than what is held: an event queued while the snapshot was read
                    self._positions[key] = (p, at_ms)
                    self._symbol_ms[p["s"]] = max(self._symbol_ms.get(p["s"], 0), at_ms)
            self._changed.notify_all()

    def _set_down(self, reason: str) -> None:
        with self._changed:
            was_live = self._live_since is not None
            self._live_since = None
            self._changed.notify_all()
        if was_live:
            self._down_said.pop("user", None)
            self._down_since = time.monotonic()
        self._say_down("user", reason)
        down_s = time.monotonic() - self._down_since
        if down_s >= self.settings.alert_stream_down_s and not self._stop.is_set():
            stream = "user-data" + (f" of account {self.settings.account}" if self._named else "")
            lost = alerts.stream_down(stream, self.url, down_s, reason, self.settings.alert_repeat_s)
            alerts.raise_alert(None, self.settings, lost)

    def _say_down(self, stream: str, reason: str) -> None:
        """Log a stream that is down: at once when it was up, then at most every `DOWN_LOG_EVERY_S`."""
        if self._stop.is_set():
            return
        now = time.monotonic()
        said = self._down_said.get(stream)
        if said is not None and now - said < DOWN_LOG_EVERY_S:
            log.debug("feed %s stream still down: %s", stream, reason)
            return
        self._down_said[stream] = now
        log.warning(
            "%s stream=%s url=%s reason=%s%s (the venue is asked over REST until it is back)",
            FEED_DOWN,
            stream,
            self.url,
            reason,
            self._named,
        )

    # -- the mark-price stream -----------------------------------------------------------------------

    def _mark_loop(self) -> None:
        backoff_s = 0.5
        while not self._stop.is_set():
            try:
                with self._connect(f"{self.url}/market/ws/{MARK_STREAM}") as ws:
                    log.info("%s stream=marks url=%s", FEED_LIVE, self.url)
                    self._down_said.pop("marks", None)
                    backoff_s = 0.5
                    while not self._stop.is_set():
                        raw = _recv(ws)
                        if raw is not None:
                            self._on_marks(json.loads(raw))
            except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
                self._say_down("marks", f"{type(exc).__name__}: {exc}")
            except Exception:
                log.exception("%s mark stream failed", FEED_DOWN)
            self._stop.wait(backoff_s)
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)

    def _on_marks(self, payload: Any) -> None:
        received = time.monotonic()
        for update in payload if isinstance(payload, list) else [payload]:
            if isinstance(update, dict) and "s" in update and "p" in update:
                self._marks[update["s"]] = (str(update["p"]), received)

    def _connect(self, url: str) -> ClientConnection:
        ping_s = self.settings.stream_ping_s
        return connect(
            url,
            open_timeout=self.settings.request_timeout_s,
            ping_interval=ping_s,
            ping_timeout=ping_s,
            close_timeout=1,
            max_size=2**22,
            compression=None,  # small frames: per-message deflate would cost CPU at both ends for nothing
            logger=logging.getLogger("qexec.venue.feed.ws"),
        )


def _snapshot_row(p: PositionRisk) -> tuple[dict[str, Any], int]:
    """A positionRisk row kept as if the stream had sent it."""
    update = {"s": p.symbol, "ps": p.positionSide, "pa": str(p.positionAmt), "ep": str(p.entryPrice)}
    update["up"] = str(p.unRealizedProfit)
    return update, p.updateTime


def _recv(ws: ClientConnection) -> str | bytes | None:
    """The next frame, or None after `RECV_STEP_S` without one."""
    try:
        return ws.recv(timeout=RECV_STEP_S)
    except TimeoutError:
        return None


# -- one feed per process and venue ---------------------------------------------------------------------

_feeds: dict[str, Feed] = {}
_feeds_lock = threading.Lock()


def _where(venue_url: str, account: str) -> str:
    return f"{account}@{venue_url}"


def start(settings: Settings, rest: Callable[[], FeedRest]) -> Feed | None:
    """Start this process's feed for the settings' venue and account (once); None when streams are turned off."""
    if not settings.use_streams:
        return None
    where = _where(settings.venue_url, settings.account)
    with _feeds_lock:
        found = _feeds.get(where)
        if found is not None and found.running:
            return found
        feed = _feeds[where] = Feed(settings, rest).start()
        return feed


def register(live: Feed) -> None:
    """Make a feed started by hand this process's feed for its settings' venue and account (as `start` does)."""
    with _feeds_lock:
        _feeds[_where(live.settings.venue_url, live.settings.account)] = live


def unregister(live: Feed) -> None:
    """Stop treating `live` as this process's feed (it keeps running)."""
    with _feeds_lock:
        where = _where(live.settings.venue_url, live.settings.account)
        if _feeds.get(where) is live:
            del _feeds[where]


def running(venue_url: str, account: str) -> Feed | None:
    """This process's running feed for an account at a venue, if any."""
    found = _feeds.get(_where(venue_url, account))
    return found if found is not None and found.running else None


def stop_all() -> None:
    """Stop every feed of this process."""
    with _feeds_lock:
        feeds = list(_feeds.values())
        _feeds.clear()
    for feed in feeds:
        feed.stop()
