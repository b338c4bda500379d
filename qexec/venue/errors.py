"""Binance's error codes classified once: which mean refused, not found, temporary, unknown outcome or rate limited
(binance.py turns a library error into qexec's own, qexec/errors.py, by this table)"""

from __future__ import annotations

POSITION_SIDE_MISMATCH = -4061  # "Order's position side does not match user's setting."


class Kind:
    """How a failed call is to be treated."""

    TEMPORARY = "temporary"  # surely not executed: retry with back-off
    UNKNOWN = "unknown"  # may have executed: look the order up by client id before anything else
    REJECTED = "rejected"  # terminal: a result with the venue's code and message
    NOT_FOUND = "not_found"  # no such order (-2013 right after a submit is asked again before it counts)
    RATE_LIMITED = "rate_limited"  # 429/418: nothing executed; every worker pauses for Retry-After


# The error policy (reference §3.3-3.4, §7.3): venue code -> kind. Codes not listed are terminal rejections,
# unless the HTTP status says more (429/418, 408, a 503 body, any other 5xx: see `classify`).
VENUE_ERRORS: dict[int, str] = {
    -1000: Kind.UNKNOWN,  # UNKNOWN: an unknown error while processing - it may have executed
    -1001: Kind.TEMPORARY,  # DISCONNECTED: "unable to process your request. Please try again"
    -1003: Kind.RATE_LIMITED,  # TOO_MANY_REQUESTS (429), or the IP is banned (418)
    -1006: Kind.UNKNOWN,  # UNEXPECTED_RESP: "Execution status unknown"
    -1007: Kind.UNKNOWN,  # TIMEOUT: "Send status unknown; execution status unknown"
    -1008: Kind.TEMPORARY,  # throttled by system-level protection: a failure, retry with back-off
    -1015: Kind.RATE_LIMITED,  # TOO_MANY_ORDERS: the order-count limit
    -1021: Kind.TEMPORARY,  # INVALID_TIMESTAMP: BinanceVenue._call resyncs the clock and sends once more first
    -1022: Kind.REJECTED,  # INVALID_SIGNATURE
    -1102: Kind.REJECTED,  # MANDATORY_PARAM_EMPTY_OR_MALFORMED
    -1106: Kind.REJECTED,  # PARAM_NOT_REQUIRED
    -1111: Kind.REJECTED,  # BAD_PRECISION
    -1121: Kind.REJECTED,  # BAD_SYMBOL
    -1125: Kind.REJECTED,  # listenKey does not exist
    -2008: Kind.REJECTED,  # invalid API-key id
    -2010: Kind.REJECTED,  # NEW_ORDER_REJECTED
    -2011: Kind.NOT_FOUND,  # CANCEL_REJECTED: "Unknown order sent" (filled or gone)
    -2013: Kind.NOT_FOUND,  # NO_SUCH_ORDER
    -2014: Kind.REJECTED,  # BAD_API_KEY_FMT
    -2015: Kind.REJECTED,  # REJECTED_MBX_KEY: invalid key, IP or permissions
    -2019: Kind.REJECTED,  # MARGIN_NOT_SUFFICIENT
    -2021: Kind.REJECTED,  # ORDER_WOULD_IMMEDIATELY_TRIGGER
    -2022: Kind.REJECTED,  # REDUCE_ONLY_REJECT
    -2027: Kind.REJECTED,  # MAX_LEVERAGE_RATIO: the open position is above the new leverage's maximum
    -2028: Kind.REJECTED,  # MIN_LEVERAGE_RATIO: "Leverage is smaller than permitted: insufficient margin balance"
    -4003: Kind.REJECTED,  # QTY_LESS_THAN_ZERO
    -4004: Kind.REJECTED,  # QTY_LESS_THAN_MIN_QTY
    -4005: Kind.REJECTED,  # QTY_GREATER_THAN_MAX_QTY
    -4014: Kind.REJECTED,  # PRICE_NOT_INCREASED_BY_TICK_SIZE
    -4015: Kind.REJECTED,  # INVALID_CL_ORD_ID_LEN
    -4023: Kind.REJECTED,  # QTY_NOT_INCREASED_BY_STEP_SIZE
    -4028: Kind.REJECTED,  # INVALID_LEVERAGE: outside 1..the symbol's maximum
    -4061: Kind.REJECTED,  # POSITION_SIDE_NOT_MATCH
    -4116: Kind.UNKNOWN,  # DUPLICATED_CLIENT_ORDER_ID: an open order already has our id - go and look
    -4120: Kind.REJECTED,  # STOP_ORDER_SWITCH_ALGO: conditional types belong to /fapi/v1/algoOrder
    -4130: Kind.REJECTED,  # an open closePosition order of that type and side exists (protection repairs it)
    -4131: Kind.REJECTED,  # MARKET_ORDER_REJECT: PERCENT_PRICE
    -4164: Kind.REJECTED,  # MIN_NOTIONAL
    -5021: Kind.REJECTED,  # FOK_ORDER_REJECT
    -5022: Kind.REJECTED,  # GTX_ORDER_REJECT
    -5028: Kind.TEMPORARY,  # ME_RECVWINDOW_REJECT: the matching engine refused it as too old - send again
}


UNKNOWN_OUTCOME_CODES = {code for code, kind in VENUE_ERRORS.items() if kind == Kind.UNKNOWN}


TEMPORARY_CODES = {code for code, kind in VENUE_ERRORS.items() if kind == Kind.TEMPORARY}


NOT_FOUND_CODES = {code for code, kind in VENUE_ERRORS.items() if kind == Kind.NOT_FOUND}


# The venue refused the keys themselves (-2015 invalid key/IP/permissions, -2014 key format, -2008 key id):
# on Binance this is what keys made for another environment (testnet vs demo vs mainnet) get (reference §5).
KEY_REFUSED_CODES = {-2015, -2014, -2008}


# The three 503 bodies mean three things, whatever code comes with them (reference §3.3).
VENUE_503_TEXTS: dict[str, str] = {
    "unknown error": Kind.UNKNOWN,  # "Unknown error, please check your request or try again later."
    "service unavailable": Kind.TEMPORARY,  # "Service Unavailable." - a 100 % failure
    "internal error; unable to process": Kind.TEMPORARY,  # "Internal error; unable to process your request."
}
