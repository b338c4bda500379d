"""The chain's steps as plain functions, with no Celery in them: admit, place, confirm, publish."""
