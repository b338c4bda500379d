"""The Celery app (`celery -A qexec worker|beat|flower`) and its worker start-up."""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_after_setup,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)
from pydantic import ValidationError

from qexec import logs, metrics, redis_streams
from qexec.config import Settings, get_settings
from qexec.ops import flower_auth, notify
from qexec.ops.selftest import venue_or_exit
from qexec.venue import feed
from qexec.worker import takeover
from qexec.worker.celeryconf import celery_config

EXIT_INVALID_SETTINGS = 1
REPR_MAXSIZE = 160  # characters of a task's arguments (and, for qexec's steps, result) kept for logs and Flower


def settings_or_exit() -> Settings:
    """This process's settings; invalid ones end it with a clear message on stderr instead of a traceback."""
    try:
        return get_settings()
    except ValidationError as exc:
        sys.stderr.write(f"FATAL_INVALID_SETTINGS invalid QEXEC_* settings:\n{exc}\n")
        raise SystemExit(EXIT_INVALID_SETTINGS) from None


def create_app() -> Celery:
    """Build the Celery app from `celeryconfig` (itself read from `QEXEC_*` settings, checked first)."""
    settings_or_exit()
    celery_app = Celery("qexec", include=["qexec.worker.tasks"])
    celery_app.config_from_object("celeryconfig")
    # Every message carries a printable copy of its arguments (for logs and Flower); a ticket is ~1 KB of JSON, and
    # printing it whole on every send cost more CPU than the send itself. The head names the intent.
    celery_app.amqp.argsrepr_maxsize = REPR_MAXSIZE
    celery_app.amqp.kwargsrepr_maxsize = REPR_MAXSIZE
    return celery_app


def configure(celery_app: Celery, settings: Settings) -> None:
    """Point an app at other settings (a process that sends chains for a stack it did not start)."""
    celery_app.conf.update(celery_config(settings))


app = create_app()

_refusal = flower_auth.check(sys.argv, os.environ, get_settings())
if _refusal is not None:
    print(_refusal, file=sys.stderr)
    sys.exit(2)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_worker_logs(logger: logging.Logger, **_: Any) -> None:
    secrets = get_settings().log_secrets()
    secrets += notify.url_secrets(get_settings())  # the alert URLs' tokens
    for handler in logger.handlers:
        handler.addFilter(logs.RedactSecrets(secrets))


@celeryd_after_setup.connect
def _check_venue_before_consuming(**_: Any) -> None:
    # `celeryd_after_setup` is sent only by `celery worker` (not beat, flower, call or inspect), after logging is
    # set up and before the pool and the consumer start; a SystemExit raised here becomes the worker's exit code
    # (WorkController.start). worker_init and celeryd_init would exit too, but before logging exists.
    settings = get_settings()
    venue_or_exit(settings, redis_streams.connect(settings.redis_url))  # its calls spend from the shared venue budget


@celeryd_after_setup.connect
def _start_beating(sender: str, **_: Any) -> None:
    # Before the consumer starts, so that every message this worker takes names its node (qexec/worker/takeover.py).
    settings = get_settings()
    takeover.start_beating(redis_streams.connect(settings.redis_url), settings, sender)


@worker_ready.connect
@worker_process_init.connect
def _start_feed(**_: Any) -> None:
    # The process that runs the tasks keeps the venue's streams open (threads pool: the worker itself; prefork:
    # each child). Until the feed is live, and whenever it drops, the steps ask the venue over REST.
    from qexec.pipeline import fill_events  # noqa: PLC0415 - with the tasks
    from qexec.venue.binance import thread_venue  # noqa: PLC0415 - python-binance loads with the tasks, not with beat
    from qexec.worker.runtime import context, qexec_redis  # noqa: PLC0415 - with the venue's client

    for name in get_settings().account_names:  # one user-data stream per account
        settings = get_settings().for_account(name)
        started = feed.start(settings, functools.partial(thread_venue, settings, qexec_redis()))
        # results and exits from the venue's events (confirm_fill stays the fallback)
        fill_events.listen(started, functools.partial(context, name))
        if started is not None:  # its state, for the bridge's /metrics (qexec_venue_stream_up)
            metrics.report_feed_every(qexec_redis(), started.status, name)


@worker_shutdown.connect
def _stop_feed(**_: Any) -> None:
    from qexec.venue import ws_orders  # noqa: PLC0415 - python-binance loads with the tasks, not with beat

    feed.stop_all()
    ws_orders.close_all()  # the WebSocket API connections orders went over, if any
    takeover.stop_beating()
