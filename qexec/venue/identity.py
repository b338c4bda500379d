"""Which venue the orders go to, decided from where the requests go (the URL's host), not from `QEXEC_MODE` alone."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit


class HostKind(StrEnum):
    """What a venue URL's host is, told from its name alone."""

    LOCAL = "local"  # loopback, a private-network address, a single-label (compose service) name
    MAINNET = "mainnet"  # any Binance production host: real money
    TESTNET = "testnet"
    DEMO = "demo"
    REMOTE = "remote"  # any other host (a proxy, a remote paper exchange): qexec cannot tell what it trades


# reference/binance-usdm.md §5: the testnet is testnet.binancefuture.com (its streams fstream.binancefuture.com), demo
# trading is demo-fapi.binance.com; testnet.binance.vision is the spot testnet.
DEMO_HOSTS = frozenset({"demo-fapi.binance.com"})
TESTNET_HOSTS = frozenset({"testnet.binance.vision"})
TESTNET_DOMAIN = "binancefuture.com"
# Every other host of a Binance domain is production: fapi.binance.com, fapi1/2/3.binance.com, fstream.binance.com,
# and python-binance's `fapi.binance.{tld}` (§6.1). Unknown Binance hosts count as mainnet: the safe side.
_BINANCE_DOMAIN = re.compile(r"(?:^|\.)(binance\.[a-z]{2,}(?:\.[a-z]{2,})?)$")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")
# A name without dots resolves only through local means (/etc/hosts, a compose network). It must start with a letter:
# resolvers read a bare number such as 2130706433 or 0x7f000001 as an IPv4 address, which may be anyone's.
_SINGLE_LABEL = re.compile(r"[a-z](?:[a-z0-9_-]*[a-z0-9])?")

TESTNET_STREAMS = "wss://fstream.binancefuture.com"  # testnet and demo share them (§5)
WS_API_PATH = "/ws-fapi/v1"
TESTNET_WS_API = "wss://testnet.binancefuture.com/ws-fapi/v1"  # testnet and demo alike (§5)


def host_kind(hostname: str) -> HostKind:
    """Classify a host name or address (as `urlsplit(url).hostname` gives it)."""
    name = hostname.lower().rstrip(".")
    if name in DEMO_HOSTS:
        return HostKind.DEMO
    if name in TESTNET_HOSTS or name == TESTNET_DOMAIN or name.endswith("." + TESTNET_DOMAIN):
        return HostKind.TESTNET
    if _BINANCE_DOMAIN.search(name):
        return HostKind.MAINNET
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        local = name == "localhost" or name.endswith(_LOCAL_SUFFIXES) or _SINGLE_LABEL.fullmatch(name) is not None
        return HostKind.LOCAL if local else HostKind.REMOTE
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:a.b.c.d is the IPv4 host, whatever IPv6 calls the block
    return HostKind.LOCAL if address.is_loopback or address.is_private or address.is_link_local else HostKind.REMOTE


def url_host_kind(url: str) -> HostKind:
    """Classify a URL by its host."""
    return host_kind(urlsplit(url).hostname or "")


def host_port(url: str) -> str:
    """`host[:port]` of a URL, without any user-info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port is not None else host


@dataclass(frozen=True)
class VenueIdentity:
    """The venue behind a mode and a base URL: what every label says and what the real-money guards look at."""

    name: str  # the results' `mode`: paper, testnet, demo, mainnet, or `<mode>@<host>` (a host Binance doesn't own)
    mode: str  # QEXEC_MODE as set
    kind: HostKind
    host: str  # host[:port] the requests go to
    overridden: bool  # QEXEC_EXCHANGE_URL sends the requests elsewhere than the mode's own URL
    real_money: bool  # a Binance mainnet host, or QEXEC_MODE=mainnet on a host Binance's test venues do not own

    @property
    def label(self) -> str:
        """`name@host` for logs (the name alone when it already carries the host)."""
        return self.name if "@" in self.name else f"{self.name}@{self.host}"


def venue_identity(mode: str, url: str, *, overridden: bool) -> VenueIdentity:
    """The one decision of which venue `url` is when QEXEC_MODE is `mode`.

    A Binance host is what its name says, whatever the mode (`mainnet` for any production host). A local host is
    `paper` in paper mode. Anything else keeps the mode but names the host (`testnet@10.0.0.5:8443`), so a label never
    claims a venue the requests do not go to.
    """
    kind = url_host_kind(url)
    host = host_port(url)
    if kind in (HostKind.MAINNET, HostKind.TESTNET, HostKind.DEMO):
        name = kind.value
    elif kind is HostKind.LOCAL and mode == "paper":
        name = "paper"
    elif not overridden:
        name = mode
    else:
        name = f"{mode if mode != 'paper' else 'custom'}@{host}"
    real_money = kind is HostKind.MAINNET or (mode == "mainnet" and kind not in (HostKind.TESTNET, HostKind.DEMO))
    return VenueIdentity(name, mode, kind, host, overridden, real_money)


def _derived_ws_url(url: str, binance_host: str, testnet: str, path: str) -> str:
    """A websocket URL of the venue at REST base `url`: `wss://<binance_host>.binance.<tld><path>` for a mainnet host,
    `testnet` for testnet and demo (one host serves both, §5), else `path` on the same host and port (the paper
    exchange serves its websockets there)."""
    hostname = (urlsplit(url).hostname or "").lower().rstrip(".")
    kind = host_kind(hostname)
    if kind is HostKind.MAINNET:
        found = _BINANCE_DOMAIN.search(hostname)
        return f"wss://{binance_host}.{found.group(1) if found else 'binance.com'}{path}"
    if kind in (HostKind.TESTNET, HostKind.DEMO):
        return testnet
    return "ws" + url.removeprefix("http") + path


def derived_stream_url(url: str) -> str:
    """The websocket base of the venue's streams: Binance's stream host for a Binance host, else that host."""
    return _derived_ws_url(url, "fstream", TESTNET_STREAMS, "")


def derived_ws_api_url(url: str) -> str:
    """The venue's WebSocket API: Binance's `ws-fapi` host for a Binance host, else `/ws-fapi/v1` on that host."""
    return _derived_ws_url(url, "ws-fapi", TESTNET_WS_API, WS_API_PATH)
