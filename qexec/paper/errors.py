"""The venue's error answers: a code, Binance's own message, and the HTTP status that carries them."""

from __future__ import annotations


class VenueError(Exception):
    """Raised when a request is refused the way Binance refuses it (``{"code": …, "msg": …}``)."""

    def __init__(self, code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}

    def payload(self) -> dict[str, object]:
        """The JSON body Binance sends for this error."""
        return {"code": self.code, "msg": self.msg}


def missing(name: str) -> VenueError:
    """-1102 for a mandatory parameter that was not sent, empty or malformed."""
    return VenueError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def not_required(name: str) -> VenueError:
    """-1106 for a parameter sent where the venue does not accept it."""
    return VenueError(-1106, f"Parameter '{name}' sent when not required.")


def invalid(name: str) -> VenueError:
    """-1130 for a parameter whose value the venue does not accept."""
    return VenueError(-1130, f"Data sent for parameter '{name}' is not valid.")


UNKNOWN_ERROR_MSG = "Unknown error, please check your request or try again later."
SERVICE_UNAVAILABLE_MSG = "Service Unavailable."
TIMEOUT_MSG = "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
RECV_WINDOW_MSG = "Timestamp for this request is outside of the recvWindow."
AHEAD_MSG = "Timestamp for this request was 1000ms ahead of the server's time."

BAD_SYMBOL = VenueError(-1121, "Invalid symbol.")
LOOKUP_INTERVAL_TOO_BIG = VenueError(-1127, "More than 168 hours between startTime and endTime.")
BAD_SIDE = VenueError(-1117, "Invalid side.")
BAD_ORDER_TYPE = VenueError(-1116, "Invalid orderType.")
BAD_TIME_IN_FORCE = VenueError(-1115, "Invalid timeInForce.")
BAD_PRECISION = VenueError(-1111, "Precision is over the maximum defined for this asset.")
NO_SUCH_ORDER = VenueError(-2013, "Order does not exist.")
UNKNOWN_ORDER = VenueError(-2011, "Unknown order sent.")
MARGIN_INSUFFICIENT = VenueError(-2019, "Margin is insufficient.")
WOULD_TRIGGER = VenueError(-2021, "Order would immediately trigger.")
REDUCE_ONLY_REJECT = VenueError(-2022, "ReduceOnly Order is rejected.")
MAX_LEVERAGE_RATIO = VenueError(-2027, "Exceeded the maximum allowable position at current leverage.")
MIN_LEVERAGE_RATIO = VenueError(-2028, "Leverage is smaller than permitted: insufficient margin balance.")
QTY_NOT_POSITIVE = VenueError(-4003, "Quantity less than zero.")
QTY_BELOW_MIN = VenueError(-4004, "Quantity less than min quantity.")
QTY_ABOVE_MAX = VenueError(-4005, "Quantity greater than max quantity.")
PRICE_BELOW_MIN = VenueError(-4013, "Price less than min price.")
PRICE_TICK = VenueError(-4014, "Price not increased by tick size.")
PRICE_ABOVE_MAX = VenueError(-4002, "Price greater than max price.")
CLIENT_ID_TOO_LONG = VenueError(-4015, "Client order id length should not be more than 36 chars")
CLIENT_ID_INVALID = VenueError(-4015, "Client order id is not valid.")
QTY_STEP = VenueError(-4023, "Qty not increased by step size.")
INVALID_LEVERAGE = VenueError(-4028, "Invalid leverage")
NO_NEED_MARGIN_TYPE = VenueError(-4046, "No need to change margin type.")
MARGIN_TYPE_WITH_POSITION = VenueError(-4048, "Margin type cannot be changed if there exists position.")
NO_NEED_POSITION_SIDE = VenueError(-4059, "No need to change position side.")
POSITION_SIDE_MISMATCH = VenueError(-4061, "Order's position side does not match user's setting.")
DUAL_WITH_OPEN_ORDERS = VenueError(-4067, "Position side cannot be changed if there exists open orders.")
DUAL_WITH_POSITION = VenueError(-4068, "Position side cannot be changed if there exists position.")
DUPLICATE_CLIENT_ID = VenueError(-4116, "ClientOrderId is duplicated.")
CLOSE_POSITION_EXISTS = VenueError(
    -4130, "An open stop or take profit order with GTE and closePosition in the direction is existing."
)
USE_ALGO_API = VenueError(
    -4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
)
FOK_REJECT = VenueError(
    -5021,
    "Due to the order could not be filled immediately, the FOK order has been rejected. "
    "The order will not be recorded in the order history",
)
GTX_REJECT = VenueError(
    -5022,
    "Due to the order could not be executed as maker, the Post Only order will be rejected. "
    "The order will not be recorded in the order history",
)
BAD_LISTEN_KEY = VenueError(-1125, "This listenKey does not exist.")
BAD_INTERVAL = VenueError(-1120, "Invalid interval.")
BAD_API_KEY = VenueError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
BAD_API_KEY_FORMAT = VenueError(-2014, "API-key format invalid.", 401)
BAD_SIGNATURE = VenueError(-1022, "Signature for this request is not valid.")
BAD_RECV_WINDOW = VenueError(-1131, "recvWindow must be less than 60000")


def limit_above(highest: str) -> VenueError:
    """-4016 for a BUY LIMIT above the PERCENT_PRICE band."""
    return VenueError(-4016, f"Limit price can't be higher than {highest}.")


def limit_below(lowest: str) -> VenueError:
    """-4024 for a SELL LIMIT below the PERCENT_PRICE band."""
    return VenueError(-4024, f"Limit price can't be lower than {lowest}.")


def min_notional(notional: str) -> VenueError:
    """-4164 for an order under the symbol's MIN_NOTIONAL."""
    return VenueError(-4164, f"Order's notional must be no smaller than {notional} (unless you choose reduce only).")
