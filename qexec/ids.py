"""Every client order id qexec sends, in one place: each is deterministic where a re-run must find its order again,
`[A-Za-z0-9_-]` and at most 36 characters (reference §2), and its prefix says which step sent it."""

from __future__ import annotations

import hashlib
import uuid

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


def halt_close() -> str:
    """A fresh id for one of `qexec halt --flatten`'s closes."""
    return HALT_CLOSE + uuid.uuid4().hex[:24]


def verify_close(run: str, n: int) -> str:
    """`qexec verify`'s close of the `n`-th symbol of run `run`."""
    return f"{VERIFY_CLOSE}{run}-{n}"
