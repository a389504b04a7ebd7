#!/usr/bin/env bash
# `make test`: lint, unit tests, then the integration tests on a local cluster that
# this script starts and always stops again.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLOCKER_REQUIRE_CLUSTER=1

.venv/bin/ruff check provider sdk examples tests bench
.venv/bin/pytest -q tests/unit

trap 'bash scripts/cluster.sh down' EXIT
bash scripts/cluster.sh up 4
bash scripts/build-images.sh
.venv/bin/pytest -v -p no:cacheprovider tests/integration
