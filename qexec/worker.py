"""The Celery app (`celery -A qexec worker|beat|flower`) and its worker start-up."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from qexec import logs
from qexec.config import Settings, celery_config, get_settings


def create_app() -> Celery:
    """Build the Celery app from `celeryconfig` (itself read from `QEXEC_*` settings)."""
    celery_app = Celery("qexec", include=["qexec.tasks"])
    celery_app.config_from_object("celeryconfig")
    return celery_app


def configure(celery_app: Celery, settings: Settings) -> None:
    """Point an app at other settings (a process that sends chains for a stack it did not start)."""
    celery_app.conf.update(celery_config(settings))


app = create_app()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_worker_logs(logger: logging.Logger, **_: Any) -> None:
    secrets = list(get_settings().credentials()) if get_settings().api_key else []
    for handler in logger.handlers:
        handler.addFilter(logs.RedactSecrets(secrets))
