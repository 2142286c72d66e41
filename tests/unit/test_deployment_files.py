"""compose.yaml, the Containerfiles and the Prometheus config, checked statically (the
container e2e runs them): every service has a container with its module, only the gateway and
Grafana are published (on 127.0.0.1), every image is non-root with a health check and a
BASE_IMAGE argument, and the cluster profile matches what infra/images/compose.py sets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.images import build
from infra.images.compose import Stack
from infra.stack import GATEWAY_PORT, WORKER_PORTS

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "publisher", "sync", "ml", "ticker", "sandbox")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def default(value: str) -> str:
    """The default of a `${VAR:-default}` interpolation (the value itself otherwise)."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return match.group(1) if match else value


def test_every_service_runs_in_its_own_container_with_its_module() -> None:
    services = compose()["services"]
    for name in SERVICES:
        assert services[name]["command"] == ["python", "-m", f"services.{name}"]
        assert (ROOT / "services" / name / "__main__.py").exists(), name
    assert {"kafka", "postgres", "prometheus", "grafana"} <= set(services)


def test_only_the_gateway_and_grafana_are_published_and_on_loopback_only() -> None:
    services = compose()["services"]
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert set(published) == {"gateway", "grafana"}
    assert published["gateway"] == [
        f"127.0.0.1:${{ADFLUX_GATEWAY_PORT:-{GATEWAY_PORT}}}:{GATEWAY_PORT}"
    ]
    assert published["grafana"] == ["127.0.0.1:${ADFLUX_GRAFANA_PORT:-3000}:3000"]
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_the_token_is_required_and_servers_listen_on_the_container_network() -> None:
    for name in SERVICES:
        env = compose()["services"][name]["environment"]
        assert env["ADFLUX_API_TOKEN"].startswith("${ADFLUX_API_TOKEN:?"), name
        assert env["ADFLUX_BIND_ADDRESS"] == "0.0.0.0", name


def test_services_reach_kafka_postgres_and_the_sandbox_by_service_name() -> None:
    env = compose()["services"]["publisher"]["environment"]
    assert default(env["ADFLUX_KAFKA_BOOTSTRAP"]) == "kafka:9092"
    assert default(env["ADFLUX_DATABASE_URL"]).startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in default(env["ADFLUX_DATABASE_URL"])
    assert default(env["ADFLUX_GOOGLE_ADS_ENDPOINT"]) == "sandbox:8011"
    assert default(env["ADFLUX_META_GRAPH_URL"]) == "http://sandbox:8010"


def test_every_service_checks_its_own_readiness_port() -> None:
    services = compose()["services"]
    for name, port in {**WORKER_PORTS, "gateway": GATEWAY_PORT}.items():
        assert services[name]["environment"]["ADFLUX_HEALTH_URL"] == (
            f"http://127.0.0.1:{port}/readyz"
        )


def test_compose_runs_only_images_make_images_builds_except_grafana() -> None:
    built = {f"{image.repository}:latest" for image in build.IMAGES}
    used = {s["image"] for name, s in compose()["services"].items() if name != "grafana"}
    assert used == built


@pytest.mark.parametrize("image", build.IMAGES, ids=lambda image: image.name)
def test_every_image_is_non_root_with_a_health_check_on_a_base_argument(
    image: build.Image,
) -> None:
    lines = (ROOT / image.containerfile).read_text().splitlines()
    assert any(line.startswith("ARG BASE_IMAGE=") for line in lines)
    assert "FROM ${BASE_IMAGE}" in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
        for mounted in re.findall(r"--mount=type=bind,source=([^,]+)", line):
            assert (ROOT / ".dockerignore").read_text().count(f"!{mounted}") == 1, mounted


def test_the_cluster_profile_matches_what_compose_up_sets_for_three_brokers() -> None:
    services = compose()["services"]
    brokers = {n: s for n, s in services.items() if s.get("image", "").endswith("-kafka:latest")}
    assert set(brokers) == {"kafka", "kafka-2", "kafka-3"}
    env = Stack(build.Engine("podman"), brokers=3).environment()
    voters = {f"{s['environment']['KAFKA_NODE_ID']}@{n}:9093" for n, s in brokers.items()}
    assert set(env["ADFLUX_KAFKA_VOTERS"].split(",")) == voters
    assert set(env["ADFLUX_KAFKA_BOOTSTRAP"].split(",")) == {f"{n}:9092" for n in brokers}
    assert services["kafka-2"]["profiles"] == services["kafka-3"]["profiles"] == ["cluster"]
    assert (env["ADFLUX_TOPIC_REPLICATION_FACTOR"], env["ADFLUX_TOPIC_MIN_INSYNC_REPLICAS"]) == (
        "3",
        "2",
    )


def test_prometheus_scrapes_every_service_on_its_design_port() -> None:
    config = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert f"gateway:{GATEWAY_PORT}" in targets
    assert {f"{name}:{port}" for name, port in WORKER_PORTS.items()} <= targets


def exported_metric_names() -> set[str]:
    from prometheus_client import REGISTRY

    import shared.metrics  # noqa: F401  (registers the metrics)

    return {metric.name for metric in REGISTRY.collect()}


def test_alert_rules_are_loaded_and_only_name_exported_metrics() -> None:
    import re

    config = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    rules = yaml.safe_load((ROOT / "infra" / "prometheus" / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert exprs
    used = {
        n.removesuffix("_bucket").removesuffix("_total")
        for expr in exprs
        for n in re.findall(r"\b(adflux_[a-z_]+)", expr)
    }
    assert used and used <= exported_metric_names()
    containerfile = (ROOT / "infra" / "images" / "prometheus" / "Containerfile").read_text()
    assert "infra/prometheus/alerts.yml" in containerfile


def test_dashboard_queries_only_name_metrics_the_services_export() -> None:
    import json
    import re

    from prometheus_client import REGISTRY

    import shared.metrics  # noqa: F401  (registers the metrics)

    exported = set()
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            exported.add(sample.name)
        exported.add(metric.name)
    dashboard = json.loads((ROOT / "infra" / "grafana" / "dashboards" / "adflux.json").read_text())
    names_used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(adflux_[a-z_]+)", target["expr"])
    }
    assert names_used, "the dashboard has queries"
    bases = {n.removesuffix("_bucket").removesuffix("_total") for n in names_used}
    missing = bases - exported
    assert not missing, missing
