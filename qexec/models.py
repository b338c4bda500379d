"""The vocabulary: intents in, venue order states, fills, and execution results out."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, NamedTuple, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from qexec import constants, ids
from qexec.errors import IntentError


class Side(StrEnum):
    """Order side; LONG/SHORT are accepted as aliases of BUY/SELL."""

    BUY = "BUY"
    SELL = "SELL"

    @property
    def opposite(self) -> Side:
        """The other side."""
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    """Entry order types qexec places."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"


class TimeInForce(StrEnum):
    """How long a LIMIT entry works: GTC rests, IOC/FOK take what they can at once, GTX is post-only (maker only)."""

    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTX = "GTX"


class OrderStatus(StrEnum):
    """Binance order statuses (reference §2)."""

    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    EXPIRED_IN_MATCH = "EXPIRED_IN_MATCH"

    @property
    def terminal(self) -> bool:
        """True when the order can change no more."""
        return self not in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


class ResultStatus(StrEnum):
    """The `status` of a published execution result."""

    FILLED = "filled"
    PARTIALLY_FILLED = "partially_filled"
    REJECTED = "rejected"
    CANCELED = "canceled"
    EXPIRED = "expired"
    FAILED = "failed"
    PROTECTION_UPDATED = "protection_updated"
    SKIPPED = "skipped"

    @property
    def is_fill(self) -> bool:
        """True for results that report executed quantity."""
        return self in (ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED)


def _finite_positive(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number above zero")
    return value


_SIDE_ALIASES = {"BUY": "BUY", "LONG": "BUY", "SELL": "SELL", "SHORT": "SELL"}
_MAX_NUMBER = 1e15  # anything larger is a bug upstream, not a trade


class Intent(BaseModel):
    """A trade intent as producers write it (the seed producer's shape, aliases accepted)."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    intent_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
    symbol: Annotated[str, Field(min_length=2, max_length=30, pattern=r"^[A-Z0-9]+$")]
    side: Side = Field(validation_alias=AliasChoices("side", "action"))
    position_size_usd: float
    leverage: int | None = None  # None: the symbol's leverage at the venue stays as it is
    entry_price: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    confidence: float | None = None
    timestamp: datetime | None = None
    order_type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.GTC  # LIMIT entries only
    reduce_only: bool = False
    client_tag: str | None = Field(default=None, max_length=64)
    trailing_stop_pct: float | None = Field(default=None, gt=0, le=50)
    # The account that trades it (None: `default`), or several (a fan-out): names, or names with each one's
    # position_size_usd. A fan-out becomes one intent per account before anything is placed (`per_account`).
    account: str | None = Field(default=None, pattern=constants.ACCOUNT_PATTERN)
    accounts: tuple[str, ...] | dict[str, float] | None = None

    @field_validator("symbol", mode="before")
    @classmethod
    def _upper_symbol(cls, value: Any) -> Any:
        # ASCII only: upper-casing "ß" or "ﬀ" would turn a garbage symbol into a plausible "SS" or "FF" one.
        return value.strip().upper() if isinstance(value, str) and value.isascii() else value

    @field_validator("side", mode="before")
    @classmethod
    def _side_alias(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().upper() in _SIDE_ALIASES:
            return _SIDE_ALIASES[value.strip().upper()]
        return value

    @field_validator("order_type", "time_in_force", mode="before")
    @classmethod
    def _upper_order_type(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(
        "position_size_usd", "entry_price", "stop_loss", "take_profit", "confidence", "trailing_stop_pct", mode="before"
    )
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # pydantic would read true as 1.0: a producer's bug must not become a 1-USDT order or a stop at 1.
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")  # noqa: TRY004 - pydantic reports only ValueError
        return value

    @field_validator("reduce_only", mode="before")
    @classmethod
    def _strict_flag(cls, value: Any) -> Any:
        # Only a real boolean, or the "true"/"false" text of a flat stream field: "yes" or 1 closing a position by
        # accident is worse than a dead letter.
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError("reduce_only must be true or false")

    @field_validator("leverage", mode="before")
    @classmethod
    def _whole_leverage(cls, value: Any) -> Any:
        if value is None:
            return None
        number = float(value) if isinstance(value, int | float | str) and not isinstance(value, bool) else None
        if number is None or not math.isfinite(number) or number != int(number):
            raise ValueError("leverage must be a whole number")
        if not 1 <= number <= 125:
            raise ValueError("leverage must be between 1 and 125")
        return int(number)

    @field_validator("position_size_usd")
    @classmethod
    def _size(cls, value: float) -> float:
        checked = _finite_positive(value, "position_size_usd")
        assert checked is not None
        if checked > _MAX_NUMBER:
            raise ValueError("position_size_usd is absurdly large")
        return checked

    @field_validator("entry_price", "stop_loss", "take_profit")
    @classmethod
    def _prices(cls, value: float | None) -> float | None:
        checked = _finite_positive(value, "price")
        if checked is not None and checked > _MAX_NUMBER:
            raise ValueError("price is absurdly large")
        return checked

    @field_validator("confidence")
    @classmethod
    def _confidence(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("confidence must be finite")
        return value

    @field_validator("accounts", mode="before")
    @classmethod
    def _account_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # a flat stream field: "main,sleeve2"
            value = [name.strip() for name in value.split(",") if name.strip()]
        if isinstance(value, Mapping):
            for size in value.values():
                cls._not_a_boolean(size)
        return value

    @field_validator("accounts")
    @classmethod
    def _known_shape(cls, value: tuple[str, ...] | dict[str, float] | None) -> Any:
        if value is None:
            return None
        names = list(value)
        if not names:
            raise ValueError("accounts must name at least one account")
        if len(set(names)) != len(names):
            raise ValueError("accounts names an account twice")
        for name in names:
            if not re.fullmatch(constants.ACCOUNT_PATTERN, name):
                raise ValueError(f"account name {name!r} is not lower-case letters, digits and _")
        if isinstance(value, dict):
            for size in value.values():
                cls._size(size)
        return value

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _limit_needs_price(self) -> Self:
        if self.account is not None and self.accounts is not None:
            raise ValueError("an intent names its account or its accounts, not both")
        if self.order_type is OrderType.LIMIT and self.entry_price is None:
            raise ValueError("a LIMIT intent needs entry_price")
        if self.order_type is OrderType.MARKET and self.time_in_force is not TimeInForce.GTC:
            raise ValueError("time_in_force applies to LIMIT intents only")
        return self

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], *, default_id: str | None = None, max_bytes: int = 16384) -> Intent:
        """Parse an intent from stream fields (a JSON `payload`/`data` field, or flat fields)."""
        size = sum(len(str(k)) + len(str(v)) for k, v in fields.items())
        if size > max_bytes:
            raise IntentError(f"entry is {size} bytes, over the {max_bytes}-byte limit")
        raw: Any = fields
        for key in ("payload", "data"):
            if key in fields:
                text = fields[key]
                if isinstance(text, str | bytes | bytearray):
                    try:
                        raw = json.loads(text)
                    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: deep nesting
                        raise IntentError(f"field {key!r} is not valid JSON: {exc}") from exc
                else:
                    raw = text
                break
        if not isinstance(raw, Mapping):
            raise IntentError(f"intent must be a JSON object, got {type(raw).__name__}")
        try:
            intent = cls.model_validate(dict(raw))
        except ValidationError as exc:
            raise IntentError(_describe(exc)) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise IntentError(str(exc)) from exc
        if intent.intent_id is None and default_id is not None:
            intent = intent.model_copy(update={"intent_id": default_id})
        return intent

    @property
    def id(self) -> str:
        """The idempotency key (set by `from_fields` from the payload or the stream entry id)."""
        if self.intent_id is None:
            raise IntentError("intent has no id")
        return self.intent_id

    @property
    def account_name(self) -> str:
        """The account that trades this intent."""
        return self.account or constants.DEFAULT_ACCOUNT

    def per_account(self, multiplier: Callable[[str], float]) -> list[Intent]:
        """The intents this one trades, one per account, each sized for its account: the account's own size in an
        `accounts` mapping, else position_size_usd times `multiplier(account)`. A fan-out's intent ids are
        `<intent_id>:<account>`, so that each account's entry has its own idempotency key and client order id."""
        if self.accounts is None:
            sized = self.position_size_usd * multiplier(self.account_name)
            return [self if sized == self.position_size_usd else self._for(self.account_name, position_size_usd=sized)]
        out = []
        for name in self.accounts:
            size = self.accounts[name] if isinstance(self.accounts, dict) else self.position_size_usd * multiplier(name)
            out.append(
                self._for(name, intent_id=f"{self.id}:{name}", account=name, accounts=None, position_size_usd=size)
            )
        return out

    def _for(self, name: str, **update: Any) -> Intent:
        """This intent changed for account `name`, checked as a producer's would be (IntentError when it is not)."""
        try:
            return Intent.model_validate(self.model_dump() | update)
        except ValidationError as exc:
            raise IntentError(f"as account {name}'s intent: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "intent"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


client_order_id = ids.entry  # the entry order's `newClientOrderId` (qexec/ids.py)


class OrderState(BaseModel):
    """An order as the venue reports it (Binance's own field names)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    orderId: int
    clientOrderId: str
    symbol: str
    status: OrderStatus
    side: Side
    type: str
    origQty: Decimal
    executedQty: Decimal = Decimal(0)
    avgPrice: Decimal = Decimal(0)
    cumQuote: Decimal = Decimal(0)
    price: Decimal = Decimal(0)
    positionSide: str = "BOTH"
    reduceOnly: bool = False
    closePosition: bool = False
    updateTime: int = 0

    @property
    def fill(self) -> Fill | None:
        """What executed, or None; raises `ValueError` when quantity executed but no price is known."""
        if self.executedQty <= 0:
            return None
        price = self.avgPrice
        if price <= 0 and self.cumQuote > 0:
            price = self.cumQuote / self.executedQty
        if price <= 0:
            raise ValueError(f"order {self.orderId} executed {self.executedQty} with no price reported")
        quote = self.cumQuote if self.cumQuote > 0 else price * self.executedQty
        return Fill(price=price, quantity=self.executedQty, quote=quote)

    @property
    def settled(self) -> bool:
        """True when the order is terminal and its fill (if any) carries a price."""
        if not self.status.terminal:
            return False
        try:
            self.fill  # noqa: B018 - evaluated for its check
        except ValueError:
            return False
        return True


class Fill(BaseModel):
    """Executed quantity at the venue's average price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    price: Decimal = Field(gt=0)
    quantity: Decimal = Field(gt=0)
    quote: Decimal = Field(gt=0)


class RejectKind(StrEnum):
    """A rejection's bounded kind: the `reason_kind` label of `qexec_intents_rejected_total` (its values are a
    contract of the metrics)."""

    STALE = "stale"
    UNKNOWN_SYMBOL = "unknown_symbol"
    MIN_SIZE = "min_size"
    PRICE_BAND = "price_band"
    RISK = "risk"
    HALTED = "halted"
    VENUE = "venue"
    OTHER = "other"


class Refusal(NamedTuple):
    """Why an intent is refused before any order goes out: its kind (for the figures) and its reason (for people)."""

    kind: RejectKind
    reason: str


class Verdict(BaseModel):
    """A decision that ends an intent without (or before) a fill: rejected, failed or skipped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: ResultStatus
    reason: str = Field(min_length=1)
    code: int | None = None
    kind: RejectKind | None = None  # a rejection's kind (absent in tickets written before it existed)


def stream_position(entry_id: str | None) -> tuple[int, int] | None:
    """A stream entry id (`<ms>-<seq>`) as a sortable pair; None for an id of another kind."""
    head, _, seq = (entry_id or "").partition("-")
    return (int(head), int(seq)) if head.isdigit() and seq.isdigit() else None


class Ticket(BaseModel):
    """An intent travelling through the chain, with what each step learned about it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    intent: Intent
    entry_id: str | None = None
    received_at: datetime
    client_order_id: str
    quantity: Decimal | None = None
    leverage: int | None = None  # the leverage the venue applied to the symbol for this entry
    closed_first: str | None = None  # what a `reverse` closed before this entry went out, for the result's reason
    canceled_at_deadline: bool = False  # qexec canceled the order's rest at the fill deadline
    order: OrderState | None = None
    placed_at: datetime | None = None
    verdict: Verdict | None = None

    @property
    def intent_id(self) -> str:
        """The intent's idempotency key."""
        return self.intent.id

    @property
    def arrival(self) -> tuple[int, int]:
        """Where the intent stands in the order intents arrived: its stream entry id, else when it was received."""
        return stream_position(self.entry_id) or (int(self.received_at.timestamp() * 1000), 0)

    def decide(
        self, status: ResultStatus, reason: str, code: int | None = None, *, kind: RejectKind | None = None
    ) -> Ticket:
        """This ticket with a terminal verdict (`kind`: a rejection's kind, when the decider knows it)."""
        return self.model_copy(update={"verdict": Verdict(status=status, reason=reason, code=code, kind=kind)})


class ExecutionResult(BaseModel):
    """One terminal result per intent, as published on the result stream."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    intent_id: str
    entry_id: str | None = None
    symbol: str
    action: Side
    status: ResultStatus
    order_id: int | None = None
    client_order_id: str | None = None
    order_status: OrderStatus | None = None
    entry_price: float | None = None
    quantity: float | None = None
    position_size_usd: float | None = None
    leverage: int | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    sl_order_id: int | None = None
    tp_order_id: int | None = None
    reason: str | None = None
    code: int | None = None
    account: str = constants.DEFAULT_ACCOUNT  # the account that traded it (README "Many accounts")
    mode: str
    venue: str
    received_at: datetime
    filled_at: datetime | None = None
    published_at: datetime

    @model_validator(mode="after")
    def _fills_are_real(self) -> Self:
        if self.status.is_fill:
            for name in ("entry_price", "quantity", "position_size_usd"):
                value = getattr(self, name)
                if value is None or not math.isfinite(value) or value <= 0:
                    raise ValueError(f"a {self.status} result needs {name} > 0, got {value!r}")
            if self.order_id is None or self.filled_at is None:
                raise ValueError(f"a {self.status} result needs order_id and filled_at")
        elif self.status in (ResultStatus.REJECTED, ResultStatus.FAILED, ResultStatus.SKIPPED) and not self.reason:
            raise ValueError(f"a {self.status} result needs a reason")
        return self

    def stream_fields(self) -> dict[str, str]:
        """The result stream entry: a JSON `payload` plus flat fields for `redis-cli` readers."""
        return {
            "payload": self.model_dump_json(),
            "kind": "execution",
            "intent_id": self.intent_id,
            "symbol": self.symbol,
            "status": self.status.value,
            "account": self.account,
        }


class AlgoOrder(BaseModel):
    """A conditional (algo) order as the venue reports it (Binance's own field names)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    algoId: int
    clientAlgoId: str
    symbol: str
    side: Side
    positionSide: str = "BOTH"
    orderType: str
    algoStatus: str
    triggerPrice: Decimal = Decimal(0)
    quantity: Decimal = Decimal(0)
    closePosition: bool = False
    reduceOnly: bool = False
    workingType: str = "CONTRACT_PRICE"
    updateTime: int = 0
    triggerTime: int = 0
    actualOrderId: int | None = None
    actualPrice: Decimal | None = None
    actualQty: Decimal | None = None

    @field_validator("actualOrderId", "actualPrice", "actualQty", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value

    @property
    def live(self) -> bool:
        """True while the order waits for its trigger."""
        return self.algoStatus == "NEW"


class PositionRisk(BaseModel):
    """One position as `positionRisk` reports it (Binance's own field names)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    symbol: str
    positionSide: str = "BOTH"
    positionAmt: Decimal
    entryPrice: Decimal = Decimal(0)
    markPrice: Decimal = Decimal(0)
    unRealizedProfit: Decimal = Decimal(0)
    notional: Decimal | None = None
    updateTime: int = 0

    @property
    def direction(self) -> str:
        """`LONG` or `SHORT`: the side the position is on."""
        if self.positionSide in ("LONG", "SHORT"):
            return self.positionSide
        return "LONG" if self.positionAmt > 0 else "SHORT"


class Balance(BaseModel):
    """One asset of the account (`balance`, Binance's own field names)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    asset: str
    balance: Decimal = Decimal(0)
    availableBalance: Decimal = Decimal(0)


class Trade(BaseModel):
    """One fill of the account (`userTrades`, Binance's own field names)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    orderId: int
    symbol: str
    side: Side
    positionSide: str = "BOTH"
    price: Decimal
    qty: Decimal
    realizedPnl: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    time: int


class ProtectionEvent(BaseModel):
    """What protecting a position did, published on the protection stream (never the result stream)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    intent_id: str
    symbol: str
    position_side: str
    status: str  # placed · updated · failed · not_needed
    entry_order_id: int | None = None  # the intent's entry order, as in its result's `order_id`
    stop_loss: float | None = None
    take_profit: float | None = None
    sl_order_id: int | None = None
    tp_order_id: int | None = None
    sl_client_algo_id: str | None = None
    tp_client_algo_id: str | None = None
    trailing_stop_pct: float | None = None
    reason: str | None = None
    action: str | None = None  # the emergency action taken when protection failed
    account: str = constants.DEFAULT_ACCOUNT
    mode: str
    venue: str
    published_at: datetime

    def stream_fields(self) -> dict[str, str]:
        """The protection stream entry (`kind=protection`, as older qexec versions marked it on the result stream)."""
        return {
            "payload": self.model_dump_json(),
            "kind": "protection",
            "intent_id": self.intent_id,
            "symbol": self.symbol,
            "status": self.status,
            "account": self.account,
        }


class ExitReason(StrEnum):
    """Why a position closed."""

    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    SIGNAL = "signal"
    PROTECTION_FAILED = "protection_failed"
    HALT = "halt"  # closed by `qexec halt --flatten`
    MANUAL_OR_LIQUIDATION = "manual_or_liquidation"


class ExitEvent(BaseModel):
    """A closed position, published once on the exit stream."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    position_id: str
    symbol: str
    side: str  # LONG or SHORT: the position that closed
    position_side: str
    reason: ExitReason
    entry_price: float | None = None
    exit_price: float | None = None
    quantity: float | None = None
    realized_pnl: float
    commission: float = 0.0
    intent_ids: list[str]
    order_ids: list[int] = Field(default_factory=list)
    opened_at: datetime | None = None
    closed_at: datetime
    account: str = constants.DEFAULT_ACCOUNT
    mode: str
    venue: str

    @model_validator(mode="after")
    def _priced(self) -> Self:
        if self.exit_price is not None and (not math.isfinite(self.exit_price) or self.exit_price <= 0):
            raise ValueError("an exit price must be above zero")
        return self

    def stream_fields(self) -> dict[str, str]:
        """The exit stream entry: a JSON `payload` plus flat fields for `redis-cli` readers."""
        return {
            "payload": self.model_dump_json(),
            "symbol": self.symbol,
            "side": self.side,
            "reason": self.reason.value,
            "realized_pnl": repr(self.realized_pnl),
            "intent_ids": ",".join(self.intent_ids),
            "account": self.account,
        }


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
