"""Accounts' settings (qexec/config.py): QEXEC_ACCOUNTS and QEXEC_ACCOUNT_<NAME>_*, read and checked at start, by the
real `qexec` process (one line naming the variable, never a secret), and each account's own keys and limits."""

from __future__ import annotations

import subprocess
import sys

import pytest
from stack_fixtures import ROOT, clean_env

from qexec import constants
from qexec.config import Settings

SECRET = "sleeve-secret-never-printed"


def selftest(**env: str) -> subprocess.CompletedProcess[str]:
    """`qexec selftest` in a clean QEXEC_* environment (it loads the settings first), stdout and stderr together."""
    command = [sys.executable, "-c", "from qexec.cli import main; main()", "selftest"]
    return subprocess.run(
        command,
        cwd=ROOT,
        env=clean_env({"QEXEC_REDIS_URL": "redis://127.0.0.1:9/0", **env}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"QEXEC_ACCOUNTS": "Main"}, "account name 'Main' must be lower-case"),
        (
            {"QEXEC_ACCOUNTS": "main", "QEXEC_ACCOUNT_MAIN_MAX_LEVERAGE": "300"},
            "QEXEC_ACCOUNT_MAIN_MAX_LEVERAGE: Input should be less than or equal to 125",
        ),
        (
            {"QEXEC_ACCOUNTS": "main", "QEXEC_ACCOUNT_MAIN_MAX_LEVRAGE": "3"},
            "QEXEC_ACCOUNT_MAIN_MAX_LEVRAGE: not a setting of an account in QEXEC_ACCOUNTS",
        ),
        (
            {"QEXEC_ACCOUNTS": "mian", "QEXEC_ACCOUNT_MAIN_MAX_LEVERAGE": "3"},
            "QEXEC_ACCOUNT_MAIN_MAX_LEVERAGE: not a setting of an account in QEXEC_ACCOUNTS (default, mian)",
        ),
        (
            {"QEXEC_ACCOUNTS": "main", "QEXEC_ACCOUNT_MAIN_SIZE_MULTIPLIER": "inf"},
            "QEXEC_ACCOUNT_MAIN_SIZE_MULTIPLIER: Input should be a finite number",
        ),
        (
            {"QEXEC_ACCOUNTS": "main", "QEXEC_ACCOUNT_MAIN_SAME_SIDE_POLICY": "double"},
            "QEXEC_ACCOUNT_MAIN_SAME_SIDE_POLICY",
        ),
        (
            {"QEXEC_ACCOUNTS": "main", "QEXEC_ACCOUNT_MAIN_API_SECRET": SECRET},
            "account main: QEXEC_ACCOUNT_MAIN_API_KEY and QEXEC_ACCOUNT_MAIN_API_SECRET",
        ),
        (
            {
                "QEXEC_MODE": "testnet",
                "QEXEC_API_KEY": "k" * 64,
                "QEXEC_API_SECRET": "s" * 64,
                "QEXEC_ACCOUNTS": "sleeve",
            },
            "account sleeve: QEXEC_MODE=testnet needs QEXEC_ACCOUNT_SLEEVE_API_KEY",
        ),
        (
            {
                "QEXEC_MODE": "testnet",
                "QEXEC_API_KEY": "k" * 64,
                "QEXEC_API_SECRET": "s" * 64,
                "QEXEC_ACCOUNTS": "sleeve",
                "QEXEC_ACCOUNT_SLEEVE_API_KEY": "k" * 64,
                "QEXEC_ACCOUNT_SLEEVE_API_SECRET": SECRET,
            },
            "accounts default and sleeve have the same API key",
        ),
    ],
    ids=[
        "name",
        "range",
        "misspelt",
        "unlisted",
        "infinite",
        "choice",
        "half-a-pair",
        "no-keys-outside-paper",
        "one-key-two-names",
    ],
)
def test_a_bad_account_setting_stops_the_start_with_the_variable_named(env: dict[str, str], says: str) -> None:
    """Each mistake stops `qexec` before anything runs: exit 1, one FATAL line saying what, no secret in it."""
    done = selftest(**env)
    assert done.returncode == 1, done.stdout
    assert says in done.stdout, done.stdout
    assert SECRET not in done.stdout


def test_an_account_trades_with_its_own_keys_and_limits_and_the_rest_of_the_deployment_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sleeve's keys and leverage limit are its own; what it does not set (the notional limit, the venue) is
    default's; its keys never fall back to default's; a paper account without keys gets its own paper pair."""
    monkeypatch.setenv("QEXEC_ACCOUNTS", "sleeve, main")
    monkeypatch.setenv("QEXEC_ACCOUNT_SLEEVE_API_KEY", "sleeve-key")
    monkeypatch.setenv("QEXEC_ACCOUNT_SLEEVE_API_SECRET", SECRET)
    monkeypatch.setenv("QEXEC_ACCOUNT_SLEEVE_MAX_LEVERAGE", "3")
    monkeypatch.setenv("QEXEC_ACCOUNT_SLEEVE_SIZE_MULTIPLIER", "0.5")
    settings = Settings(api_key="default-key", api_secret="default-secret", max_notional_usd=1234)

    sleeve, main = settings.for_account("sleeve"), settings.for_account("main")
    assert settings.account_names == ("default", "sleeve", "main")
    assert (sleeve.account, sleeve.credentials().api_key, sleeve.credentials().secret) == (
        "sleeve",
        "sleeve-key",
        SECRET,
    )
    assert (sleeve.max_leverage, sleeve.size_multiplier, sleeve.max_notional_usd) == (3, 0.5, 1234)
    assert (settings.max_leverage, settings.size_multiplier) == (20, 1.0)
    assert main.credentials().api_key == constants.paper_keys("main")[0] != settings.credentials().api_key
    assert sleeve.venue_url == settings.venue_url
    assert set(settings.log_secrets()) >= {"sleeve-key", SECRET, "default-key", "default-secret"}
    with pytest.raises(KeyError):
        settings.for_account("nosuch")


def test_a_copy_of_the_settings_derives_its_accounts_from_its_own_values() -> None:
    """A changed copy (a test's, a command's override) gives its accounts its own venue, not the original's."""
    settings = Settings(accounts="main")
    moved = settings.model_copy(update={"exchange_url": "http://127.0.0.1:9999"})
    assert moved.for_account("main").venue_url == "http://127.0.0.1:9999"
    assert moved.for_account("default") is moved
    assert settings.for_account("main").venue_url != moved.for_account("main").venue_url
