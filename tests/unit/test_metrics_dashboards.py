"""infra/prometheus and infra/grafana against the code: scrape targets use the settings' ports, and every
metric a dashboard panel queries is one that some service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from supernode.frontend.http_metrics import HttpMetricsMiddleware
from supernode.runtime import metrics
from supernode.runtime.config import Settings
from supernode.runtime.worker_metrics import CacheMetrics, WorkerMetrics, configure_decode_metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
DASHBOARD = json.loads((ROOT / "infra/grafana/dashboards/supernode.json").read_text())
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_series() -> set[str]:
    registries: list[CollectorRegistry] = [
        metrics.ServingMetrics("m").registry,
        metrics.FabricMetrics().registry,
    ]
    http = CollectorRegistry()
    HttpMetricsMiddleware(app=None, registry=http)  # type: ignore[arg-type]
    registries.append(http)
    for role in ("prefill", "decode"):
        worker = WorkerMetrics(role, f"{role}-0", num_npus=16)
        CacheMetrics(worker)
        if role == "decode":
            configure_decode_metrics(worker, Settings(), kv_capacity_tokens_per_die=1000)
        registries.append(worker.registry)
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics.render(*registries).decode()):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def test_scrape_targets_use_service_names_and_metrics_ports() -> None:
    settings = Settings()
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in PROMETHEUS["scrape_configs"]
    }
    assert targets == {
        "router": [f"router:{settings.router.metrics_port}"],
        "frontend": [f"frontend:{settings.frontend.port}"],
        "fabric": [f"fabric:{settings.fabric.metrics_port}"],
        "kvpool": [f"kvpool:{settings.kvpool.metrics_port}"],
        "prefill": [
            f"prefill-0:{settings.prefill.metrics_port}",
            f"prefill-1:{settings.prefill.metrics_port}",
        ],
        "decode": [f"decode-0:{settings.decode.metrics_port}"],
    }


def test_every_dashboard_query_names_an_exported_metric() -> None:
    exported = exported_series()
    exprs = [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]
    assert len(DASHBOARD["panels"]) >= 8
    used = {name for expr in exprs for name in re.findall(r"\b(?:vllm:|supernode_)[a-z0-9_:]+", expr)}
    assert used and not used - exported, sorted(used - exported)


def test_panels_have_unique_ids_and_refids() -> None:
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) and panel["datasource"]["uid"] == "prometheus"
