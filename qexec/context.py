"""The seam every step takes: a `Context` (settings, Redis, venue, clock), and `Pending` to run a step again later."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import redis

from qexec.config import Settings
from qexec.models import (
    utcnow,
)
from qexec.venue.base import Venue


class Pending(Exception):
    """Raised when a step must run again after `countdown_s` seconds."""

    def __init__(self, countdown_s: float, reason: str) -> None:
        super().__init__(reason)
        self.countdown_s = countdown_s
        self.reason = reason


@dataclass
class Context:
    """What a step works with: settings, qexec's Redis, the venue, and a clock."""

    settings: Settings
    redis: redis.Redis
    venue: Venue
    now: Callable[[], datetime] = field(default=utcnow)
