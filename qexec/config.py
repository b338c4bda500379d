"""qexec's settings: every `QEXEC_*` environment variable, typed, with the venue modes and their URLs."""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from qexec import constants, sentinel
from qexec.venue.identity import (
    HostKind,
    VenueIdentity,
    derived_stream_url,
    derived_ws_api_url,
    url_host_kind,
    venue_identity,
)
from qexec.venue.keys import Credentials, ed25519_pem


class Mode(StrEnum):
    """Which venue qexec trades on."""

    PAPER = "paper"
    TESTNET = "testnet"
    DEMO = "demo"
    MAINNET = "mainnet"


# Base URLs (python-binance appends `/fapi`); reference/binance-usdm.md §5 for the testnet/demo split.
VENUE_URLS: dict[Mode, str] = {
    Mode.PAPER: f"http://127.0.0.1:{constants.PAPER_PORT}",
    Mode.TESTNET: "https://testnet.binancefuture.com",
    Mode.DEMO: "https://demo-fapi.binance.com",
    Mode.MAINNET: "https://fapi.binance.com",
}

MAINNET_ARMING_PHRASE = "I_UNDERSTAND"
EXIT_INVALID_SETTINGS = 1

# The schemes each URL setting may have: redis-py's for Redis, kombu's Redis and RabbitMQ transports for the broker.
REDIS_SCHEMES = ("redis", "rediss", "unix", sentinel.SCHEME)  # sentinel://: qexec's own form (qexec/sentinel.py)
BROKER_SCHEMES = (*REDIS_SCHEMES, "amqp", "amqps", "pyamqp")
EXCHANGE_SCHEMES = ("http", "https")
STREAM_SCHEMES = ("ws", "wss")

# Up to the user-info of a URL, even a malformed one (`rediss//`, `redis:/`, no scheme at all).
_URL_HEAD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:?/*")
_QUERY_SECRET = re.compile(r"((?:password|passwd|pass|pwd|secret|token)=)[^&#]*", re.IGNORECASE)


def masked_url(url: str) -> str:
    """`url` fit for printing: the password replaced by `***` (all of the user-info when it has no colon, since that
    may be a password too), found even in a malformed URL, and so is a `password=` in the query."""
    head, at, tail = url.rpartition("@")
    if at:
        prefix = _URL_HEAD.match(head)
        start = prefix.end() if prefix else 0
        user, colon, _password = head[start:].partition(":")
        url = head[:start] + (f"{user}:***" if colon else "***") + "@" + tail
    return _QUERY_SECRET.sub(r"\1***", url)


def _url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """What is wrong with `url` as a URL of one of `schemes`, or None."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes or not url.lower().startswith(parts.scheme.lower() + "://"):
        *others, last = (f"{scheme}://" for scheme in schemes)
        return f"it must start with {', '.join(others)} or {last}"
    if "#" in url:
        return "it holds a '#' (a password with # / ? @ : must be percent-encoded)"
    try:
        parts.port  # noqa: B018 - urlsplit parses the port only when asked
    except ValueError:
        return "its port is not a number from 0 to 65535"
    if parts.scheme.lower() != "unix" and not parts.hostname:
        return "it names no host"
    return None


def _redis_url_problem(url: str) -> str | None:
    """What is wrong with `url` as a redis-py URL, or None."""
    import redis.connection  # noqa: PLC0415 - redis-py's own parser; config is imported by the paper exchange too

    parts = urlsplit(url)
    if parts.username and parts.password is None:
        return "it has a user name but no password (a password alone is written redis://:PASSWORD@host)"
    if parts.scheme.lower() != "unix" and parts.path not in ("", "/") and not re.fullmatch(r"/\d+", parts.path):
        return "its database (the path) must be a number, such as /0"
    try:
        redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        return str(exc)
    return None


def _sentinel_url_problem(url: str) -> str | None:
    """What is wrong with `url` as a `sentinel://` URL, or None."""
    if "#" in url:
        return "it holds a '#' (a password with # / ? @ : must be percent-encoded)"
    try:
        sentinel.parse(url)
    except ValueError as exc:
        return str(exc)
    return None


def checked_url(variable: str, url: str, schemes: tuple[str, ...]) -> str:
    """`url` when it is a well-formed URL of one of `schemes`; else ValueError naming `variable` (password masked)."""
    if sentinel.is_sentinel(url) and sentinel.SCHEME in schemes:
        problem = _sentinel_url_problem(url)
    else:
        problem = _url_problem(url, schemes)
    if problem is None and urlsplit(url).scheme.lower() in REDIS_SCHEMES and not sentinel.is_sentinel(url):
        problem = _redis_url_problem(url)
    if problem is None and schemes in (EXCHANGE_SCHEMES, STREAM_SCHEMES) and "@" in urlsplit(url).netloc:
        problem = "it carries credentials (the venue's keys go in QEXEC_API_KEY and QEXEC_API_SECRET)"
    if problem is not None:
        raise ValueError(f"{variable}={masked_url(url)} is not a valid URL: {problem}")
    return url


# What an intent does to an open position on its symbol (README "Positions and protection").
SameSidePolicy = Literal["update_protection", "add", "skip"]
OppositeSidePolicy = Literal["reverse", "close", "reject", "hedge"]
ProtectionFailureAction = Literal["close", "alert"]
AlertLevel = Literal["info", "warning", "error", "critical"]


class Settings(BaseSettings):
    """Runtime configuration, read from `QEXEC_*` variables (and nothing else)."""

    # Errors never echo the input: it holds the API key and secret.
    model_config = SettingsConfigDict(env_prefix="QEXEC_", extra="ignore", frozen=True, hide_input_in_errors=True)

    mode: Mode = Mode.PAPER
    exchange_url: str | None = None
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    # An Ed25519 key instead of the HMAC secret: its private key (PEM) in the variable, or in the file it names.
    api_private_key: SecretStr | None = None
    api_private_key_file: Path | None = None
    api_private_key_password: SecretStr | None = None
    mainnet_confirm: str = ""
    # Accounts (README "Many accounts"): the names besides `default`, comma-separated, each signed for by its own keys
    # and, where set, trading under its own limits: QEXEC_ACCOUNT_<NAME>_<SETTING> for each of ACCOUNT_SETTINGS.
    accounts: str = ""
    _account: str = PrivateAttr(default=constants.DEFAULT_ACCOUNT)  # whose settings these are (`for_account`)
    size_multiplier: float = Field(default=1.0, gt=0, allow_inf_nan=False)  # position_size_usd is traded times this
    flower_basic_auth: SecretStr | None = None  # "user:password[,user:password]" for Flower beyond loopback

    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str | None = None

    intent_stream: str = constants.INTENT_STREAM
    result_stream: str = constants.RESULT_STREAM
    exit_stream: str = constants.EXIT_STREAM
    protection_stream: str = constants.PROTECTION_STREAM
    consumer_group: str = constants.CONSUMER_GROUP
    consumer_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    # Venue client.
    request_timeout_s: float = Field(default=5.0, gt=0)
    recv_window_ms: int = Field(default=5000, gt=0, le=60000)
    rules_ttl_s: float = Field(default=300.0, gt=0)

    # Orders over REST, or over the venue's WebSocket API (one authenticated connection per worker process); when
    # that cannot be reached, orders go over REST for `ws_retry_s` before it is tried again.
    order_transport: Literal["rest", "ws"] = "rest"
    ws_api_url: str | None = None  # default: the venue's own (paper: /ws-fapi/v1 on the exchange's port)
    ws_retry_s: float = Field(default=5.0, gt=0)

    # Fill confirmation: poll with a growing countdown until FILLED, terminal, or the deadline.
    fill_timeout_s: float = Field(default=30.0, gt=0)
    poll_initial_s: float = Field(default=0.1, gt=0)
    poll_max_s: float = Field(default=2.0, gt=0)
    poll_factor: float = Field(default=2.0, ge=1)
    # How long a submit whose outcome is unknown is looked up before it is declared "not placed".
    unknown_lookup_s: float = Field(default=10.0, gt=0)

    # The venue's websocket streams (qexec/venue/feed.py): order updates, positions and marks without REST calls.
    use_streams: bool = True
    stream_url: str | None = None  # the websocket base; default: the mode's (paper: the exchange's own port)
    stream_poll_s: float = Field(default=0.05, gt=0)  # confirm_fill's first countdown while the stream vouches
    stream_wait_s: float = Field(default=0.25, ge=0)  # how long protection waits for the stream to show a fill
    stream_ping_s: float = Field(default=10.0, gt=0)  # keep-alive ping interval and timeout of each socket
    mark_max_age_s: float = Field(default=2.0, gt=0)  # a streamed mark older than this is asked over REST

    # Intents.
    intent_max_age_s: float = Field(default=300.0, gt=0)
    max_intent_bytes: int = Field(default=16384, gt=0)

    # Streams.
    result_maxlen: int = Field(default=1_000_000, gt=0)
    protection_maxlen: int = Field(default=1_000_000, gt=0)
    dlq_maxlen: int = Field(default=100_000, gt=0)
    # The bridge trims acknowledged intent entries older than this (never one still pending or undelivered), and
    # dead letters older than `dlq_retention_s` (the DLQ is also capped at `dlq_maxlen`).
    intent_retention_s: int = Field(default=24 * 3600, gt=0)
    dlq_retention_s: int = Field(default=7 * 24 * 3600, gt=0)
    intent_state_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)

    # Bridge.
    bridge_block_ms: int = Field(default=1000, gt=0)
    bridge_batch: int = Field(default=64, gt=0)
    claim_idle_ms: int = Field(default=30_000, gt=0)
    max_deliveries: int = Field(default=5, gt=0)
    # How often each bridge trims the streams and deletes consumers idle for `consumer_delete_idle_s` with nothing
    # pending; its hold on its consumer name lapses `consumer_name_ttl_s` after its last refresh.
    bridge_sweep_every_s: float = Field(default=60.0, gt=0)
    consumer_delete_idle_s: float = Field(default=3600.0, gt=0)
    consumer_name_ttl_s: float = Field(default=30.0, gt=0)
    # The bridge's Prometheus endpoint (`/metrics`); port 0 turns it off.
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # The operator's page (`qexec console`); beyond loopback it refuses to start without `console_auth`.
    console_host: str = "127.0.0.1"
    console_port: int = Field(default=8900, ge=1, le=65535)
    console_auth: SecretStr | None = None  # "user:password[,user:password]", HTTP Basic; never logged
    console_venue_every_s: float = Field(default=5.0, gt=0)  # how often the page's venue side is read (one reader)
    # Alerts (qexec/alerts.py, qexec/ops/notify.py): apprise URLs, comma or space separated. They carry their
    # service's tokens: never logged, masked wherever printed.
    alert_urls: SecretStr | None = None
    alert_min_level: AlertLevel = "info"
    alert_rate_per_min: int = Field(default=20, gt=0)  # alerts per destination and minute; the rest wait or drop
    alert_repeat_s: float = Field(default=300.0, gt=0)  # a lasting condition (unprotected, stream down) repeats
    alert_stream_down_s: float = Field(default=30.0, gt=0)  # the user-data stream down this long is alerted
    alert_protection_late_s: float = Field(default=5.0, ge=0)  # SL/TP placed this long after the fill is alerted

    # Celery and beat.
    visibility_timeout_s: int = Field(default=120, gt=0)
    reconcile_every_s: float = Field(default=10.0, gt=0)
    heartbeat_every_s: float = Field(default=30.0, gt=0)
    # Binance's dead-man switch (countdownCancelAll): off when unset or 0; beat renews it every quarter of this for
    # each symbol with qexec's orders or positions, at 10 request weight per symbol and renewal.
    deadman_countdown_s: float | None = Field(default=None, ge=0)
    worker_concurrency: int = Field(default=8, gt=0)

    # Crash recovery.
    # A message taken by a worker that died (SIGKILL, lost host) is queued again once it is older than the visibility
    # timeout: max(visibility_timeout_s, longest task run + longest retry countdown + visibility_margin_s). The margin
    # keeps a live worker's message from coming back while it still holds it (that would run the step twice).
    visibility_margin_s: float = Field(default=30.0, ge=0)
    # Every task retry waits at most this long (a longer wait, such as a Retry-After, is served in several steps),
    # so that the longest countdown, and with it the visibility timeout, stays short.
    retry_countdown_max_s: float = Field(default=10.0, gt=0)
    # How long a step whose retry cannot be sent (the broker away, e.g. Redis restarting) waits for it, in place;
    # counted in the visibility timeout.
    broker_wait_s: float = Field(default=30.0, ge=0)
    # kombu's sweep for such messages runs every interval x throttle seconds (kombu's defaults: 10 x 10).
    unacked_restore_interval_s: int = Field(default=1, ge=1)
    unacked_restore_throttle: int = Field(default=1, ge=1)
    # Each worker process beats a key in Redis this often, with a TTL of `node_dead_after_s`; one whose key has then
    # been missing for two more beats is dead: beat's takeover (every `takeover_every_s`) queues its broker messages
    # again at once and its locks may be taken, instead of waiting out the visibility timeout and the lock's expiry.
    node_beat_s: float = Field(default=1.0, gt=0)
    node_dead_after_s: float = Field(default=3.0, gt=0)
    takeover_every_s: float = Field(default=1.0, gt=0)
    # An order still being confirmed whose next confirm_fill has not started this long after its countdown (its
    # message lost with a worker) gets a fresh confirmation from beat's takeover.
    confirm_overdue_s: float = Field(default=4.0, gt=0)
    # A dispatched intent whose place_order has not started this long after (its message lost with a worker; or a
    # backlog that long, then it runs twice, harmlessly) is dispatched again by beat's takeover.
    place_overdue_s: float = Field(default=60.0, gt=0)

    # Positions and protection.
    same_side_policy: SameSidePolicy = Field(default="update_protection")
    opposite_side_policy: OppositeSidePolicy = Field(default="reject")
    # How long an entry waits for the venue's answer to an earlier entry on its symbol that its policy looks at.
    entry_wait_s: float = Field(default=5.0, ge=0)
    protection_failure_action: ProtectionFailureAction = Field(default="close")
    protection_retries: int = Field(default=5, ge=0)  # temporary failures retried in place, before the monitor's turn
    # How long a position may stay unprotected while the venue fails temporarily (503s, timeouts) before the
    # emergency action runs; a refusal (e.g. -2021, the stop already passed) runs it at once.
    protection_grace_s: float = Field(default=60.0, ge=0)
    default_stop_loss_pct: float = Field(default=2.0, gt=0, le=50)  # when an intent (or adopted position) has none
    default_take_profit_pct: float = Field(default=4.0, gt=0, le=500)
    trailing_stop_pct: float = Field(default=0.0, ge=0, le=50)  # 0: no trailing unless the intent asks for one
    exit_monitor_every_s: float = Field(default=3.0, gt=0)
    position_mode_ttl_s: float = Field(default=60.0, gt=0)  # how long the account's one-way/hedge mode is cached
    adopt_grace_s: float = Field(default=5.0, ge=0)  # an untracked position this fresh may still be ours in flight
    exit_maxlen: int = Field(default=1_000_000, gt=0)

    # Risk limits (a breach is a `rejected` result with the reason).
    max_notional_usd: float = Field(default=50_000.0, gt=0)
    max_leverage: int = Field(default=20, ge=1, le=125)
    # `qexec halt` stops new exposure; reducing or closing a position still goes through unless this is false.
    halt_allows_reduce_only: bool = True

    # Rate limits and risk.
    # The account's venue budget, shared by every worker through Redis (qexec/venue/limiter.py); `limit_margin` is the
    # share of each limit qexec spends, and one call waits at most `limit_max_wait_s` before its task retries later.
    weight_per_min: int = Field(default=2400, gt=0)
    orders_per_10s: int = Field(default=300, gt=0)
    orders_per_min: int = Field(default=1200, gt=0)
    limit_margin: float = Field(default=0.95, gt=0, le=1)
    limit_max_wait_s: float = Field(default=2.0, gt=0)
    # Risk limits beyond the two above (qexec/pipeline/risk.py); unset means no limit. Symbols are comma-separated.
    symbol_allow: str = ""
    symbol_deny: str = ""
    max_total_notional_usd: float | None = Field(default=None, gt=0)
    max_open_positions: int | None = Field(default=None, ge=0)
    positions_cache_s: float = Field(default=2.0, ge=0)  # how long the venue's positions serve the two above

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, url: str) -> str:
        return checked_url("QEXEC_REDIS_URL", url, REDIS_SCHEMES)

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, url: str | None) -> str | None:
        return None if url is None else checked_url("QEXEC_BROKER_URL", url, BROKER_SCHEMES)

    @field_validator("exchange_url")
    @classmethod
    def _check_exchange_url(cls, url: str | None) -> str | None:
        return None if url is None else checked_url("QEXEC_EXCHANGE_URL", url, EXCHANGE_SCHEMES)

    @field_validator("stream_url")
    @classmethod
    def _check_stream_url(cls, url: str | None) -> str | None:
        return None if url is None else checked_url("QEXEC_STREAM_URL", url, STREAM_SCHEMES)

    @field_validator("ws_api_url")
    @classmethod
    def _check_ws_api_url(cls, url: str | None) -> str | None:
        return None if url is None else checked_url("QEXEC_WS_API_URL", url, STREAM_SCHEMES)

    @model_validator(mode="after")
    def _check_venue(self) -> Settings:
        venue = self.venue
        if (venue.real_money or self.mode is Mode.MAINNET) and self.mainnet_confirm != MAINNET_ARMING_PHRASE:
            why = "QEXEC_MODE=mainnet" if self.mode is Mode.MAINNET else f"QEXEC_EXCHANGE_URL={self.venue_url}"
            if self.mode is not Mode.MAINNET:
                why += " is Binance mainnet (whatever QEXEC_MODE says) and"
            raise ValueError(f"{why} trades real money: it needs QEXEC_MAINNET_CONFIRM={MAINNET_ARMING_PHRASE}")
        if self.mode is Mode.PAPER and venue.kind is not HostKind.LOCAL:
            raise ValueError(
                f"QEXEC_MODE=paper trades on a local paper exchange, but QEXEC_EXCHANGE_URL={self.venue_url} is "
                f"{_KIND_TEXT[venue.kind]} ({venue.host}): set QEXEC_MODE={_KIND_MODE[venue.kind]} (and its keys) "
                "or point QEXEC_EXCHANGE_URL at the paper exchange"
            )
        self._check_streams(venue, "QEXEC_STREAM_URL", self.stream_url)
        self._check_streams(venue, "QEXEC_WS_API_URL", self.ws_api_url)
        self._check_keys()
        self._check_accounts()
        if self.node_dead_after_s < 2 * self.node_beat_s:
            raise ValueError(
                f"QEXEC_NODE_DEAD_AFTER_S={self.node_dead_after_s:g} must be at least twice QEXEC_NODE_BEAT_S="
                f"{self.node_beat_s:g}: one late beat would take a live worker for dead"
            )
        return self

    def _check_keys(self) -> None:
        """One API key, signed for by an HMAC secret or by an Ed25519 private key (a variable or a file), not both."""
        if self.api_private_key is not None and self.api_private_key_file is not None:
            raise ValueError("set QEXEC_API_PRIVATE_KEY or QEXEC_API_PRIVATE_KEY_FILE, not both")
        ed25519 = self.api_private_key is not None or self.api_private_key_file is not None
        if ed25519 and self.api_secret is not None:
            raise ValueError("an API key is HMAC or Ed25519: set QEXEC_API_SECRET or an Ed25519 private key, not both")
        if (self.api_key is None) != (self.api_secret is None and not ed25519):
            raise ValueError("QEXEC_API_KEY and QEXEC_API_SECRET (or an Ed25519 private key) must be set together")
        if self.mode is not Mode.PAPER and self.api_key is None:
            raise ValueError(f"QEXEC_MODE={self.mode} needs QEXEC_API_KEY and QEXEC_API_SECRET (or an Ed25519 key)")
        if ed25519:
            self.credentials()  # reads the key now: a bad key stops the start, not the first order

    def _check_accounts(self) -> None:
        """Account names well formed, and every account's own settings valid (read now, not at its first order)."""
        for name in self.account_names:
            if not re.fullmatch(constants.ACCOUNT_PATTERN, name):
                raise ValueError(
                    f"QEXEC_ACCOUNTS: account name {name!r} must be lower-case letters, digits and _, starting with "
                    "a letter (at most 24)"
                )
        known = {account_variable(name, field) for name in self.account_names[1:] for field in ACCOUNT_SETTINGS}
        strays = sorted(set(_account_environment()) - known)
        if strays:  # a misspelt setting, or an account not listed: never trade as if it were not there
            raise ValueError(
                f"{', '.join(strays)}: not a setting of an account in QEXEC_ACCOUNTS ({', '.join(self.account_names)}"
                f"); an account may set {', '.join(field.upper() for field in ACCOUNT_SETTINGS)}"
            )
        seen: dict[str, str] = {}
        for name, member in self._accounts.items():  # every account's settings, checked at the start
            key = member.credentials().api_key.strip()
            if key in seen:
                raise ValueError(f"accounts {seen[key]} and {name} have the same API key: one account, two names")
            seen[key] = name

    @property
    def account(self) -> str:
        """The account these settings trade for (`default`, unless they came from `for_account`)."""
        return self._account

    @property
    def account_names(self) -> tuple[str, ...]:
        """Every configured account: `default` first, then QEXEC_ACCOUNTS in order, each once."""
        named = (name.strip() for name in self.accounts.split(","))
        return tuple(dict.fromkeys((constants.DEFAULT_ACCOUNT, *(name for name in named if name))))

    def for_account(self, name: str) -> Settings:
        """The settings account `name` trades with (KeyError for one not configured): these, with its keys and its
        own QEXEC_ACCOUNT_<NAME>_* values; `default`'s are QEXEC_API_KEY's."""
        return self._accounts[name]

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Settings:
        """A copy with `update`, whose credentials and accounts are derived again from its own values (pydantic
        copies what the cached properties hold, which would be the original's)."""
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("_credentials", None)
        copied.__dict__.pop("_accounts", None)
        return copied

    @cached_property
    def _accounts(self) -> dict[str, Settings]:
        # Built on the settings read from the environment (`default`'s); every member shares the one map.
        if self.account != constants.DEFAULT_ACCOUNT:
            raise RuntimeError(f"the settings of account {self.account} were copied apart from their deployment's")
        family = {constants.DEFAULT_ACCOUNT: self}
        family.update((name, self._account_settings(name)) for name in self.account_names[1:])
        for member in family.values():
            member.__dict__["_accounts"] = family
        return family

    def _account_settings(self, name: str) -> Settings:
        update: dict[str, object] = dict.fromkeys(CREDENTIAL_SETTINGS)  # never another account's keys
        update.update(_account_values(name))
        member = self.model_copy(update=update)
        member._account = name
        try:
            member._check_keys()
        except ValueError as exc:
            message = str(exc)
            for field in sorted(CREDENTIAL_SETTINGS, key=len, reverse=True):  # the account's own variables' names
                message = re.sub(rf"\bQEXEC_{field.upper()}\b", account_variable(name, field), message)
            raise ValueError(f"account {name}: {message}") from None
        return member

    def _check_streams(self, venue: VenueIdentity, variable: str, url: str | None) -> None:
        """A websocket URL must describe the venue the orders go to (a fill from another venue is worse than none)."""
        if url is None:
            return
        streams = url_host_kind(url)
        binance = (HostKind.MAINNET, HostKind.TESTNET, HostKind.DEMO)
        test_funds = (HostKind.TESTNET, HostKind.DEMO)  # one stream host serves both
        crossed = (venue.kind in test_funds) != (streams in test_funds)
        mismatch = venue.kind in binance and streams in binance and crossed
        if mismatch or (self.mode is Mode.PAPER and streams is not HostKind.LOCAL):
            raise ValueError(
                f"{variable}={url} is {_KIND_TEXT[streams]}, but the orders go to {venue.label}: "
                "the websockets must reach the venue that takes the orders"
            )

    @property
    def venue_url(self) -> str:
        """The venue's base URL: the override when set, else the mode's own."""
        return (self.exchange_url or VENUE_URLS[self.mode]).rstrip("/")

    @property
    def venue(self) -> VenueIdentity:
        """Which venue the orders go to (venue/identity.py): every label and every real-money guard reads this."""
        overridden = self.venue_url != VENUE_URLS[self.mode]
        return venue_identity(self.mode.value, self.venue_url, overridden=overridden)

    @property
    def stream_base_url(self) -> str:
        """The websocket base of the venue's streams: the override, else derived from the host the orders go to
        (a Binance host's own stream host; the paper exchange, or any other host, on its own address)."""
        if self.stream_url:
            return self.stream_url.rstrip("/")
        return derived_stream_url(self.venue_url)

    @property
    def ws_api_base_url(self) -> str:
        """The venue's WebSocket API: the override, else derived from the host the orders go to."""
        return self.ws_api_url or derived_ws_api_url(self.venue_url)

    @property
    def effective_broker_url(self) -> str:
        """The Celery broker: `QEXEC_BROKER_URL`, defaulting to the Redis URL."""
        return self.broker_url or self.redis_url

    @property
    def alert_url_list(self) -> list[str]:
        """The alert destinations of `QEXEC_ALERT_URLS`, in order, each once (secrets: print them masked)."""
        text = self.alert_urls.get_secret_value() if self.alert_urls is not None else ""
        return list(dict.fromkeys(url for url in re.split(r"[\s,]+", text) if url))

    @property
    def dlq_stream(self) -> str:
        """The dead-letter stream beside the intent stream."""
        return self.intent_stream + constants.DLQ_SUFFIX

    def credentials(self) -> Credentials:
        """The API key and what signs for it (the paper defaults in paper mode when none are set)."""
        return self._credentials

    @cached_property
    def _credentials(self) -> Credentials:
        if self.api_key is None:
            return Credentials(*constants.paper_keys(self.account))
        key = self.api_key.get_secret_value()
        if self.api_secret is not None:
            return Credentials(key, secret=self.api_secret.get_secret_value())
        if self.api_private_key is not None:
            text, where = self.api_private_key.get_secret_value(), "QEXEC_API_PRIVATE_KEY"
        else:
            assert self.api_private_key_file is not None
            where = f"QEXEC_API_PRIVATE_KEY_FILE={self.api_private_key_file}"
            try:
                text = self.api_private_key_file.read_text()
            except OSError as exc:
                raise ValueError(f"{where} cannot be read: {exc.strerror}") from None
        password = self.api_private_key_password.get_secret_value() if self.api_private_key_password else None
        try:
            return Credentials(key, private_key=ed25519_pem(text, password))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    def log_secrets(self) -> list[str]:
        """What logs mask: every account's configured key and its secret or private key (the paper defaults are not
        secret)."""
        return [
            s
            for member in self._accounts.values()
            if member.api_key is not None
            for s in member.credentials().secrets()
        ]


# The credentials an account has of its own (never inherited from `default`), and the settings it may set for itself
# as QEXEC_ACCOUNT_<NAME>_<SETTING> (the rest are the deployment's, or inherited from QEXEC_<SETTING>).
CREDENTIAL_SETTINGS = ("api_key", "api_secret", "api_private_key", "api_private_key_file", "api_private_key_password")
ACCOUNT_SETTINGS = (
    *CREDENTIAL_SETTINGS,
    "size_multiplier",
    "max_notional_usd",
    "max_leverage",
    "max_total_notional_usd",
    "max_open_positions",
    "symbol_allow",
    "symbol_deny",
    "same_side_policy",
    "opposite_side_policy",
    "halt_allows_reduce_only",
    "protection_failure_action",
    "default_stop_loss_pct",
    "default_take_profit_pct",
    "trailing_stop_pct",
    "orders_per_10s",
    "orders_per_min",
)


ACCOUNT_PREFIX = "QEXEC_ACCOUNT_"  # the family of an account's own settings: QEXEC_ACCOUNT_<NAME>_<SETTING>


def account_variable(name: str, field: str) -> str:
    """The variable that sets `field` for account `name`: QEXEC_ACCOUNT_<NAME>_<FIELD>."""
    return f"{ACCOUNT_PREFIX}{name.upper()}_{field.upper()}"


def _account_environment() -> dict[str, str]:
    """Every QEXEC_ACCOUNT_* variable of the environment, its name in capitals (names are case-insensitive, as
    pydantic-settings reads the others)."""
    return {key.upper(): value for key, value in os.environ.items() if key.upper().startswith(ACCOUNT_PREFIX)}


def _account_values(name: str) -> dict[str, Any]:
    """Account `name`'s own values from the environment, each checked as its QEXEC_<SETTING> would be."""
    values: dict[str, Any] = {}
    environment = _account_environment()
    for field in ACCOUNT_SETTINGS:
        variable = account_variable(name, field)
        raw = environment.get(variable)
        if raw is None:
            continue
        info = Settings.model_fields[field]
        kind: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        try:
            values[field] = TypeAdapter(kind).validate_python(raw)
        except ValidationError as exc:
            problem = "; ".join(e["msg"] for e in exc.errors(include_input=False, include_url=False))
            raise ValueError(f"{variable}: {problem}") from None
    return values


_KIND_TEXT = {
    HostKind.LOCAL: "a local host",
    HostKind.MAINNET: "Binance mainnet",
    HostKind.TESTNET: "Binance's futures testnet",
    HostKind.DEMO: "Binance's demo trading",
    HostKind.REMOTE: "a remote host",
}
_KIND_MODE = {
    HostKind.MAINNET: "mainnet",
    HostKind.TESTNET: "testnet",
    HostKind.DEMO: "demo",
    HostKind.REMOTE: "testnet, demo or mainnet",
}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()


def settings_problem(exc: ValidationError) -> str:
    """A settings error as one line naming each variable (the input is never echoed: it may hold secrets)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        cause = error.get("ctx", {}).get("error")
        message = str(cause) if isinstance(cause, ValueError) else error["msg"]
        variable = f"QEXEC_{str(error['loc'][0]).upper()}" if error["loc"] else ""
        problems.append(message if not variable or message.startswith(variable) else f"{variable}: {message}")
    return "invalid QEXEC_* settings: " + "; ".join(problems)


def settings_or_exit() -> Settings:
    """The process's settings; invalid ones end it with one FATAL_INVALID_SETTINGS line on stderr and exit 1."""
    try:
        return get_settings()
    except ValidationError as exc:
        sys.stderr.write(f"FATAL_INVALID_SETTINGS {settings_problem(exc)}\n")
        sys.stderr.flush()
        raise SystemExit(EXIT_INVALID_SETTINGS) from None
