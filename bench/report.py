"""What every benchmark of bench/ shares: its sizes from the command line, its verdicts
against targets, and where its results go (JSON, and a markdown summary beside it)."""

from __future__ import annotations

import argparse
import json
import os
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
    op, target = targets[name]
    met = value <= target if op == "<=" else value >= target
    return f"{'met' if met else 'MISSED'} (target {op} {target})"


def ratio_table(heading: str, ratios: dict[str, float], targets: Targets) -> list[str]:
    lines = ["", f"| {heading} | value | |", "|---|---|---|"]
    return lines + [f"| {name} | {value:.3f} | {verdict(targets, name, value)} |" for name, value in ratios.items()]


def write_results(out: Path, benchmark: str, targets: Targets, markdown: Callable[[dict[str, Any]], str], **result: Any) -> Path:
    """The run's JSON (when and where it ran, the targets, ``result``) and its markdown summary."""
    document = {
        "benchmark": benchmark,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        **result,
        "targets": {name: f"{op} {target}" for name, (op, target) in targets.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(document))
    return out.with_suffix(".md")
