"""``qexec paper``: run the local paper exchange."""

from __future__ import annotations

import logging
import os
from decimal import Decimal
from pathlib import Path

import click
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from qexec.constants import PAPER_API_KEY, PAPER_API_SECRET, PAPER_PORT
from qexec.paper import catalogue
from qexec.paper.auth import Auth, load_ed25519_public_key
from qexec.paper.config import TRADE_RETENTION_S, Config
from qexec.paper.exchange import Exchange
from qexec.paper.server import create_app
from qexec.paper.store import Store

MEMORY = ":memory:"


def _ed25519_keys(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Ed25519PublicKey]:
    """``API_KEY:PUBLIC_KEY_PEM_FILE`` pairs as API key -> public key (a usage error when one is not)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for value in values:
        api_key, sep, path = value.partition(":")
        if not sep or not api_key or not path:
            raise click.BadParameter(f"{value!r} is not API_KEY:PUBLIC_KEY_PEM_FILE", ctx, param)
        try:
            keys[api_key] = load_ed25519_public_key(Path(path))
        except (OSError, TypeError, ValueError) as exc:
            raise click.BadParameter(f"{path}: {exc}", ctx, param) from None
    return keys


def _auth(api_key: str, api_secret: str, ed25519_keys: dict[str, Ed25519PublicKey]) -> Auth:
    """The account's keys: the HMAC pair and the Ed25519 keys (a usage error when one is both)."""
    if api_key in ed25519_keys:
        raise click.UsageError(f"--ed25519-key {api_key}: that key is already the HMAC key (--api-key)")
    return Auth(api_key, api_secret, ed25519_keys)


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
@click.option("--api-key", default=PAPER_API_KEY, help="The API key clients must send.")
@click.option("--api-secret", default=PAPER_API_SECRET, help="The HMAC secret of that key.", show_default=False)
@click.option(
    "--ed25519-key",
    "ed25519_keys",
    multiple=True,
    callback=_ed25519_keys,
    metavar="API_KEY:PUBLIC_KEY_PEM_FILE",
    help="Another API key of the account, signing with Ed25519 (the PEM holds its public key); repeatable.",
)
@click.option("--fill-delay-ms", default=0, type=int, help="Fill MARKET orders this long after acceptance.")
@click.option("--result-wait-ms", default=2000, type=int, help="Longest wait of a RESULT reply for a fill.")
@click.option("--latency-ms", default=0, type=int, help="Delay before every Binance request is processed.")
@click.option("--slippage-bps", default=1.0, type=float, help="Taker fills this far beyond the mark.")
@click.option("--taker-fee-rate", default=0.0005, type=float, help="Fee rate of taker fills.")
@click.option("--maker-fee-rate", default=0.0002, type=float, help="Fee rate of maker fills.")
@click.option("--balance", default="10000", help="USDT wallet of a fresh account.")
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
    ed25519_keys: dict[str, Ed25519PublicKey],
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
        auth=_auth(api_key, api_secret, ed25519_keys),
        store=store,
        seed=seed,
        balance=Decimal(balance),
    )
    click.echo(f"qexec paper: http://{host}:{port} ({len(symbols)} symbols, state {state_path or MEMORY})", err=True)
    server = uvicorn.Server(
        uvicorn.Config(create_app(exchange), host=host, port=port, log_level=log_level, access_log=False)
    )
    server.run()
