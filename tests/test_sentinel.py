"""A Redis that fails over: `sentinel://` URLs for qexec's Redis, the Celery broker and beat, and a real failover
(the master SIGKILLed, its replica promoted by Redis Sentinel) in the middle of a burst."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from paper_fixtures import PaperExchange, free_port
from stack_fixtures import Stack, clean_env, start_beat, stop_process, unique_id

from qexec import sentinel
from qexec.config import Settings, masked_url
from qexec.models import client_order_id, utcnow
from qexec.ops.redisserver import LocalRedis, find_server_binary
from qexec.worker.celeryconf import celery_config

GROUP = "qexec-test"
RECOVERY_S = 10.0


def test_a_sentinel_url_names_its_sentinels_group_database_and_credentials() -> None:
    url = "sentinel://app:s%3Acret@10.0.0.1:26379,10.0.0.2,[::1]:26380/3?master_name=main&sentinel_password=sp"
    assert sentinel.parse(url) == sentinel.SentinelURL(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)),
        master_name="main",
        db=3,
        username="app",
        password="s:cret",
        sentinel_password="sp",
    )
    assert sentinel.kombu_url(url) == (
        "sentinel://app:s%3Acret@10.0.0.1:26379/3;sentinel://app:s%3Acret@10.0.0.2:26379/3;"
        "sentinel://app:s%3Acret@[::1]:26380/3"
    )
    assert masked_url(url).count("***") == 2 and "s%3Acret" not in masked_url(url) and "=sp" not in masked_url(url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sentinel://127.0.0.1:26379/0", "add ?master_name=NAME"),
        ("sentinel:///0?master_name=m", "names no sentinel"),
        ("sentinel://127.0.0.1:99999/0?master_name=m", "host:port"),
        ("sentinel://127.0.0.1:26379/x?master_name=m", "must be a number"),
        ("sentinel://user@127.0.0.1:26379/0?master_name=m", "no password"),
    ],
)
def test_a_bad_sentinel_url_is_refused_with_what_is_wrong_and_no_secret(url: str, says: str) -> None:
    with pytest.raises(ValueError, match="QEXEC_REDIS_URL=") as refused:
        Settings(redis_url=url)
    assert says in str(refused.value)


def test_a_sentinel_url_configures_the_broker_transport_and_beat_for_the_group() -> None:
    url = "sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/2?master_name=main"
    conf = celery_config(Settings(redis_url=url))
    assert conf["broker_url"] == "sentinel://:pw@127.0.0.1:26379/2;sentinel://:pw@127.0.0.1:26380/2"
    assert conf["broker_transport"] == "qexec.worker.broker:SentinelTransport"
    assert conf["broker_transport_options"]["master_name"] == "main"
    assert conf["broker_transport_options"]["visibility_timeout"] >= 120
    assert conf["redbeat_redis_url"] == "redis-sentinel://"
    assert conf["redbeat_redis_options"] == {
        "sentinels": [("127.0.0.1", 26379), ("127.0.0.1", 26380)],
        "service_name": "main",
        "db": 2,
        "socket_timeout": 5,
        "password": "pw",
    }
    assert "take-over" in conf["beat_schedule"]


@dataclass
class SentinelGroup:
    """A master, its replica and one sentinel watching them, all on loopback."""

    master: LocalRedis
    replica: LocalRedis
    sentinel_port: int
    sentinel_process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.sentinel_port}/0?master_name={GROUP}"

    def master_port(self) -> int:
        ask = redis.Redis(port=self.sentinel_port, decode_responses=True, socket_timeout=2)
        try:
            _host, port = ask.sentinel_get_master_addr_by_name(GROUP)
        finally:
            ask.close()
        return int(port)


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout_s:g} s")


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """Start a master (AOF), a replica of it and a sentinel (quorum 1, master down after 1 s)."""
    master = LocalRedis(data_dir=tmp_path / "master", appendonly=True).start()
    replica = LocalRedis(data_dir=tmp_path / "replica", appendonly=True).start()
    follower = redis.Redis(port=replica.port, decode_responses=True)
    follower.replicaof("127.0.0.1", master.port)
    _wait(lambda: follower.info("replication")["master_link_status"] == "up", 20, "the replica is in sync")
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor {GROUP} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {GROUP} 1000\n"
        f"sentinel failover-timeout {GROUP} 5000\n"
        f"sentinel parallel-syncs {GROUP} 1\n"
    )
    log = (tmp_path / "sentinel.log").open("ab")
    process = subprocess.Popen([str(find_server_binary()), str(conf), "--sentinel"], stdout=log, stderr=log)
    group = SentinelGroup(master, replica, port, process)
    try:
        _wait(lambda: group.master_port() == master.port, 20, "the sentinel watches the master")
        yield group
    finally:
        stop_process(process)  # type: ignore[arg-type]
        log.close()
        follower.close()
        replica.stop()
        master.stop()


def _send(client: redis.Redis, stream: str, intent: dict[str, Any]) -> None:
    """XADD like a careful producer: the entry is on the replica before it counts as sent (WAIT), and a failover is
    waited out."""
    deadline = time.monotonic() + 30
    while True:
        try:
            client.xadd(stream, {"payload": json.dumps(dict(intent, timestamp=utcnow().isoformat()))})
            client.execute_command("WAIT", 1, 1000)
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        else:
            return


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_sentinel_failover_mid_burst_loses_nothing_duplicates_nothing_and_recovers_within_10_s(
    sentinel_group: SentinelGroup, tmp_path: Path, start_paper_server: Callable[..., PaperExchange]
) -> None:
    """Two workers, a bridge and beat on `sentinel://`; 30 intents at 10 a second (a third of them filled 2 s
    late); the master SIGKILLed after the tenth: the sentinel promotes the replica and every process follows it."""
    paper = start_paper_server("--tick-ms", "0", "--result-wait-ms", "0")
    env = {"QEXEC_MODE": "paper", "QEXEC_METRICS_PORT": "0", "QEXEC_REDIS_URL": sentinel_group.url}
    env.update(QEXEC_EXCHANGE_URL=paper.url, QEXEC_SAME_SIDE_POLICY="add")
    settings = Settings(**{k.removeprefix("QEXEC_").lower(): v for k, v in env.items()})
    client = sentinel.from_url(sentinel_group.url, decode_responses=True, socket_timeout=5)
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    stack = Stack(env=clean_env(env), settings=settings, redis=client, paper=paper, logs_dir=logs_dir)
    try:
        stack.start_worker("worker-a", concurrency=4)
        stack.start_worker("worker-b", concurrency=4)
        stack.start_bridge()
        start_beat(stack, "beat")
        symbols = ["ETHUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "LINKUSDT"]
        sent: dict[str, float] = {}
        killed_at = 0.0
        for n in range(30):
            iid = unique_id(f"failover-{n}")
            if n % 3 == 0:
                paper.add_fault(kind="fill_delay", delay_ms=2000, client_order_id=client_order_id(iid))
            intent = {"intent_id": iid, "symbol": symbols[n % len(symbols)], "side": "BUY"}
            sent[iid] = time.time()
            _send(client, settings.intent_stream, dict(intent, position_size_usd=120.0, leverage=2))
            if n == 9:
                os.kill(sentinel_group.master.pid or 0, signal.SIGKILL)
                killed_at = time.time()
            time.sleep(0.1)
        _wait(lambda: sentinel_group.master_port() == sentinel_group.replica.port, 30, "the replica is promoted")

        results = {iid: stack.wait_result(iid, timeout_s=60) for iid in sent}
        time.sleep(2)  # a second result, were there one, would land right behind the first
        stack.check_result_stream()
        for iid, result in results.items():
            assert len(stack.results(iid)) == 1, iid
            assert result["status"] == "filled", result
            assert len(paper.orders(clientOrderId=client_order_id(iid))) == 1, iid
        late = {
            iid: round(datetime.fromisoformat(r["published_at"]).timestamp() - max(sent[iid], killed_at), 2)
            for iid, r in results.items()
        }
        print(f"failover: results at most {max(late.values()):.2f} s after the kill or their send")
        assert max(late.values()) <= RECOVERY_S + 2, late  # + the 2 s fill delay a third of them have anyway
        assert all(proc.poll() is None for proc in stack.processes.values()), "every process followed the failover"
    finally:
        for proc in stack.processes.values():
            stop_process(proc, signal.SIGKILL)
        client.close()
