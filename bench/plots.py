"""BENCHMARKS.md and its plots, from whatever results bench/results/ holds.

`make bench` runs this after the benchmarks (scripts/run-bench.sh); it can be run alone on
the results of earlier runs:

    .venv/bin/python bench/plots.py [--results bench/results] [--out BENCHMARKS.md] [--plots bench/results/plots]

Each figure is a ratio against a baseline from the same run of the same benchmark; absolute
times are shown beside them as context only. A benchmark whose JSON is missing, or has a shape
this does not know, is named as such in BENCHMARKS.md instead of failing the run: an hour of
measurements must not be lost to a plot.

The plots go beside the JSON they are drawn from (bench/results/plots/), so that the results
and their pictures are replaced together by one run and committed together. They are drawn on
matplotlib's Agg canvas, without pyplot: no display, no global figure state.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import Targets, machine, ratio_table  # noqa: E402

GB, MB = 1e9, 1e6
COLORS = {"stand-in": "tab:blue", "PostgreSQL": "tab:orange", "OpenSearch": "tab:green"}
# The steps of a move a client can notice, shaded on its timeline.
STEP_COLORS = {
    "hold": "gold",
    "stop": "tab:red",
    "phase 2": "tab:purple",
    "verify": "tab:pink",
    "start": "tab:green",
    "wait": "tab:olive",
    "route": "tab:cyan",
}


@dataclass(frozen=True)
class Size:
    bytes: int
    downtime_s: float
    baseline_s: float | None  # at the sizes the baseline ran at


@dataclass(frozen=True)
class Move:
    size_bytes: int
    phase2_s: float
    phase2_bytes: int
    timeline: dict[str, Any] | None


@dataclass
class Workload:
    name: str
    baseline: str
    sizes: list[Size] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    # Phase 2's floor in the same run: bytes per second of a raw copy, or (PostgreSQL) one cat per size.
    raw_bytes_per_second: float | None = None
    cat_s: dict[int, float] = field(default_factory=dict)


def phase2(last_move: dict[str, Any]) -> tuple[float, int]:
    """The phase-2 step's seconds (what the downtime pays) and the bytes its final round sent."""
    step = next(s for s in last_move["steps"] if s["step"].startswith("phase 2"))
    return step["seconds"], next(r for r in last_move["rounds"] if r["final"])["bytes_sent"]


def raw_rate(cases: list[dict[str, Any]]) -> float:
    copies = [copy for case in cases for copy in case["raw_copies"]]
    return sum(c["bytes"] for c in copies) / sum(c["seconds"] for c in copies)


def standin(document: dict[str, Any]) -> Workload:
    cases = list(document["cases"].values())
    workload = Workload("stand-in", "naive stop-copy-start", raw_bytes_per_second=raw_rate(cases))
    for case in cases:
        naive = case.get("naive")
        workload.sizes.append(Size(case["bytes"], case["downtime_seconds"], naive["downtime_seconds"] if naive else None))
        for move in case["moves"]:
            workload.moves.append(Move(case["bytes"], *phase2(move["last_move"]), move.get("client_timeline")))
    return workload


def postgres(document: dict[str, Any]) -> Workload:
    workload = Workload("PostgreSQL", "docker restart")
    for case in document["cases"].values():
        size = case["database_bytes"]
        workload.sizes.append(Size(size, case["downtime_seconds"], case["restart"]["client_downtime_seconds"]))
        for move in case["moves"]:
            workload.moves.append(Move(size, move["phase2_seconds"], move["phase2_round"]["bytes_sent"], move.get("client_timeline")))
        workload.cat_s[size] = case["cat_seconds"]
    return workload


def opensearch(document: dict[str, Any]) -> Workload:
    cases = list(document["cases"].values())
    workload = Workload("OpenSearch", "docker restart", raw_bytes_per_second=raw_rate(cases))
    for case in cases:
        move, size = case["move"], case["store_bytes"]
        workload.sizes.append(Size(size, move["client_downtime_seconds"], case["restart"]["client_downtime_seconds"]))
        workload.moves.append(Move(size, *phase2(move["last_move"]), move.get("client_timeline")))
    return workload


BENCHMARKS: dict[str, tuple[str, Callable[[dict[str, Any]], Workload] | None]] = {
    "move": ("Move, the Elasticsearch stand-in", standin),
    "postgres": ("Move, PostgreSQL", postgres),
    "opensearch": ("Move, OpenSearch", opensearch),
    "routing": ("Routing", None),
    "engine": ("Engine overhead at 3 to 200 applications", None),
}


def targets_of(document: dict[str, Any]) -> Targets:
    return {name: (text.split()[0], float(text.split()[1])) for name, text in document.get("targets", {}).items()}


def canvas(rows: int = 1) -> Figure:
    """A figure of ``rows`` plots, one above the other, with fixed margins (the constrained
    layout took most of the drawing's time and these figures' labels are known)."""
    height = 5.0 if rows == 1 else 3.8 * rows
    figure = Figure(figsize=(8, height))
    figure.subplots_adjust(left=0.1, right=0.97, bottom=0.5 / height + 0.02, top=1 - 0.55 / height, hspace=0.6)
    return figure


def save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)


def downtime_plot(workloads: list[Workload], path: Path) -> None:
    figure = canvas()
    ax = figure.add_subplot()
    for w in workloads:
        color = COLORS[w.name]
        ax.plot([s.bytes / GB for s in w.sizes], [s.downtime_s for s in w.sizes], "o-", color=color, label=f"{w.name}: move")
        based = [s for s in w.sizes if s.baseline_s is not None]
        ax.plot(
            [s.bytes / GB for s in based], [s.baseline_s for s in based], "s--", mfc="none", color=color, label=f"{w.name}: {w.baseline}"
        )
        for s in based:
            ax.annotate(
                f"×{s.downtime_s / s.baseline_s:.2f}",
                (s.bytes / GB, s.downtime_s),
                textcoords="offset points",
                xytext=(6, -12),
                color=color,
            )
    ax.set(xscale="log", yscale="log", xlabel="volume size (GB)", ylabel="client downtime (s)")
    ax.set_title("Move downtime against volume size (×: move over its baseline, same run)")
    ax.margins(x=0.12)  # room for the ratio beside the largest size
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    save(figure, path)


def phase2_plot(workloads: list[Workload], path: Path) -> None:
    figure = canvas()
    ax = figure.add_subplot()
    sent = [m.phase2_bytes for w in workloads for m in w.moves]
    span = [min(sent) / MB, max(sent) / MB]
    for w in workloads:
        color = COLORS[w.name]
        ax.plot([m.phase2_bytes / MB for m in w.moves], [m.phase2_s for m in w.moves], "o", color=color, label=f"{w.name}: phase 2")
        if w.raw_bytes_per_second:
            rate = w.raw_bytes_per_second
            ax.plot(
                span, [x * MB / rate for x in span], ":", color=color, label=f"{w.name}: those bytes at its raw copy's {rate / MB:.0f} MB/s"
            )
        if w.cat_s:
            ax.plot(
                [m.phase2_bytes / MB for m in w.moves],
                [w.cat_s[m.size_bytes] for m in w.moves],
                "s",
                mfc="none",
                color=color,
                label=f"{w.name}: one cat of the whole volume",
            )
    ax.set(xscale="log", yscale="log", xlabel="bytes sent in phase 2: changed since the last round (MB)", ylabel="phase-2 time (s)")
    ax.set_ylim(bottom=min(m.phase2_s for w in workloads for m in w.moves) / 5)
    ax.set_title("Phase-2 time against the data changed since the last round")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    save(figure, path)


def short(step: str) -> str:
    return "phase 2" if step.startswith("phase 2") else step.split(" ", 1)[0]


def timeline_panel(ax: Axes, w: Workload, move: Move, timeline: dict[str, Any]) -> None:
    acknowledged, steps = timeline["acknowledged_s"], timeline["steps"]
    # The client sends one request at a time: the time between two acknowledgements is a request's latency.
    gaps_ms = [(b - a) * 1000 for a, b in zip(acknowledged, acknowledged[1:], strict=False)]
    ax.plot(acknowledged[1:], gaps_ms, ".", markersize=3, color=COLORS[w.name], label="time since the previous acknowledgement")
    noticed = next(s["start_s"] for s in steps if short(s["step"]) in ("hold", "stop"))
    before = [gap for t, gap in zip(acknowledged[1:], gaps_ms, strict=False) if t < noticed]
    title = f"A client through a move: {w.name}, {move.size_bytes / GB:.2f} GB"
    if before:
        median = statistics.median(before)
        ax.axhline(median, color="grey", linestyle="--", label=f"median before the hold: {median:.1f} ms")
        title += f"\nlongest pause {max(gaps_ms):.0f} ms = ×{max(gaps_ms) / median:.0f} the median latency before the hold"
    for s in steps:
        name = short(s["step"])
        if name in STEP_COLORS and acknowledged[0] <= s["start_s"] <= acknowledged[-1]:
            ax.axvspan(s["start_s"], s["start_s"] + max(s["seconds"], 0.005), color=STEP_COLORS[name], alpha=0.35, label=f"step: {name}")
    ax.set(yscale="log", xlabel="time since the move started (s)", ylabel="client latency (ms)", title=title)
    ax.set_ylim(top=max(gaps_ms) * 4)  # room for the legend above the longest pause
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left", ncols=3)


def timeline_plot(shown: list[tuple[Workload, Move]], path: Path) -> None:
    figure = canvas(len(shown))
    for ax, (w, move) in zip(figure.subplots(len(shown), squeeze=False)[:, 0], shown, strict=True):
        timeline_panel(ax, w, move, move.timeline or {})
    save(figure, path)


def routing_plot(document: dict[str, Any], path: Path) -> list[str]:
    """What a route adds, one panel a figure: node3's kernel route against a bare DNAT rule
    there, and routed against direct with the links at 1 Gbit/s; bars the median of the
    rounds, dots the rounds, the paired median ratio and its target in the title."""
    ratios, targets = document["ratios"], targets_of(document)
    panels = [
        (
            "kernel_route_over_bare_dnat_paired_median",
            document["bare_dnat"],
            ("bare DNAT rule", "our kernel route"),
            "Kernel route against a bare DNAT rule\n(node3, same target, unlimited)",
        ),
        (
            "routed_over_direct_at_1gbit_paired_median",
            document["limited"],
            ("direct", "routed via node3"),
            "Routed via node3 against direct\n(links at 1 Gbit/s)",
        ),
    ]
    figure = canvas()
    figure.subplots_adjust(wspace=0.35)
    lines = []
    axes = figure.subplots(1, 2)
    for ax, (name, found, (baseline, routed), title) in zip(axes, panels, strict=True):
        bars = [(baseline, found["baseline_mib_s"], "tab:grey"), (routed, found["routed_mib_s"], "tab:blue")]
        for x, (label, rounds, color) in enumerate(bars):
            ax.bar(x, statistics.median(rounds), width=0.6, color=color, alpha=0.7, label=f"{label}: median of {len(rounds)} rounds")
            ax.plot([x] * len(rounds), rounds, ".", color="black", markersize=3, alpha=0.5, label="one round" if x == 0 else None)
        op, target = targets.get(name, ("", None))
        verdict = f" (target {op} {target})" if target is not None else ""
        ax.set_xticks(range(len(bars)), [label for label, _, _ in bars])
        ax.set(ylabel="throughput (MiB/s)", title=f"{title}\npaired median ×{ratios[name]:.3f}{verdict}")
        ax.title.set_fontsize("medium")
        ax.grid(True, axis="y", alpha=0.3)
        lines.append(
            f"{name}: {ratios[name]:.3f}{verdict}; medians {statistics.median(found['routed_mib_s']):.0f} MiB/s routed,"
            f" {statistics.median(found['baseline_mib_s']):.0f} MiB/s {baseline}"
        )
    line_rate = document["limited"]["line_rate_mib_s"]
    axes[1].axhline(line_rate, color="tab:red", linestyle="--", label=f"the links' rate: {line_rate:.1f} MiB/s")
    for ax in axes:
        ax.set_ylim(top=ax.get_ylim()[1] * 1.4)  # room for the legend above the bars
        ax.legend(fontsize="x-small", loc="upper right")
    save(figure, path)
    move = document["move"]
    return [
        *lines,
        f"Unlimited, as context: routed over direct {ratios['routed_over_direct_paired_median']:.3f} (paired median;"
        f" direct {document['paths']['direct']['median_throughput_mib_s']:.0f} MiB/s median over veths)",
        f"During a move: {move['routed_via_node3']['failed']} failed connections through node3, longest hold"
        f" {move['router_node3']['max_hold_seconds']} s",
    ]


def image(out: Path, path: Path, alt: str) -> str:
    return f"![{alt}]({os.path.relpath(path, out.parent)})"


def build(results: Path, out: Path, plots: Path) -> None:
    """Write ``out`` (BENCHMARKS.md) and the PNGs in ``plots`` from the JSON files in ``results``."""
    plots.mkdir(parents=True, exist_ok=True)
    for stale in plots.glob("*.png"):
        stale.unlink()  # a plot this run cannot draw must not survive from an older one
    lines = [
        "# Benchmarks",
        "",
        f"Written by bench/plots.py (`make bench` runs it) at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} on {machine()},"
        f" from the newest results of each benchmark in {os.path.relpath(results, out.parent)}/ (all their numbers in SUMMARY.md"
        " there). Every ratio compares two numbers measured in one run of one benchmark, on a machine shared with other work;"
        " absolute times are context only.",
        "",
        "## Ratios against the same run's baselines",
    ]
    workloads: list[Workload] = []
    documents: dict[str, dict[str, Any]] = {}
    for name, (title, extract) in BENCHMARKS.items():
        source = results / f"{name}.json"
        lines += ["", f"### {title}"]
        try:
            document = json.loads(source.read_text())
            if extract is not None:
                workloads.append(extract(document))
        except FileNotFoundError:
            lines += ["", f"No results: {source.name} is not there (`BENCH_ONLY={name} make bench` makes it)."]
            continue
        except (KeyError, TypeError, ValueError, StopIteration) as error:
            lines += ["", f"Not read: {source.name} has a shape bench/plots.py does not know ({type(error).__name__}: {error})."]
            continue
        documents[name] = document
        where = document.get("machine") or (f"{document['cpus']} cores" if "cpus" in document else "a machine not recorded")
        lines += ["", f"Measured {document.get('measured_at', 'at a time not recorded')}, on {where}."]
        lines += ratio_table("ratio", document.get("ratios", {}), targets_of(document))

    lines += ["", "## Plots"]
    sized = [w for w in workloads if w.sizes]
    lines += ["", "### Move downtime against volume size", ""]
    if sized:
        downtime_plot(sized, plots / "downtime.png")
        lines += [image(out, plots / "downtime.png", "move downtime against volume size"), ""]
        for w in sized:
            based = ", ".join(f"×{s.downtime_s / s.baseline_s:.2f} at {s.bytes / GB:.2f} GB" for s in w.sizes if s.baseline_s is not None)
            context = ", ".join(f"{s.downtime_s:.2f} s" for s in w.sizes)
            lines.append(f"- {w.name}: move over {w.baseline} {based or 'not measured'} (move downtimes {context}).")
    else:
        lines.append("No move results to plot.")

    lines += ["", "### Phase-2 time against the data changed since the last round", ""]
    if any(w.moves for w in workloads):
        phase2_plot([w for w in workloads if w.moves], plots / "phase2.png")
        lines += [image(out, plots / "phase2.png", "phase-2 time against bytes sent in phase 2"), ""]
        for w in workloads:
            if w.raw_bytes_per_second:
                over = [m.phase2_s / (m.phase2_bytes / w.raw_bytes_per_second) for m in w.moves]
                lines.append(
                    f"- {w.name}: phase 2 took ×{min(over):.0f} to ×{max(over):.0f} the time its bytes take at the run's raw copy rate"
                    " (where kilobytes changed, phase 2 is its round's fixed cost)."
                )
            if w.cat_s:
                over = [m.phase2_s / w.cat_s[m.size_bytes] for m in w.moves]
                lines.append(f"- {w.name}: phase 2 over one cat of the whole volume: {', '.join(f'{r:.2f}' for r in over)}.")
    else:
        lines.append("No move results to plot.")

    lines += ["", "### A client's latency through a move", ""]
    shown = [
        (w, max((m for m in w.moves if m.timeline), key=lambda m: m.size_bytes)) for w in workloads if any(m.timeline for m in w.moves)
    ]
    if shown:
        timeline_plot(shown, plots / "timeline.png")
        lines += [image(out, plots / "timeline.png", "client latency through a move"), ""]
    missing = [w.name for w in workloads if not any(m.timeline for m in w.moves)]
    if missing:
        lines.append(
            f"No client timeline (a move's `client_timeline`) in the results of {', '.join(missing)} yet: they predate its"
            " recording, or their benchmark does not record one."
        )

    lines += ["", "### What a route adds to throughput", ""]
    if "routing" in documents:
        try:
            context = routing_plot(documents["routing"], plots / "routing.png")
            lines += [image(out, plots / "routing.png", "what a route adds to throughput"), ""] + [f"- {line}." for line in context]
        except (KeyError, TypeError, ValueError) as error:
            lines.append(
                f"Not plotted: routing.json has no rounds against a bare DNAT rule and at 1 Gbit/s ({type(error).__name__}: {error})."
            )
    else:
        lines.append("No routing results to plot.")
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--plots", type=Path, default=REPO / "bench" / "results" / "plots")
    args = parser.parse_args()
    build(args.results, args.out, args.plots)
    print(f"plots: wrote {args.out} and {args.plots}/", file=sys.stderr)


if __name__ == "__main__":
    main()
