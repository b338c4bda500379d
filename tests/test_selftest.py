"""The venue self-test: `qexec selftest` on demand, the bridge's check before it takes work, and what refuses to
start at all (mainnet without arming, keys the venue refuses, a venue that does not answer), and beat's venue
heartbeat."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from paper_fixtures import PaperExchange, free_port, qexec_command
from pydantic import ValidationError
from stack_fixtures import ROOT, Stack, clean_env

from qexec import constants, redis_streams
from qexec.config import MAINNET_ARMING_PHRASE, Mode, Settings
from qexec.context import Context
from qexec.errors import VenueUnavailable
from qexec.ops.selftest import venue_heartbeat
from qexec.venue.binance import BinanceVenue

RUN_TIMEOUT_S = 60
UNREACHABLE_REDIS = "redis://127.0.0.1:9/0"  # a closed port: nothing here may reach any Redis


def dead_venue_url() -> str:
    """A venue URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a qexec command to its end, stdout and stderr together."""
    full_env = clean_env({"QEXEC_REDIS_URL": UNREACHABLE_REDIS, **env})
    return subprocess.run(
        args,
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def selftest(**env: str) -> subprocess.CompletedProcess[str]:
    """`qexec selftest` with these QEXEC_* settings."""
    return run([*qexec_command(), "selftest"], env)


def bridge(**env: str) -> subprocess.CompletedProcess[str]:
    """`qexec bridge` with these QEXEC_* settings."""
    return run([sys.executable, "-m", "qexec.cli", "bridge"], env)


def test_selftest_passes_against_the_paper_exchange_and_says_it_is_paper(paper_exchange: PaperExchange) -> None:
    """Against the paper exchange every check passes, one line each, and the output says it is paper."""
    done = selftest(QEXEC_EXCHANGE_URL=paper_exchange.url)
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith("mode") and "paper" in lines[0] and "no real money" in lines[0]
    assert paper_exchange.url in lines[1]
    assert lines[2].startswith("server time") and "clock offset" in lines[2]
    assert lines[3] == "exchange info  24 symbols"
    assert lines[4].startswith("account") and "USDT balance" in lines[4]
    assert lines[-1].startswith("SELFTEST_OK mode=paper host=127.0.0.1:")
    assert "qexec-paper-key" not in done.stdout and "qexec-paper-secret" not in done.stdout


def test_selftest_against_a_dead_venue_exits_non_zero_with_fatal_venue_unavailable() -> None:
    """A venue that does not answer fails the self-test with the greppable FATAL line and exit code 3."""
    url = dead_venue_url()
    done = selftest(QEXEC_EXCHANGE_URL=url)
    assert done.returncode == 3, done.stdout
    assert f"FATAL_VENUE_UNAVAILABLE mode=paper url={url} reason=" in done.stdout
    assert "SELFTEST_OK" not in done.stdout


def test_keys_the_paper_exchange_refuses_are_reported_as_refused_keys(paper_exchange: PaperExchange) -> None:
    """Wrong keys make `BinanceVenue.check()` say the venue refused the keys, with mode, host and the likely cause."""
    settings = Settings(exchange_url=paper_exchange.url, api_key="wrong", api_secret="wrong-too")
    with pytest.raises(VenueUnavailable) as raised:
        BinanceVenue(settings).check()
    reason = str(raised.value)
    host = paper_exchange.url.removeprefix("http://")
    assert raised.value.code == -2015
    assert f"the venue refused the API keys in paper mode at {host}" in reason
    assert "testnet keys on demo or mainnet, or the reverse" in reason


def test_selftest_with_refused_keys_exits_non_zero_and_never_prints_them(paper_exchange: PaperExchange) -> None:
    """`qexec selftest` with wrong keys fails with the keys-refused reason and never echoes the key or secret."""
    done = selftest(
        QEXEC_EXCHANGE_URL=paper_exchange.url, QEXEC_API_KEY="wrongkey-1234567", QEXEC_API_SECRET="wrongsecret-7654321"
    )
    assert done.returncode == 3, done.stdout
    assert "FATAL_VENUE_UNAVAILABLE" in done.stdout and "refused the API keys" in done.stdout
    assert "wrongkey-1234567" not in done.stdout and "wrongsecret-7654321" not in done.stdout


def test_mainnet_settings_without_arming_are_refused_naming_the_variable() -> None:
    """`QEXEC_MODE=mainnet` without `QEXEC_MAINNET_CONFIRM=I_UNDERSTAND` is a settings error naming both."""
    keys: dict[str, Any] = {"api_key": "k" * 64, "api_secret": "s" * 64}
    with pytest.raises(ValidationError, match=f"QEXEC_MAINNET_CONFIRM={MAINNET_ARMING_PHRASE}"):
        Settings(mode=Mode.MAINNET, **keys)
    with pytest.raises(ValidationError, match="QEXEC_MAINNET_CONFIRM"):
        Settings(mode=Mode.MAINNET, mainnet_confirm="yes", **keys)
    assert Settings(mode=Mode.MAINNET, mainnet_confirm=MAINNET_ARMING_PHRASE, **keys).mode is Mode.MAINNET


def test_settings_errors_never_echo_the_api_key() -> None:
    """A settings error's text leaves the input out: it would hold the API key."""
    with pytest.raises(ValidationError) as raised:
        Settings(mode=Mode.TESTNET, api_key="supersecretkey-123")
    assert "supersecretkey-123" not in str(raised.value)


@pytest.mark.parametrize("command", [selftest, bridge], ids=["selftest", "bridge"])
def test_mainnet_without_arming_stops_the_process_naming_the_variable(command: Any) -> None:
    """selftest and the bridge refuse unarmed mainnet with a message naming QEXEC_MAINNET_CONFIRM, no traceback."""
    done = command(QEXEC_MODE="mainnet", QEXEC_API_KEY="k" * 64, QEXEC_API_SECRET="s" * 64)
    assert done.returncode != 0
    assert "QEXEC_MAINNET_CONFIRM=I_UNDERSTAND" in done.stdout
    assert "Traceback" not in done.stdout
    assert "k" * 64 not in done.stdout


def test_the_bridge_against_a_dead_venue_exits_non_zero_before_taking_work() -> None:
    """`qexec bridge` checks the venue first: a dead one ends it with FATAL_VENUE_UNAVAILABLE, never paper."""
    url = dead_venue_url()
    done = bridge(QEXEC_EXCHANGE_URL=url)
    assert done.returncode == 3, done.stdout
    assert f"FATAL_VENUE_UNAVAILABLE mode=paper url={url}" in done.stdout
    assert "reading" not in done.stdout


@pytest.mark.slow
def test_heartbeat_records_the_venue_state_and_says_when_it_fails(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A passing heartbeat is recorded with ok=1; a dead venue gives ok=0, the reason, and an error log line."""
    r = redis_streams.connect(stack.settings.redis_url)
    record = venue_heartbeat(Context(stack.settings, r, BinanceVenue(stack.settings)))
    assert record["ok"] == 1
    assert r.hget(constants.HEARTBEAT_KEY, "ok") == "1"

    dead = Settings(redis_url=stack.settings.redis_url, exchange_url="http://127.0.0.1:9", request_timeout_s=1)
    with caplog.at_level(logging.ERROR):
        record = venue_heartbeat(Context(dead, r, BinanceVenue(dead)))
    assert record["ok"] == 0
    assert "127.0.0.1:9" in record["error"]
    assert "VENUE_HEARTBEAT_FAILED" in caplog.text
    assert r.hget(constants.HEARTBEAT_KEY, "ok") == "0"
