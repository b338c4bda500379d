"""The local stack behind `qexec up`: Redis, paper exchange, worker, bridge, beat, flower and console, under honcho."""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn, TextIO

import click
import requests
from honcho.manager import KILL_WAIT, SIGNALS, Manager
from honcho.printer import Message, Printer
from pydantic import ValidationError

from qexec import constants
from qexec.config import REDIS_SCHEMES, Mode, Settings, checked_url, get_settings
from qexec.ops.demo import run_demo
from qexec.ops.redisserver import (
    LocalRedis,
    RedisServerError,
    RedisServerNotFound,
    describe_server,
    redacted,
    require_server,
)
from qexec.ops.selftest import EXIT_VENUE_UNAVAILABLE
from qexec.worker.command import worker_argv

PROCESS_NAMES = ("paper", "worker", "bridge", "beat", "flower", "console")  # the Procfile's names, in start order
FLOWER_PORT = 5555
CONSOLE_PORT = 8900
PING_PATH = "/fapi/v1/ping"
VENUE_WAIT_S = 60.0
VENUE_POLL_S = 0.1
RESTART_FIRST_S = 1.0  # a crashed process is started again after this, doubling with each crash in a row...
RESTART_MAX_S = 30.0  # ...up to this
LOGS_DIR = "logs"  # in the data dir: one file per process, written afresh by each `qexec up`
STEADY_S = 60.0  # a process that ran this long before it crashed starts again from RESTART_FIRST_S
EXIT_USAGE = 2  # click's usage errors, and the dashboard's refusal of an unsafe Flower (qexec/worker/app.py)
# What a process with invalid settings says before it exits 1: FATAL_INVALID_SETTINGS (celery -A qexec, on stderr)
# or click's "Error: invalid QEXEC_* settings" (qexec bridge, paper).
INVALID_SETTINGS = ("FATAL_INVALID_SETTINGS", "invalid QEXEC_* settings")
CLEAN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # someone asked the process to stop
# Celery's lines for each task: the worker's "received", "succeeded in" and "retry:", beat's "Sending due task".
# Beat's housekeeping sends a task every few seconds; `qexec up` keeps them in the log files, off the terminal.
CELERY_TASK_LINE = re.compile(
    r"(?:INFO|DEBUG)/[\w-]+\] (?:Task [\w.]+\[[^\]]+\] (?:received|succeeded in |retry: )|Scheduler: Sending due task )"
)


def exit_cause(returncode: int, last_lines: Sequence[str] = ()) -> tuple[bool, str]:
    """Whether a process that exited by itself is started again, and why: a crash is, a configuration error or
    a deliberate stop is not (then the stack stops). `last_lines` is what the process printed last."""
    if returncode == 0:
        return False, "it ended by itself"
    if returncode < 0 or 128 < returncode <= 128 + 64:  # killed by a signal (a shell reports 128 + N)
        signum = -returncode if returncode < 0 else returncode - 128
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        if signum in CLEAN_SIGNALS:
            return False, f"stopped by {name}"
        return True, f"killed by {name}"
    if returncode == EXIT_USAGE:
        return False, "a usage error or a refused setting (exit 2)"
    if returncode == EXIT_VENUE_UNAVAILABLE:
        return False, "the venue failed the start-up self-test (exit 3, FATAL_VENUE_UNAVAILABLE)"
    if returncode == 1 and any(marker in line for line in last_lines for marker in INVALID_SETTINGS):
        return False, "invalid QEXEC_* settings (exit 1)"
    return True, f"exit code {returncode}"


class StackPrinter(Printer):  # type: ignore[misc]  # honcho ships no type information
    """honcho's printer, writing every line to `<logs_dir>/<name>.log` and Celery's per-task lines only there
    (unless `verbose`)."""

    def __init__(self, output: TextIO, *, logs_dir: Path | None = None, verbose: bool = False) -> None:
        super().__init__(output)
        self.logs_dir = logs_dir
        self.verbose = verbose
        self._files: dict[str, IO[str]] = {}
        self._lock = threading.Lock()

    def write(self, message: Message) -> None:
        """Log the message's lines to its process's file; print them unless they are Celery's per-task lines."""
        text = message.data.decode("utf-8", "replace") if isinstance(message.data, bytes) else message.data
        if self.logs_dir is not None and message.name:
            with self._lock:
                handle = self._files.get(message.name)
                if handle is None:
                    self.logs_dir.mkdir(parents=True, exist_ok=True)
                    handle = self._files[message.name] = (self.logs_dir / f"{message.name}.log").open("w")
                stamp = message.time.strftime("%Y-%m-%d %H:%M:%S")
                handle.writelines(f"{stamp} {line}\n" for line in text.splitlines())
                handle.flush()
        if self.verbose or not CELERY_TASK_LINE.search(text):
            super().write(message)

    def close(self) -> None:
        """Close the log files."""
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()


@dataclass(frozen=True)
class ProcessSpec:
    """One supervised process: its Procfile name, its arguments, and whether it waits for the venue."""

    name: str
    argv: tuple[str, ...]
    waits_for_venue: bool = False

    def command(self, python: str) -> str:
        """The shell line honcho runs: the venue gate when needed, then `exec` of the process itself."""
        line = "exec " + shlex.join(self.argv)
        if not self.waits_for_venue:
            return line
        return shlex.join([python, "-m", "qexec.ops.stack", "wait-for-venue"]) + " && " + line


@dataclass(frozen=True)
class Stack:
    """Everything `qexec up` runs: the processes, the environment they share, and the settings they see."""

    settings: Settings
    processes: tuple[ProcessSpec, ...]
    environment: dict[str, str]
    python: str
    data_dir: Path
    flower_port: int
    console_port: int = CONSOLE_PORT

    @property
    def paper_started(self) -> bool:
        """True when the stack runs its own paper exchange."""
        return any(spec.name == "paper" for spec in self.processes)

    def commands(self) -> dict[str, str]:
        """Each process's shell line, by name."""
        return {spec.name: spec.command(self.python) for spec in self.processes}


class Supervisor(Manager):  # type: ignore[misc]  # honcho ships no type information
    """honcho's Manager, with its own loop: a child that crashes is started again after a back-off instead of
    stopping the stack (`exit_cause`); a configuration error, a deliberate stop or a signal stops every child.
    Safe against an early signal, with hooks that run once every child is started."""

    def __init__(
        self, printer: Printer, *, restart_first_s: float = RESTART_FIRST_S, restart_max_s: float = RESTART_MAX_S
    ) -> None:
        super().__init__(printer)
        self.after_start: list[Callable[[], None]] = []
        self.restart_first_s = restart_first_s
        self.restart_max_s = restart_max_s
        self.restarts: dict[str, int] = {}  # how often each child was started again
        self._due: dict[str, float] = {}  # a crashed child's restart time (monotonic)
        self._started_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._last_lines: dict[str, deque[str]] = {}

    def loop(self) -> None:
        """Run every child until a signal, or a child's exit that is not a crash, stops them all."""

        def _terminate(signum: int, _frame: FrameType | None) -> None:
            self._system_print(f"{SIGNALS[signum]['name']} received\n")
            self.returncode = SIGNALS[signum]["rc"]
            self.terminate()

        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, _terminate)
        self._start()
        kill_at: float | None = None
        while True:
            try:
                message = self.events.get(timeout=0.1)
            except queue.Empty:
                message = None
            if message is not None:
                self._handle(message)
            if not self._terminating:
                self._restart_due()
                continue
            if self._all_stopped() and message is None:
                return
            if kill_at is None:
                kill_at = time.monotonic() + KILL_WAIT
            elif time.monotonic() > kill_at:
                self.kill()
                kill_at = float("inf")  # once: SIGKILL cannot be ignored

    def _handle(self, message: Message) -> None:
        name = message.name
        if message.type == "line":
            self._last_lines.setdefault(name, deque(maxlen=20)).append(str(message.data))
            self._printer.write(message)
        elif message.type == "start":
            self._processes[name]["pid"] = message.data["pid"]
            self._system_print(f"{name} started (pid={message.data['pid']})\n")
            if self._terminating:  # started while the others were being stopped
                self._procmgr.terminate(message.data["pid"])
        elif message.type == "stop":
            self._stopped(name, int(message.data["returncode"]))

    def _stopped(self, name: str, returncode: int) -> None:
        self._processes[name]["returncode"] = returncode
        if self._terminating:
            self._system_print(f"{name} stopped (rc={returncode})\n")
            if self.returncode is None:
                self.returncode = returncode
            return
        restart, why = exit_cause(returncode, self._last_lines.get(name, ()))
        if not restart:
            self._system_print(f"{name} stopped (rc={returncode}): {why}; stopping the stack\n")
            self.returncode = returncode
            self.terminate()
            return
        ran_s = time.monotonic() - self._started_at.get(name, 0.0)
        delay = self.restart_first_s if ran_s >= STEADY_S else self._backoff.get(name, self.restart_first_s)
        self._backoff[name] = min(delay * 2, self.restart_max_s)
        self._due[name] = time.monotonic() + delay
        self._system_print(
            f"{name} exited (rc={returncode}, {why}) after {ran_s:.0f} s; starting it again in {delay:g} s\n"
        )

    def _restart_due(self) -> None:
        now = time.monotonic()
        for name, due in list(self._due.items()):
            if now >= due:
                del self._due[name]
                self.restarts[name] = self.restarts.get(name, 0) + 1
                process = self._processes[name]
                process.pop("pid", None)
                process.pop("returncode", None)
                self._system_print(f"starting {name} again (restart {self.restarts[name]})\n")
                self._run(name)

    def _run(self, name: str) -> None:
        # honcho relays a child's output from a process of its own, forked here; a thread does the same without a
        # fork, so a child can be started again while other threads (the demo's) run.
        relay = threading.Thread(
            target=self._processes[name]["obj"].run, args=(self.events, False), name=f"relay-{name}", daemon=True
        )
        self._processes[name]["process"] = relay
        self._started_at[name] = time.monotonic()
        relay.start()

    def _killall(self, force: bool = False) -> None:
        # honcho 2.0 reads p["pid"] of every child not yet stopped; a child whose start message is still
        # queued has none, and the KeyError would escape the signal handler and orphan every child. Such
        # a child gets its SIGTERM when its start message arrives (`_handle`).
        for name, process in self._processes.items():
            if "returncode" in process or "pid" not in process:
                continue
            signame = "SIGKILL" if force else "SIGTERM"
            self._system_print(f"sending {signame} to {name} (pid {process['pid']})\n")
            if force:
                self._procmgr.kill(process["pid"])
            else:
                self._procmgr.terminate(process["pid"])

    def _start(self) -> None:
        for name in self._processes:
            self._run(name)
        for hook in self.after_start:
            hook()

    def say(self, name: str, text: str) -> None:
        """Print a line under `name` through the manager's own queue (safe from any thread)."""
        self.events.put(Message(type="line", data=text + "\n", time=datetime.now(), name=name, colour=None))


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """`$XDG_DATA_HOME/qexec`, else `~/.local/share/qexec`."""
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "qexec"


def executable(name: str, bin_dir: Path) -> str:
    """The path of `name` next to the running Python (so no activated venv is needed), else on PATH."""
    beside = bin_dir / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    on_path = shutil.which(name)
    if on_path is None:
        raise click.ClickException(
            f"cannot find {name!r} in {bin_dir} or on PATH; install qexec into this environment (pip install -e .)"
        )
    return on_path


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def open_redis(requested_url: str | None, data_dir: Path) -> tuple[str, LocalRedis | None]:
    """The stack's Redis: the one the user named, which must answer, else a local one started here."""
    if requested_url:
        require_server(requested_url)
        return requested_url, None
    server = LocalRedis(data_dir=data_dir / "redis", appendonly=True).start()
    return server.url, server


def _paper_accounts(settings: Settings) -> list[str]:
    """`qexec paper`'s `--account` of every configured account with the paper's own keys (constants.paper_keys, public
    and paper-only); an account given keys of its own needs a paper exchange started with them."""
    args = []
    for name in settings.account_names[1:]:
        if settings.for_account(name).api_key is None:
            key, secret = constants.paper_keys(name)
            args += ["--account", f"{name}:{key}:{secret}"]
    return args


def process_specs(
    settings: Settings,
    *,
    data_dir: Path,
    paper_port: int,
    flower_port: int,
    bin_dir: Path,
    console_port: int = CONSOLE_PORT,
) -> list[ProcessSpec]:
    """The stack's processes in start order; `paper` only in paper mode. No secret goes on a command line."""
    qexec = executable("qexec", bin_dir)
    celery = executable("celery", bin_dir)
    specs = []
    if settings.mode is Mode.PAPER:
        state = str(data_dir / "paper.sqlite3")
        specs.append(
            ProcessSpec(
                "paper", (qexec, "paper", "--port", str(paper_port), "--state", state, *_paper_accounts(settings))
            )
        )
    specs += [
        ProcessSpec("worker", tuple(worker_argv(settings, program=[celery])), waits_for_venue=True),
        ProcessSpec("bridge", (qexec, "bridge"), waits_for_venue=True),
        # celery-redbeat keeps the schedule in Redis (see celery_config), so beat writes no file.
        ProcessSpec("beat", (celery, "-A", "qexec", "beat", "--loglevel", "INFO")),
        ProcessSpec("flower", (celery, "-A", "qexec", "flower", "--address=127.0.0.1", f"--port={flower_port}")),
        # No venue gate: the page says when the venue does not answer, and its kill switch works without it.
        ProcessSpec("console", (qexec, "console", "--host", "127.0.0.1", "--port", str(console_port))),
    ]
    return specs


def plan_stack(
    environ: Mapping[str, str],
    settings: Settings,
    *,
    redis_url: str,
    data_dir: Path,
    paper_port: int,
    flower_port: int = FLOWER_PORT,
    bin_dir: Path | None = None,
    python: str = sys.executable,
    only: Sequence[str] = (),
    console_port: int = CONSOLE_PORT,
) -> Stack:
    """Work out the processes and their shared environment; credentials reach children only by inheritance."""
    bin_dir = bin_dir or Path(python).parent
    updates: dict[str, Any] = {"redis_url": redis_url}
    if settings.mode is Mode.PAPER:
        updates["exchange_url"] = f"http://127.0.0.1:{paper_port}"
    seen = settings.model_copy(update=updates)
    environment = dict(environ)
    environment.update(QEXEC_REDIS_URL=redis_url, QEXEC_MODE=seen.mode.value, PYTHONUNBUFFERED="1")
    if seen.exchange_url is not None:
        environment["QEXEC_EXCHANGE_URL"] = seen.exchange_url
    specs = process_specs(
        seen,
        data_dir=data_dir,
        paper_port=paper_port,
        flower_port=flower_port,
        bin_dir=bin_dir,
        console_port=console_port,
    )
    if only:
        specs = [spec for spec in specs if spec.name in only]
    return Stack(seen, tuple(specs), environment, python, data_dir, flower_port, console_port)


def describe(stack: Stack, *, local_redis: LocalRedis | None) -> list[str]:
    """The lines `qexec up` prints before anything starts: what runs where, and how to stop it."""
    settings = stack.settings
    if local_redis is not None:
        server = describe_server(local_redis.info, executable=False)
        where = f"started here, pid {local_redis.pid}, {server}, data in {local_redis.data_dir}"
    else:
        where = "the one QEXEC_REDIS_URL or --redis-url names; not started here"
    venue = "qexec paper, state in " + str(stack.data_dir / "paper.sqlite3") if stack.paper_started else ""
    flower = f"http://127.0.0.1:{stack.flower_port}"
    lines = [
        f"qexec up: {settings.venue.name} mode, {len(stack.processes)} processes "
        f"({', '.join(spec.name for spec in stack.processes)})",
        f"  redis    {redacted(settings.redis_url)}  ({where})",
        f"  venue    {settings.venue_url}  ({venue or 'not started here'})",
        f"  intents  XADD {settings.intent_stream}",
        f"  results  {settings.result_stream}",
    ]
    if any(spec.name == "flower" for spec in stack.processes):
        lines.append(f"  flower   {flower}  (Prometheus: {flower}/metrics)")
    if any(spec.name == "console" for spec in stack.processes):
        lines.append(f"  console  http://127.0.0.1:{stack.console_port}/  (positions, results, halt)")
    lines += [
        f"  data     {stack.data_dir}",
        f"  logs     {stack.data_dir / LOGS_DIR}/<process>.log  (every line, Celery's per-task lines too)",
        "A process that crashes is started again; Ctrl-C stops every process.",
    ]
    return lines


def supervise(stack: Stack, *, output: TextIO | None = None, demo: bool = False, verbose: bool = False) -> int:
    """Run the stack under honcho until a signal or a child's exit that is not a crash stops it; the exit code."""
    printer = StackPrinter(output or sys.stdout, logs_dir=stack.data_dir / LOGS_DIR, verbose=verbose)
    supervisor = Supervisor(printer)
    for spec in stack.processes:
        supervisor.add_process(spec.name, spec.command(stack.python), env=stack.environment)
    stop = threading.Event()
    if demo:

        def say(text: str) -> None:
            supervisor.say("demo", text)

        demo_thread = threading.Thread(target=run_demo, args=(stack.settings, say, stop), name="demo", daemon=True)
        supervisor.after_start.append(demo_thread.start)
    try:
        supervisor.loop()
    finally:
        stop.set()
        printer.close()
    code = int(supervisor.returncode or 0)
    return code if code >= 0 else 128 - code  # a child killed by signal N: the shell's 128 + N


def venue_answers(base_url: str, timeout_s: float = 1.0) -> bool:
    """True when the venue at `base_url` answers GET /fapi/v1/ping with 200."""
    try:
        return requests.get(base_url + PING_PATH, timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False


def wait_for_venue(base_url: str, timeout_s: float = VENUE_WAIT_S) -> float | None:
    """Poll the venue's ping until it answers; the seconds it took, or None after `timeout_s`."""
    started = time.monotonic()
    while not venue_answers(base_url):
        if time.monotonic() - started > timeout_s:
            return None
        time.sleep(VENUE_POLL_S)
    return time.monotonic() - started


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


@click.command("wait-for-venue")
@click.option("--url", default=None, help="The venue's base URL [default: the QEXEC_* settings' venue].")
@click.option("--timeout-s", type=float, default=VENUE_WAIT_S, show_default=True, help="Give up after this.")
def wait_command(url: str | None, timeout_s: float) -> None:
    """Wait until the venue answers GET /fapi/v1/ping: the start gate of the worker and the bridge."""
    base = (url or get_settings().venue_url).rstrip("/")
    click.echo(f"waiting for the venue at {base} to answer {PING_PATH}")
    waited_s = wait_for_venue(base, timeout_s)
    if waited_s is None:
        raise click.ClickException(
            f"the venue at {base} did not answer {PING_PATH} within {timeout_s:g} s "
            "(in paper mode: did `qexec paper` start? see its lines above)"
        )
    click.echo(f"the venue answered after {waited_s:.1f} s")


@click.command("up")
@click.option("--demo", is_flag=True, help="Once worker and bridge run, send demo intents, show results.")
@click.option(
    "--redis-url",
    envvar="QEXEC_REDIS_URL",
    show_envvar=True,
    default=None,
    help="A running Redis to use (it must answer) [default: start a private one].",
)
@click.option(
    "--paper-port",
    type=int,
    default=constants.PAPER_PORT,
    show_default=True,
    help="The paper exchange's port.",
)
@click.option("--flower-port", type=int, default=FLOWER_PORT, show_default=True, help="Flower's port.")
@click.option("--console-port", type=int, default=CONSOLE_PORT, show_default=True, help="The console's port.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Paper account and Redis data [default: $XDG_DATA_HOME/qexec or ~/.local/share/qexec; with --demo, a fresh "
    "temporary dir removed at exit].",
)
@click.option("--only", multiple=True, type=click.Choice(PROCESS_NAMES), help="Run only these (repeatable).")
@click.option(
    "--verbose", "-v", is_flag=True, help="Print Celery's per-task lines too (they are always in <data dir>/logs)."
)
@click.option("--bin-dir", type=click.Path(path_type=Path), default=None, hidden=True)
@click.pass_context
def up_command(
    ctx: click.Context,
    *,
    demo: bool,
    redis_url: str | None,
    paper_port: int,
    flower_port: int,
    console_port: int,
    data_dir: Path | None,
    only: tuple[str, ...],
    verbose: bool,
    bin_dir: Path | None,
) -> None:
    """Run the whole stack on this machine (paper mode by default); Ctrl-C stops it."""
    settings = _up_settings(demo=demo, redis_url=redis_url)
    # A demo starts from a fresh paper account every time (positions left by an earlier run would turn the demo's
    # entries into protection updates), unless a data dir is named.
    scratch = Path(tempfile.mkdtemp(prefix="qexec-demo-")) if demo and data_dir is None else None
    data_dir = (scratch or data_dir or default_data_dir(os.environ)).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _check_ports(settings, only=only, paper_port=paper_port, flower_port=flower_port, console_port=console_port)
    # Until honcho's loop installs its own handlers, a SIGTERM must still unwind and stop our Redis.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        url, local_redis = open_redis(redis_url, data_dir)
    except (RedisServerError, RedisServerNotFound) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        stack = plan_stack(
            os.environ,
            settings,
            redis_url=url,
            data_dir=data_dir,
            paper_port=paper_port,
            flower_port=flower_port,
            bin_dir=bin_dir,
            only=only,
            console_port=console_port,
        )
        code = _run_stack(stack, local_redis=local_redis, only=only, demo=demo, verbose=verbose)
    finally:
        if local_redis is not None:
            local_redis.stop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    ctx.exit(code)


def _up_settings(*, demo: bool, redis_url: str | None) -> Settings:
    """The settings `qexec up` runs with, checked against its --demo and --redis-url options."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise click.ClickException(f"the QEXEC_* settings are invalid:\n{exc}") from exc
    if demo and settings.mode is not Mode.PAPER:
        raise click.UsageError(f"--demo trades on the paper exchange only, and QEXEC_MODE is {settings.mode}")
    if redis_url is not None:
        try:
            checked_url("--redis-url", redis_url, REDIS_SCHEMES)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--redis-url") from None
    return settings


def _check_ports(
    settings: Settings, *, only: Sequence[str], paper_port: int, flower_port: int, console_port: int = CONSOLE_PORT
) -> None:
    """Refuse to start when the port of a process that would listen (paper, flower, console) is taken."""
    selected = set(only or PROCESS_NAMES)
    for name, port in (("paper", paper_port), ("flower", flower_port), ("console", console_port)):
        if name in selected and (name != "paper" or settings.mode is Mode.PAPER) and not port_is_free(port):
            raise click.ClickException(f"port {port} for {name} is taken; choose another with --{name}-port")


def _run_stack(stack: Stack, *, local_redis: LocalRedis | None, only: Sequence[str], demo: bool, verbose: bool) -> int:
    """Say what runs where, then supervise the stack until it stops; the exit code."""
    if not stack.processes:
        raise click.UsageError(f"nothing to run: --only {' '.join(only)} in {stack.settings.mode} mode")
    for line in describe(stack, local_redis=local_redis):
        click.echo(line)
    return supervise(stack, demo=demo, verbose=verbose)


@click.group()
def main() -> None:
    """The stack's commands, runnable as `python -m qexec.ops.stack` without the `qexec` entry point."""


main.add_command(up_command)
main.add_command(wait_command)

if __name__ == "__main__":
    main()
