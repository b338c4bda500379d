"""Flower, the task dashboard: it never listens beyond loopback without authentication."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, MutableMapping, Sequence

from qexec.config import Settings

AUTH_OPTIONS = ("basic_auth", "auth")


def _flower_args(argv: Sequence[str]) -> list[str] | None:
    """The arguments after `flower` when this process is `celery … flower …`, else None."""
    if "flower" not in argv[1:]:
        return None
    return list(argv[argv.index("flower", 1) + 1 :])


def _option(args: Sequence[str], environ: Mapping[str, str], name: str) -> str | None:
    """A Flower option's value from the command line (`--name=v`, `--name v`, `-` or `_`) or `FLOWER_NAME`."""
    spellings = {f"--{name}", f"--{name.replace('_', '-')}"}
    for index, arg in enumerate(args):
        flag, _, value = arg.partition("=")
        if flag in spellings:
            if value:
                return value
            if index + 1 < len(args):
                return args[index + 1]
    return environ.get(f"FLOWER_{name.upper()}")


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach (Flower's default, the empty string, is every interface)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check(argv: Sequence[str], environ: MutableMapping[str, str], settings: Settings) -> str | None:
    """Refuse an unauthenticated Flower beyond loopback; hand `QEXEC_FLOWER_BASIC_AUTH` to Flower when set."""
    args = _flower_args(argv)
    if args is None:
        return None
    if settings.flower_basic_auth is not None and not environ.get("FLOWER_BASIC_AUTH"):
        environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    address = _option(args, environ, "address") or ""
    if is_loopback(address) or any(_option(args, environ, name) for name in AUTH_OPTIONS):
        return None
    where = address or "every interface"
    return (
        f"qexec: refusing to start Flower on {where} without authentication. Set QEXEC_FLOWER_BASIC_AUTH="
        "user:password (or FLOWER_BASIC_AUTH, or --auth for OAuth), or bind it to loopback with --address=127.0.0.1."
    )
