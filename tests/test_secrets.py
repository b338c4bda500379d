"""Secrets: a whole run with a distinctive API key and secret leaves neither anywhere it wrote.

One pipeline (worker and bridge at DEBUG, Flower, `celery call`, `qexec selftest`/`status`) runs against a paper
exchange that accepts only that key pair, through fills, venue rejections, unknown outcomes, a clock-drift retry,
malformed entries and a crashing task. Then every log, every Redis value and Flower's API are searched for the key
and the secret in their obvious encodings.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from paper_fixtures import free_port
from private_stack import private_stack
from stack_fixtures import ROOT, Stack, unique_id, wait_for_line

from qexec import logs
from qexec.config import Settings
from qexec.models import client_order_id
from qexec.venue.binance import BinanceVenue
from qexec.worker.command import worker_argv

pytestmark = pytest.mark.slow

API_KEY = "QxKey" + secrets.token_hex(16)
API_SECRET = "QxSecret" + secrets.token_hex(24)
FLOWER_AUTH = ("ops", "flower-" + secrets.token_hex(8))


def spellings(value: str) -> set[bytes]:
    """The value and the transformations a leak could take: case, base64, hex, reversed, a long prefix."""
    raw = value.encode()
    forms = {
        raw,
        raw.lower(),
        raw.upper(),
        raw[::-1],
        raw[:16],
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        raw.hex().encode(),
    }
    return {form for form in forms if len(form) >= 12}


def hits(blob: bytes) -> list[str]:
    """Which secret spellings occur in `blob` (case-insensitively for the text forms)."""
    lowered = blob.lower()
    found = []
    for name, value in (("key", API_KEY), ("secret", API_SECRET)):
        for form in spellings(value):
            if form in blob or form.lower() in lowered:
                found.append(f"{name}:{form[:20]!r}")
    return found


def redis_dump(client: redis.Redis) -> dict[str, bytes]:
    """Every key of the database with its value, whatever its type, as bytes."""
    out: dict[str, bytes] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        value: Any
        if kind == b"string":
            value = client.get(key)
        elif kind == b"hash":
            value = client.hgetall(key)
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"set":
            value = client.smembers(key)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            value = client.xrange(key)
        else:
            value = kind
        out[key.decode(errors="replace")] = key + b"=" + repr(value).encode()
    return out


def now_iso(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def test_a_whole_run_leaves_the_api_key_and_secret_nowhere(
    start_paper_server: Callable[..., Any], tmp_path: Path
) -> None:
    """Logs, results, dead letters, every Redis value, task messages and Flower hold neither key nor secret."""
    paper = start_paper_server("--tick-ms", "0", "--api-key", API_KEY, "--api-secret", API_SECRET)
    extra = {
        "QEXEC_API_KEY": API_KEY,
        "QEXEC_API_SECRET": API_SECRET,
        "QEXEC_FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH),
    }
    flower_port = free_port()
    outputs: list[bytes] = []
    with private_stack(paper, tmp_path, extra, worker=False, bridge=False) as stack:
        # Given a worker and a bridge logging everything, and Flower watching the tasks
        worker_args = worker_argv(concurrency=4, node_name="secrets@%h", log_level="DEBUG", extra=["--without-gossip"])
        stack.spawn("worker", worker_args, "ready.")
        stack.spawn("bridge", [sys.executable, "-m", "qexec.cli", "bridge", "--log-level", "DEBUG"], "reading")
        flower_cmd = [sys.executable, "-m", "celery", "-A", "qexec", "flower", "--address=127.0.0.1"]
        stack.spawn("flower", [*flower_cmd, f"--port={flower_port}"], "Visit me at")
        # When intents that fill, fail, get rejected or are malformed go through it
        ids = drive(stack)
        for iid in ids:
            stack.wait_result(iid, timeout_s=60)
        outputs += run_commands(stack)
        flower = flower_views(flower_port)
        dump = redis_dump(redis.Redis.from_url(stack.settings.redis_url))
        logs = {path.name: path.read_bytes() for path in tmp_path.glob("*.log")}
    logs["paper"] = paper.output().encode()
    # Then the run did what it should (so the search below looked at real traffic)
    assert "ORDER_RESPONSE status=FILLED" in logs["worker.log"].decode(errors="replace")
    assert "INTENT_DEAD_LETTER" in logs["bridge.log"].decode(errors="replace")
    assert any(b"qexec.place_order" in view for view in flower.values())
    assert any("trade.intent.dlq" in key for key in dump)
    # ...and neither the key nor the secret is anywhere in it
    found = {name: hits(blob) for name, blob in {**logs, **flower, **dump}.items()}
    found.update({f"command-{n}": hits(out) for n, out in enumerate(outputs)})
    assert {name: where for name, where in found.items() if where} == {}


def drive(stack: Stack) -> list[str]:
    """Intents covering each outcome; returns the ids that end in a result."""
    fault = stack.paper.add_fault
    good, rejected, unknown, drift, stale = (unique_id(n) for n in ("good", "rej", "unk", "drift", "stale"))
    fault(endpoint="POST /fapi/v1/order", kind="reject", code=-2019, msg="Margin is insufficient.",
          client_order_id=client_order_id(rejected))  # fmt: skip
    fault(endpoint="POST /fapi/v1/order", kind="unknown_after", client_order_id=client_order_id(unknown))
    fault(endpoint="POST /fapi/v1/order", kind="timestamp", client_order_id=client_order_id(drift))
    for iid, change in (
        (good, {}),
        (rejected, {}),
        (unknown, {}),
        (drift, {}),
        (stale, {"timestamp": now_iso(hours=-2)}),
    ):
        body = {"intent_id": iid, "symbol": "ETHUSDT", "side": "BUY", "position_size_usd": 60.0,
                "timestamp": now_iso()} | change  # fmt: skip
        stack.inject(body)
    stack.redis.xadd(stack.settings.intent_stream, {"payload": "{not json"})
    stack.redis.xadd(stack.settings.intent_stream, {"symbol": "ETHUSDT", "side": "UP", "position_size_usd": "-1"})
    return [good, rejected, unknown, drift, stale]


def run_commands(stack: Stack) -> list[bytes]:
    """`celery call` (valid, malformed, and a task handed garbage), `qexec selftest` and `qexec status`."""
    celery = [sys.executable, "-m", "celery", "-A", "qexec", "call"]
    commands = [
        [*celery, "qexec.submit_intent", "--kwargs", json.dumps({"symbol": "ETHUSDT", "side": "SIDEWAYS"})],
        [*celery, "qexec.place_order", "--args", json.dumps(["not a ticket"])],
        [sys.executable, "-m", "qexec.cli", "selftest"],
        [sys.executable, "-m", "qexec.cli", "status"],
    ]
    outputs = []
    for command in commands:
        done = subprocess.run(command, cwd=ROOT, env=stack.env, capture_output=True, timeout=90, check=False)
        outputs.append(done.stdout + done.stderr)
    wait_for_line(stack.logs_dir / "worker.log", "qexec.place_order", stack.processes["worker"], 30)
    return outputs


def flower_views(port: int) -> dict[str, bytes]:
    """What Flower shows about tasks and workers, through its API."""
    base = f"http://127.0.0.1:{port}"
    views = {}
    for path in ("/api/tasks", "/api/workers?refresh=1", "/api/task/types", "/dashboard?json=1"):
        answer = requests.get(base + path, auth=FLOWER_AUTH, timeout=30)
        views[f"flower{path}"] = answer.content
    tasks = json.loads(views["flower/api/tasks"])
    for task_id in list(tasks)[:20]:
        views[f"flower-task-{task_id}"] = requests.get(
            f"{base}/api/task/info/{task_id}", auth=FLOWER_AUTH, timeout=30
        ).content
    return views


def test_settings_venue_and_errors_never_show_the_secret_in_a_repr(paper_exchange: Any) -> None:
    """repr/str of Settings, of a BinanceVenue and of a venue error carry no key or secret."""
    settings = Settings(api_key=API_KEY, api_secret=API_SECRET, exchange_url=paper_exchange.url)
    venue = BinanceVenue(settings)
    with pytest.raises(Exception) as caught:
        venue.balances()  # the session's paper exchange knows another key: -2015
    shown = " ".join([repr(settings), str(settings), repr(venue), repr(caught.value), str(caught.value)])
    assert hits(shown.encode()) == []
    with pytest.raises(ValueError) as invalid:
        Settings(api_key=API_KEY)  # no secret: refused, and the error does not echo the input
    assert hits(str(invalid.value).encode()) == []


def test_a_url_password_in_any_log_line_is_masked() -> None:
    """The redaction filter on every qexec handler masks the password of any URL a log line carries."""
    password = secrets.token_hex(8)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RedactSecrets([]))
    logger = logging.getLogger("qexec.test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("Cannot connect to %s: refused", f"rediss://user:{password}@10.0.0.7:6380/0")
    finally:
        logger.removeHandler(handler)
    assert password not in stream.getvalue()
    assert "rediss://user:***@10.0.0.7:6380/0" in stream.getvalue()
