#!/usr/bin/env bash
# `make test`: lint, unit tests, then the integration tests on a local cluster that
# this script starts and always stops again.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLOCKER_REQUIRE_CLUSTER=1

.venv/bin/ruff check provider sdk examples tests bench
.venv/bin/pytest -q tests/unit

trap 'bash scripts/cluster.sh down' EXIT
# Five nodes, the fifth with its volumes on a filesystem of 64 MB: the disk-full test moves a
# volume of twice that there (test_node_faults.py), and the load test's fifty small volumes
# share out over all five. No test puts more on the last node: the others name node1-node4.
FLOCKER_NODE5_DISK_MB=64 bash scripts/cluster.sh up 5
bash scripts/build-images.sh
.venv/bin/pytest -v -p no:cacheprovider tests/integration
