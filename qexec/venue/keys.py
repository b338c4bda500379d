"""API key pairs: an HMAC secret, or an Ed25519 private key that signs REST and WebSocket API requests instead."""

from __future__ import annotations

from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class Credentials(NamedTuple):
    """The API key, and what signs for it: `secret` (HMAC-SHA256) or `private_key` (Ed25519, unencrypted PEM)."""

    api_key: str
    secret: str | None = None
    private_key: str | None = None

    def __repr__(self) -> str:
        signer = "ed25519" if self.private_key else "hmac"
        return f"Credentials(api_key='***', {signer})"

    def secrets(self) -> list[str]:
        """Every value logs must mask: the key, the secret, the private key and each line of it."""
        lines = [line for line in (self.private_key or "").splitlines() if not line.startswith("-----")]
        return [value for value in (self.api_key, self.secret, self.private_key, *lines) if value]


def ed25519_pem(text: str, password: str | None = None) -> str:
    """The Ed25519 private key in `text` (PEM, PKCS#8, encrypted with `password` or not) as the unencrypted PKCS#8 PEM
    python-binance reads; ValueError naming what is wrong, never echoing the key.

    python-binance takes a key longer than 120 characters for RSA: an encrypted PEM, or one with CRLF line ends, would
    be read as RSA and fail at the first signed request. The key is decoded here once and handed on in its short form.
    """
    try:
        key = serialization.load_pem_private_key(text.strip().encode(), password.encode() if password else None)
    except TypeError as exc:  # encrypted without a password, or a password for a plain key
        raise ValueError(f"the Ed25519 private key could not be read: {exc}") from None
    except ValueError:
        raise ValueError("the Ed25519 private key is not a PEM private key (or its password is wrong)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"the private key is {type(key).__name__.removeprefix('_')}, not Ed25519")  # noqa: TRY004
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode()
