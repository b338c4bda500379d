"""A Redis that fails over (Redis Sentinel), named by one URL and turned into what each of qexec's clients wants.

`QEXEC_REDIS_URL` (and `QEXEC_BROKER_URL`) may be
`sentinel://[[user]:password@]host:port[,host:port...][/db]?master_name=NAME[&sentinel_password=SECRET]`: the
sentinels to ask, the name of the group they watch, and the master's own credentials and database. redis-py has no
URL for it (its `Sentinel` class is separate), kombu's `sentinel://` transport wants one URL per sentinel joined
by `;` and the group in its `master_name` transport option, and celery-redbeat takes its own `redis-sentinel://`
URL and options: this module is the one place that knows all three.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

if TYPE_CHECKING:
    import redis

SCHEME = "sentinel"
DEFAULT_PORT = 26379
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?$")
FORM = "sentinel://[[user]:password@]host:port[,host:port...][/db]?master_name=NAME"


@dataclass(frozen=True)
class SentinelURL:
    """The parts of a `sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def is_sentinel(url: str) -> bool:
    """True for a `sentinel://` URL."""
    return url.lower().startswith(f"{SCHEME}://")


def parse(url: str) -> SentinelURL:
    """The parts of a `sentinel://` URL; ValueError saying what is wrong (never echoing the URL: it may hold a
    password)."""
    if not is_sentinel(url):
        raise ValueError(f"it must have the form {FORM}")
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", parts.netloc
    sentinels = tuple(_host(one) for one in hosts.split(",")) if hosts else ()
    if not sentinels:
        raise ValueError(f"it names no sentinel (the form is {FORM})")
    query = parse_qs(parts.query)
    master = query.get("master_name", [""])[0]
    if not master:
        raise ValueError(f"it names no master group: add ?master_name=NAME (the form is {FORM})")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError("its database (the path) must be a number, such as /0")
    user, colon, password = userinfo.partition(":")
    if user and not colon:
        raise ValueError("it has a user name but no password (a password alone is written sentinel://:PASSWORD@host)")
    return SentinelURL(
        sentinels=sentinels,
        master_name=master,
        db=int(path or 0),
        username=unquote(user) or None,
        password=unquote(password) if colon else None,
        sentinel_password=query.get("sentinel_password", [None])[0],
    )


def _host(text: str) -> tuple[str, int]:
    found = _HOST.match(text.strip())
    if found is None or not 0 < int(found.group(2) or DEFAULT_PORT) < 65536:
        raise ValueError(f"a sentinel must be host:port (the form is {FORM})")
    return found.group(1).strip("[]"), int(found.group(2) or DEFAULT_PORT)


def client(url: str, **options: Any) -> redis.Redis:
    """A redis-py client for the group's current master: it asks the sentinels again whenever a connection fails,
    so it follows a failover. `options` are those of `redis.Redis` (timeouts, decoding)."""
    import redis  # noqa: PLC0415 - config reads the URL's parts, and the paper exchange imports config

    target = parse(url)
    sentinel_kwargs = {"password": target.sentinel_password} if target.sentinel_password else {}
    for key in ("socket_timeout", "socket_connect_timeout"):
        if key in options:
            sentinel_kwargs[key] = options[key]
    sentinels = redis.Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call,unused-ignore]
    found: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call,unused-ignore]
        target.master_name, db=target.db, username=target.username, password=target.password, **options
    )
    return found


def from_url(url: str, **options: Any) -> redis.Redis:
    """redis-py's `Redis.from_url`, which also takes a `sentinel://` URL (see `client`)."""
    import redis  # noqa: PLC0415 - as in `client`

    if is_sentinel(url):
        return client(url, **options)
    made: redis.Redis = redis.Redis.from_url(url, **options)
    return made


def kombu_url(url: str) -> str:
    """kombu's form: one `sentinel://` URL per sentinel, joined by `;`, each with the master's credentials and db."""
    target = parse(url)
    auth = ""
    if target.password is not None:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
    return ";".join(f"{SCHEME}://{auth}{_netloc(host, port)}/{target.db}" for host, port in target.sentinels)


def kombu_options(url: str) -> dict[str, Any]:
    """kombu's transport options for the group: its `master_name`, and the sentinels' own password if any."""
    target = parse(url)
    options: dict[str, Any] = {"master_name": target.master_name}
    if target.sentinel_password:
        options["sentinel_kwargs"] = {"password": target.sentinel_password}
    return options


def redbeat_settings(url: str) -> dict[str, Any]:
    """celery-redbeat's settings for the group (it reads `redis-sentinel://` plus its own options)."""
    target = parse(url)
    options: dict[str, Any] = {
        "sentinels": list(target.sentinels),
        "service_name": target.master_name,
        "db": target.db,
        "socket_timeout": 5,
    }
    if target.password is not None:
        options["password"] = target.password
    if target.username:
        options["username"] = target.username
    if target.sentinel_password:
        options["sentinel_kwargs"] = {"password": target.sentinel_password}
    return {"redbeat_redis_url": "redis-sentinel://", "redbeat_redis_options": options}


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
