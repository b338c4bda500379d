"""docker/: the compose file runs the same processes as the Procfile, with health checks and a durable Redis."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker" / "compose.yml").read_text()))


def test_compose_has_a_service_for_every_procfile_process_plus_redis() -> None:
    """paper, bridge, worker, beat, flower and console (the Procfile's names) and redis are all services."""
    procfile = {line.split(":", 1)[0] for line in (ROOT / "Procfile").read_text().splitlines() if ":" in line}
    assert procfile == {"paper", "bridge", "worker", "beat", "flower", "console"}
    assert set(_compose()["services"]) == procfile | {"redis", "prometheus", "grafana"}


def test_compose_redis_is_durable_and_checked_and_flower_needs_credentials() -> None:
    """Redis keeps an append-only file with noeviction; redis, paper and worker have health checks."""
    services = _compose()["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert "noeviction" in services["redis"]["command"]
    for name in ("redis", "paper", "worker"):
        assert services[name]["healthcheck"]["test"], name
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert services["console"]["environment"]["QEXEC_CONSOLE_AUTH"].startswith("${QEXEC_CONSOLE_AUTH:?")


def test_compose_file_validates_with_docker_compose_when_present() -> None:
    """`docker compose config` (or docker-compose) accepts the file, and refuses it without Flower's or the console's
    credentials."""
    if shutil.which("docker-compose"):
        command = ["docker-compose"]
    elif (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0
    ):
        command = ["docker", "compose"]
    else:
        pytest.skip("neither `docker compose` nor docker-compose is installed (the tests above still read the file)")
    args = [*command, "-f", str(ROOT / "docker" / "compose.yml"), "config", "--quiet"]
    flower, console = {"FLOWER_BASIC_AUTH": "ops:pw"}, {"QEXEC_CONSOLE_AUTH": "ops:pw"}
    ok = subprocess.run(
        args, capture_output=True, text=True, check=False, env={**flower, **console, "PATH": "/usr/bin:/bin"}
    )
    assert ok.returncode == 0, ok.stderr
    for given, missing in ((console, "FLOWER_BASIC_AUTH"), (flower, "QEXEC_CONSOLE_AUTH")):
        env = {**given, "PATH": "/usr/bin:/bin"}
        refused = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
        assert refused.returncode != 0
        assert missing in refused.stderr
