"""qexec's settings: every `QEXEC_*` environment variable, typed, with the venue modes and their URLs."""

from __future__ import annotations

import math
import os
import socket
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal

from kombu import Queue  # type: ignore[attr-defined]
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from qexec import constants


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

# Websocket bases of the user-data and market streams (reference §4: `/private/ws?listenKey=…`, `/market/ws/…`).
STREAM_URLS: dict[Mode, str] = {
    Mode.TESTNET: "wss://fstream.binancefuture.com",
    Mode.DEMO: "wss://fstream.binancefuture.com",
    Mode.MAINNET: "wss://fstream.binance.com",
}

MAINNET_ARMING_PHRASE = "I_UNDERSTAND"

# What an intent does to an open position on its symbol (README "Positions and protection").
SameSidePolicy = Literal["update_protection", "add", "skip"]
OppositeSidePolicy = Literal["reverse", "close", "reject"]
ProtectionFailureAction = Literal["close", "alert"]


class Settings(BaseSettings):
    """Runtime configuration, read from `QEXEC_*` variables (and nothing else)."""

    # Errors never echo the input: it holds the API key and secret.
    model_config = SettingsConfigDict(env_prefix="QEXEC_", extra="ignore", frozen=True, hide_input_in_errors=True)

    mode: Mode = Mode.PAPER
    exchange_url: str | None = None
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    mainnet_confirm: str = ""
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

    # Fill confirmation: poll with a growing countdown until FILLED, terminal, or the deadline.
    fill_timeout_s: float = Field(default=30.0, gt=0)
    poll_initial_s: float = Field(default=0.1, gt=0)
    poll_max_s: float = Field(default=2.0, gt=0)
    poll_factor: float = Field(default=2.0, ge=1)
    # How long a submit whose outcome is unknown is looked up before it is declared "not placed".
    unknown_lookup_s: float = Field(default=10.0, gt=0)

    # The venue's websocket streams (qexec/feed.py): order updates, positions and marks without REST calls.
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
    intent_state_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)

    # Bridge.
    bridge_block_ms: int = Field(default=1000, gt=0)
    bridge_batch: int = Field(default=64, gt=0)
    claim_idle_ms: int = Field(default=30_000, gt=0)
    max_deliveries: int = Field(default=5, gt=0)
    # The bridge's Prometheus endpoint (`/metrics`); port 0 turns it off.
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    # Celery and beat.
    visibility_timeout_s: int = Field(default=120, gt=0)
    reconcile_every_s: float = Field(default=10.0, gt=0)
    heartbeat_every_s: float = Field(default=30.0, gt=0)
    worker_concurrency: int = Field(default=8, gt=0)

    # Crash recovery.
    # A message taken by a worker that died (SIGKILL, lost host) is queued again once it is older than the visibility
    # timeout: max(visibility_timeout_s, longest task run + longest retry countdown + visibility_margin_s). The margin
    # keeps a live worker's message from coming back while it still holds it (that would run the step twice).
    visibility_margin_s: float = Field(default=30.0, ge=0)
    # Every task retry waits at most this long (a longer wait, such as a Retry-After, is served in several steps),
    # so that the longest countdown, and with it the visibility timeout, stays short.
    retry_countdown_max_s: float = Field(default=10.0, gt=0)
    # kombu's sweep for such messages runs every interval x throttle seconds (kombu's defaults: 10 x 10).
    unacked_restore_interval_s: int = Field(default=1, ge=1)
    unacked_restore_throttle: int = Field(default=1, ge=1)

    # Positions and protection.
    same_side_policy: SameSidePolicy = Field(default="update_protection")
    opposite_side_policy: OppositeSidePolicy = Field(default="reject")
    # How long an entry waits for the venue's answer to an earlier entry on its symbol that its policy looks at.
    entry_wait_s: float = Field(default=5.0, ge=0)
    protection_failure_action: ProtectionFailureAction = Field(default="close")
    protection_retries: int = Field(default=5, ge=0)  # temporary venue failures before the emergency action
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
    # The account's venue budget, shared by every worker through Redis (qexec/limiter.py); `limit_margin` is the
    # share of each limit qexec spends, and one call waits at most `limit_max_wait_s` before its task retries later.
    weight_per_min: int = Field(default=2400, gt=0)
    orders_per_10s: int = Field(default=300, gt=0)
    orders_per_min: int = Field(default=1200, gt=0)
    limit_margin: float = Field(default=0.95, gt=0, le=1)
    limit_max_wait_s: float = Field(default=2.0, gt=0)
    # Risk limits beyond the two above (qexec/risk.py); unset means no limit. Symbols are comma-separated.
    symbol_allow: str = ""
    symbol_deny: str = ""
    max_total_notional_usd: float | None = Field(default=None, gt=0)
    max_open_positions: int | None = Field(default=None, ge=0)
    positions_cache_s: float = Field(default=2.0, ge=0)  # how long the venue's positions serve the two above

    @model_validator(mode="after")
    def _check_venue(self) -> Settings:
        if self.mode is Mode.MAINNET and self.mainnet_confirm != MAINNET_ARMING_PHRASE:
            raise ValueError(
                f"QEXEC_MODE=mainnet trades real money: it needs QEXEC_MAINNET_CONFIRM={MAINNET_ARMING_PHRASE}"
            )
        if (self.api_key is None) != (self.api_secret is None):
            raise ValueError("QEXEC_API_KEY and QEXEC_API_SECRET must be set together")
        if self.mode is not Mode.PAPER and self.api_key is None:
            raise ValueError(f"QEXEC_MODE={self.mode} needs QEXEC_API_KEY and QEXEC_API_SECRET")
        return self

    @property
    def venue_url(self) -> str:
        """The venue's base URL: the override when set, else the mode's own."""
        return (self.exchange_url or VENUE_URLS[self.mode]).rstrip("/")

    @property
    def stream_base_url(self) -> str:
        """The websocket base of the venue's streams: the override; else the mode's, unless `exchange_url` sends REST
        to another host (the streams must describe the venue the orders go to): then, as in paper mode, that host."""
        if self.stream_url:
            return self.stream_url.rstrip("/")
        if self.mode in STREAM_URLS and self.venue_url == VENUE_URLS[self.mode].rstrip("/"):
            return STREAM_URLS[self.mode]
        return "ws" + self.venue_url.removeprefix("http")

    @property
    def effective_broker_url(self) -> str:
        """The Celery broker: `QEXEC_BROKER_URL`, defaulting to the Redis URL."""
        return self.broker_url or self.redis_url

    @property
    def dlq_stream(self) -> str:
        """The dead-letter stream beside the intent stream."""
        return self.intent_stream + constants.DLQ_SUFFIX

    def credentials(self) -> tuple[str, str]:
        """The API key and secret (the paper defaults in paper mode when none are set)."""
        if self.api_key is not None and self.api_secret is not None:
            return self.api_key.get_secret_value(), self.api_secret.get_secret_value()
        return constants.PAPER_API_KEY, constants.PAPER_API_SECRET


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from qexec's (celeryconfig.py exposes these; see reference/celery-redis.md)."""
    longest_countdown_s = max(settings.poll_max_s, settings.retry_countdown_max_s)
    # A step makes a few venue calls, each bounded by the request timeout and by a wait for the shared rate budget;
    # place_order may first wait for an earlier entry on its symbol.
    longest_task_s = (
        (settings.request_timeout_s + settings.limit_max_wait_s) * 4 + settings.unknown_lookup_s + settings.entry_wait_s
    )
    visibility_s = max(
        settings.visibility_timeout_s, math.ceil(longest_task_s + longest_countdown_s + settings.visibility_margin_s)
    )
    transport: dict[str, Any] = {}
    transport_class = None
    if settings.effective_broker_url.startswith(("redis://", "rediss://", "unix://")):
        # kombu's Redis transport, made to survive Redis going away under a worker (see qexec/broker.py).
        transport_class = "qexec.broker:RedisTransport"
        transport = {
            "visibility_timeout": visibility_s,
            "unacked_restore_interval": settings.unacked_restore_interval_s,
            "unacked_restore_throttle": settings.unacked_restore_throttle,
            "socket_timeout": 30,
            "socket_connect_timeout": 5,
            "socket_keepalive": True,
            "health_check_interval": 10,
        }
    return {
        "broker_url": settings.effective_broker_url,
        "broker_transport": transport_class,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_default_queue": "qexec",
        "task_queues": (Queue("qexec"), Queue("qexec.confirm")),  # type: ignore[no-untyped-call]
        # Confirmation polls get their own queue so they are not stuck behind a backlog of new intents.
        "task_routes": {"qexec.confirm_fill": {"queue": "qexec.confirm"}},
        "worker_timer_precision": 0.05,
        "worker_disable_rate_limits": True,  # qexec paces venue calls itself (qexec/limiter.py), not Celery
        # Task events cost a broker publish per task state (the largest single item, about a fifth of the samples,
        # in a py-spy profile of the worker): off unless someone watches. Flower switches them on in every worker.
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        # celery-redbeat keeps the schedule in Redis behind a lock: a second beat started by mistake waits
        # instead of sending every periodic task twice.
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "redbeat_redis_url": settings.redis_url,
        "redbeat_key_prefix": constants.REDBEAT_PREFIX,
        "redbeat_lock_timeout": 30,
        "beat_max_loop_interval": 5,
        "beat_schedule": {
            "reclaim-intents": {"task": "qexec.reclaim_intents", "schedule": settings.claim_idle_ms / 1000},
            "reconcile-orders": {"task": "qexec.reconcile_orders", "schedule": settings.reconcile_every_s},
            "venue-heartbeat": {"task": "qexec.venue_heartbeat", "schedule": settings.heartbeat_every_s},
            "watch-positions": {
                "task": "qexec.watch_positions",
                "schedule": settings.exit_monitor_every_s,
                "options": {"expires": settings.exit_monitor_every_s * 2},  # a late run is superseded by the next
            },
        },
        "enable_utc": True,
        "timezone": "UTC",
    }
