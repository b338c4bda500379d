"""Binance request security: the API-key header, the HMAC-SHA256 signature and the timestamp window."""

from __future__ import annotations

import hashlib
import hmac

from qexec.paper import errors
from qexec.paper.params import Params

MAX_RECV_WINDOW_MS = 60_000
DEFAULT_RECV_WINDOW_MS = 5_000
MAX_AHEAD_MS = 1_000


class Auth:
    """Checks requests against the one configured key pair."""

    def __init__(self, api_key: str, api_secret: str) -> None:
        self.api_key = api_key
        self.secret = api_secret.encode()

    def check_key(self, header: str | None) -> None:
        """-2014/-2015 unless ``X-MBX-APIKEY`` names the configured key."""
        if not header:
            raise errors.BAD_API_KEY_FORMAT
        if not hmac.compare_digest(header.encode(), self.api_key.encode()):
            raise errors.BAD_API_KEY

    def check_signed(self, header: str | None, query: str, body: str, params: Params, now_ms: int) -> None:
        """Key, signature over the raw query string + body, then timestamp within recvWindow."""
        self.check_key(header)
        timestamp = params.integer("timestamp")
        query_rest, query_sig = strip_signature(query)
        body_rest, body_sig = strip_signature(body)
        signature = query_sig or body_sig
        if not signature:
            raise errors.missing("signature")
        expected = hmac.new(self.secret, (query_rest + body_rest).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise errors.BAD_SIGNATURE
        recv_window = params.integer("recvWindow", DEFAULT_RECV_WINDOW_MS)
        if recv_window > MAX_RECV_WINDOW_MS or recv_window <= 0:
            raise errors.BAD_RECV_WINDOW
        if timestamp >= now_ms + MAX_AHEAD_MS:
            raise errors.VenueError(-1021, errors.AHEAD_MSG)
        if now_ms - timestamp > recv_window:
            raise errors.VenueError(-1021, errors.RECV_WINDOW_MSG)


def strip_signature(raw: str) -> tuple[str, str | None]:
    """``raw`` without its ``signature=…`` parameter, and the signature (None when absent)."""
    at = raw.rfind("signature=")
    while at > 0 and raw[at - 1] != "&":
        at = raw.rfind("signature=", 0, at)
    if at < 0:
        return raw, None
    end = raw.find("&", at)
    signature = raw[at + len("signature=") : end if end >= 0 else len(raw)]
    if at == 0:
        return (raw[end + 1 :] if end >= 0 else ""), signature
    return raw[: at - 1] + (raw[end:] if end >= 0 else ""), signature
