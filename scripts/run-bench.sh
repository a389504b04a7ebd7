#!/usr/bin/env bash
# `make bench`: every bench/*_bench.py on the local cluster, results in bench/results/.
#
# Convention for a benchmark bench/NAME_bench.py: run as
#   .venv/bin/python bench/NAME_bench.py --out bench/results/NAME.json
# it writes its measurements to that JSON file and a short markdown summary beside it
# (bench/results/NAME.md); this script concatenates the summaries into SUMMARY.md, and
# bench/plots.py writes BENCHMARKS.md at the top and its plots in bench/results/plots/.
# Targets are reported as ratios against baselines measured in the same run, never
# asserted: the numbers depend on the machine and on whatever else it runs.
#
# BENCH_SIZES (e.g. "100M" or "100M,1G"), BENCH_PG_SIZES and BENCH_OS_SIZES choose the sizes
# of the stand-in's, PostgreSQL's and OpenSearch's moves, BENCH_ENGINE_SIZES the stacks of the
# engine-overhead benchmark (3,50,200); BENCH_QUICK=1 runs each at its smallest size only
# (those unset; the engine benchmark at 3 and 50, a slope needs two). BENCH_ONLY (e.g. "move") runs only the named benchmarks.
# The cluster (5 nodes: the engine benchmark spreads its stacks over five) and images are
# brought up if needed; the cluster is stopped afterwards only if this script started it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
export FLOCKER_NODES_FILE="${FLOCKER_NODES_FILE:-$repo/.cluster/nodes.json}"
results=bench/results
if [ "${BENCH_QUICK:-}" = 1 ]; then
  export BENCH_SIZES="${BENCH_SIZES:-100M}" BENCH_PG_SIZES="${BENCH_PG_SIZES:-250M}" BENCH_OS_SIZES="${BENCH_OS_SIZES:-100M}"
  export BENCH_ENGINE_SIZES="${BENCH_ENGINE_SIZES:-3,50}"
fi

started_cluster=0
if [ "$(bash scripts/cluster.sh status 2>/dev/null || true)" = "no cluster" ]; then
  started_cluster=1
  trap 'bash scripts/cluster.sh down' EXIT
fi
bash scripts/cluster.sh up 5
bash scripts/build-images.sh

mkdir -p "$results"
for script in bench/*_bench.py; do
  name="$(basename "$script" _bench.py)"
  if [ -n "${BENCH_ONLY:-}" ] && [[ ",$BENCH_ONLY," != *",$name,"* ]]; then continue; fi
  echo "bench: $name" >&2
  .venv/bin/python "$script" --out "$results/$name.json"
done

{
  echo "# Benchmark results"
  echo
  echo "Written $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores by a run of $((SECONDS / 60)) min $((SECONDS % 60)) s${BENCH_QUICK:+ (BENCH_QUICK=$BENCH_QUICK)}${BENCH_ONLY:+ (BENCH_ONLY=$BENCH_ONLY)}; each ratio compares numbers taken in one run of its benchmark."
  # Every benchmark's newest summary, also of those BENCH_ONLY skipped this time.
  for script in bench/*_bench.py; do
    summary="$results/$(basename "$script" _bench.py).md"
    [ -f "$summary" ] || continue
    echo
    cat "$summary"
  done
} >"$results/SUMMARY.md"
# From every benchmark's newest results too; one whose JSON is missing is named there.
.venv/bin/python bench/plots.py --results "$results" --out BENCHMARKS.md --plots "$results/plots"
echo "bench: summary in $results/SUMMARY.md, at a glance in BENCHMARKS.md (cluster started here: $started_cluster)" >&2
