"""What a move's steps need beyond the engines, handed to the executor by the move that
owns it (migration.py): the transfer channel, the applications' stops, the report."""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Protocol

from flocker_provider.docker_layer.engine_protocol import ExitWatcher
from flocker_provider.planning.models import Node
from flocker_provider.planning.steps import Change, FinishStop, StopApplication, WatchExit

if TYPE_CHECKING:
    from flocker_provider.execution.executor import Engines

# docker stop's grace period before SIGKILL, and how much longer the end of the
# application's processes may take to be seen before the plain stop is waited for.
STOP_SECONDS = 10
STOP_MARGIN = 20


@dataclass(frozen=True)
class StreamRound:
    """Round 1 into an empty copy: the whole volume as a raw tar stream."""

    size: int
    seconds: float

    def as_output(self) -> dict:
        return {
            "final": False,
            "method": "stream",
            "bytes_sent": self.size,
            "bytes_read": self.size,
            "total_size": self.size,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class DeltaRound:
    """A delta round as the copy program on the source measured it (on_node/delta_copy.py;
    None for what it did not say), with phase 1's prediction of phase 2's seconds."""

    final: bool
    seconds: float | None
    bytes_sent: int | None
    bytes_read: int | None
    files_read: int | None
    pages_sent: int | None
    bytes_written: int | None
    total_size: int | None
    dirty_bytes: int | None
    readers: int | None
    parts: int | None  # of big files, read by different readers
    files_mapped: int | None  # reread only where their extents changed (a volume on btrfs)
    map_seconds: float | None  # of it, taking the extent maps (their fsyncs), summed over readers
    extents: bool | None  # the source's extent maps could be taken (btrfs, the search allowed)
    predicted_phase2_seconds: float | None = None

    @classmethod
    def of(cls, result: dict, final: bool, predicted: float | None = None) -> DeltaRound:
        return cls(final, **{name: result.get(name) for name in _MEASURED}, predicted_phase2_seconds=predicted)

    def as_output(self) -> dict:
        output = {"final": self.final, "method": "delta", **{name: getattr(self, name) for name in _MEASURED}}
        return output if self.final else {**output, "predicted_phase2_seconds": self.predicted_phase2_seconds}


_MEASURED = tuple(f.name for f in fields(DeltaRound) if f.name not in ("final", "predicted_phase2_seconds"))
Round = StreamRound | DeltaRound


@dataclass(frozen=True)
class StepTime:
    """When a change of the move's plan started (epoch seconds) and how long it took."""

    step: str
    started_at: float
    seconds: float


@dataclass(frozen=True)
class MoveReport:
    """Measured facts about one move, kept in the volume's outputs; each fact measured makes a new report."""

    source: str
    destination: str
    rounds: tuple[Round, ...] = ()
    downtime_seconds: float | None = None
    # Seconds per step, to see where a slow move spends its time.
    steps: tuple[StepTime, ...] = ()
    # Wall-clock (epoch) times, comparable across moves and with clients' clocks:
    # they show whether moves in one `pulumi up` ran at the same time.
    started_at: float | None = None
    finished_at: float | None = None

    def with_rounds(self, rounds: tuple[Round, ...]) -> MoveReport:
        return replace(self, rounds=(*self.rounds, *rounds))

    def with_step(self, step: StepTime) -> MoveReport:
        return replace(self, steps=(*self.steps, step))

    def with_downtime(self, seconds: float) -> MoveReport:
        return replace(self, downtime_seconds=seconds)

    def as_output(self) -> dict:
        return {
            "from": self.source,
            "to": self.destination,
            "rounds": [r.as_output() for r in self.rounds],
            "phase2_bytes_sent": next((r.bytes_sent for r in self.rounds if isinstance(r, DeltaRound) and r.final), None),
            "downtime_seconds": self.downtime_seconds,
            "steps": [{"step": s.step, "started_at": s.started_at, "seconds": s.seconds} for s in self.steps],
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class Transfer(Protocol):
    """The copy of one volume between two nodes for one move (migration.TransferChannel)."""

    label: str
    image: str
    # What the last round of phase 1 predicted phase 2 would take.
    predicted: float | None

    def push(self, final: bool, timeout: float) -> tuple[Round, ...]: ...

    def arm(self) -> None: ...

    def verify(self, timeout: float) -> None: ...


class Stops:
    """The applications a move stops. Each stop is asked of its engine in the background,
    and the step ends as soon as the application's processes are gone (``ExitWatch``).

    The engine's own work after that (taking the container's network down, 0.2-0.4 s, and
    longer while a big copy loads the node) goes on while phase 2 copies and the
    destination starts, and is waited for by ``FinishStop``, which the plan has before the
    source's containers are removed. Not before the handoff: the data no longer changes
    once the processes are gone, and nothing starts them again (the engine marks a stop as
    asked for before it signals, so no restart policy applies). An application whose end cannot be watched (no shell in
    its image) is waited for the plain way."""

    def __init__(self, engines: Engines) -> None:
        self._engines = engines
        self._watches: dict[tuple[Node, str], ExitWatcher | None] = {}
        self._pool = ThreadPoolExecutor(max_workers=4)
        self._pending: dict[tuple[Node, str], Future[None]] = {}
        self.stopped: list[StopApplication] = []

    def watch(self, step: WatchExit) -> None:
        """Watch the application from now on (an exec's start, 40-100 ms, is not downtime yet)."""
        self._watches[(step.node, step.container)] = self._engines[step.node].watch_exit(step.container)

    def stop(self, step: StopApplication) -> None:
        watch = self._watches.pop((step.node, step.container), None)
        # A watch that ended already saw an earlier end (a crash the engine restarted from).
        watching = watch is not None and watch.watching()
        stopping = self._pool.submit(self._engines[step.node].stop_container, step.container, STOP_SECONDS)
        self.stopped.append(step)
        self._pending[(step.node, step.container)] = stopping
        try:
            if watching and watch is not None and watch.wait(STOP_SECONDS + STOP_MARGIN):
                return
        finally:
            if watch is not None:
                watch.close()
        stopping.result()

    def finish(self, step: FinishStop) -> None:
        """The engine's stop of the container has returned (nothing to wait for if none was asked)."""
        stopping = self._pending.pop((step.node, step.container), None)
        if stopping is not None:
            stopping.result()

    def settle(self) -> None:
        """Every stop the engines were asked for has returned; the first failure is raised."""
        pending, self._pending = self._pending, {}
        for stopping in pending.values():
            stopping.result()

    def close(self) -> None:
        for watch in self._watches.values():
            if watch is not None:
                watch.close()
        with contextlib.suppress(Exception):  # reported by the step that failed
            self.settle()
        self._pool.shutdown(wait=True)


@dataclass
class MoveContext:
    """One move's run: what its steps use, and what it measured and did so far."""

    channel: Transfer
    stops: Stops
    report: MoveReport
    # The changes that ran to their end, in order: a failure after the handoff undoes nothing.
    done: list[Change] = field(default_factory=list)
    # When the first stop was asked for: the application stops serving during it, so the
    # downtime runs from there to the end of the destination's wait.
    stopped_at: float | None = None
