"""Celery's settings, derived from qexec's (celeryconfig.py exposes them; see reference/celery-redis.md)."""

from __future__ import annotations

import math
from typing import Any

from kombu import Queue  # type: ignore[attr-defined]

from qexec import constants, sentinel
from qexec.alerts import ALERT_QUEUE, SEND_TASK
from qexec.config import REDIS_SCHEMES, Settings
from qexec.ops.deadman import renew_every_s
from qexec.worker import takeover

# The worker consumes all of them: new intents, confirmation polls, alerts, and the takeover of a dead worker's work.
QUEUES = ("qexec", "qexec.confirm", ALERT_QUEUE, takeover.QUEUE)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting qexec sets: broker, serialization, delivery guarantees, queues, events and beat."""
    transport_class, transport = broker_transport(settings)
    url = settings.effective_broker_url
    return {
        "broker_url": sentinel.kombu_url(url) if sentinel.is_sentinel(url) else url,
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
        "task_queues": tuple(Queue(name) for name in QUEUES),  # type: ignore[no-untyped-call]
        # Confirmation polls get their own queue so they are not stuck behind a backlog of new intents; alerts
        # and the takeover of a dead worker's messages too, so that none waits behind another.
        "task_routes": {
            "qexec.confirm_fill": {"queue": "qexec.confirm"},
            SEND_TASK: {"queue": ALERT_QUEUE},
            takeover.TASK: {"queue": takeover.QUEUE},
        },
        "worker_timer_precision": 0.05,
        "worker_disable_rate_limits": True,  # qexec paces venue calls itself (qexec/venue/limiter.py), not Celery
        # Task events cost a broker publish per task state (the largest single item, about a fifth of the samples,
        # in a py-spy profile of the worker): off unless someone watches. Flower switches them on in every worker.
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        **beat_config(settings),
        "enable_utc": True,
        "timezone": "UTC",
    }


def visibility_timeout_s(settings: Settings) -> int:
    """How long a message a worker took stays invisible before Redis queues it again: longer than any task's run
    plus its longest retry countdown plus the margin, so a live worker's message never comes back."""
    longest_countdown_s = max(settings.poll_max_s, settings.retry_countdown_max_s)
    # A step makes a few venue calls, each bounded by the request timeout and by a wait for the shared rate budget;
    # place_order may first wait for an earlier entry on its symbol.
    longest_task_s = (
        (settings.request_timeout_s + settings.limit_max_wait_s) * 4
        + settings.unknown_lookup_s
        + settings.entry_wait_s
        + settings.broker_wait_s
    )
    return max(
        settings.visibility_timeout_s, math.ceil(longest_task_s + longest_countdown_s + settings.visibility_margin_s)
    )


def redis_broker(settings: Settings) -> bool:
    """True when the broker is a Redis (qexec's own transport), not RabbitMQ."""
    return settings.effective_broker_url.startswith(tuple(f"{scheme}://" for scheme in REDIS_SCHEMES))


def broker_transport(settings: Settings) -> tuple[str | None, dict[str, Any]]:
    """The broker's kombu transport class and its options: qexec's own Redis transport for a Redis broker, else
    kombu's default for the URL (None) with no options."""
    if not redis_broker(settings):
        return None, {}
    # kombu's Redis (or Sentinel) transport, made to survive Redis going away under a worker (qexec/worker/broker.py).
    url = settings.effective_broker_url
    group = sentinel.kombu_options(url) if sentinel.is_sentinel(url) else {}
    transport = "SentinelTransport" if group else "RedisTransport"
    return f"qexec.worker.broker:{transport}", {
        **group,
        "visibility_timeout": visibility_timeout_s(settings),
        "unacked_restore_interval": settings.unacked_restore_interval_s,
        "unacked_restore_throttle": settings.unacked_restore_throttle,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 10,
    }


def beat_config(settings: Settings) -> dict[str, Any]:
    """Beat's scheduler (celery-redbeat, in Redis) and qexec's periodic tasks."""
    return {
        # celery-redbeat keeps the schedule in Redis behind a lock: a second beat started by mistake waits
        # instead of sending every periodic task twice.
        "beat_scheduler": "redbeat.RedBeatScheduler",
        **redbeat_redis(settings.redis_url),
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
            **deadman_schedule(settings),
            **takeover.schedule(settings),
        },
    }


def redbeat_redis(url: str) -> dict[str, Any]:
    """Where celery-redbeat keeps the schedule and its lock: qexec's Redis, or its Sentinel group."""
    return sentinel.redbeat_settings(url) if sentinel.is_sentinel(url) else {"redbeat_redis_url": url}


def deadman_schedule(settings: Settings) -> dict[str, Any]:
    """Beat's renewal of the venue's dead-man countdown, when `QEXEC_DEADMAN_COUNTDOWN_S` turns it on: 10 request
    weight per symbol in use and renewal (qexec/ops/deadman.py). A renewal that is late is superseded by the next."""
    if not settings.deadman_countdown_s:
        return {}
    every_s = renew_every_s(settings)
    return {"deadman-renew": {"task": "qexec.deadman_renew", "schedule": every_s, "options": {"expires": every_s}}}
