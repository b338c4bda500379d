"""Redis streams: the consumer group, dead letters, and the exactly-once result publish."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis
from redis.commands.core import Script

from qexec import constants, metrics
from qexec.config import Settings

# SET-if-absent and XADD in one atomic step: a crash can never leave a result published twice or
# marked published without being written.
_PUBLISH_ONCE = """
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
local fields = cjson.decode(ARGV[3])
local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*'}
for i = 1, #fields do args[#args + 1] = fields[i] end
local id = redis.call(unpack(args))
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return {1, id}
"""


def connect(url: str) -> redis.Redis:
    """A Redis client for qexec's own keys (strings decoded, reconnecting, bounded waits)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        # A producer's invalid UTF-8 must not break every read of the stream (the bridge would stall on it):
        # such bytes arrive as `\x80` escapes, and the entry is dead-lettered like any other malformed one.
        encoding_errors="backslashreplace",
        socket_timeout=15,
        socket_connect_timeout=5,
        health_check_interval=10,
        retry_on_timeout=True,
    )


def ensure_group(r: redis.Redis, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) unless it exists."""
    try:
        r.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def publish_once(r: redis.Redis, settings: Settings, intent_id: str, fields: Mapping[str, str]) -> tuple[bool, str]:
    """XADD a result unless this intent already has one; returns (written now?, entry id)."""
    key = constants.PUBLISHED_KEY.format(intent_id=intent_id)
    return publish_once_at(
        r, key, settings.result_stream, fields, ttl_s=settings.intent_state_ttl_s, maxlen=settings.result_maxlen
    )


def dead_letter(
    r: redis.Redis, settings: Settings, *, error: str, fields: Mapping[str, Any], entry_id: str | None, source: str
) -> str:
    """Write a malformed intent and its error to the dead-letter stream; returns the DLQ entry id."""
    entry: dict[Any, Any] = {
        "error": error[:2000],
        "source": source,
        "entry_id": entry_id or "",
        # The values as given (a number stays a number), long text cut: the entry must be fixable and re-sendable.
        "original": json.dumps({str(k): _bounded(v) for k, v in fields.items()}, default=str)[:20000],
    }
    dlq_id = str(r.xadd(settings.dlq_stream, dict(entry), maxlen=settings.dlq_maxlen, approximate=True))
    metrics.intent_dead_lettered(r)
    return dlq_id


def _bounded(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        value = value.decode(errors="backslashreplace")
    if isinstance(value, str):
        return value[:4096]
    return value if isinstance(value, int | float | bool | list | dict | None) else str(value)[:4096]


def publish_once_at(
    r: redis.Redis, marker: str, stream: str, fields: Mapping[str, str], *, ttl_s: int, maxlen: int
) -> tuple[bool, str]:
    """XADD an entry unless `marker` says it was written already; returns (written now?, entry id)."""
    flat: list[str] = []
    for key, value in fields.items():
        flat += [key, value]
    written, entry_id = _publish_once_script(r)(keys=[marker, stream], args=[ttl_s, maxlen, json.dumps(flat)], client=r)
    return bool(written), str(entry_id)


_publish_once: Script | None = None


def _publish_once_script(r: redis.Redis) -> Script:
    """The publish script, run by its SHA (EVALSHA) rather than sent whole each time; loaded on first use."""
    global _publish_once  # noqa: PLW0603 - one registration per process serves every client
    if _publish_once is None:
        _publish_once = r.register_script(_PUBLISH_ONCE)
    return _publish_once
