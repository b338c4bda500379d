"""The venue self-test: on demand (`qexec selftest`) and before a worker consumes anything."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from qexec import alerts, constants
from qexec.config import Settings, get_settings, settings_problem
from qexec.context import Context
from qexec.errors import VenueError, VenueUnavailable
from qexec.venue.identity import VenueIdentity

if TYPE_CHECKING:
    import redis

    from qexec.venue.binance import BinanceVenue

log = logging.getLogger(__name__)

# The same code `qexec bridge` exits with (qexec.cli.EXIT_VENUE_UNAVAILABLE).
EXIT_VENUE_UNAVAILABLE = 3

MODE_TEXT = {
    "paper": "paper - the local paper exchange, no real money",
    "testnet": "testnet - Binance's futures testnet, test funds",
    "demo": "demo - Binance's demo trading, test funds",
    "mainnet": "mainnet - REAL MONEY (armed by QEXEC_MAINNET_CONFIRM)",
}
REAL_MONEY_TEXT = "REAL MONEY (armed by QEXEC_MAINNET_CONFIRM)"


def mode_text(venue: VenueIdentity) -> str:
    """What the venue is, in words, saying when QEXEC_EXCHANGE_URL made it something else than QEXEC_MODE's."""
    if venue.name in MODE_TEXT:
        text = MODE_TEXT[venue.name]
    else:  # a host that is no Binance venue, in a mode other than paper
        money = REAL_MONEY_TEXT if venue.real_money else "qexec cannot tell what it trades"
        text = f"{venue.name} - QEXEC_MODE={venue.mode} sent to {venue.host}, {money}"
    if venue.real_money and REAL_MONEY_TEXT not in text:
        text += f", {REAL_MONEY_TEXT}"
    if venue.overridden and venue.name != venue.mode:
        text += f" (QEXEC_EXCHANGE_URL overrides QEXEC_MODE={venue.mode})"
    return text


def fatal_line(settings: Settings, reason: object) -> str:
    """The one line every qexec process says when the venue fails its self-test."""
    account = "" if settings.account == constants.DEFAULT_ACCOUNT else f" account={settings.account}"
    return f"FATAL_VENUE_UNAVAILABLE mode={settings.venue.name} url={settings.venue_url}{account} reason={reason}"


def report_line(report: dict[str, Any]) -> str:
    """The self-test's findings as one `VENUE_OK key=value ...` line (no keys or secrets are in a report)."""
    return "VENUE_OK " + " ".join(f"{key}={value}" for key, value in report.items())


def venue_for(settings: Settings, r: redis.Redis | None = None) -> BinanceVenue:
    """A venue client of its own (python-binance is imported here: `qexec paper` reaches this module too)."""
    from qexec.venue.binance import BinanceVenue  # noqa: PLC0415 - importing binance costs 0.2 s that `qexec paper` need not pay

    return BinanceVenue(settings, r)


def venue_or_exit(settings: Settings, r: redis.Redis | None = None) -> dict[str, Any]:
    """Run the self-test for every configured account (each signs with its own keys); on a failure log
    FATAL_VENUE_UNAVAILABLE at CRITICAL and exit 3 (never fall back, never trade the accounts that passed alone)."""
    reports = {}
    for name in settings.account_names:
        account = settings.for_account(name)
        try:
            reports[name] = venue_for(account, r).check()
        except VenueUnavailable as exc:
            log.critical("%s", fatal_line(account, exc))
            raise SystemExit(EXIT_VENUE_UNAVAILABLE) from None
        log.info("%s", report_line(reports[name] | ({"account": name} if len(settings.account_names) > 1 else {})))
    return reports[settings.account_names[0]]


def settings_or_fail() -> Settings:
    """This process's settings, or a clear click error naming what is wrong (never a traceback): exit 1."""
    try:
        return get_settings()
    except ValidationError as exc:
        raise click.ClickException(settings_problem(exc)) from None


@click.command("selftest", context_settings={"help_option_names": ["-h", "--help"]})
def selftest_command() -> None:
    """Check the venue as the worker and bridge do at start-up: clock, exchange info, account."""
    settings = settings_or_fail()
    venue = venue_for(settings)
    click.echo(f"mode           {mode_text(venue.identity)}")
    click.echo(f"venue          {settings.venue_url} (host {venue.host})")
    try:
        report = venue.check()
        server_ms = venue.server_time_ms()
    except VenueError as exc:  # VenueUnavailable from check(); any venue error from the second time call
        click.echo(fatal_line(settings, exc), err=True)
        sys.exit(EXIT_VENUE_UNAVAILABLE)
    server_time = datetime.fromtimestamp(server_ms / 1000, UTC).isoformat(timespec="milliseconds")
    click.echo(f"server time    {server_time}, clock offset {report['clock_offset_ms']:+d} ms")
    click.echo(f"exchange info  {report['symbols']} symbols")
    click.echo(f"account        USDT balance {report['usdt_balance']}, available {report['usdt_available']}")
    click.echo(f"SELFTEST_OK mode={venue.mode} host={venue.host}")


def venue_heartbeat(ctx: Context, *others: Context) -> dict[str, Any]:
    """Run the venue self-test (for `ctx`'s account, then each of `others`': a key revoked at one account fails it)
    and record it (and the dead-letter count) under the heartbeat key."""
    dead_letters = int(ctx.redis.xlen(ctx.settings.dlq_stream))
    previous: Any = ctx.redis.hgetall(constants.HEARTBEAT_KEY)
    record: dict[str, Any] = {"at": ctx.now().isoformat(), "dead_letters": dead_letters}
    for one in (ctx, *others):
        named = "" if one.account == constants.DEFAULT_ACCOUNT else f" account={one.account}"
        try:
            report = one.venue.check()
        except VenueError as exc:
            error = str(exc) if not named else f"account {one.account}: {exc}"
            record.update(ok=0, error=error)
            log.error("VENUE_HEARTBEAT_FAILED venue=%s%s error=%s", one.venue.label, named, exc)
            failing = alerts.heartbeat_failed(one.venue.label + named, str(exc), one.settings.alert_repeat_s)
            alerts.raise_alert(ctx.redis, one.settings, failing)
            break
        if one is ctx:
            record.update(ok=1, error="", report=json.dumps(report))
        log.info("VENUE_HEARTBEAT_OK venue=%s%s offset_ms=%s", one.venue.label, named, report["clock_offset_ms"])
    grown = dead_letters - int(previous.get("dead_letters") or 0)
    if previous and grown > 0:
        log.warning("DEAD_LETTERS_GROWING stream=%s count=%d new=%d", ctx.settings.dlq_stream, dead_letters, grown)
    ctx.redis.hset(constants.HEARTBEAT_KEY, mapping={k: str(v) for k, v in record.items()})
    return record
