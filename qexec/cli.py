"""The `qexec` command: paper exchange, worker, bridge, inject, and the local stack."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click

from qexec.ops.halt import halt_command, resume_command
from qexec.ops.selftest import selftest_command, settings_or_fail, venue_or_exit
from qexec.ops.stack import up_command, wait_command
from qexec.ops.status import status_command
from qexec.ops.verify import verify_command
from qexec.paper.command import paper_command
from qexec.worker.command import LOG_LEVEL, NODE_NAME, worker_argv

log = logging.getLogger("qexec.cli")


HELP_OPTIONS = ("-h", "--help")
WITHOUT_SETTINGS = frozenset({"paper"})  # the paper exchange reads no QEXEC_* setting


class _Commands(click.Group):
    """The `qexec` group: the settings are read, and checked, before any command that uses them starts."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        command = next(iter(rest), None)
        ctx.meta["qexec.settings"] = command not in WITHOUT_SETTINGS and not set(HELP_OPTIONS) & set(rest)
        return rest


@click.group(cls=_Commands, context_settings={"help_option_names": list(HELP_OPTIONS)})
@click.pass_context
def main(ctx: click.Context) -> None:
    """qexec — trade execution for Binance USD-M Futures on Celery and Redis."""
    if ctx.meta.get("qexec.settings"):
        # One line naming the variable and exit 1, whichever command it is (else some would print a traceback).
        settings_or_fail()


main.add_command(paper_command, "paper")
main.add_command(up_command, "up")
main.add_command(wait_command, "wait-for-venue")
main.add_command(selftest_command, "selftest")
main.add_command(verify_command, "verify")
main.add_command(status_command, "status")
main.add_command(halt_command, "halt")
main.add_command(resume_command, "resume")


@main.command()
@click.option("--consumer", default=None, help="Consumer name in the group (default: host-pid).")
@click.option("--log-level", default="INFO", show_default=True)
def bridge(consumer: str | None, log_level: str) -> None:
    """Read intents from the stream and start one Celery chain per intent."""
    from qexec import logs, metrics, redis_streams
    from qexec.pipeline.bridge import Bridge
    from qexec.worker.tasks import start_chain

    settings = settings_or_fail()
    logs.configure(log_level, secrets=settings.log_secrets())
    venue_or_exit(settings, redis_streams.connect(settings.redis_url))
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: finishing the current batch and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    metrics.serve(
        settings, redis_streams.connect(settings.redis_url)
    )  # deployment-wide figures from Redis, at /metrics
    worker = Bridge(settings, redis_streams.connect(settings.redis_url), start_chain, consumer=consumer)
    log.info("bridge %s reading %s as group %s", worker.consumer, settings.intent_stream, settings.consumer_group)
    worker.run(stop)
    log.info("bridge %s stopped after %d entries", worker.consumer, worker.handled)


@main.command("console")
@click.option("--host", default=None, help="Interface to bind [default: QEXEC_CONSOLE_HOST].")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port [default: QEXEC_CONSOLE_PORT].")
@click.option("--log-level", default="INFO", show_default=True)
def console(host: str | None, port: int | None, log_level: str) -> None:
    """Serve the operator's page: positions, results, exits, venue health, and halt / flatten / resume."""
    from qexec import logs
    from qexec.ops.console import serve

    settings = settings_or_fail()
    updates = {key: value for key, value in (("console_host", host), ("console_port", port)) if value is not None}
    settings = settings.model_copy(update=updates)
    secrets = settings.log_secrets()
    if settings.console_auth is not None:
        secrets += [item.partition(":")[2] for item in settings.console_auth.get_secret_value().split(",")]
    logs.configure(log_level, secrets=[secret for secret in secrets if secret])
    serve(settings, log_level=log_level.lower())


@main.command("worker", context_settings={"ignore_unknown_options": True})
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=None,
    help="Worker threads [default: QEXEC_WORKER_CONCURRENCY].",
)
@click.option("--name", "-n", "node_name", default=NODE_NAME, show_default=True, help="Celery's node name.")
@click.option("--log-level", default=LOG_LEVEL, show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker_command(concurrency: int | None, node_name: str, log_level: str, celery_args: tuple[str, ...]) -> None:
    """Run the Celery worker (`celery -A qexec worker` on the threads pool); other arguments go to Celery."""
    argv = worker_argv(
        settings_or_fail(), concurrency=concurrency, node_name=node_name, log_level=log_level, extra=celery_args
    )
    # exec, not a child: the process manager's signals (SIGTERM: warm shutdown) go straight to Celery.
    os.execvp(argv[0], argv)  # noqa: S606 - our own argv (worker_argv), no shell in between


def _intent_from_flags(**flags: Any) -> dict[str, Any]:
    from qexec.models import utcnow

    intent = {k: v for k, v in flags.items() if v is not None}
    intent.setdefault("timestamp", utcnow().isoformat())
    return intent


@main.command()
@click.option("--symbol")
@click.option("--side", type=click.Choice(["BUY", "SELL", "LONG", "SHORT"], case_sensitive=False))
@click.option("--size-usd", "position_size_usd", type=float)
@click.option("--leverage", type=int)
@click.option("--entry-price", type=float)
@click.option("--stop-loss", type=float)
@click.option("--take-profit", type=float)
@click.option("--order-type", type=click.Choice(["MARKET", "LIMIT"], case_sensitive=False))
@click.option("--intent-id")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON-lines file, one intent object per line.",
)
@click.option("--wait", "wait_s", type=float, default=0, help="Wait up to this many seconds for the results.")
def inject(
    symbol: str | None,
    side: str | None,
    position_size_usd: float | None,
    leverage: int | None,
    entry_price: float | None,
    stop_loss: float | None,
    take_profit: float | None,
    order_type: str | None,
    intent_id: str | None,
    path: Path | None,
    wait_s: float,
) -> None:
    """Write one intent (from flags) or many (from a JSON-lines file) to the intent stream."""
    from qexec import redis_streams

    settings = settings_or_fail()
    r = redis_streams.connect(settings.redis_url)
    if path is not None:
        intents = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    intents.append(json.loads(line))
                except ValueError as exc:
                    raise click.ClickException(f"{path}:{number}: not JSON: {exc}") from exc
    elif symbol and side and position_size_usd:
        intents = [
            _intent_from_flags(
                symbol=symbol,
                side=side.upper(),
                position_size_usd=position_size_usd,
                leverage=leverage,
                entry_price=entry_price,
                stop_loss=stop_loss,
                take_profit=take_profit,
                order_type=order_type,
                intent_id=intent_id,
            )
        ]
    else:
        raise click.UsageError("give --symbol, --side and --size-usd, or --file")
    last: Any = r.xrevrange(settings.result_stream, count=1)
    since = str(last[0][0]) if last else "0-0"
    waiting: set[str] = set()
    for intent in intents:
        entry_id = str(r.xadd(settings.intent_stream, {"payload": json.dumps(intent)}))
        iid = str(intent.get("intent_id") or entry_id) if isinstance(intent, dict) else str(entry_id)
        waiting.add(iid)
        click.echo(f"{entry_id} intent_id={iid}")
    if wait_s > 0:
        _follow_results(r, settings.result_stream, since, waiting, wait_s)


def _follow_results(r: Any, stream: str, since: str, waiting: set[str], wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while waiting and time.monotonic() < deadline:
        block_ms = max(1, int(min(1.0, deadline - time.monotonic()) * 1000))
        for _stream, entries in r.xread({stream: since}, block=block_ms, count=100) or []:
            for entry_id, fields in entries:
                since = entry_id
                if fields.get("intent_id") in waiting:
                    waiting.discard(fields["intent_id"])
                    click.echo(fields.get("payload", json.dumps(fields)))
    if waiting:
        raise click.ClickException(f"no result within {wait_s:g}s for: {', '.join(sorted(waiting))}")


if __name__ == "__main__":
    main()
