"""Celery settings for `celery -A qexec`, all derived from qexec's own settings (no literals here)."""

from qexec.config import celery_config, get_settings

globals().update(celery_config(get_settings()))
