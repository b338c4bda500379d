"""Pytest fixtures for a RabbitMQ broker: a vhost of the test's own on the machine's RabbitMQ (skipped without one)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest


def _rabbitmq_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return shutil.which("rabbitmqctl") is not None
    except OSError:
        return False


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    """A vhost of our own on the local RabbitMQ (created and deleted here; nobody else's queues are touched)."""
    if not _rabbitmq_reachable():
        pytest.skip("RabbitMQ is not reachable on 127.0.0.1:5672 with rabbitmqctl on PATH")
    vhost = f"qexec-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, timeout=60, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        timeout=60,
        capture_output=True,
    )
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, timeout=60, capture_output=True)
