"""``qexec paper``: run the local paper exchange."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import click
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from qexec.constants import PAPER_API_KEY, PAPER_API_SECRET, PAPER_PORT
from qexec.paper import catalogue
from qexec.paper.account import ACCOUNT_NAME, DEFAULT_ACCOUNT
from qexec.paper.auth import Auth, load_ed25519_public_key
from qexec.paper.config import TRADE_RETENTION_S, Config
from qexec.paper.exchange import Exchange
from qexec.paper.server import create_app
from qexec.paper.store import Store

MEMORY = ":memory:"


@dataclass(frozen=True)
class AccountKeys:
    """An account named on the command line (``--account``) with its HMAC key pair."""

    name: str
    api_key: str
    api_secret: str


@dataclass(frozen=True)
class Ed25519Key:
    """An Ed25519 API key named on the command line, its public key and the account it belongs to."""

    api_key: str
    public: Ed25519PublicKey
    account: str


def _accounts(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[AccountKeys]:
    """``NAME:API_KEY:API_SECRET`` triples (a usage error when one is not, or names an account twice)."""
    found: list[AccountKeys] = []
    for value in values:
        name, _, rest = value.partition(":")
        api_key, sep, secret = rest.partition(":")
        if not sep or not api_key or not secret:
            raise click.BadParameter(f"{value.split(':', 1)[0]!r}…: not NAME:API_KEY:API_SECRET", ctx, param)
        if not ACCOUNT_NAME.match(name):
            raise click.BadParameter(f"account name {name!r}: 1 to 32 of a-z, 0-9, '_' and '-'", ctx, param)
        if name == DEFAULT_ACCOUNT or any(a.name == name for a in found):
            raise click.BadParameter(f"account {name!r} is named twice (default is --api-key's)", ctx, param)
        found.append(AccountKeys(name, api_key, secret))
    return found


def _ed25519_keys(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[Ed25519Key]:
    """``API_KEY:PUBLIC_KEY_PEM_FILE[:ACCOUNT]`` (no account: ``default``), a usage error when one is not."""
    keys: list[Ed25519Key] = []
    for value in values:
        api_key, sep, rest = value.partition(":")
        if not sep or not api_key or not rest:
            raise click.BadParameter(f"{value!r} is not API_KEY:PUBLIC_KEY_PEM_FILE[:ACCOUNT]", ctx, param)
        path, sep, account = rest.rpartition(":")
        if not sep or not ACCOUNT_NAME.match(account):
            path, account = rest, DEFAULT_ACCOUNT
        try:
            keys.append(Ed25519Key(api_key, load_ed25519_public_key(Path(path)), account))
        except (OSError, TypeError, ValueError) as exc:
            raise click.BadParameter(f"{path}: {exc}", ctx, param) from None
    return keys


def _auth(api_key: str, api_secret: str, accounts: list[AccountKeys], ed25519_keys: list[Ed25519Key]) -> Auth:
    """Every account's keys: the default HMAC pair, the ``--account`` pairs and the Ed25519 keys (a usage error
    when a key is named twice or an Ed25519 key names no account)."""
    auth = Auth(api_key, api_secret)
    names = {DEFAULT_ACCOUNT, *(a.name for a in accounts)}
    try:
        for account in accounts:
            auth.add_hmac(account.api_key, account.api_secret, account.name)
        for key in ed25519_keys:
            if key.account not in names:
                raise click.UsageError(f"--ed25519-key {key.api_key}: no account {key.account!r} (see --account)")
            auth.add_ed25519(key.api_key, key.public, key.account)
    except ValueError as exc:
        raise click.UsageError(f"{exc}: every API key belongs to one account") from None
    return auth


def default_state_path() -> Path:
    """``$XDG_DATA_HOME/qexec/paper.sqlite3`` (``~/.local/share/qexec/paper.sqlite3`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "qexec" / "paper.sqlite3"


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--host", default="127.0.0.1", help="Interface to bind; the admin routes are unauthenticated.")
@click.option("--port", default=PAPER_PORT, type=int, help="TCP port.")
@click.option(
    "--state",
    default=None,
    help="SQLite state file, or ':memory:' to keep nothing. [default: ~/.local/share/qexec/paper.sqlite3]",
)
@click.option("--seed", default=7, type=int, help="Seed of the price walk.")
@click.option("--api-key", default=PAPER_API_KEY, help="The API key of the account named default.")
@click.option("--api-secret", default=PAPER_API_SECRET, help="The HMAC secret of that key.", show_default=False)
@click.option(
    "--account",
    "accounts",
    multiple=True,
    callback=_accounts,
    metavar="NAME:API_KEY:API_SECRET",
    help="Another account (or sub-account) with its own HMAC key pair; repeatable. A local test venue only: "
    "the secret is on the command line.",
)
@click.option(
    "--ed25519-key",
    "ed25519_keys",
    multiple=True,
    callback=_ed25519_keys,
    metavar="API_KEY:PUBLIC_KEY_PEM_FILE[:ACCOUNT]",
    help="An API key signing with Ed25519 (the PEM holds its public key) of ACCOUNT (default: default); repeatable.",
)
@click.option("--fill-delay-ms", default=0, type=int, help="Fill MARKET orders this long after acceptance.")
@click.option("--result-wait-ms", default=2000, type=int, help="Longest wait of a RESULT reply for a fill.")
@click.option("--latency-ms", default=0, type=int, help="Delay before every Binance request is processed.")
@click.option("--slippage-bps", default=1.0, type=float, help="Taker fills this far beyond the mark.")
@click.option("--taker-fee-rate", default=0.0005, type=float, help="Fee rate of taker fills.")
@click.option("--maker-fee-rate", default=0.0002, type=float, help="Fee rate of maker fills.")
@click.option("--balance", default="10000", help="USDT wallet of every fresh account.")
@click.option("--tick-ms", default=1000, type=int, help="Period of the price walk; 0 freezes prices.")
@click.option(
    "--exchange-info",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Serve the symbols of this real exchangeInfo JSON instead of the built-in catalogue.",
)
@click.option(
    "--prices",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON {symbol: price} of starting marks for --exchange-info symbols.",
)
@click.option("--weight-limit", default=2400, type=int, help="Request weight per minute per IP.")
@click.option("--orders-per-min", default=1200, type=int, help="New orders per minute.")
@click.option("--orders-per-10s", default=300, type=int, help="New orders per 10 seconds.")
@click.option("--ban-after", default=10, type=int, help="429s in one window before the IP is banned (418).")
@click.option("--ban-s", default=120.0, type=float, help="Length of a 418 ban in seconds.")
@click.option(
    "--trade-retention-s", default=TRADE_RETENTION_S, type=float, help="userTrades returns no fill older than this."
)
@click.option(
    "--log-level",
    default="warning",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    help="Log level.",
)
def paper_command(
    *,
    host: str,
    port: int,
    state: str | None,
    seed: int,
    api_key: str,
    api_secret: str,
    accounts: list[AccountKeys],
    ed25519_keys: list[Ed25519Key],
    fill_delay_ms: int,
    result_wait_ms: int,
    latency_ms: int,
    slippage_bps: float,
    taker_fee_rate: float,
    maker_fee_rate: float,
    balance: str,
    tick_ms: int,
    exchange_info: Path | None,
    prices: Path | None,
    weight_limit: int,
    orders_per_min: int,
    orders_per_10s: int,
    ban_after: int,
    ban_s: float,
    trade_retention_s: float,
    log_level: str,
) -> None:
    """Run a local exchange that speaks the Binance USD-M Futures REST and WebSocket API protocols."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    auth = _auth(api_key, api_secret, accounts, ed25519_keys)
    symbols = catalogue.from_exchange_info(exchange_info, prices) if exchange_info else catalogue.built_in()
    config = Config(
        fill_delay_ms=fill_delay_ms,
        result_wait_ms=result_wait_ms,
        latency_ms=latency_ms,
        slippage_bps=slippage_bps,
        taker_fee_rate=taker_fee_rate,
        maker_fee_rate=maker_fee_rate,
        tick_ms=tick_ms,
        weight_limit=weight_limit,
        orders_per_min=orders_per_min,
        orders_per_10s=orders_per_10s,
        ban_after=ban_after,
        ban_s=ban_s,
        trade_retention_s=trade_retention_s,
    )
    state_path = None if state == MEMORY else Path(state) if state else default_state_path()
    store = Store(state_path) if state_path is not None else None
    exchange = Exchange(
        symbols=symbols,
        config=config,
        auth=auth,
        store=store,
        seed=seed,
        balance=Decimal(balance),
        accounts=[a.name for a in accounts],
    )
    served = f"{len(symbols)} symbols, {len(accounts) + 1} account(s), state {state_path or MEMORY}"
    _serve(exchange, host, port, log_level, served)


def _serve(exchange: Exchange, host: str, port: int, log_level: str, served: str) -> None:
    """Say what is served where, then run the server until it is stopped."""
    click.echo(f"qexec paper: http://{host}:{port} ({served})", err=True)
    server = uvicorn.Server(
        uvicorn.Config(create_app(exchange), host=host, port=port, log_level=log_level, access_log=False)
    )
    server.run()
