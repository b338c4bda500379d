"""Alert delivery (the `qexec.send_alert` task's body): apprise to each `QEXEC_ALERT_URLS` destination, rate-limited
per destination in Redis, failures logged and counted; the URLs, which carry their service's tokens, only ever printed
masked."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import time
from typing import Any

import redis

from qexec import alerts, constants, logs
from qexec.alerts import Alert, Severity
from qexec.config import Settings

log = logging.getLogger(__name__)

SEND_RETRIES = 5  # a destination that fails (5xx, down) is tried this many more times, with a growing countdown
BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 120.0
# Over a destination's rate: alerts this grave wait for the next minute (a retry); the others are dropped, counted.
DEFERRED_WHEN_LIMITED = frozenset({Severity.ERROR, Severity.CRITICAL})
SENDER_LOGGERS = ("apprise", "urllib3.connectionpool")  # the loggers that may print a destination's URL
_NOTIFY_TYPES = {  # apprise's NotifyType values
    Severity.INFO: "info",
    Severity.WARNING: "warning",
    Severity.ERROR: "failure",
    Severity.CRITICAL: "failure",
}


def destination_id(url: str) -> str:
    """A destination's stable, printable id: a hash of its URL (the URL itself is a secret)."""
    return hashlib.sha256(url.encode()).hexdigest()[:10]


def masked(url: str) -> str:
    """A destination fit for printing: its scheme and id, nothing of its host, path or query (they hold tokens)."""
    scheme = url.partition("://")[0] if "://" in url else "?"
    return f"{scheme}://***#{destination_id(url)}"


def destinations(settings: Settings) -> dict[str, str]:
    """The configured destinations by id."""
    return {destination_id(url): url for url in settings.alert_url_list}


def url_secrets(settings: Settings) -> list[str]:
    """Every part of every alert URL that may be a token (what the log filter replaces by `***`): all but the
    scheme, addresses and `localhost`, in pieces of at least six characters."""
    found: list[str] = []
    for url in settings.alert_url_list:
        rest = url.partition("://")[2] or url
        for piece in re.split(r"[/:@?&=#,;]+", rest):
            if len(piece) >= 6 and piece != "localhost" and not _is_address(piece):
                found.append(piece)
    return found


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def redact_apprise_logs(settings: Settings) -> None:
    """Keep the alert URLs' tokens out of the log lines of apprise and of the HTTP client under it (urllib3 logs each
    request's path at DEBUG), whatever handlers the process has: a filter on those loggers, replaced for `settings`."""
    for name in SENDER_LOGGERS:
        sender_log = logging.getLogger(name)
        for old in [f for f in sender_log.filters if isinstance(f, logs.RedactSecrets)]:
            sender_log.removeFilter(old)
        sender_log.addFilter(logs.RedactSecrets(url_secrets(settings)))


def backoff_s(retries: int) -> float:
    """The countdown before retry number `retries + 1`: doubling from BACKOFF_FIRST_S, capped."""
    return float(min(BACKOFF_FIRST_S * 2**retries, BACKOFF_MAX_S))


def deliver(r: redis.Redis, settings: Settings, data: dict[str, Any], only: list[str] | None = None) -> list[str]:
    """Send the alert to each destination (or those of `only`, by id); the ids to try again later."""
    alert = Alert.model_validate(data)
    redact_apprise_logs(settings)
    again: list[str] = []
    for dest_id, url in destinations(settings).items():
        if only is not None and dest_id not in only:
            continue
        if not _within_rate(r, settings, dest_id):
            deferred = alert.severity in DEFERRED_WHEN_LIMITED
            log.warning(
                "ALERT_RATE_LIMITED kind=%s destination=%s: over %d a minute, %s",
                alert.kind.value,
                masked(url),
                settings.alert_rate_per_min,
                "waiting for the next minute" if deferred else "dropped",
            )
            alerts.count(r, "rate_limited")
            if deferred:
                again.append(dest_id)
            continue
        outcome = _send(url, alert)
        alerts.count(r, outcome)
        if outcome == "sent":
            log.info("ALERT_SENT kind=%s event=%s destination=%s", alert.kind.value, alert.event, masked(url))
        elif outcome == "failed":
            log.warning("ALERT_SEND_FAILED kind=%s event=%s destination=%s", alert.kind.value, alert.event, masked(url))
            again.append(dest_id)
    return again


def gave_up(r: redis.Redis, settings: Settings, data: dict[str, Any], left: list[str]) -> None:
    """The retries are spent: log and count each destination the alert never reached."""
    by_id = destinations(settings)
    for dest_id in left:
        log.error(
            "ALERT_GIVEN_UP kind=%s event=%s destination=%s after %d retries",
            data.get("kind"),
            data.get("event"),
            masked(by_id.get(dest_id, "?")),
            SEND_RETRIES,
        )
        alerts.count(r, "given_up")


def _within_rate(r: redis.Redis, settings: Settings, dest_id: str) -> bool:
    """Count one send to the destination in this minute; False when that goes over QEXEC_ALERT_RATE_PER_MIN."""
    minute = int(time.time() // 60)
    key = constants.ALERT_RATE_KEY.format(destination=dest_id, minute=minute)
    try:
        pipe = r.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 120)
        sent, _ = pipe.execute()
    except redis.RedisError as exc:
        log.warning("ALERT_RATE_UNAVAILABLE error=%r: sending without the rate limit", exc)
        return True
    return int(sent) <= settings.alert_rate_per_min


def _send(url: str, alert: Alert) -> str:
    """One notification through apprise: `sent`, `failed` (apprise logs why; tried again) or `bad_url` (never)."""
    import apprise  # noqa: PLC0415 - its plugins load in the worker that sends, not in every process that imports this

    sender = apprise.Apprise()
    if not sender.add(url):
        log.error("ALERT_BAD_URL destination=%s: apprise does not know this URL", masked(url))
        return "bad_url"
    took = sender.notify(title=alert.title, body=alert.body, notify_type=_NOTIFY_TYPES[alert.severity])
    return "sent" if took else "failed"
