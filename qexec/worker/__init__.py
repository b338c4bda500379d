"""The Celery side: the app, its configuration, the process's resources, thin task bodies, beat and the broker."""
