"""Settings: the venue's identity comes from where the requests go, and every URL setting is checked at load, by
the real `qexec` and `celery -A qexec` processes, with one line naming the variable and never its password."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from paper_fixtures import PaperExchange, free_port, qexec_command
from stack_fixtures import ROOT, clean_env

from qexec import constants
from qexec.config import MAINNET_ARMING_PHRASE, Settings, masked_url
from qexec.ops.redisserver import find_server_binary
from qexec.venue.binance import BinanceVenue
from qexec.worker.command import CELERY, WITHOUT_PEERS, worker_argv

RUN_TIMEOUT_S = 60
READY_TIMEOUT_S = 60
PASSWORD = "s3cret-Pw-" + uuid.uuid4().hex[:8]  # what no output may show
UNREACHABLE_REDIS = "redis://127.0.0.1:9/0"
KEYS = {"QEXEC_API_KEY": "k" * 64, "QEXEC_API_SECRET": "s" * 64}
PAPER_KEYS = {"QEXEC_API_KEY": constants.PAPER_API_KEY, "QEXEC_API_SECRET": constants.PAPER_API_SECRET}


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command to its end in a clean QEXEC_* environment, stdout and stderr together."""
    return subprocess.run(
        args,
        cwd=ROOT,
        env=clean_env({"QEXEC_REDIS_URL": UNREACHABLE_REDIS, **env}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def qexec(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real `qexec` command."""
    return run([*qexec_command(), *args], **env)


def celery(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real `celery -A qexec` command."""
    return run([sys.executable, "-m", "celery", "-A", "qexec", *args], **env)


def lines_of(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The non-empty lines a process printed."""
    return [line for line in done.stdout.splitlines() if line.strip()]


# -- the venue's identity -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "url"),
    [
        ("paper", "https://fapi.binance.com"),
        ("testnet", "https://fapi.binance.com"),
        ("demo", "https://fapi1.binance.com/"),
        ("testnet", "https://FAPI3.Binance.com."),
    ],
)
def test_a_mainnet_url_needs_arming_whatever_the_mode(mode: str, url: str) -> None:
    """`qexec selftest` refuses a Binance mainnet QEXEC_EXCHANGE_URL without QEXEC_MAINNET_CONFIRM, in any mode."""
    done = qexec("selftest", QEXEC_MODE=mode, QEXEC_EXCHANGE_URL=url, **KEYS)
    assert done.returncode == 1, done.stdout
    assert f"QEXEC_MAINNET_CONFIRM={MAINNET_ARMING_PHRASE}" in done.stdout and "Binance mainnet" in done.stdout
    assert "no real money" not in done.stdout and "SELFTEST_OK" not in done.stdout
    assert len(lines_of(done)) == 1 and "Traceback" not in done.stdout


def test_paper_mode_refuses_a_venue_that_is_not_local_even_when_armed() -> None:
    """Paper means the local paper exchange: an armed mainnet URL in paper mode is refused, naming the mode to set."""
    done = qexec(
        "selftest", QEXEC_EXCHANGE_URL="https://fapi.binance.com", QEXEC_MAINNET_CONFIRM=MAINNET_ARMING_PHRASE, **KEYS
    )
    assert done.returncode == 1, done.stdout
    assert "QEXEC_MODE=paper trades on a local paper exchange" in done.stdout and "QEXEC_MODE=mainnet" in done.stdout


@pytest.mark.parametrize("process", ["worker", "bridge"])
def test_the_worker_and_the_bridge_refuse_an_unarmed_mainnet_url_in_testnet_mode(process: str) -> None:
    """The worker and the bridge guard mainnet by where the orders go, not by QEXEC_MODE alone."""
    env = {"QEXEC_MODE": "testnet", "QEXEC_EXCHANGE_URL": "https://fapi2.binance.com", **KEYS}
    if process == "worker":
        done = run(worker_argv(concurrency=1, extra=WITHOUT_PEERS), **env)
        assert "FATAL_INVALID_SETTINGS" in done.stdout
    else:
        done = run([sys.executable, "-m", "qexec.cli", "bridge"], **env)
    assert done.returncode == 1, done.stdout
    assert "QEXEC_MAINNET_CONFIRM" in done.stdout and len(lines_of(done)) == 1
    assert "k" * 64 not in done.stdout


def test_verify_wants_allow_mainnet_when_the_url_is_mainnet_in_testnet_mode() -> None:
    """An armed mainnet URL in testnet mode is mainnet to verify too: it sends nothing without --allow-mainnet."""
    done = qexec(
        "verify",
        "--count",
        "1",
        QEXEC_MODE="testnet",
        QEXEC_EXCHANGE_URL="https://fapi.binance.com",
        QEXEC_MAINNET_CONFIRM=MAINNET_ARMING_PHRASE,
        **KEYS,
    )
    assert done.returncode == 2, done.stdout
    assert "--allow-mainnet" in done.stdout


def test_selftest_names_the_host_when_the_mode_url_is_overridden(paper_exchange: PaperExchange) -> None:
    """Testnet mode sent to another host says so on every line: `testnet@<host>`, never plain `testnet`."""
    done = qexec("selftest", QEXEC_MODE="testnet", QEXEC_EXCHANGE_URL=paper_exchange.url, **PAPER_KEYS)
    assert done.returncode == 0, done.stdout
    host = paper_exchange.url.removeprefix("http://")
    lines = lines_of(done)
    assert lines[0].startswith(f"mode           testnet@{host} - QEXEC_MODE=testnet sent to {host}")
    assert "test funds" not in lines[0]
    assert lines[-1] == f"SELFTEST_OK mode=testnet@{host} host={host}"


def test_results_and_logs_carry_the_same_label_as_selftest(paper_exchange: PaperExchange) -> None:
    """The venue's `mode` (the results' field) and its log label come from the one identity."""
    settings = Settings(
        mode="testnet",
        exchange_url=paper_exchange.url,
        api_key=constants.PAPER_API_KEY,
        api_secret=constants.PAPER_API_SECRET,
    )
    host = paper_exchange.url.removeprefix("http://")
    venue = BinanceVenue(settings)
    try:
        report = venue.check()
    finally:
        venue.close()
    assert report["mode"] == venue.mode == f"testnet@{host}"
    assert venue.label == f"testnet@{host}"


@pytest.mark.parametrize(
    ("mode", "url", "name", "streams"),
    [
        ("testnet", "https://fapi1.binance.com", "mainnet", "wss://fstream.binance.com"),
        ("mainnet", "https://fapi.binance.me", "mainnet", "wss://fstream.binance.me"),
        ("testnet", "https://demo-fapi.binance.com", "demo", "wss://fstream.binancefuture.com"),
        ("demo", "https://testnet.binancefuture.com", "testnet", "wss://fstream.binancefuture.com"),
        ("paper", "http://paper:8800", "paper", "ws://paper:8800"),
        ("paper", "http://127.0.0.1:9200", "paper", "ws://127.0.0.1:9200"),
        ("testnet", "https://proxy.example.com", "testnet@proxy.example.com", "wss://proxy.example.com"),
    ],
)
def test_the_identity_and_the_streams_follow_the_url_host(mode: str, url: str, name: str, streams: str) -> None:
    """A Binance host is what its name says (and streams from Binance's stream host for it); a local host in paper
    mode is paper; any other override keeps the mode and names the host."""
    keys = {"api_key": "k", "api_secret": "s"} if mode != "paper" else {}
    arming = {"mainnet_confirm": MAINNET_ARMING_PHRASE} if name == "mainnet" else {}
    settings = Settings(mode=mode, exchange_url=url, **keys, **arming)
    assert settings.venue.name == name
    assert settings.venue.real_money is (name == "mainnet")
    assert settings.stream_base_url == streams


def test_a_stream_url_of_another_venue_than_the_orders_is_refused() -> None:
    """Mainnet streams for testnet orders are refused at load, naming QEXEC_STREAM_URL."""
    done = qexec("selftest", QEXEC_MODE="testnet", QEXEC_STREAM_URL="wss://fstream.binance.com", **KEYS)
    assert done.returncode == 1, done.stdout
    assert "QEXEC_STREAM_URL=wss://fstream.binance.com is Binance mainnet" in done.stdout


# -- URL settings ---------------------------------------------------------------------------------------------------


def broken_redis_url() -> str:
    """A Redis URL missing the colon after its scheme, holding PASSWORD."""
    return f"rediss//:{PASSWORD}@127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize(
    "args",
    [
        ["bridge"],
        ["status"],
        ["halt", "--reason", "test"],
        ["inject", "--symbol", "BTCUSDT", "--side", "BUY", "--size-usd", "100"],
        ["up", "--only", "bridge"],
        ["selftest"],
        ["verify", "--count", "1"],
    ],
    ids=lambda args: args[0],
)
def test_every_command_stops_on_a_malformed_redis_url_with_one_masked_line(args: list[str]) -> None:
    """A malformed QEXEC_REDIS_URL: one line naming the variable, password masked, exit 1, no traceback."""
    done = qexec(*args, QEXEC_REDIS_URL=broken_redis_url())
    assert done.returncode == 1, done.stdout
    assert lines_of(done) == [line for line in lines_of(done) if "QEXEC_REDIS_URL=rediss//:***@127.0.0.1:" in line]
    assert len(lines_of(done)) == 1
    assert PASSWORD not in done.stdout


def test_qexec_up_refuses_a_malformed_redis_url_option_with_the_password_masked() -> None:
    """`qexec up --redis-url rediss//:PASSWORD@…`: a usage error naming the option, no traceback, no password."""
    done = qexec("up", "--only", "bridge", "--redis-url", broken_redis_url())
    assert done.returncode == 2, done.stdout
    assert "Invalid value for --redis-url: --redis-url=rediss//:***@127.0.0.1:" in done.stdout
    assert "Traceback" not in done.stdout and PASSWORD not in done.stdout


@pytest.mark.parametrize(
    "args", [["worker", "--pool", "threads", "-c", "1"], ["beat"], ["flower", "--port", "0"]], ids=lambda a: a[0]
)
def test_celery_stops_on_a_malformed_redis_url_with_one_masked_line(args: list[str]) -> None:
    """`celery -A qexec worker|beat|flower` ends at once with exit 1 and one FATAL_INVALID_SETTINGS line."""
    done = celery(*args, QEXEC_REDIS_URL=broken_redis_url())
    assert done.returncode == 1, done.stdout
    assert len(lines_of(done)) == 1 and lines_of(done)[0].startswith(
        "FATAL_INVALID_SETTINGS invalid QEXEC_* settings: QEXEC_REDIS_URL="
    )
    assert PASSWORD not in done.stdout and "amqp://" not in done.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("QEXEC_BROKER_URL", f"redis://:{PASSWORD}@127.0.0.1:notaport/0"),
        ("QEXEC_BROKER_URL", f"amqp//guest:{PASSWORD}@127.0.0.1:5672/"),
        ("QEXEC_REDIS_URL", f"redis://{PASSWORD}@127.0.0.1:6390/0"),
        ("QEXEC_REDIS_URL", f"redis://:{PASSWORD}@127.0.0.1:6390/zero"),
        ("QEXEC_EXCHANGE_URL", "127.0.0.1:8800"),
        ("QEXEC_EXCHANGE_URL", f"http://user:{PASSWORD}@127.0.0.1:8800"),
        ("QEXEC_STREAM_URL", "https://127.0.0.1:8800"),
    ],
)
def test_each_url_setting_is_checked_at_load(variable: str, value: str) -> None:
    """Every URL setting is checked when the settings load: exit 1, one line naming it, its password masked."""
    done = qexec("selftest", **{variable: value})
    assert done.returncode == 1, done.stdout
    assert len(lines_of(done)) == 1 and f"{variable}=" in done.stdout
    assert PASSWORD not in done.stdout


def test_a_password_is_masked_even_in_a_url_too_broken_to_parse() -> None:
    """masked_url finds the password without a parseable URL around it."""
    assert masked_url("rediss//:pw@h:1/0") == "rediss//:***@h:1/0"
    assert masked_url("redis:/:a/b@h") == "redis:/:***@h"
    assert masked_url("redis://lone-secret@h") == "redis://***@h"
    assert masked_url("redis://h/0?password=pw&db=1") == "redis://h/0?password=***&db=1"


# -- a Redis with a password, and what Celery prints ----------------------------------------------------------------


@pytest.fixture(scope="module")
def password_redis() -> Iterator[str]:
    """A redis-server of our own on a free port that wants PASSWORD; the URL of its database 2."""
    port = free_port()
    process = subprocess.Popen(
        [
            str(find_server_binary()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--requirepass",
            PASSWORD,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/2"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis.from_url(url, socket_connect_timeout=0.5).ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def run_until(argv: list[str], needle: str, log_path: Path, **env: str) -> str:
    """Start `argv`, wait for `needle` in its output, stop it (SIGTERM), and return the output."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=clean_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while needle not in log_path.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert needle in output, output[-3000:]
    return output


def test_a_worker_and_beat_on_a_password_redis_never_print_the_password(
    password_redis: str, paper_exchange: PaperExchange, tmp_path: Path
) -> None:
    """A worker (banner, venue check, ready) and beat (banner, schedule) on a Redis with a password never print it."""
    env: dict[str, Any] = {"QEXEC_REDIS_URL": password_redis, "QEXEC_EXCHANGE_URL": paper_exchange.url}
    name = f"config-{uuid.uuid4().hex[:6]}@%h"
    worker_args = worker_argv(concurrency=1, node_name=name, extra=WITHOUT_PEERS)
    worker = run_until(worker_args, "ready.", tmp_path / "worker.log", **env)
    beat_args = [*CELERY, "-A", "qexec", "beat", "--loglevel", "DEBUG"]
    beat = run_until(beat_args, "beat: Acquired lock", tmp_path / "beat.log", **env)
    for output in (worker, beat):
        assert PASSWORD not in output
        assert ":**@127.0.0.1:" in output  # Celery showed the URL, masked
