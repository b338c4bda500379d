"""Celery settings for `celery -A qexec`, all derived from qexec's own settings (no literals here)."""

from qexec.config import settings_or_exit
from qexec.worker.celeryconf import celery_config

globals().update(celery_config(settings_or_exit()))

# celery-redbeat's scheduler, kept alive through a Redis restart (qexec/worker/beat.py); the settings above are its.
beat_scheduler = "qexec.worker.beat:ResilientRedBeatScheduler"
