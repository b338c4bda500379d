"""The seam every step takes: a `Context` (settings, Redis, venue, clock), and `Pending` to run a step again later."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import redis

from qexec import constants
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

    @property
    def account(self) -> str:
        """The account this step trades for (its settings', `Settings.for_account`)."""
        return self.settings.account

    def key(self, template: str, **fields: object) -> str:
        """A per-account state key of qexec/constants.py, formatted, for this step's account."""
        return constants.account_key(template.format(**fields), self.account)
