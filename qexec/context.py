"""The seam every step takes: a `Context` (settings, Redis, venue, clock), and `Pending` to run a step again later."""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)


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


def each_account(
    contexts: list[Context], step: Callable[[Context], dict[str, list[str]]], failed: str
) -> dict[str, list[str]]:
    """A beat pass over every account (`step` with each account's context), what it did by kind, all accounts
    together. An account whose pass fails (its venue down, its key revoked) is logged as `failed` and the others'
    passes still run."""
    done: dict[str, list[str]] = {}
    for ctx in contexts:
        try:
            report = step(ctx)
        except Exception:
            log.exception("%s account=%s: the pass failed, the next one tries again", failed, ctx.account)
            continue
        for kind, names in report.items():
            done.setdefault(kind, []).extend(names)
    return done
