"""Logging: proof lines with one greppable word each, and a filter that keeps secrets out of every log."""

from __future__ import annotations

import logging
import re
from typing import Any

proof_log = logging.getLogger("qexec.proof")

# The proof words (issue: every step of an intent's life is greppable).
INTENT_RECEIVED = "INTENT_RECEIVED"
INTENT_DUPLICATE = "INTENT_DUPLICATE"
INTENT_REJECTED = "INTENT_REJECTED"
INTENT_DEAD_LETTER = "INTENT_DEAD_LETTER"
ORDER_SUBMIT = "ORDER_SUBMIT"
ORDER_RESPONSE = "ORDER_RESPONSE"
ORDER_LOOKUP = "ORDER_LOOKUP"
ORDER_CANCEL = "ORDER_CANCEL"
ORDER_ERROR = "ORDER_ERROR"
FILL_PENDING = "FILL_PENDING"
FILL_CONFIRMED = "FILL_CONFIRMED"
EXECUTION_PUBLISHED = "EXECUTION_PUBLISHED"


def proof(event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one proof line: `EVENT key=value ...` (None values left out)."""
    parts = [event]
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if not text or any(c.isspace() for c in text) or '"' in text:
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    proof_log.log(level, " ".join(parts))


class RedactSecrets(logging.Filter):
    """Replaces known secret values, and anything shaped like a signature, a key or a URL's password, with `***`."""

    _SHAPES = re.compile(
        r"(signature=)[0-9a-fA-F]{16,}"
        r"|(X-MBX-APIKEY['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9]{16,}"
        r"|([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)"  # redis://user:PASSWORD@host (Celery masks its own as **)
    )

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return self._SHAPES.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._clean(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure(level: str = "INFO", secrets: list[str] | None = None) -> None:
    """Root logging for a qexec process: one line per record, secrets redacted on every handler."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())
    install_redaction(secrets or [])


def install_redaction(secrets: list[str]) -> None:
    """Attach the redaction filter to every root handler (idempotent)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets(secrets))
