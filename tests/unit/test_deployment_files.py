"""compose.yaml, the Dockerfile and the Prometheus config, checked statically (no Docker
engine runs here): every service has a container, its module and ports match DESIGN.md."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKER_PORTS = {"publisher": 9101, "sync": 9102, "ml": 9103, "ticker": 9104}
SERVICES = ("gateway", "publisher", "sync", "ml", "ticker", "sandbox")


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_every_service_runs_in_its_own_container_with_its_module() -> None:
    services = compose()["services"]
    for name in SERVICES:
        assert services[name]["command"] == ["python", "-m", f"services.{name}"]
        assert (ROOT / "services" / name / "__main__.py").exists(), name
    assert {"kafka", "postgres", "prometheus", "grafana"} <= set(services)


def test_ports_match_the_design() -> None:
    services = compose()["services"]
    assert "8000:8000" in services["gateway"]["ports"]
    assert {"8010:8010", "8011:8011"} <= set(services["sandbox"]["ports"])
    for name, port in WORKER_PORTS.items():
        assert f"{port}:{port}" in services[name]["ports"]


def test_services_reach_kafka_and_postgres_by_service_name() -> None:
    env = compose()["services"]["publisher"]["environment"]
    assert env["ADFLUX_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["ADFLUX_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["ADFLUX_DATABASE_URL"]


def test_dockerfile_copies_what_exists_and_installs_pinned_dependencies() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    assert any("-c constraints.txt" in line for line in lines if line.startswith("RUN pip"))


def test_prometheus_scrapes_every_service_on_its_design_port() -> None:
    config = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert "gateway:8000" in targets
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
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert any(m.startswith("./infra/prometheus/alerts.yml:") for m in mounts)


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
