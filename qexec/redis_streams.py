"""Redis streams: the consumer group and its consumers' leases, the dispatch claim, dead letters, trimming, and the
exactly-once result publish."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
from redis.commands.core import Script

from qexec import alerts, constants, metrics, sentinel
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


# Whether the consumer of ARGV[g+1] still owns stream entry ARGV[g+3]: its lease (KEYS[4]) still holds its token
# ARGV[g+2], and the group ARGV[g] lists the entry as pending for it (XPENDING for that one id; Redis 6.2). A bridge
# frozen (SIGSTOP, a pause) while another reclaimed its entries wakes to find them gone, and does nothing with them.
# No consumer (ARGV[g+1] empty: `qexec.submit_intent`): nothing to check.
_OWNS = """
local function owns(g)
  local consumer = ARGV[g + 1]
  if consumer == '' then return true end
  if redis.call('GET', KEYS[4]) ~= ARGV[g + 2] then return false end
  local pending = redis.call('XPENDING', KEYS[3], ARGV[g], ARGV[g + 3], ARGV[g + 3], 1)
  return pending[1] ~= nil and pending[1][2] == consumer
end
"""

# The dispatch claim (constants.DISPATCH_KEY), one atomic step with the ownership check and the counts (hash field
# 'total' = metrics.UNLABELLED). Its value is "<owner> claimed [<lease key> <token>]" until the chain is started,
# then "<owner> started". A claim whose bridge still holds its lease (it froze between claim and dispatch) is BUSY,
# unless that holder (ARGV[9]) is known to be gone. KEYS: claim, duplicate marker, stream, lease, received,
# duplicate, redelivered counters. ARGV: ttl, may dispatch (1/0), group, consumer, token, entry id, owner, claim
# value, a holder's token known to be gone.
_CLAIM = (
    _OWNS
    + """
if not owns(3) then return {'lost', ''} end
local ttl, owner = ARGV[1], ARGV[7]
local held = redis.call('GET', KEYS[1])
if not held then
  if ARGV[2] ~= '1' then return {'unclaimed', ''} end
  redis.call('SET', KEYS[1], ARGV[8], 'EX', ttl)
  redis.call('HINCRBY', KEYS[5], 'total', 1)
  return {'new', ''}
end
local parts = {}
for word in string.gmatch(held, '%S+') do parts[#parts + 1] = word end
if parts[1] ~= owner then
  if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ttl) then
    redis.call('HINCRBY', KEYS[5], 'total', 1)
    redis.call('HINCRBY', KEYS[6], 'total', 1)
  else
    redis.call('HINCRBY', KEYS[7], 'total', 1)
  end
  return {'duplicate', parts[1]}
end
if parts[2] == 'started' then
  redis.call('HINCRBY', KEYS[7], 'total', 1)
  return {'started', ''}
end
if parts[3] and parts[4] ~= ARGV[5] and parts[4] ~= ARGV[9] and redis.call('GET', parts[3]) == parts[4] then
  -- Not an attempt of ours: give the delivery XAUTOCLAIM counted back, so waiting never dead-letters the entry.
  local pending = redis.call('XPENDING', KEYS[3], ARGV[3], ARGV[6], ARGV[6], 1)
  if pending[1] ~= nil then
    local count = math.max(tonumber(pending[1][4]) - 1, 1)
    redis.call('XCLAIM', KEYS[3], ARGV[3], ARGV[4], 0, ARGV[6], 'RETRYCOUNT', count, 'JUSTID')
  end
  return {'busy', parts[4]}
end
if ARGV[2] ~= '1' then return {'claimed', ''} end
redis.call('SET', KEYS[1], ARGV[8], 'KEEPTTL')
redis.call('HINCRBY', KEYS[7], 'total', 1)
return {'again', ''}
"""
)

# A dead letter written once per stream entry (or task), with the ownership check and the counts. KEYS: marker, DLQ,
# stream, lease, received, duplicate, redelivered, dead-lettered counters. ARGV: ttl, maxlen, fields (JSON list),
# group, consumer, token, entry id, count as received (1/0).
_DEAD_LETTER_ONCE = (
    _OWNS
    + """
if not owns(4) then return {'lost', ''} end
local existing = redis.call('GET', KEYS[1])
if existing then
  redis.call('HINCRBY', KEYS[7], 'total', 1)
  return {'again', existing}
end
local fields = cjson.decode(ARGV[3])
local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*'}
for i = 1, #fields do args[#args + 1] = fields[i] end
local id = redis.call(unpack(args))
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
redis.call('HINCRBY', KEYS[8], 'total', 1)
if ARGV[8] == '1' then redis.call('HINCRBY', KEYS[5], 'total', 1) end
return {'new', id}
"""
)

# Take a consumer name (or keep it): set when free, ours, or held by the holder ARGV[3] we know is gone; else the
# holder. KEYS: lease. ARGV: token, ttl ms, replaceable holder ('' for none).
_TAKE_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] or (ARGV[3] ~= '' and holder == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ''
end
return holder
"""

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# XGROUP DELCONSUMER every consumer but ARGV[3] idle for ARGV[2] ms with nothing pending. Atomic, so that no entry
# can be delivered to a consumer between the look and the delete (deleting a consumer drops its pending entries).
_FORGET_IDLE_CONSUMERS = """
local gone = {}
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local c = {}
  for i = 1, #info, 2 do c[info[i]] = info[i + 1] end
  if c['name'] ~= ARGV[3] and tonumber(c['pending']) == 0 and tonumber(c['idle']) >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c['name'])
    gone[#gone + 1] = c['name']
  end
end
return gone
"""


@dataclass(frozen=True)
class Lease:
    """A bridge's hold on its consumer name in a stream's group: `key` holds `token` while that bridge lives."""

    stream: str
    group: str
    consumer: str
    token: str

    @property
    def key(self) -> str:
        """The Redis key of this hold (constants.CONSUMER_LEASE_KEY)."""
        return constants.CONSUMER_LEASE_KEY.format(stream=self.stream, group=self.group, consumer=self.consumer)


class Claim(StrEnum):
    """What the dispatch claim found for an intent id, and so what its entry (or task) does next."""

    NEW = "new"  # taken in for the first time (counted as received): start the chain
    AGAIN = "again"  # this entry claimed it before, its chain not known to be started: start it (again)
    STARTED = "started"  # this entry's chain was started: acknowledge, nothing else
    DUPLICATE = "duplicate"  # another entry (or task) holds the intent id: acknowledge, no chain
    BUSY = "busy"  # another live bridge is starting this entry's chain (it froze mid-way): leave the entry pending
    LOST = "lost"  # this consumer no longer owns the entry (reclaimed by another, or acknowledged): leave it
    UNCLAIMED = "unclaimed"  # (final delivery) never claimed: dead-letter it, counted as received
    CLAIMED = "claimed"  # (final delivery) claimed, chain never started: dead-letter it, counted already


def claim_dispatch(
    r: redis.Redis,
    settings: Settings,
    intent_id: str,
    owner: str,
    *,
    lease: Lease | None = None,
    entry_id: str | None = None,
    may_dispatch: bool = True,
) -> tuple[Claim, str]:
    """Claim the right to start an intent's chain for `owner` (its stream entry or task id), counting it once as
    received, a duplicate or a redelivery; with `lease`, only while that consumer still owns stream entry `entry_id`.
    Returns the outcome and, for DUPLICATE and BUSY, who holds the claim."""
    key = constants.DISPATCH_KEY.format(intent_id=intent_id)
    duplicate = constants.DUPLICATE_KEY.format(intent_id=intent_id, owner=owner)
    value = f"{owner} claimed" + (f" {lease.key} {lease.token}" if lease else "")
    keys = [key, duplicate, *_lease_keys(lease), *_counter_keys()[:3]]
    args = [settings.intent_state_ttl_s, 1 if may_dispatch else 0, *_lease_args(lease, entry_id), owner, value, ""]
    outcome, holder = _script(r, _CLAIM)(keys=keys, args=args, client=r)
    if outcome == Claim.BUSY and holder_is_gone(str(holder)):  # it died between its claim and its dispatch
        args[-1] = str(holder)
        outcome, holder = _script(r, _CLAIM)(keys=keys, args=args, client=r)
    return Claim(outcome), str(holder)


def lease_token() -> str:
    """A fresh token for a consumer-name lease: this host, this process, and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def holder_is_gone(token: str) -> bool:
    """True when a lease's holder is a process of this host that no longer exists (a killed bridge); a holder on
    another host, or a live process, keeps what it holds until its lease expires."""
    host, _, rest = token.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def mark_started(pipe: redis.client.Pipeline, intent_id: str, owner: str) -> None:
    """Record, in the caller's pipeline, that `owner` started the intent's chain: a redelivery then starts nothing."""
    pipe.set(constants.DISPATCH_KEY.format(intent_id=intent_id), f"{owner} started", xx=True, keepttl=True)


def take_lease(r: redis.Redis, lease: Lease, ttl_s: float, replace: str = "") -> str:
    """Take or refresh a consumer name for `ttl_s` (replacing `replace`, a holder known to be gone); "" when it is
    ours, else who holds it."""
    return str(_script(r, _TAKE_LEASE)(keys=[lease.key], args=[lease.token, int(ttl_s * 1000), replace], client=r))


def release_lease(r: redis.Redis, lease: Lease) -> None:
    """Give a consumer name back (if it is still ours), so that the next bridge may take it at once."""
    _script(r, _RELEASE_LEASE)(keys=[lease.key], args=[lease.token], client=r)


def forget_idle_consumers(r: redis.Redis, stream: str, group: str, idle_s: float, keep: str) -> list[str]:
    """XGROUP DELCONSUMER the group's consumers (but `keep`) idle for `idle_s` with nothing pending; their names."""
    gone = _script(r, _FORGET_IDLE_CONSUMERS)(keys=[stream], args=[group, int(idle_s * 1000), keep], client=r)
    return [str(name) for name in gone]


def _lease_keys(lease: Lease | None) -> list[str]:
    return [lease.stream, lease.key] if lease else ["", ""]


def _lease_args(lease: Lease | None, entry_id: str | None) -> list[str]:
    return [lease.group, lease.consumer, lease.token, entry_id or ""] if lease else ["", "", "", ""]


def _counter_keys() -> list[str]:
    families = (metrics.INTENTS_RECEIVED, metrics.INTENTS_DUPLICATE, metrics.INTENTS_REDELIVERED)
    return [family.redis_key for family in (*families, metrics.INTENTS_DEAD_LETTERED)]


def server_ms(r: redis.Redis) -> int:
    """The Redis server's clock in epoch ms: the clock of the stream entry ids it makes."""
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def trim_intents(r: redis.Redis, settings: Settings) -> int:
    """XTRIM MINID ~ the intent stream: entries older than `intent_retention_s`, never one that qexec's group still
    has pending or has not delivered yet (XPENDING's smallest id, the group's last-delivered-id: both Redis 6.2);
    returns entries removed. Other readers of the stream get the retention window."""
    stream = settings.intent_stream
    floor = (server_ms(r) - settings.intent_retention_s * 1000, 0)
    try:
        groups: Any = r.xinfo_groups(stream)
    except redis.ResponseError:  # no stream yet
        return 0
    group = next((g for g in groups if g["name"] == settings.consumer_group), None)
    if group is None:  # nothing reads it yet: everything is undelivered
        return 0
    ms, seq = _parse_id(str(group["last-delivered-id"]))
    floor = min(floor, (ms, seq + 1))
    if int(group["pending"]):
        summary: Any = r.xpending(stream, settings.consumer_group)
        if summary.get("min"):
            floor = min(floor, _parse_id(str(summary["min"])))
    return int(r.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=True))


def trim_dead_letters(r: redis.Redis, settings: Settings) -> int:
    """XTRIM MINID ~ the dead-letter stream to `dlq_retention_s` (it is capped at `dlq_maxlen` on every write too)."""
    cutoff_ms = server_ms(r) - settings.dlq_retention_s * 1000
    return int(r.xtrim(settings.dlq_stream, minid=f"{cutoff_ms}-0", approximate=True))


def connect(url: str) -> redis.Redis:
    """A Redis client for qexec's own keys (strings decoded, reconnecting, bounded waits); for a `sentinel://` URL,
    a client of the group's current master that follows a failover (qexec/sentinel.py)."""
    return sentinel.from_url(
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
    r: redis.Redis,
    settings: Settings,
    *,
    error: str,
    fields: Mapping[str, Any],
    entry_id: str | None,
    source: str,
    lease: Lease | None = None,
    count_received: bool = True,
) -> str | None:
    """Write a malformed intent and its error to the dead-letter stream, once per stream entry (or task), counted as
    received unless `count_received` is false (its claim counted it); returns the DLQ entry id, or None when `lease`
    no longer owns the entry (it is another consumer's now, or acknowledged)."""
    entry = {
        "error": error[:2000],
        "source": source,
        "entry_id": entry_id or "",
        # The values as given (a number stays a number), long text cut: the entry must be fixable and re-sendable.
        "original": json.dumps({str(k): _bounded(v) for k, v in fields.items()}, default=str)[:20000],
    }
    flat: list[str] = []
    for key, value in entry.items():
        flat += [key, value]
    marker = constants.DEAD_LETTER_KEY.format(owner=entry_id or source)
    keys = [marker, settings.dlq_stream, *_lease_keys(lease), *_counter_keys()]
    args: list[str | int] = [settings.intent_state_ttl_s, settings.dlq_maxlen, json.dumps(flat)]
    args += [*_lease_args(lease, entry_id), 1 if count_received else 0]
    outcome, dlq_id = _script(r, _DEAD_LETTER_ONCE)(keys=keys, args=args, client=r)
    if outcome == "new":
        alerts.raise_alert(r, settings, alerts.dead_letter(str(dlq_id), error, source, entry_id))
    return None if outcome == "lost" else str(dlq_id)


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


_scripts: dict[str, Script] = {}


def _script(r: redis.Redis, source: str) -> Script:
    """A script, run by its SHA (EVALSHA) rather than sent whole each time; registered on first use."""
    script = _scripts.get(source)
    if script is None:  # one registration per process serves every client
        script = _scripts[source] = r.register_script(source)
    return script


def _publish_once_script(r: redis.Redis) -> Script:
    """The publish script."""
    return _script(r, _PUBLISH_ONCE)
