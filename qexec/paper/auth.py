"""Binance request security: API keys (HMAC or Ed25519), their signatures and the timestamp window."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from qexec.paper import errors
from qexec.paper.account import DEFAULT_ACCOUNT
from qexec.paper.params import Params

MAX_RECV_WINDOW_MS = 60_000
DEFAULT_RECV_WINDOW_MS = 5_000
MAX_AHEAD_MS = 1_000
HMAC = "HMAC"
ED25519 = "ED25519"


def load_ed25519_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file ``path`` (ValueError when it holds no PEM key, TypeError when
    another kind of key)."""
    key = load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise TypeError(f"{path} is not an Ed25519 public key")
    return key


class Auth:
    """Checks requests against the accounts' keys: HMAC pairs and Ed25519 public keys, each key of one account."""

    def __init__(
        self, api_key: str, api_secret: str, ed25519_keys: Mapping[str, Ed25519PublicKey] | None = None
    ) -> None:
        self.secrets: dict[str, bytes] = {}
        self.ed25519_keys: dict[str, Ed25519PublicKey] = {}
        self.owners: dict[str, str] = {}  # API key -> the name of its account
        self.add_hmac(api_key, api_secret, DEFAULT_ACCOUNT)
        for key, public in (ed25519_keys or {}).items():
            self.add_ed25519(key, public, DEFAULT_ACCOUNT)

    def add_hmac(self, api_key: str, api_secret: str, account: str) -> None:
        """Give ``account`` an HMAC key pair (ValueError when the key is already one of any account's)."""
        self._own(api_key, account)
        self.secrets[api_key] = api_secret.encode()

    def add_ed25519(self, api_key: str, public: Ed25519PublicKey, account: str) -> None:
        """Give ``account`` an Ed25519 key (ValueError when the key is already one of any account's)."""
        self._own(api_key, account)
        self.ed25519_keys[api_key] = public

    def _own(self, api_key: str, account: str) -> None:
        if api_key in self.owners:
            raise ValueError(f"API key {api_key!r} is already a key of account {self.owners[api_key]!r}")
        self.owners[api_key] = account

    def account_of(self, key: str) -> str:
        """The name of the account ``key`` belongs to (-2015 when it is nobody's)."""
        owner = self.owners.get(key)
        if owner is None:
            raise errors.BAD_API_KEY
        return owner

    def kind(self, key: str | None) -> str:
        """``HMAC`` or ``ED25519`` for a key an account has; -2014 when none is sent, -2015 when unknown."""
        if not key:
            raise errors.BAD_API_KEY_FORMAT
        if key in self.secrets:
            return HMAC
        if key in self.ed25519_keys:
            return ED25519
        raise errors.BAD_API_KEY

    def check_key(self, header: str | None) -> None:
        """-2014/-2015 unless ``X-MBX-APIKEY`` names one of the account's keys."""
        self.kind(header)

    def check_signed(self, header: str | None, query: str, body: str, params: Params, now_ms: int) -> None:
        """Key, signature over the raw query string + body, then timestamp within recvWindow."""
        self.check_key(header)
        params.integer("timestamp")
        query_rest, query_sig = strip_signature(query)
        body_rest, body_sig = strip_signature(body)
        signature = query_sig or body_sig
        if not signature:
            raise errors.missing("signature")
        self.verify(header, [query_rest + body_rest], signature)
        self.check_window(params, now_ms)

    def verify(self, key: str | None, payloads: Iterable[str], signature: str) -> None:
        """-1022 unless ``signature`` signs one of ``payloads`` with ``key``: HMAC hex, or Ed25519 base64
        (URL-encoded or not)."""
        if self.kind(key) == HMAC:
            assert key is not None  # kind() refused an empty key
            given = signature.lower().encode()
            for payload in payloads:
                expected = hmac.new(self.secrets[key], payload.encode(), hashlib.sha256).hexdigest().encode()
                if hmac.compare_digest(expected, given):
                    return
            raise errors.BAD_SIGNATURE
        assert key is not None  # kind() refused an empty key
        try:
            raw = base64.b64decode(unquote(signature), validate=True)
        except (binascii.Error, ValueError):
            raise errors.BAD_SIGNATURE from None
        public = self.ed25519_keys[key]
        for payload in payloads:
            try:
                public.verify(raw, payload.encode())
            except InvalidSignature:
                continue
            return
        raise errors.BAD_SIGNATURE

    @staticmethod
    def check_window(params: Params, now_ms: int) -> None:
        """-1131 for a bad recvWindow, -1021 for a timestamp ahead of the server or older than the window."""
        timestamp = params.integer("timestamp")
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
