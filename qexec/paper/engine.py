"""The matching engine of one account: places, fills, cancels and triggers its orders against the shared marks.

Each change is also handed, as a user-data stream event, to ``Engine.publish`` while a stream of the account listens.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from qexec.paper import errors, events
from qexec.paper.account import DEFAULT_ACCOUNT, Account, Position, max_notional
from qexec.paper.catalogue import PERCENT_PRICE_DOWN, PERCENT_PRICE_UP, Symbol
from qexec.paper.config import TRADE_RETENTION_S
from qexec.paper.decimals import ZERO, floor_to, fmt, places_of, round_to
from qexec.paper.orders import CONDITIONAL_TYPES, AlgoOrder, Fill, Order
from qexec.paper.params import Params
from qexec.paper.prices import PriceBook

CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK", "GTX", "GTD"})
WORKING_TYPES = frozenset({"MARK_PRICE", "CONTRACT_PRICE"})
TRADE_WINDOW_MS = 7 * 24 * 3600 * 1000  # userTrades: the longest startTime..endTime span
MIN_CALLBACK_RATE, MAX_CALLBACK_RATE = Decimal("0.1"), Decimal(20)  # TRAILING_STOP_MARKET callbackRate, in %
FIRST_ORDER_ID = 4_000_000_001
FIRST_ALGO_ID = 3_000_000_001
FIRST_TRADE_ID = 500_000_001
BPS = Decimal(10_000)
# Binance's expire reasons (ORDER_TRADE_UPDATE "er"): IOC not filled completely, a reduce-only order with nothing
# left to reduce, a MARKET order not filled completely.
EXPIRED_IOC = "2"
EXPIRED_REDUCE_ONLY = "4"
EXPIRED_MARKET = "9"


@dataclass
class Settings:
    """The engine's knobs: slippage of taker fills, the two fee rates and how long userTrades keeps a fill."""

    slippage_bps: Decimal = Decimal(1)
    taker_fee_rate: Decimal = Decimal("0.0005")
    maker_fee_rate: Decimal = Decimal("0.0002")
    trade_retention_ms: int = int(TRADE_RETENTION_S * 1000)


@dataclass
class FillPlan:
    """How the next MARKET order fills: after a delay, and/or only partly."""

    delay_ms: int = 0
    partial_ratio: Decimal | None = None


@dataclass
class Dirty:
    """What changed since the state store last saved."""

    orders: set[int] = field(default_factory=set)
    algos: set[int] = field(default_factory=set)
    fills: list[Fill] = field(default_factory=list)
    positions: set[tuple[str, str]] = field(default_factory=set)
    account: bool = False

    def __bool__(self) -> bool:
        return bool(self.orders or self.algos or self.fills or self.positions or self.account)


@dataclass
class Sequences:
    """The next order, algo and trade ids (they only ever grow, across resets and restarts)."""

    order_id: int = FIRST_ORDER_ID
    algo_id: int = FIRST_ALGO_ID
    trade_id: int = FIRST_TRADE_ID


class Engine:
    """One account's orders, fills, positions and listen key, matched against the marks every account shares;
    every method runs to completion."""

    def __init__(
        self,
        symbols: dict[str, Symbol],
        prices: PriceBook,
        balance: Decimal,
        settings: Settings,
        *,
        name: str = DEFAULT_ACCOUNT,
        ids: Sequences | None = None,
    ) -> None:
        self.name = name
        self.symbols = symbols
        self.prices = prices
        self.settings = settings
        self.ids = ids if ids is not None else Sequences()  # shared by the accounts: ids are unique venue-wide
        self.dirty = Dirty()
        self.listen_key: str | None = None
        self.listen_key_expires_ms = 0
        # Set while a user-data stream listens; None keeps event building off the REST path.
        self.publish: Callable[[dict[str, Any]], None] | None = None
        self.reset(balance, dual_side=False)

    def reset(self, balance: Decimal, dual_side: bool) -> None:
        """Forget the account, its orders and fills (ids keep growing)."""
        self.account = Account(balance, dual_side)
        # Funded now: clients skip an asset whose updateTime is 0 (never initialised), ccxt's fetch_balance among them.
        self.account.update_time_ms = now_ms() if balance > 0 else 0
        self.orders: dict[int, Order] = {}
        self.orders_by_symbol: dict[str, list[int]] = {}
        self.live_orders: dict[str, dict[int, Order]] = {}
        self.client_ids: dict[tuple[str, str], int] = {}
        self.algos: dict[int, AlgoOrder] = {}
        self.live_algos: dict[str, dict[int, AlgoOrder]] = {}
        self.algo_client_ids: dict[str, int] = {}
        self.algo_of_order: dict[int, int] = {}
        self.fills: dict[str, list[Fill]] = {}
        self.pending: dict[int, FillPlan] = {}
        self.fill_count = 0
        self.listen_key = None
        self.listen_key_expires_ms = 0
        self.dirty.account = True

    # ---- lookups -------------------------------------------------------------------------------

    def symbol(self, name: str) -> Symbol:
        """The listed symbol ``name`` (-1121 when unknown)."""
        found = self.symbols.get(name)
        if found is None:
            raise errors.BAD_SYMBOL
        return found

    def now_mark(self, name: str) -> Decimal:
        """The current mark of ``name``."""
        return self.prices.marks[name]

    def find_order(self, p: Params) -> Order:
        """The order named by ``orderId`` or ``origClientOrderId`` on ``symbol`` (-2013 when absent)."""
        symbol = self.symbol(p.required("symbol")).name
        order_id = p.optional_integer("orderId")
        if order_id is not None:
            order = self.orders.get(order_id)
        elif p.get("origClientOrderId"):
            found = self.client_ids.get((symbol, p["origClientOrderId"]))
            order = self.orders.get(found) if found is not None else None
        else:
            raise errors.VenueError(
                -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        if order is None or order.symbol != symbol:
            raise errors.NO_SUCH_ORDER
        return order

    def find_algo(self, p: Params) -> AlgoOrder:
        """The algo order named by ``algoId`` or ``clientAlgoId`` (-2013 when absent)."""
        algo_id = p.optional_integer("algoId")
        if algo_id is None:
            if not p.get("clientAlgoId"):
                raise errors.VenueError(
                    -1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!"
                )
            algo_id = self.algo_client_ids.get(p["clientAlgoId"])
        algo = self.algos.get(algo_id) if algo_id is not None else None
        if algo is None:
            raise errors.NO_SUCH_ORDER
        return algo

    def open_orders(self, symbol: str | None) -> list[Order]:
        """Live orders, of one symbol or all, oldest first."""
        if symbol is not None:
            return sorted(self.live_orders.get(symbol, {}).values(), key=lambda o: o.order_id)
        return sorted((o for book in self.live_orders.values() for o in book.values()), key=lambda o: o.order_id)

    def open_algos(self, symbol: str | None) -> list[AlgoOrder]:
        """Live algo orders, of one symbol or all, oldest first."""
        books = [self.live_algos.get(symbol, {})] if symbol is not None else list(self.live_algos.values())
        return sorted((a for book in books for a in book.values()), key=lambda a: a.algo_id)

    def order_margin(self) -> Decimal:
        """Initial margin held by open orders that can open or grow a position."""
        total = ZERO
        for book in self.live_orders.values():
            for order in book.values():
                if order.reduce_only or self._closes(order.side, order.position_side):
                    continue
                price = order.price or self.now_mark(order.symbol)
                total += order.remaining * price / self.account.leverage_of(order.symbol)
        return total

    def totals(self) -> dict[str, Decimal]:
        """The account's balances and margins at the current marks."""
        return self.account.totals(self.now_mark, self.order_margin())

    # ---- orders --------------------------------------------------------------------------------

    def place_order(self, p: Params, plan: FillPlan) -> Order:
        """Accept a LIMIT or MARKET order and fill what it can now; a delayed MARKET order stays NEW."""
        symbol = self.symbol(p.required("symbol"))
        side = self._side(p)
        order_type = p.required("type")
        if order_type in CONDITIONAL_TYPES:
            raise errors.USE_ALGO_API
        if order_type not in ("LIMIT", "MARKET"):
            raise errors.BAD_ORDER_TYPE
        position_side = self._position_side(p)
        reduce_only = self._reduce_only(p)
        if p.flag("closePosition"):
            raise errors.not_required("closePosition")
        market = order_type == "MARKET"
        qty = p.decimal("quantity")
        self._check_qty(symbol, qty, market)
        client_id = self._client_id(p.get("newClientOrderId"), symbol.name)
        if p.get("newOrderRespType", "ACK") not in ("ACK", "RESULT"):
            raise errors.invalid("newOrderRespType")
        mark = self.now_mark(symbol.name)
        price, tif = self._price_and_time_in_force(p, symbol, side, mark, market=market)
        self._check_reduce_notional_and_margin(
            symbol, side, position_side, qty, price=price or mark, reduce_only=reduce_only
        )
        crosses = not market and self._crosses(side, price, mark)
        if not market and tif == "GTX" and crosses:
            raise errors.GTX_REJECT
        # FOK is all or nothing: one that would not fill at once, or only in part (a partial_fill fault), is refused.
        if not market and tif == "FOK" and (not crosses or plan.partial_ratio is not None):
            raise errors.FOK_REJECT
        now = now_ms()
        order = Order(
            order_id=self._next_order_id(),
            symbol=symbol.name,
            client_order_id=client_id,
            side=side,
            position_side=position_side,
            type=order_type,
            orig_type=order_type,
            time_in_force=tif,
            price=price,
            orig_qty=qty,
            reduce_only=reduce_only,
            time_ms=now,
            update_time_ms=now,
        )
        self._register(order)
        self._fill_on_arrival(order, plan, mark, crosses=crosses)
        return order

    def fill_pending(self, order_id: int) -> Order | None:
        """Fill a delayed MARKET order now (nothing when it was cancelled meanwhile)."""
        plan = self.pending.pop(order_id, None)
        order = self.orders.get(order_id)
        if plan is None or order is None or not order.live:
            return order
        self._fill_market(order, plan.partial_ratio)
        return order

    def cancel_order(self, p: Params) -> Order:
        """Cancel a live order (-2011 when it is not open)."""
        try:
            order = self.find_order(p)
        except errors.VenueError as exc:
            if exc.code == -2013:
                raise errors.UNKNOWN_ORDER from None
            raise
        if not order.live:
            raise errors.UNKNOWN_ORDER
        self._finish(order, "CANCELED")
        return order

    def cancel_all(self, symbol: str) -> int:
        """Cancel every live order of ``symbol``; returns how many."""
        orders = self.open_orders(self.symbol(symbol).name)
        for order in orders:
            self._finish(order, "CANCELED")
        return len(orders)

    def all_orders(self, p: Params) -> list[Order]:
        """``allOrders``: from ``orderId`` up, or the most recent, within the time range."""
        symbol = self.symbol(p.required("symbol")).name
        limit = min(max(p.integer("limit", 500), 1), 1000)
        start, end = p.optional_integer("startTime"), p.optional_integer("endTime")
        from_id = p.optional_integer("orderId")
        orders = [self.orders[i] for i in self.orders_by_symbol.get(symbol, [])]
        orders = [
            o
            for o in orders
            if (from_id is None or o.order_id >= from_id)
            and (start is None or o.time_ms >= start)
            and (end is None or o.time_ms <= end)
        ]
        return orders[:limit] if from_id is not None else orders[-limit:]

    def user_trades(self, p: Params) -> list[Fill]:
        """``userTrades``: fills of a symbol, optionally of one order, from ``fromId`` or the most recent."""
        symbol = self.symbol(p.required("symbol")).name
        limit = min(max(p.integer("limit", 500), 1), 1000)
        start, end = p.optional_integer("startTime"), p.optional_integer("endTime")
        from_id, order_id = p.optional_integer("fromId"), p.optional_integer("orderId")
        # Binance: at most 7 days between startTime and endTime; one of them alone means 7 days from (or up to) it;
        # neither (without orderId or fromId) the last 7 days; and only fills younger than the retention are kept.
        now = now_ms()
        if start is not None and end is not None and end - start > TRADE_WINDOW_MS:
            raise errors.LOOKUP_INTERVAL_TOO_BIG
        if start is not None and end is None:
            end = start + TRADE_WINDOW_MS
        elif end is not None and start is None:
            start = end - TRADE_WINDOW_MS
        elif start is None and order_id is None and from_id is None:
            start = now - TRADE_WINDOW_MS
        oldest = now - self.settings.trade_retention_ms
        fills = [
            f
            for f in self.fills.get(symbol, [])
            if f.time_ms >= oldest
            and (order_id is None or f.order_id == order_id)
            and (from_id is None or f.trade_id >= from_id)
            and (start is None or f.time_ms >= start)
            and (end is None or f.time_ms <= end)
        ]
        return fills[:limit] if from_id is not None else fills[-limit:]

    # ---- algo orders ---------------------------------------------------------------------------

    def place_algo(self, p: Params) -> AlgoOrder:
        """Accept a conditional order; it waits for its trigger price."""
        if p.required("algoType") != "CONDITIONAL":
            raise errors.invalid("algoType")
        symbol = self.symbol(p.required("symbol"))
        side = self._side(p)
        order_type = p.required("type")
        if order_type not in CONDITIONAL_TYPES:
            raise errors.BAD_ORDER_TYPE
        position_side = self._position_side(p)
        reduce_only = self._reduce_only(p)
        close_position = p.flag("closePosition")
        qty = self._algo_quantity(p, symbol, order_type, close_position=close_position, reduce_only=reduce_only)
        tif = p.get("timeInForce", "GTC")
        if tif not in TIME_IN_FORCE:
            raise errors.BAD_TIME_IN_FORCE
        trigger, price, activate, rate = self._algo_prices(p, symbol, order_type)
        working_type = p.get("workingType", "CONTRACT_PRICE")
        if working_type not in WORKING_TYPES:
            raise errors.invalid("workingType")
        client_id = self._algo_client_id(p.get("clientAlgoId"))
        if close_position:
            self._check_no_close_position_order(symbol.name, order_type, side, position_side)
        mark = self.now_mark(symbol.name)
        now = now_ms()
        algo = AlgoOrder(
            algo_id=self.ids.algo_id,
            client_algo_id=client_id,
            symbol=symbol.name,
            side=side,
            position_side=position_side,
            order_type=order_type,
            time_in_force=tif,
            quantity=qty,
            trigger_price=trigger,
            price=price,
            working_type=working_type,
            close_position=close_position,
            price_protect=p.flag("priceProtect"),
            reduce_only=reduce_only,
            create_time_ms=now,
            update_time_ms=now,
            activate_price=activate,
            callback_rate=rate,
        )
        if order_type == "TRAILING_STOP_MARKET":
            self._track_trailing(algo, mark)
        elif self._algo_fires(algo, mark):
            raise errors.WOULD_TRIGGER
        self._register_algo(algo)
        return algo

    def cancel_algo(self, p: Params) -> AlgoOrder:
        """Cancel a waiting algo order (-2011 when it is not waiting)."""
        try:
            algo = self.find_algo(p)
        except errors.VenueError as exc:
            if exc.code == -2013:
                raise errors.UNKNOWN_ORDER from None
            raise
        if not algo.live:
            raise errors.UNKNOWN_ORDER
        self._end_algo(algo, "CANCELED")
        return algo

    def cancel_all_algos(self, symbol: str) -> int:
        """Cancel every waiting algo order of ``symbol``; returns how many."""
        algos = self.open_algos(self.symbol(symbol).name)
        for algo in algos:
            self._end_algo(algo, "CANCELED")
        return len(algos)

    def all_algos(self, p: Params) -> list[AlgoOrder]:
        """``allAlgoOrders`` of a symbol, from ``algoId`` up or the most recent."""
        symbol = self.symbol(p.required("symbol")).name
        limit = min(max(p.integer("limit", 500), 1), 1000)
        from_id = p.optional_integer("algoId")
        algos = sorted((a for a in self.algos.values() if a.symbol == symbol), key=lambda a: a.algo_id)
        if from_id is not None:
            return [a for a in algos if a.algo_id >= from_id][:limit]
        return algos[-limit:]

    # ---- prices --------------------------------------------------------------------------------

    def evaluate(self, name: str) -> None:
        """Fill resting limit orders the mark has crossed, then fire the algo orders it has reached."""
        mark = self.now_mark(name)
        for order in list(self.live_orders.get(name, {}).values()):
            if order.type == "LIMIT" and not order.hold and self._crosses(order.side, order.price, mark):
                self._fill_limit(order, order.price, maker=True, ratio=None)
        for algo in list(self.live_algos.get(name, {}).values()):
            if algo.order_type == "TRAILING_STOP_MARKET":
                fires = self._track_trailing(algo, mark)
            else:
                fires = self._algo_fires(algo, mark)
            if fires:
                self._trigger(algo, mark)

    # ---- account -------------------------------------------------------------------------------

    def change_leverage(self, name: str, leverage: int) -> int:
        """Set the symbol's leverage: -4028 outside 1..max; with an open position, -2027 when the position is above
        the new leverage's notional cap and -2028 when the margin it would need is more than is available."""
        symbol = self.symbol(name)
        if not 1 <= leverage <= symbol.max_leverage:
            raise errors.INVALID_LEVERAGE
        held = [p for p in self.account.open_positions() if p.symbol == name]
        if held:
            notional = sum((abs(p.amt) for p in held), ZERO) * self.now_mark(name)
            if notional > Decimal(max_notional(leverage)):
                raise errors.MAX_LEVERAGE_RATIO
            extra = notional / leverage - notional / self.account.leverage_of(name)
            if extra > 0 and extra > self.totals()["available"]:
                raise errors.MIN_LEVERAGE_RATIO
        self.account.leverage[name] = leverage
        self.dirty.account = True
        if self.publish is not None:
            self.publish(events.config_update(name, leverage, now_ms()))
        return leverage

    def change_margin_type(self, name: str, margin_type: str) -> None:
        """Set the symbol's margin type, ISOLATED or CROSSED."""
        self.symbol(name)
        margin_type = margin_type.upper()
        if margin_type not in ("ISOLATED", "CROSSED"):
            raise errors.invalid("marginType")
        if self.account.margin_type.get(name, "CROSSED") == margin_type:
            raise errors.NO_NEED_MARGIN_TYPE
        if any(p.symbol == name for p in self.account.open_positions()):
            raise errors.MARGIN_TYPE_WITH_POSITION
        self.account.margin_type[name] = margin_type
        self.dirty.account = True
        if self.publish is not None:
            sides = self.account.position_sides()
            changed = [self.account.positions.get((name, side)) or Position(name, side) for side in sides]
            self._account_event(changed, "MARGIN_TYPE_CHANGE", now_ms())

    def change_position_mode(self, dual: bool) -> None:
        """Switch between one-way and hedge mode (no positions or open orders allowed)."""
        if dual == self.account.dual_side:
            raise errors.NO_NEED_POSITION_SIDE
        if any(True for _ in self.account.open_positions()):
            raise errors.DUAL_WITH_POSITION
        if any(self.live_orders.values()) or any(self.live_algos.values()):
            raise errors.DUAL_WITH_OPEN_ORDERS
        self.account.dual_side = dual
        self.dirty.account = True

    def active_listen_key(self, now: int) -> str | None:
        """The account's listen key while it is valid, else None."""
        if self.listen_key is not None and now < self.listen_key_expires_ms:
            return self.listen_key
        return None

    def new_listen_key(self, now: int, ttl_ms: int) -> str:
        """The account's listen key (the active one, or a new one), valid for ``ttl_ms`` from ``now``."""
        if self.active_listen_key(now) is None:
            self.listen_key = secrets.token_hex(32)
        self.listen_key_expires_ms = now + ttl_ms
        self.dirty.account = True
        assert self.listen_key is not None
        return self.listen_key

    def keepalive_listen_key(self, key: str | None, now: int, ttl_ms: int) -> str:
        """Extend the active listen key (-1125 when none is active, or ``key`` is another)."""
        current = self.active_listen_key(now)
        if current is None or (key and key != current):
            raise errors.BAD_LISTEN_KEY
        self.listen_key_expires_ms = now + ttl_ms
        self.dirty.account = True
        return current

    def close_listen_key(self) -> None:
        """Forget the listen key (DELETE, or its expiry)."""
        self.listen_key = None
        self.listen_key_expires_ms = 0
        self.dirty.account = True

    # ---- internals -----------------------------------------------------------------------------

    def _side(self, p: Params) -> str:
        side = p.required("side")
        if side not in ("BUY", "SELL"):
            raise errors.BAD_SIDE
        return side

    def _position_side(self, p: Params) -> str:
        position_side = p.get("positionSide") or "BOTH"
        if position_side not in ("BOTH", "LONG", "SHORT"):
            raise errors.invalid("positionSide")
        if (position_side == "BOTH") == self.account.dual_side:
            raise errors.POSITION_SIDE_MISMATCH
        return position_side

    def _closes(self, side: str, position_side: str) -> bool:
        return (side == "SELL" and position_side == "LONG") or (side == "BUY" and position_side == "SHORT")

    @staticmethod
    def _crosses(side: str, price: Decimal, mark: Decimal) -> bool:
        return mark <= price if side == "BUY" else mark >= price

    def _check_qty(self, symbol: Symbol, qty: Decimal, market: bool) -> None:
        if qty <= 0:
            raise errors.QTY_NOT_POSITIVE
        if places_of(qty.normalize()) > symbol.quantity_precision:
            raise errors.BAD_PRECISION
        step = symbol.market_step_size if market else symbol.step_size
        low = symbol.market_min_qty if market else symbol.min_qty
        high = symbol.market_max_qty if market else symbol.max_qty
        if qty % step != 0:
            raise errors.QTY_STEP
        if qty < low:
            raise errors.QTY_BELOW_MIN
        if qty > high:
            raise errors.QTY_ABOVE_MAX

    def _check_price(self, symbol: Symbol, price: Decimal) -> None:
        if price <= 0 or price < symbol.min_price:
            raise errors.PRICE_BELOW_MIN
        if places_of(price.normalize()) > symbol.price_precision:
            raise errors.BAD_PRECISION
        if price > symbol.max_price:
            raise errors.PRICE_ABOVE_MAX
        if (price - symbol.min_price) % symbol.tick_size != 0:
            raise errors.PRICE_TICK

    def _reduce_only(self, p: Params) -> bool:
        """The reduceOnly flag; -1106 in hedge mode, where the position side says what an order reduces."""
        reduce_only = p.flag("reduceOnly")
        if reduce_only and self.account.dual_side:
            raise errors.not_required("reduceOnly")
        return reduce_only

    def _price_and_time_in_force(
        self, p: Params, symbol: Symbol, side: str, mark: Decimal, *, market: bool
    ) -> tuple[Decimal, str]:
        """A MARKET order's zero price and GTC, or a LIMIT order's checked price and time in force."""
        if market:
            if p.get("price"):
                raise errors.not_required("price")
            return ZERO, "GTC"
        tif = p.required("timeInForce")
        if tif not in TIME_IN_FORCE:
            raise errors.BAD_TIME_IN_FORCE
        price = p.decimal("price")
        self._check_price(symbol, price)
        # PERCENT_PRICE: a BUY at most mark x multiplierUp, a SELL at least mark x multiplierDown.
        if side == "BUY" and price > mark * PERCENT_PRICE_UP:
            raise errors.limit_above(fmt(mark * PERCENT_PRICE_UP, symbol.price_places))
        if side == "SELL" and price < mark * PERCENT_PRICE_DOWN:
            raise errors.limit_below(fmt(mark * PERCENT_PRICE_DOWN, symbol.price_places))
        return price, tif

    def _check_reduce_notional_and_margin(
        self, symbol: Symbol, side: str, position_side: str, qty: Decimal, *, price: Decimal, reduce_only: bool
    ) -> None:
        """-2022 for a closing order with nothing to close, -4164 below the minimum notional, -2019 without margin.

        ``price`` is the limit price, or the mark for a MARKET order.
        """
        closing = reduce_only or self._closes(side, position_side)
        reducible = self.account.reducible(symbol.name, side, position_side)
        if closing and reducible <= 0:
            raise errors.REDUCE_ONLY_REJECT
        if not reduce_only and qty * price < symbol.min_notional:
            raise errors.min_notional(str(symbol.min_notional))
        opening = ZERO if closing else max(ZERO, qty - reducible)
        if opening > 0:
            need = opening * price / self.account.leverage_of(symbol.name)
            if need > self.totals()["available"]:
                raise errors.MARGIN_INSUFFICIENT

    def _fill_on_arrival(self, order: Order, plan: FillPlan, mark: Decimal, *, crosses: bool) -> None:
        """Fill a new order as far as it fills now: a MARKET order (or plan its delay), a LIMIT through the mark."""
        if order.type == "MARKET":
            if plan.delay_ms > 0:
                self.pending[order.order_id] = plan
            else:
                self._fill_market(order, plan.partial_ratio)
        elif crosses:
            slipped = self._slipped(self.symbols[order.symbol], order.side, mark)
            fill_price = min(order.price, slipped) if order.side == "BUY" else max(order.price, slipped)
            self._fill_limit(order, fill_price, maker=False, ratio=plan.partial_ratio)
            if order.live and order.time_in_force in ("IOC", "FOK"):
                self._finish(order, "EXPIRED", EXPIRED_IOC)
        elif order.time_in_force == "IOC":
            self._finish(order, "EXPIRED", EXPIRED_IOC)

    def _algo_quantity(
        self, p: Params, symbol: Symbol, order_type: str, *, close_position: bool, reduce_only: bool
    ) -> Decimal:
        """The quantity a conditional order sends; zero for a closePosition order, which closes what is there."""
        if not close_position:
            qty = p.decimal("quantity")
            self._check_qty(symbol, qty, market=order_type.endswith("MARKET"))
            return qty
        if order_type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise errors.not_required("closePosition")
        if p.get("quantity"):
            raise errors.not_required("quantity")
        if reduce_only:
            raise errors.not_required("reduceOnly")
        return ZERO

    def _algo_prices(
        self, p: Params, symbol: Symbol, order_type: str
    ) -> tuple[Decimal, Decimal, Decimal | None, Decimal | None]:
        """A conditional order's trigger, limit price, activation price and callback rate (zero or None if unused)."""
        trigger, price = ZERO, ZERO
        activate: Decimal | None = None
        rate: Decimal | None = None
        if order_type == "TRAILING_STOP_MARKET":
            rate = p.decimal("callbackRate")
            # 0.1 to 20 % (Binance's change log, 2026-10-23: the maximum went from 10 to 20).
            if not MIN_CALLBACK_RATE <= rate <= MAX_CALLBACK_RATE:
                raise errors.invalid("callbackRate")
            activate = p.optional_decimal("activatePrice")
            if activate is not None:
                self._check_price(symbol, activate)
        else:
            trigger = p.decimal("triggerPrice")
            self._check_price(symbol, trigger)
        if order_type in ("STOP", "TAKE_PROFIT"):
            price = p.decimal("price")
            self._check_price(symbol, price)
        return trigger, price, activate, rate

    def _algo_client_id(self, given: str | None) -> str:
        """The clientAlgoId sent (-4015 when malformed, -4116 while a waiting algo order holds it), or a new one."""
        client_id = given or f"paper{secrets.token_hex(8)}"
        check_client_id(client_id)
        existing = self.algo_client_ids.get(client_id)
        if existing is not None and self.algos[existing].live:
            raise errors.DUPLICATE_CLIENT_ID
        return client_id

    def _check_no_close_position_order(self, symbol: str, order_type: str, side: str, position_side: str) -> None:
        """-4130 when a closePosition order of this type and side already waits: one per type and side."""
        key = (symbol, order_type, side, position_side)
        if any(
            a.live and a.close_position and (a.symbol, a.order_type, a.side, a.position_side) == key
            for a in self.algos.values()
        ):
            raise errors.CLOSE_POSITION_EXISTS

    def _register_algo(self, algo: AlgoOrder) -> None:
        """Take its id from the sequence and hold the accepted algo order until its trigger."""
        self.ids.algo_id += 1
        self.dirty.account = True
        self.algos[algo.algo_id] = algo
        self.live_algos.setdefault(algo.symbol, {})[algo.algo_id] = algo
        self.algo_client_ids[algo.client_algo_id] = algo.algo_id
        self.dirty.algos.add(algo.algo_id)
        self._algo_event(algo)

    def _client_id(self, given: str | None, symbol: str) -> str:
        if not given:
            return f"paper{secrets.token_hex(10)}"
        check_client_id(given)
        existing = self.client_ids.get((symbol, given))
        if existing is not None and self.orders[existing].live:
            raise errors.DUPLICATE_CLIENT_ID
        return given

    def _next_order_id(self) -> int:
        order_id = self.ids.order_id
        self.ids.order_id += 1
        self.dirty.account = True
        return order_id

    def _register(self, order: Order) -> None:
        self.orders[order.order_id] = order
        self.orders_by_symbol.setdefault(order.symbol, []).append(order.order_id)
        self.client_ids[(order.symbol, order.client_order_id)] = order.order_id
        self.live_orders.setdefault(order.symbol, {})[order.order_id] = order
        self.dirty.orders.add(order.order_id)
        self._order_event(order, "NEW")

    def _slipped(self, symbol: Symbol, side: str, mark: Decimal) -> Decimal:
        slip = mark * self.settings.slippage_bps / BPS
        price = mark + slip if side == "BUY" else mark - slip
        return max(round_to(price, symbol.tick_size), symbol.tick_size)

    def _fill_market(self, order: Order, ratio: Decimal | None) -> None:
        symbol = self.symbols[order.symbol]
        qty = order.remaining
        if ratio is not None:
            qty = partial_qty(order.orig_qty, ratio, symbol.market_step_size)
        self._execute(order, qty, self._slipped(symbol, order.side, self.now_mark(order.symbol)), maker=False)
        if order.remaining == 0:
            self._finish(order, "FILLED")
        else:
            self._finish(order, "EXPIRED", EXPIRED_MARKET)

    def _fill_limit(self, order: Order, price: Decimal, maker: bool, ratio: Decimal | None) -> None:
        qty = order.remaining
        if ratio is not None:
            qty = partial_qty(order.orig_qty, ratio, self.symbols[order.symbol].step_size)
            order.hold = True  # a scripted partial fill stays PARTIALLY_FILLED until cancelled
        done = self._execute(order, qty, price, maker)
        if order.remaining == 0:
            self._finish(order, "FILLED")
        elif done == 0 and (order.reduce_only or self._closes(order.side, order.position_side)):
            self._finish(order, "EXPIRED", EXPIRED_REDUCE_ONLY)  # nothing left to reduce
        elif order.executed_qty > 0:
            order.status = "PARTIALLY_FILLED"

    def _execute(self, order: Order, qty: Decimal, price: Decimal, maker: bool) -> Decimal:
        pos: Position = self.account.position(order.symbol, order.position_side)
        if order.reduce_only or self._closes(order.side, order.position_side):
            qty = min(qty, self.account.reducible(order.symbol, order.side, order.position_side))
        if qty <= 0:
            return ZERO
        now = now_ms()
        rate = self.settings.maker_fee_rate if maker else self.settings.taker_fee_rate
        commission = qty * price * rate
        realized = pos.apply(order.side, qty, price)
        pos.realized += realized
        pos.update_time_ms = now
        self.account.wallet += realized - commission
        self.account.update_time_ms = now
        order.executed_qty += qty
        order.cum_quote += qty * price
        order.update_time_ms = now
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        fill = Fill(
            trade_id=self.ids.trade_id,
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            position_side=order.position_side,
            price=price,
            qty=qty,
            commission=commission,
            realized_pnl=realized,
            maker=maker,
            time_ms=now,
        )
        self.ids.trade_id += 1
        self.fills.setdefault(order.symbol, []).append(fill)
        self.fill_count += 1
        self.prices.record_trade(order.symbol, qty, price)
        self.dirty.fills.append(fill)
        self.dirty.positions.add((pos.symbol, pos.side))
        self.dirty.orders.add(order.order_id)
        self.dirty.account = True
        self._order_event(order, "TRADE", fill)
        self._account_event([pos], "ORDER", now)
        return qty

    def _finish(self, order: Order, status: str, expire_reason: str = "0") -> None:
        order.status = status
        if status != "FILLED":  # a fill's time is its last trade's, as the TRADE event reported it
            order.update_time_ms = now_ms()
        self.live_orders.get(order.symbol, {}).pop(order.order_id, None)
        self.pending.pop(order.order_id, None)
        self.dirty.orders.add(order.order_id)
        if status != "FILLED":
            self._order_event(order, status, expire_reason=expire_reason)
        algo_id = self.algo_of_order.get(order.order_id)
        if algo_id is not None:
            algo = self.algos[algo_id]
            algo.actual_price = order.avg_price
            algo.actual_qty = order.executed_qty
            algo.algo_status = "FINISHED"
            algo.update_time_ms = order.update_time_ms
            self.dirty.algos.add(algo_id)
            self._algo_event(algo)

    def _algo_fires(self, algo: AlgoOrder, mark: Decimal) -> bool:
        stop = algo.order_type in ("STOP", "STOP_MARKET")
        buy = algo.side == "BUY"
        if stop == buy:
            return mark >= algo.trigger_price
        return mark <= algo.trigger_price

    def _track_trailing(self, algo: AlgoOrder, mark: Decimal) -> bool:
        """Follow the extreme of a trailing stop; True when the callback is reached."""
        sell = algo.side == "SELL"
        if not algo.activated:
            target = algo.activate_price
            if target is not None and ((sell and mark < target) or (not sell and mark > target)):
                return False
            algo.activated = True
            algo.extreme = mark
            self.dirty.algos.add(algo.algo_id)
            return False
        assert algo.extreme is not None and algo.callback_rate is not None
        if (sell and mark > algo.extreme) or (not sell and mark < algo.extreme):
            algo.extreme = mark
            self.dirty.algos.add(algo.algo_id)
            return False
        rate = algo.callback_rate / 100
        if sell:
            return mark <= algo.extreme * (1 - rate)
        return mark >= algo.extreme * (1 + rate)

    def _end_algo(self, algo: AlgoOrder, status: str) -> None:
        algo.algo_status = status
        algo.update_time_ms = now_ms()
        self.live_algos.get(algo.symbol, {}).pop(algo.algo_id, None)
        self.dirty.algos.add(algo.algo_id)
        self._algo_event(algo)

    def _trigger(self, algo: AlgoOrder, mark: Decimal) -> None:
        symbol = self.symbols[algo.symbol]
        reduce = algo.reduce_only or algo.close_position
        reducible = self.account.reducible(algo.symbol, algo.side, algo.position_side)
        qty = algo.quantity
        if algo.close_position:
            qty = floor_to(reducible, symbol.step_size)
        if (reduce or self._closes(algo.side, algo.position_side)) and (reducible <= 0 or qty <= 0):
            self._end_algo(algo, "CANCELED")  # nothing left to close
            return
        limit = algo.order_type in ("STOP", "TAKE_PROFIT")
        now = now_ms()
        order = Order(
            order_id=self._next_order_id(),
            symbol=algo.symbol,
            client_order_id=algo.client_algo_id,
            side=algo.side,
            position_side=algo.position_side,
            type="LIMIT" if limit else "MARKET",
            orig_type=algo.order_type,
            time_in_force=algo.time_in_force if limit else "GTC",
            price=algo.price if limit else ZERO,
            orig_qty=qty,
            reduce_only=reduce,
            time_ms=now,
            update_time_ms=now,
            close_position=algo.close_position,
            stop_price=algo.trigger_price,
            working_type=algo.working_type,
        )
        # The algo service reports TRIGGERED (with the new order's id) before the order's own NEW.
        algo.trigger_time_ms = now
        algo.actual_order_id = order.order_id
        self.algo_of_order[order.order_id] = algo.algo_id
        self._end_algo(algo, "TRIGGERED")
        self._register(order)
        if not limit:
            self._fill_market(order, None)
        elif self._crosses(order.side, order.price, mark):
            self._fill_limit(order, order.price, maker=False, ratio=None)

    # ---- stream events -------------------------------------------------------------------------

    def _order_event(self, order: Order, execution: str, fill: Fill | None = None, expire_reason: str = "0") -> None:
        if self.publish is None:
            return
        algo_id = self.algo_of_order.get(order.order_id)
        algo = self.algos.get(algo_id) if algo_id is not None else None
        symbol = self.symbols[order.symbol]
        update = events.order_update(
            order, symbol, execution, now_ms(), fill=fill, expire_reason=expire_reason, algo=algo
        )
        self.publish(update)

    def _account_event(self, positions: list[Position], reason: str, time_ms: int) -> None:
        if self.publish is None:
            return
        update = events.account_update(
            self.account,
            positions,
            symbols=self.symbols,
            mark=self.now_mark,
            reason=reason,
            time_ms=time_ms,
            now_ms=now_ms(),
        )
        self.publish(update)

    def _algo_event(self, algo: AlgoOrder) -> None:
        if self.publish is not None:
            self.publish(events.algo_update(algo, self.symbols[algo.symbol], now_ms()))


def check_client_id(client_id: str) -> None:
    """-4015 for a client order id longer than 36 characters or outside Binance's alphabet."""
    if len(client_id) > 36:
        raise errors.CLIENT_ID_TOO_LONG
    if not CLIENT_ID.match(client_id):
        raise errors.CLIENT_ID_INVALID


def partial_qty(orig: Decimal, ratio: Decimal, step: Decimal) -> Decimal:
    """The part of ``orig`` a scripted partial fill executes: at least one step, never all of it."""
    qty = floor_to(orig * ratio, step)
    if qty >= orig:
        qty = orig - step
    return max(qty, step) if orig > step else orig


def now_ms() -> int:
    """Wall-clock time in integer milliseconds."""
    return int(time.time() * 1000)
