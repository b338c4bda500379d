"""Binance's live subscription protocol: the requests a client sends on a stream connection, and the answers.

A client may send ``{"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s"], "id": 1}`` (also
``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``, ``SET_PROPERTY``, ``GET_PROPERTY``) and gets ``{"result": …, "id": 1}``,
or ``{"error": {"code": 2, "msg": "Invalid request: …"}, "id": 1}``. Codes and texts are those of the docs'
"Live Subscribing/Unsubscribing to streams" page (code 0 unknown property, 1 bad value type, 2 invalid request,
3 invalid JSON). This module only reads and writes the messages; ``streams`` acts on them.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

SUBSCRIBE = "SUBSCRIBE"
UNSUBSCRIBE = "UNSUBSCRIBE"
LIST_SUBSCRIPTIONS = "LIST_SUBSCRIPTIONS"
SET_PROPERTY = "SET_PROPERTY"
GET_PROPERTY = "GET_PROPERTY"
METHODS = (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY)
COMBINED = "combined"  # the one property Binance documents

UNKNOWN_PROPERTY = 0
BAD_VALUE_TYPE = 1
INVALID_REQUEST = 2
INVALID_JSON = 3

# The docs allow an unsigned integer; Binance's own SDK sends a UUID string, so a short string is taken too.
_STRING_ID = re.compile(r"[A-Za-z0-9_-]{1,36}")
_METHOD_VALUE = re.compile(r'"method"\s*:\s*"(?:[^"\\]|\\.)*"')

Id = int | str | None


class Request(NamedTuple):
    """One well-formed request: its method, its params (a list, possibly empty) and its id."""

    method: str
    params: list[Any]
    id: int | str


class Refused(Exception):
    """Raised when a request cannot be carried out; ``frame()`` is the error answer the client gets."""

    def __init__(self, code: int, msg: str, request_id: Id = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.request_id = request_id

    def frame(self) -> str:
        """The answer: ``{"error": {"code", "msg"}, "id"}``."""
        return _dumps({"error": {"code": self.code, "msg": self.msg}, "id": self.request_id})


def answer(request_id: int | str, result: Any) -> str:
    """The answer to a request that was carried out: ``{"result": …, "id": …}``."""
    return _dumps({"result": result, "id": request_id})


def parse(text: str) -> Request:
    """The request in ``text``; raises ``Refused`` with the error Binance gives for it."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        reason = "expected value" if exc.msg.startswith("Expecting value") else exc.msg[0].lower() + exc.msg[1:]
        raise Refused(INVALID_JSON, f"Invalid JSON: {reason} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(message, dict):
        raise Refused(INVALID_REQUEST, "Invalid request: expected a JSON object")
    raw_id = message.get("id")
    request_id = raw_id if _valid_id(raw_id) else None
    method = message.get("method")
    if method is None:
        raise Refused(INVALID_REQUEST, "Invalid request: missing field `method`", request_id)
    if method not in METHODS:
        raise Refused(INVALID_REQUEST, _unknown_variant(method, text), request_id)
    if request_id is None:
        raise Refused(INVALID_REQUEST, "Invalid request: request ID must be an unsigned integer")
    params = message.get("params", [])
    if not isinstance(params, list):
        raise Refused(INVALID_REQUEST, "Invalid request: params must be an array", request_id)
    if method in (SUBSCRIBE, UNSUBSCRIBE) and not all(isinstance(p, str) for p in params):
        raise Refused(INVALID_REQUEST, "Invalid request: stream names must be strings", request_id)
    if len(params) != {GET_PROPERTY: 1, SET_PROPERTY: 2}.get(method, len(params)):
        raise Refused(INVALID_REQUEST, "Invalid request: too many parameters", request_id)
    if method in (GET_PROPERTY, SET_PROPERTY) and not isinstance(params[0], str):
        raise Refused(INVALID_REQUEST, "Invalid request: property name must be a string", request_id)
    return Request(method, params, request_id)


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and _STRING_ID.fullmatch(value) is not None


def _unknown_variant(method: Any, text: str) -> str:
    expected = ", ".join(f"`{m}`" for m in METHODS)
    found = _METHOD_VALUE.search(text)
    # serde (Binance's parser) names the position just past the value; on one-line JSON that is the column.
    where = f" at line 1 column {found.end()}" if found and "\n" not in text else ""
    return f"Invalid request: unknown variant `{method}`, expected one of {expected}{where}"


def _dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))
