"""qexec: trade intents from a Redis stream become confirmed Binance USD-M Futures executions."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `celery -A qexec` looks for `qexec.app`; build the Celery app only when it is asked for, so that
    # `qexec paper` and the models import without Celery's start-up cost.
    if name in ("app", "celery_app"):
        # Invalid settings end `celery -A qexec ...` here with one line and exit 1: later, Celery would swallow the
        # error in a signal handler, or build an amqp:// broker from a broken QEXEC_REDIS_URL and print it.
        from qexec.config import settings_or_exit

        settings_or_exit()
        from qexec.worker.app import app

        return app
    raise AttributeError(name)
