"""Every client order id qexec sends, in one place: each is deterministic where a re-run must find its order again,
`[A-Za-z0-9_-]` and at most 36 characters (reference §2), and its prefix says which step sent it."""

from __future__ import annotations

import hashlib
import uuid
from enum import StrEnum

ENTRY = "qx-"  # an intent's entry order
HALT_CLOSE = "qx-halt-"  # a close sent by `qexec halt --flatten` (read before ENTRY: it starts the same way)
REVERSE_CLOSE = "qc-"  # `reverse`: the close of the opposite position before the new entry
EMERGENCY_CLOSE = "qe-"  # the close of a position qexec could not protect
STOP_LOSS = "qs-"  # a protective STOP_MARKET algo order (clientAlgoId)
TAKE_PROFIT = "qt-"  # a protective TAKE_PROFIT_MARKET algo order (clientAlgoId)
VERIFY_CLOSE = "qv-"  # `qexec verify`'s close of the position its test intents left


def short_hash(text: str, length: int = 24) -> str:
    """The first `length` hex digits of the SHA-256 of `text`."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def entry(intent_id: str) -> str:
    """The entry order's `newClientOrderId`: `qx-` + 32 hex of the intent id's SHA-256 (35 characters)."""
    return ENTRY + short_hash(intent_id, 32)


def reverse_close(intent_id: str) -> str:
    """The close a reversing intent sends before its own entry."""
    return REVERSE_CLOSE + short_hash(intent_id, 32)


def emergency_close(position_id: str) -> str:
    """The market order that closes a position qexec could not protect."""
    return EMERGENCY_CLOSE + short_hash(position_id, 32)


def protective(prefix: str, owner: str, generation: int) -> str:
    """A protective algo order's `clientAlgoId`: its prefix + 24 hex of the owner's id + `-` + generation."""
    return f"{prefix}{short_hash(owner)}-{generation}"


def stop_loss(owner: str, generation: int) -> str:
    """The `clientAlgoId` of a position's stop-loss (`qs-`), of its owner (the position id) and generation."""
    return protective(STOP_LOSS, owner, generation)


def take_profit(owner: str, generation: int) -> str:
    """The `clientAlgoId` of a position's take-profit (`qt-`)."""
    return protective(TAKE_PROFIT, owner, generation)


def halt_close() -> str:
    """A fresh id for one of `qexec halt --flatten`'s closes."""
    return HALT_CLOSE + uuid.uuid4().hex[:24]


def verify_close(run: str, n: int) -> str:
    """`qexec verify`'s close of the `n`-th symbol of run `run`."""
    return f"{VERIFY_CLOSE}{run}-{n}"


# -- parsing: which step sent an order, read back from its id ---------------------------------------------


class Sender(StrEnum):
    """The step a client order id says sent it (`FOREIGN`: not an id qexec mints)."""

    ENTRY = "entry"
    HALT_CLOSE = "halt_close"
    REVERSE_CLOSE = "reverse_close"
    EMERGENCY_CLOSE = "emergency_close"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    VERIFY_CLOSE = "verify_close"
    FOREIGN = "foreign"


# Longest prefix first: a halt close starts the way an entry does.
_SENDERS = (
    (HALT_CLOSE, Sender.HALT_CLOSE),
    (ENTRY, Sender.ENTRY),
    (REVERSE_CLOSE, Sender.REVERSE_CLOSE),
    (EMERGENCY_CLOSE, Sender.EMERGENCY_CLOSE),
    (STOP_LOSS, Sender.STOP_LOSS),
    (TAKE_PROFIT, Sender.TAKE_PROFIT),
    (VERIFY_CLOSE, Sender.VERIFY_CLOSE),
)


def sender_of(client_id: str) -> Sender:
    """Which of qexec's steps sent the order with this client (algo) id."""
    return next((sender for prefix, sender in _SENDERS if client_id.startswith(prefix)), Sender.FOREIGN)


def generation_of(client_id: str) -> int:
    """A protective order's generation (the number after its last `-`; 0 when it has none)."""
    tail = client_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0
