# Supernode: `make run` and `make test` are the two commands; `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
CONSTRAINTS := infra/constraints.txt
# `docker compose` (v2 plugin) where it exists, else Debian's docker-compose (v1).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
PROTOS := $(wildcard protos/supernode/v1/*.proto)

.DEFAULT_GOAL := help

.PHONY: help setup redis protos protos-check cluster run up down test test-unit test-service test-e2e lint \
        bench bench-fidelity bench-fidelity-virtual bench-sim sim \
        load load-prefill load-decode load-slo load-cache load-trace load-xl3m chaos clean \
        lock base-image compose-test

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev,bench]'
	@touch $(STAMP)

setup: $(STAMP) redis ## Create .venv, install the package and dev tools, make sure redis-server/-cli exist

redis: ## Make sure redis-server and redis-cli are installed (Debian's packages when run as root)
	@bash infra/ensure-redis.sh

protos: $(STAMP) ## Regenerate the gRPC stubs in services/supernode/v1
	$(PY) -m grpc_tools.protoc -I protos --python_out=services --grpc_python_out=services \
	  --pyi_out=services $(PROTOS)

protos-check: $(STAMP) ## Fail when the checked-in stubs are stale
	@tmp=$$(mktemp -d); \
	$(PY) -m grpc_tools.protoc -I protos --python_out=$$tmp --grpc_python_out=$$tmp --pyi_out=$$tmp $(PROTOS); \
	if diff -r -x __init__.py -x __pycache__ -x py.typed $$tmp/supernode/v1 services/supernode/v1 >/dev/null; then \
	  echo "protos: stubs are fresh"; rm -rf $$tmp; \
	else diff -r -x __init__.py -x __pycache__ -x py.typed $$tmp/supernode/v1 services/supernode/v1 | head -20; \
	  rm -rf $$tmp; echo "protos: stubs are stale, run 'make protos'"; exit 1; fi

cluster: setup ## The local topology on a Redis Cluster (3 masters + 3 replicas) with 2 pool services; Ctrl-C stops
	$(VENV)/bin/supernode up --redis-cluster 3 --kvpool 2

run: setup ## Start the local topology, send a demo workload, print a report, stop
	$(VENV)/bin/supernode demo

up: ## docker compose up (needs a Docker engine)
	$(COMPOSE) up -d --build

down: ## docker compose down
	$(COMPOSE) down

lock: ## Regenerate infra/constraints.txt: exact versions for `make setup` and the image
	bash infra/lock.sh

base-image: ## Build registry-free base images from Debian packages (debootstrap; reused when present)
	bash infra/base-image.sh

compose-test: $(STAMP) ## Build the images, run the stack in Docker, check it from the host -> reports/compose.json
	$(PY) infra/compose_test.py

test: setup ## Unit, service and end-to-end tests
	$(PY) -m pytest -q -p no:cacheprovider tests

test-unit: setup ## Pure and in-process tests (no servers; seconds)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

test-service: setup ## One service in-process on loopback gRPC per test
	$(PY) -m pytest -q -p no:cacheprovider tests/service

test-e2e: setup ## Real redis-server and every service as a process
	$(PY) -m pytest -q -p no:cacheprovider tests/e2e

lint: setup ## ruff and mypy
	$(VENV)/bin/ruff check services tests benchmarks
	$(VENV)/bin/ruff format --check services tests benchmarks
	$(VENV)/bin/mypy services/supernode tests benchmarks

bench: setup ## Micro-benchmarks into reports/bench.json
	$(PY) -m benchmarks

bench-fidelity: setup ## The live stack vs the cost model at the paper's points -> reports/fidelity.{json,md}, live_{max,fidelity}_time_scale
	$(PY) -m benchmarks.fidelity

bench-fidelity-virtual: setup ## Fidelity's scenarios on the in-process cluster, virtual time (no host lag)
	$(PY) -m benchmarks.fidelity_virtual

SIM_ARGS ?=
sim: setup ## The mixed workload on the paper's whole deployment, simulated (supernode sim)
	$(VENV)/bin/supernode sim $(SIM_ARGS)

bench-sim: setup ## Live stack vs supernode sim on one small scenario -> reports/sim_check.json; sim speed
	$(PY) -m benchmarks.sim_check

LOAD_ARGS ?=
BENCH := $(VENV)/bin/supernode bench --stack auto

load: setup ## Mixed workload (Poisson, multi-turn sessions, 50% reuse); starts a local stack if none runs
	$(BENCH) --scenario mixed $(LOAD_ARGS)

load-prefill: setup ## The paper's prefill point: 4K prompts, 16K tokens per NPU
	$(BENCH) --scenario prefill $(LOAD_ARGS)

load-decode: setup ## The paper's decode point: batch 96 per NPU, KV 4K, MTP
	$(BENCH) --scenario decode $(LOAD_ARGS)

load-slo: setup ## TPOT SLOs 50 / 30 / 15 ms: batch sweep, best point under each SLO
	$(BENCH) --scenario slo $(LOAD_ARGS)

load-cache: setup ## Context caching: prefix reuse 0 / 50 / 90%
	$(BENCH) --scenario cache $(LOAD_ARGS)

load-trace: setup ## Replay the shipped Mooncake-format sample trace
	$(BENCH) --scenario trace $(LOAD_ARGS)

load-xl3m: setup ## Passkey retrieval 8K..1M tokens, xl3m vs truncate, 4K window (--huge adds 4M, 20M)
	$(VENV)/bin/supernode bench --scenario passkey --context-window 4096 $(LOAD_ARGS)

CHAOS_ARGS ?=

chaos: setup ## Faults under load on 2 prefill + 2 decode -> reports/chaos.{json,md} (CHAOS_ARGS="--quick")
	$(PY) -m benchmarks.chaos $(CHAOS_ARGS)

clean: ## Remove the venv and reports
	rm -rf $(VENV) reports .run
