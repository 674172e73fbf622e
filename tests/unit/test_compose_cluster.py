"""The compose "cluster" profile and its worker override against the settings and each other."""

from __future__ import annotations

from pathlib import Path

import yaml

from supernode.runtime.config import Settings, known_env_vars

ROOT = Path(__file__).resolve().parents[2]
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
OVERRIDE = yaml.safe_load((ROOT / "infra" / "compose.cluster.yml").read_text())["services"]
PROFILE = {name: svc for name, svc in SERVICES.items() if "cluster" in svc.get("profiles", [])}


def test_six_cluster_nodes_joined_by_one_init_job():
    nodes = {n for n, svc in PROFILE.items() if "--cluster-enabled" in (svc.get("command") or [])}
    assert len(nodes) == 6
    for name in nodes:
        command = PROFILE[name]["command"]
        assert command[command.index("--cluster-require-full-coverage") + 1] == "no", name
        assert command[command.index("--maxmemory-policy") + 1] == "allkeys-lru", name
        assert "ports" not in PROFILE[name], "cluster nodes stay on the internal network"
    init = PROFILE["redis-cluster-init"]
    assert set(init["depends_on"]) == nodes
    assert "--cluster-replicas 1" in init["command"][0]


def test_cluster_pool_services_and_the_workers_that_use_them():
    pools = {
        n for n, svc in PROFILE.items() if svc.get("command", [])[:3] == ["supernode", "serve", "kvpool"]
    }
    assert len(pools) >= 2, "several stateless pool services"
    for name in pools:
        env = PROFILE[name]["environment"]
        assert env["SUPERNODE_KVPOOL__REDIS_MODE"] == "cluster"
        assert env["SUPERNODE_KVPOOL__REDIS_URL"].split("@")[-1].split(":")[0] in PROFILE
    port = Settings().kvpool.port
    for worker, svc in OVERRIDE.items():
        assert worker in SERVICES, f"override names unknown service {worker}"
        assert set(svc["environment"]) <= known_env_vars()
        addresses = svc["environment"]["SUPERNODE_KVPOOL__ADDRESSES"].split(",")
        assert {a.split(":")[0] for a in addresses} == pools
        assert all(a.endswith(f":{port}") for a in addresses)
