"""qexec's exceptions. Library and transport errors become these at the venue seam.

QexecError
├── ConfigError              bad settings; the process refuses to start
├── IntentError              an intent that cannot be parsed (dead-lettered)
└── VenueError               anything the venue said or failed to say
    ├── VenueUnavailable     the venue cannot be reached or fails its self-test
    ├── TemporaryVenueError  definitely not executed; retry with back-off
    │   └── RateLimited      429/418: wait `retry_after_s`
    ├── OrderRejected        the venue refused the order: terminal, with its code and message
    │   └── OrderNotFound    -2013 / -2011: no such order (ambiguous right after a submit)
    └── UnknownOutcome       the request may or may not have executed: look the order up first
"""

from __future__ import annotations


class QexecError(Exception):
    """Raised for every error qexec itself defines."""


class ConfigError(QexecError):
    """Raised when settings are missing or contradictory."""


class UnknownAccount(QexecError):
    """Work for an account this process has no settings for (not in its QEXEC_ACCOUNTS)."""


class IntentError(QexecError):
    """Raised when a stream entry or task argument is not a valid intent."""


class VenueError(QexecError):
    """Raised when a venue call fails; `code` and `http_status` are the venue's when it answered."""

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status

    def __str__(self) -> str:
        if self.code is not None:
            return f"{self.message} (code {self.code})"
        return self.message


class VenueUnavailable(VenueError):
    """Raised when the venue cannot be reached or fails its start-up checks."""


class TemporaryVenueError(VenueError):
    """Raised when a request surely did not execute and may be sent again after a pause."""


class RateLimited(TemporaryVenueError):
    """Raised on HTTP 429/418; nothing executed, and no request may go out for `retry_after_s`."""

    def __init__(
        self, message: str, *, retry_after_s: float, code: int | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.retry_after_s = retry_after_s


class OrderRejected(VenueError):
    """Raised when the venue refused a request for good (filters, margin, bad parameters)."""


class PositionModeChanged(OrderRejected):
    """Raised when the venue refused an order for its position side (-4061): the account changed position mode since
    qexec read it. Nothing executed; the venue seam has forgotten the mode it knew, so a resend reads it again."""


class OrderNotFound(OrderRejected):
    """Raised when the venue knows no such order (-2013 on query, -2011 on cancel)."""


class UnknownOutcome(VenueError):
    """Raised when a request may have executed: timeouts, resets, 5xx "Unknown error", -1007, -1006."""
