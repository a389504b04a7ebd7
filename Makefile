# flocker-pulumi: `make up` runs the ELK example on a local cluster, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

NODES ?= 3
STACK ?= local
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
# Local state inside the clone, no cloud login; the engine and its plugins from .venv.
export PATH := $(VENV)/bin:$(PATH)
export PULUMI_BACKEND_URL ?= file://$(ROOT)/.pulumi-state
export PULUMI_CONFIG_PASSPHRASE ?=
export PULUMI_SKIP_UPDATE_CHECK := true
export PULUMI_PYTHON_CMD := $(VENV)/bin/python
export FLOCKER_NODES_FILE ?= $(ROOT)/.cluster/nodes.json

.PHONY: help install cluster cluster-down images up down test unit lint bench clean env

help:
	@echo "make up     - install, start a $(NODES)-node local cluster, deploy the ELK example"
	@echo "make test   - run the whole test suite (starts and stops its own cluster)"
	@echo "make down   - destroy the example stack, then the cluster"
	@echo "make bench  - benchmarks; results in bench/results/"
	@echo 'eval "$$(make -s env)" - this shell gets the pulumi and flocker-deploy of .venv, and the local state'

# For a shell of one's own: the same engine, state and node file as `make up`, and for `docker
# --tlsverify -H tcp://NODE:2376`, the local cluster's client certificate (the node file names it;
# DOCKER_TLS_VERIFY is left alone: set, it would send a plain `docker` to tcp://localhost:2376).
env:
	@echo 'export PATH="$(VENV)/bin:$$PATH" PULUMI_BACKEND_URL="$(PULUMI_BACKEND_URL)" PULUMI_CONFIG_PASSPHRASE="$(PULUMI_CONFIG_PASSPHRASE)"'
	@echo 'export PULUMI_SKIP_UPDATE_CHECK=true PULUMI_PYTHON_CMD="$(PULUMI_PYTHON_CMD)" FLOCKER_NODES_FILE="$(FLOCKER_NODES_FILE)"'
	@tls="$$(grep -o '"tls": "[^"]*"' "$(FLOCKER_NODES_FILE)" 2>/dev/null | head -n 1 | cut -d'"' -f4)"; \
	  if [ -n "$$tls" ]; then echo "export DOCKER_CERT_PATH=\"$$tls\""; fi

install:
	@bash scripts/install.sh

# Nodes added to a cluster whose images were built get them too (seconds, from the cache).
cluster: install
	@bash scripts/cluster.sh up $(NODES)
	@bash scripts/build-images.sh --load-only

cluster-down:
	@bash scripts/cluster.sh down

images: cluster
	@bash scripts/build-images.sh

up: images
	@bash scripts/elk-up.sh $(STACK)

down:
	@if [ -x $(VENV)/bin/pulumi ] && [ -d .pulumi-state ]; then \
	  pulumi destroy --yes --stack $(STACK) --non-interactive || exit 1; fi
	@bash scripts/cluster.sh down

unit: install
	$(VENV)/bin/pytest -q tests/unit

lint: install
	$(VENV)/bin/ruff check provider sdk examples tests bench
	$(VENV)/bin/ruff format --check provider sdk examples tests bench

test: install
	@bash scripts/run-tests.sh

bench: install
	@bash scripts/run-bench.sh

clean: cluster-down
	rm -rf .pulumi-state .cluster
