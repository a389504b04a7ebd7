"""What every benchmark of bench/ shares: its sizes from the command line, its verdicts
against targets, where its results go (JSON, and a markdown summary beside it), the machine
it ran on, and a client's timeline through a move."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Targets = dict[str, tuple[str, float]]  # name -> ("<=" or ">=", target)


def parse_sizes(description: str, known: Iterable[str], environment: str) -> tuple[Path, list[str]]:
    """``--out`` and ``--sizes`` (default: the variable ``environment``, else every known size)."""
    known = list(known)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="JSON file; the markdown summary goes beside it (.md)")
    parser.add_argument("--sizes", default=os.environ.get(environment, ",".join(known)), help=f"comma-separated, of {', '.join(known)}")
    args = parser.parse_args()
    labels = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in labels if s not in known]
    if unknown:
        parser.error(f"unknown sizes {unknown}; known: {', '.join(known)}")
    return args.out, labels


def verdict(targets: Targets, name: str, value: float) -> str:
    if name not in targets:
        return "context"
    op, target = targets[name]
    met = value <= target if op == "<=" else value >= target
    return f"{'met' if met else 'MISSED'} (target {op} {target})"


def ratio_table(heading: str, ratios: dict[str, float], targets: Targets) -> list[str]:
    lines = ["", f"| {heading} | value | |", "|---|---|---|"]
    return lines + [f"| {name} | {value:.3f} | {verdict(targets, name, value)} |" for name, value in ratios.items()]


def machine() -> str:
    """Cores, CPU model, memory and kernel: what the ratios of a run depend on."""
    cpuinfo, meminfo = Path("/proc/cpuinfo"), Path("/proc/meminfo")
    model = next((line.split(":", 1)[1].strip() for line in _lines(cpuinfo) if line.startswith("model name")), platform.processor())
    kib = next((int(line.split()[1]) for line in _lines(meminfo) if line.startswith("MemTotal:")), 0)
    memory = f", {kib / (1 << 20):.0f} GiB" if kib else ""
    return f"{os.cpu_count()} cores ({model or 'unknown CPU'}){memory}, {platform.system()} {platform.release()} {platform.machine()}"


def _lines(path: Path) -> list[str]:
    # Not every system has /proc: the machine is then described by what platform knows.
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def client_timeline(served: list[float], last_move: dict[str, Any], margin: float = 1.0) -> dict[str, Any]:
    """A client's acknowledgements around a move's switch-over and the move's steps, in seconds
    since the move started.

    ``served`` is on this process's monotonic clock, the move's steps on the wall clock: both
    go onto the steps' clock. Only ``margin`` seconds either side of the hold to the move's
    end are kept, so that a move's record stays small however long its phase 1 ran.
    """
    start, steps = last_move["started_at"], last_move["steps"]
    offset = time.time() - time.monotonic() - start
    # The hold, or the stop of an application without ports: where clients start to notice.
    noticed = next(step["started_at"] for step in steps if step["step"].startswith(("hold ", "stop ")))
    first = noticed - start - margin
    last = max(step["started_at"] + step["seconds"] for step in steps) - start + margin
    return {
        "acknowledged_s": [round(t + offset, 4) for t in served if first <= t + offset <= last],
        "steps": [{"step": step["step"], "start_s": round(step["started_at"] - start, 3), "seconds": step["seconds"]} for step in steps],
    }


def write_results(out: Path, benchmark: str, targets: Targets, markdown: Callable[[dict[str, Any]], str], **result: Any) -> Path:
    """The run's JSON (when and where it ran, the targets, ``result``) and its markdown summary."""
    document = {
        "benchmark": benchmark,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "machine": machine(),
        **result,
        "targets": {name: f"{op} {target}" for name, (op, target) in targets.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(document))
    return out.with_suffix(".md")
