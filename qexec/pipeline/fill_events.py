"""The venue's order events acted on as they arrive: an order this process waits on is published (and its position
protected) from its final ORDER_TRADE_UPDATE, and a protective order's fill runs the exit monitor for its symbol.

Nothing depends on this for correctness. `confirm_fill` (its countdown, REST at the deadline) still finishes every
order, and finds the result out when the event came first; beat's exit-monitor pass still reports every exit. A
process that dies loses its registry, and its redelivered `confirm_fill` finishes the order.

The feed calls `Listener.on_event` from its user-stream thread: it looks the event up in memory and hands the work
to a small pool of this process's threads (the stream thread must never wait on the network or on Redis, and it
competes for the GIL with the step whose order caused the event).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import redis

from qexec import constants, ids
from qexec.context import Context
from qexec.models import ExecutionResult, OrderStatus, Ticket
from qexec.pipeline import publish
from qexec.pipeline.confirm import fill_deadline
from qexec.pipeline.trace import log_fill
from qexec.positions import monitor, protection, store
from qexec.venue.feed import TERMINAL, Feed

log = logging.getLogger(__name__)

EVENT_THREADS = 4  # the pool that acts on events (each thread with a venue client of its own)
MAX_WAITING = 2_000  # orders waited on at once, the oldest forgotten first (their confirm_fill finishes them)
# An order that ends CANCELED (or EXPIRED) this near its fill deadline may be qexec's own deadline cancel, whose
# result says so: the confirm_fill that sent the cancel publishes it. Also covers clocks a little apart.
DEADLINE_MARGIN_S = 1.0
PROTECTIVE = (ids.STOP_LOSS, ids.TAKE_PROFIT)  # the clientAlgoIds of qexec's stop-losses and take-profits
EXIT_EVENT = "EXIT_EVENT"
REDIS_WAIT_S = 30.0  # how long acting on an event waits for Redis to come back (a restart), trying every
REDIS_RETRY_S = 0.5


class Listener:
    """This process's orders waited on, and the acting on the feed's events for them and for qexec's algo orders."""

    def __init__(self, live: Feed, make_context: Callable[[], Context]) -> None:
        self.feed = live
        self.pid = os.getpid()
        self._context = make_context
        self._lock = threading.Lock()
        self._waiting: OrderedDict[str, Ticket] = OrderedDict()  # client order id -> its ticket
        self._claimed: OrderedDict[str, None] = OrderedDict()  # the orders already acted on, newest last
        self._triggered: OrderedDict[str, str] = OrderedDict()  # order id a protective order sent -> symbol
        self._exits_queued: set[str] = set()  # symbols whose exit check waits for a thread
        self._pool = ThreadPoolExecutor(max_workers=EVENT_THREADS, thread_name_prefix="qexec-fill-events")

    def wait_for(self, ticket: Ticket) -> None:
        """Publish this ticket's result from its order's final event (at once, if the feed has it already); an order
        already acted on is not waited for again."""
        cid = ticket.client_order_id
        with self._lock:
            if cid in self._claimed:
                return
            self._waiting[cid] = ticket
            self._waiting.move_to_end(cid)
            while len(self._waiting) > MAX_WAITING:
                self._waiting.popitem(last=False)
        seen = self.feed.order(cid)  # the event may have come between the venue's answer and this registration
        if seen is not None and seen.status.terminal:
            self._claim(cid)

    def forget(self, client_order_id: str) -> None:
        """Stop waiting for an order (its result is out)."""
        with self._lock:
            self._waiting.pop(client_order_id, None)

    def on_event(self, kind: str, event: dict[str, Any]) -> None:
        """The feed's listener (its user-stream thread): look the event up, hand any work to the pool."""
        o = event.get("o")
        if not isinstance(o, dict):
            return
        if kind == "ORDER_TRADE_UPDATE":
            status, cid = o.get("X"), o.get("c")
            if status in TERMINAL and cid in self._waiting:
                self._claim(str(cid))
            if status == OrderStatus.FILLED.value:
                triggered = self._triggered.pop(str(o.get("i")), None) is not None
                if triggered or str(cid).startswith(PROTECTIVE):
                    self._exit(o.get("s"), event.get("T"))
        elif kind == "ALGO_UPDATE" and str(o.get("caid")).startswith(PROTECTIVE):
            if o.get("X") == "TRIGGERED" and o.get("ai"):  # its order's fill may carry another client id
                self._triggered[str(o["ai"])] = str(o.get("s"))
                while len(self._triggered) > MAX_WAITING:
                    self._triggered.popitem(last=False)
            elif o.get("X") == "FINISHED":
                self._exit(o.get("s"), event.get("T"))

    def _claim(self, cid: str) -> None:
        with self._lock:
            ticket = self._waiting.pop(cid, None)
            if ticket is not None:
                self._claimed[cid] = None
                while len(self._claimed) > MAX_WAITING:
                    self._claimed.popitem(last=False)
        if ticket is not None:  # claimed once: by the event or by the registration, never both
            self._pool.submit(self._safely, self._finish, ticket)

    def _exit(self, symbol: Any, at_ms: Any) -> None:
        if not isinstance(symbol, str):
            return
        with self._lock:
            if symbol in self._exits_queued:
                return  # the check already waiting covers this event too
            self._exits_queued.add(symbol)
        self._pool.submit(self._safely, self._check_exit, symbol, int(at_ms or 0))

    def _safely(self, work: Callable[..., object], *args: Any) -> None:
        deadline = time.monotonic() + REDIS_WAIT_S
        while True:
            try:
                work(*args)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Redis away (a restart): the event is still the fastest way to the result once it is back, and the
                # chain's own message may have been lost with the connection. Each attempt publishes at most once.
                if time.monotonic() < deadline:
                    log.warning("acting on a venue event waits for Redis (%s)", exc)
                    time.sleep(REDIS_RETRY_S)
                    continue
                log.error("acting on a venue event gave up after %g s without Redis: the chain does it", REDIS_WAIT_S)
            except Exception:  # confirm_fill, or the monitor's pass, does it instead
                log.exception("acting on a venue event failed (%s%r); the chain or the monitor does it", work, args)
            return

    def _finish(self, ticket: Ticket) -> None:
        """Publish the result from the order's final report, and protect the position, unless the chain has."""
        order, placed = self.feed.order(ticket.client_order_id), ticket.order
        if order is None or placed is None or order.orderId != placed.orderId or not order.settled:
            return  # another order under the same id, or a report without a price: confirm_fill asks the venue
        ctx = self._context()
        margin = timedelta(seconds=DEADLINE_MARGIN_S)
        if order.status is not OrderStatus.FILLED and ctx.now() >= fill_deadline(ticket, ctx.settings) - margin:
            return
        finish(ticket.model_copy(update={"order": order}), ctx)

    def _check_exit(self, symbol: str, at_ms: int) -> None:
        """The exit monitor's pass over one symbol, once the stream has shown its position as of the event."""
        with self._lock:
            self._exits_queued.discard(symbol)
        ctx = self._context()
        live = self.feed
        if at_ms and live.live and live.wait_positions(symbol, at_ms, ctx.settings.stream_wait_s) is None:
            # The stream has not shown the fill's position yet: a pass now could take a closed position for open.
            log.info(
                "%s symbol=%s the stream lags the fill: the exit monitor's next pass reports it", EXIT_EVENT, symbol
            )
            return
        report = monitor.watch(ctx, [symbol])
        acted = {kind: names for kind, names in report.items() if names}
        log.info("%s symbol=%s %s", EXIT_EVENT, symbol, " ".join(f"{k}={','.join(v)}" for k, v in acted.items()))


def finish(ticket: Ticket, ctx: Context) -> ExecutionResult | None:
    """Publish a ticket whose order the venue's stream reported final, and protect its position; the result, or
    None when it was out already (then the chain protects)."""
    assert ticket.order is not None
    log_fill(ticket, ctx, ticket.order, source="event")
    result, written = publish.publish_first(ticket, ctx)
    if not written:
        return None
    try:
        protection.protect_step(result.model_dump(mode="json"), ticket.model_dump(mode="json"), ctx)
    except store.PositionBusy:
        log.info("position of intent %s busy: protect_position protects it", ticket.intent_id)
    except Exception:
        log.exception("protecting intent %s from its fill event failed: protect_position retries", ticket.intent_id)
    return result


def protected(ctx: Context, intent_id: str) -> bool:
    """True when the intent's protection event is out (the chain's protect step has nothing left to do)."""
    return bool(ctx.redis.exists(constants.PROTECTION_PUBLISHED_KEY.format(intent_id=intent_id)))


_listeners: dict[str, Listener] = {}  # one per account whose feed this process runs
_listener_lock = threading.Lock()


def listen(live: Feed | None, make_context: Callable[[], Context]) -> Listener | None:
    """Act on this process's feed's events for its account from now on (once per feed); None without a feed."""
    if live is None:
        return None
    account = live.settings.account
    with _listener_lock:
        found = _listeners.get(account)
        if found is None or found.feed is not live or found.pid != os.getpid():
            found = _listeners[account] = Listener(live, make_context)
            live.subscribe(found.on_event)
        return found


def _current(account: str) -> Listener | None:
    found = _listeners.get(account)
    return found if found is not None and found.pid == os.getpid() and found.feed.running else None


def wait_for(ticket: Ticket) -> None:
    """Have this process publish the ticket from its order's final event, when it listens to its account's feed."""
    found = _current(ticket.intent.account_name)
    if found is not None:
        found.wait_for(ticket)


def forget(ticket: Ticket) -> None:
    """This process no longer waits for the ticket's order's event (its result is out)."""
    found = _current(ticket.intent.account_name)
    if found is not None:
        found.forget(ticket.client_order_id)
