"""The Grafana dashboard (docker/grafana/): each panel reads only metrics qexec or Flower exports, each quantity the
operator asked for has its panel, and compose provisions it with a Prometheus that scrapes the bridge and Flower."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import redis
import yaml
from flower.events import get_prometheus_metrics
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

from qexec import constants
from qexec.config import Settings
from qexec.metrics import RedisCollector
from qexec.models import utcnow

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "qexec.json"
METRIC_NAME = re.compile(r"\b(?:qexec|flower)_[A-Za-z0-9_]+\b")

# The quantities of the operator's dashboard (issue 18), each by the metrics its panel must read.
QUANTITIES = {
    "intents": {"qexec_intents_received_total"},
    "results by status": {"qexec_results_published_total"},
    "intent-to-result latency percentiles": {"qexec_intent_to_result_seconds_bucket"},
    "fill latency percentiles": {"qexec_fill_latency_seconds_bucket"},
    "venue weight used": {"qexec_venue_budget_used"},
    "429s": {"qexec_venue_rate_limited_total"},
    "unprotected seconds": {"qexec_position_unprotected_seconds"},
    "stream uptime": {"qexec_venue_stream_up"},
}


def sample_names(family: Metric) -> set[str]:
    """The series names a family is exposed under (a counter's `_total`, a histogram's bucket, sum and count)."""
    if family.type == "counter":
        return {f"{family.name}_total"}
    if family.type == "histogram":
        return {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return {family.name}


def qexec_exports(r: redis.Redis) -> set[str]:
    """Every series name the bridge's collector yields, with the heartbeat that brings its two gauges recorded."""
    r.hset(constants.HEARTBEAT_KEY, mapping={"at": utcnow().isoformat(), "ok": "1"})
    families = list(RedisCollector(Settings(), r).collect())
    assert len(families) > 1, "Redis answered: more than qexec_redis_up"
    return {name for family in families for name in sample_names(family)}


def flower_exports() -> set[str]:
    """Every series name Flower's /metrics serves (its families, registered in prometheus_client's registry)."""
    get_prometheus_metrics()
    return {name for family in REGISTRY.collect() if family.name.startswith("flower_") for name in sample_names(family)}


def panels() -> list[dict[str, Any]]:
    """The dashboard's panels (rows' nested panels included)."""
    found: list[dict[str, Any]] = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def exprs(panel: dict[str, Any]) -> list[str]:
    """The PromQL queries of a panel."""
    return [target["expr"] for target in panel.get("targets", []) if target.get("expr")]


def test_every_panel_query_names_only_metrics_qexec_or_flower_exports(redis_client: redis.Redis) -> None:
    """Each query of each panel names at least one metric, and every metric it names is one the bridge's collector
    or Flower serves."""
    exported = qexec_exports(redis_client) | flower_exports()
    unknown, empty = [], []
    for panel in panels():
        if panel.get("type") == "row":
            continue
        if not exprs(panel):
            empty.append(panel["title"])
        for expr in exprs(panel):
            named = set(METRIC_NAME.findall(expr))
            if not named:
                empty.append(f"{panel['title']}: {expr}")
            unknown += [f"{panel['title']}: {name}" for name in sorted(named - exported)]
    assert unknown == []
    assert empty == []


def test_each_quantity_of_the_dashboard_has_a_panel_that_reads_its_metric() -> None:
    """Intents, results by status, both latency percentiles (histogram_quantile), venue weight used, 429s,
    unprotected seconds and stream uptime each have a panel."""
    read = [(panel["title"], expr) for panel in panels() for expr in exprs(panel)]
    missing = [
        quantity
        for quantity, metrics in QUANTITIES.items()
        if not any(metrics <= set(METRIC_NAME.findall(expr)) for _title, expr in read)
    ]
    assert missing == []
    for histogram in ("qexec_intent_to_result_seconds_bucket", "qexec_fill_latency_seconds_bucket"):
        levels = {
            match.group(1)
            for _title, expr in read
            if histogram in expr
            for match in [re.search(r"histogram_quantile\(\s*([0-9.]+)", expr)]
            if match
        }
        assert {"0.5", "0.95", "0.99"} <= levels, histogram


def test_compose_provisions_prometheus_and_grafana_from_files_in_the_repository() -> None:
    """Every file compose mounts exists; Prometheus scrapes the bridge's metrics port and Flower; Grafana's providers
    point at the mounted dashboards and its datasource is the one the dashboard names."""
    services = yaml.safe_load((DOCKER / "compose.yml").read_text())["services"]
    mounts: dict[str, str] = {}
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (DOCKER / source).exists(), volume
                mounts[target] = source
    scrape = yaml.safe_load((DOCKER / "prometheus.yml").read_text())["scrape_configs"]
    targets = {target for job in scrape for config in job["static_configs"] for target in config["targets"]}
    assert targets == {f"bridge:{Settings().metrics_port}", "flower:5555"}
    # The bridge listens on the compose network, where Prometheus reaches it (no port published on the host).
    assert services["bridge"]["environment"]["QEXEC_METRICS_HOST"] == "0.0.0.0"  # noqa: S104
    provisioning = DOCKER / mounts["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards" / "qexec.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]
    assert (DOCKER / mounts["/var/lib/grafana/dashboards"] / DASHBOARD.name).exists()
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    uids = {panel["datasource"]["uid"] for panel in panels()}
    assert uids == {datasource["uid"]}
