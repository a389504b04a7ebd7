"""Moving a volume, and the applications that mount it, to another node (two-phase push).

The plan comes from the pure planner (`plan_move`) and the executor runs it, handed this
move's context. What the plan cannot say as values lives here: the credentials made for
this one move and the transfer channel that exists for its duration. A failure before the
handoff is undone by a plan too: the nodes are discovered again and `plan_rollback` says
the way back, which the executor runs.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from flocker_provider.docker_layer.docker_node import connect
from flocker_provider.docker_layer.engine_protocol import ArmedCommand
from flocker_provider.errors import DeadlinePassed, DiskFull, MoveFailed, NodeUnreachable, ProviderError, brief, told
from flocker_provider.execution.executor import Engines, execute, execute_all
from flocker_provider.execution.move_context import DeltaRound, MoveContext, MoveReport, Round, Stops, StreamRound
from flocker_provider.execution.staging import staged_name
from flocker_provider.execution.transfer import (
    DELTA_PORT,
    STREAM_PORT,
    Credentials,
    DeltaFailed,
    StallWatch,
    delta_progress,
    delta_receiver_command,
    delta_result,
    delta_said,
    delta_send_command,
    delta_verify_command,
    heartbeat,
    human_bytes,
    last_lines,
    new_credentials,
    node_stall,
    parse_stream_progress,
    parse_stream_total,
    predicted_seconds,
    stream_received,
    stream_receiver_command,
    stream_sender_command,
)
from flocker_provider.inputs import VolumeInputs
from flocker_provider.planning import labels as L
from flocker_provider.planning.models import Node
from flocker_provider.planning.planner import AfterFailure, MoveState, Routing, plan_move, plan_rollback
from flocker_provider.planning.steps import Change, HandoffVolume, PointRoutes, RemoveStaged, RemoveVolume, RestartApplication, steps_of
from flocker_provider.progress import report

# Pre-copy goes on while the predicted phase 2 does not fit the move's downtime budget and
# each round still shrinks it by a tenth; at most this many rounds (P.Haul's limit).
MAX_ROUNDS = 8
SHRINKING = 0.9
PROGRESS_EVERY = 3.0
# How often a copy's output is looked at for progress: a stall is seen within this much of the stall timeout.
STALL_POLL = 0.5
# How the copy programs on the destination (tar, delta_copy.py) say that a write found its disk full.
NO_SPACE = ("No space left on device", "is the disk full?")


def plan_line(old: VolumeInputs, new: VolumeInputs) -> str:
    """What preview prints for a move: reads the source, changes nothing."""
    try:
        with connect(old.node) as engine:
            size = human_bytes(engine.volume_size(old.name))
            apps = [dict(c.spec.labels).get(L.RESOURCE, c.name) for c in engine.mounting_containers(old.name)]
    except NodeUnreachable as exc:
        size, apps = f"size unknown: {brief(exc)}", []
    with_apps = f", with application {', '.join(apps)}" if apps else ""
    return f"plan: volume {new.owner.resource} moves from {old.node.name} to {new.node.name} ({size}){with_apps}"


def discover_move(engines: Engines, old: VolumeInputs, new: VolumeInputs) -> MoveState:
    source, destination = engines[old.node], engines[new.node]
    return MoveState(
        source_volume=source.discover_volume(old.name),
        destination_volume=destination.discover_volume(new.name),
        source_containers=source.mounting_containers(old.name),
        destination_containers=destination.mounting_containers(new.name),
    )


def move_volume(old: VolumeInputs, new: VolumeInputs, labels: tuple[tuple[str, str], ...], routing: Routing) -> MoveReport:
    started = MoveReport(old.node.name, new.node.name, started_at=round(time.time(), 3))
    with Engines() as engines:
        try:
            state = discover_move(engines, old, new)
            plan = plan_move(new.name, labels, old.node, new.node, state, routing)
        except ProviderError as exc:
            exc.within(step=f"plan the move from {old.node.name} to {new.node.name}")
            raise
        with TransferChannel(engines, old, new) as channel:
            move = MoveContext(channel, Stops(engines), started)
            try:
                execute(plan, engines, new.move_timeout, move)
            except Exception as failure:
                raise _roll_back(failure, move, channel, state, routing) from failure.__cause__
            finally:
                move.stops.close()
    return replace(move.report, finished_at=round(time.time(), 3))


def _roll_back(failure: Exception, move: MoveContext, channel: TransferChannel, before: MoveState, routing: Routing) -> Exception:
    """``failure`` with what was done about it: before the handoff, the way back from what
    the nodes hold now; after it, nothing (the next `pulumi up` finishes the move)."""
    engines = channel.engines
    # What is discovered next must be where the stops left it; a stop that failed is started
    # again like the others.
    with contextlib.suppress(Exception):
        move.stops.settle()
    after = discover_after_failure(engines, channel.source, channel.destination, channel.volume, before, routing)
    down = [
        node
        for node, gone in ((channel.source, after.source_containers is None), (channel.destination, after.destination_volume is None))
        if gone
    ]
    told(failure, f"{', '.join(n.name for n in down)}: Docker engine not answering" if down else "")
    if any(isinstance(step, HandoffVolume) for step in move.done):
        return told(failure, "the volume was handed over already: run `pulumi up` again to finish the move")
    rollback = plan_rollback(channel.volume, channel.source, channel.destination, before, after, routing)
    outcomes = execute_all(rollback, engines, 0, heading=f"move {channel.label}: undo: ")
    return told(failure, f"nothing was lost: {rollback_story(after, outcomes)}")


def discover_after_failure(
    engines: Engines, source: Node, destination: Node, volume: str, before: MoveState, routing: Routing
) -> AfterFailure:
    """What a failed move's nodes hold now; a node that does not answer holds None."""
    try:
        source_containers: tuple | None = engines[source].mounting_containers(volume)
    except Exception:  # any failure to answer means the same here
        source_containers = None
    try:
        engine = engines[destination]
        copy = engine.discover_volume(volume)
        staged = tuple(c.name for c in before.source_containers if engine.discover_application(staged_name(c.name)) is not None)
    except Exception:  # any failure to answer means the same here
        copy, staged = None, None
    held: set[int] = set()
    for node in routing.nodes:
        try:
            routes = engines[node].read_routes(routing.router)
        except Exception:  # a node that does not answer is skipped by the route steps too
            continue
        held |= {port for port, route in routes.items() if route.get("target") is None}
    return AfterFailure(source_containers, copy, staged, frozenset(held))


def rollback_story(after: AfterFailure, outcomes: Sequence[tuple[Change, Exception | None]]) -> str:
    """What the way back did, after "nothing was lost: ", from its steps and how each went."""
    restarted = [(step, error) for step, error in outcomes if isinstance(step, RestartApplication)]
    problems = [f"{step.container} on {step.node.name}: {brief(error)}" for step, error in restarted if error is not None]
    if problems:
        story = "restarting on the source failed for " + "; ".join(problems)
    elif restarted:
        story = "restarted " + ", ".join(step.container for step, _ in restarted) + f" on {restarted[0][0].node.name}"
    elif after.source_containers is None:
        # Its data is as the application left it: the next `up` moves it from there.
        story = "the application went down with the source's engine and was not moved"
    else:
        story = "the application kept running on the source"
    routes = [
        brief(error) for change, error in outcomes if any(isinstance(step, PointRoutes) for step in steps_of(change)) and error is not None
    ]
    if routes:
        story += f"; routes on {', '.join(routes)} could not be pointed back"
    staged = [
        f"{staged_name(step.container)} on {step.node.name}: {brief(error)}"
        for step, error in outcomes
        if isinstance(step, RemoveStaged) and error
    ]
    if staged:
        story += f"; could not remove {', '.join(staged)}"
    for step, error in outcomes:
        if isinstance(step, RemoveVolume):
            # The destination may be the node that failed; its copy stays marked partial.
            story += f"; the partial copy on {step.node.name} " + (
                "was removed" if error is None else "is left and will be reused by the next move"
            )
    return story


class TransferChannel:
    """The helpers that copy one volume for the duration of one move.

    They are always torn down, on success and on failure; helpers left behind by a crash
    (labelled with the volume) are removed when the next move of that volume starts.
    """

    def __init__(self, engines: Engines, old: VolumeInputs, new: VolumeInputs) -> None:
        self.engines = engines
        self.source, self.destination = old.node, new.node
        self.volume = new.name
        self.label = new.owner.resource
        self.image = new.transfer_image
        self.move_id = secrets.token_hex(4)
        self.credentials: Credentials = new_credentials()
        self.labels = {**L.owner_labels(new.owner, L.KIND_TRANSFER), L.VOLUME: new.name}
        self.volume_labels = dict(L.owner_labels(new.owner, L.KIND_VOLUME))
        self.budget = new.downtime_budget
        self.stall = new.stall_timeout
        self.port: int | None = None
        # The helpers' container ids.
        self.receiver: str | None = None
        self.sender: str | None = None
        # Phase 2's round and the verification, started at the end of phase 1 and run when
        # their time comes (see ``arm``).
        self._armed: dict[str, ArmedCommand] = {}
        self.fresh = False
        self.rounds = 0
        self.total: int | None = None
        # What the last round of phase 1 predicted phase 2 would take.
        self.predicted: float | None = None

    def __enter__(self) -> TransferChannel:
        for node in (self.source, self.destination):  # what a move cut short left
            self.engines[node].remove_transfer_containers(self.volume)
            self.engines[node].forget_retirement(self.volume)
        destination = self.engines[self.destination]
        # The image first: a node without it fails the move before it changes anything.
        for node in (self.source, self.destination):
            self.engines[node].ensure_image(self.image)
        # A destination with no copy yet gets the raw stream first, into a copy marked
        # partial until the handoff: a failed move removes it (a later retry starts clean).
        self.fresh = not destination.discover_volume(self.volume).exists
        destination.create_volume(self.volume, self.volume_labels)
        if self.fresh:
            destination.mark_partial(self.volume, self.image, self.volume_labels)
        self.total = self.engines[self.source].volume_size(self.volume)
        return self

    def __exit__(self, *exc: object) -> None:
        self._disarm()
        for node in (self.source, self.destination):
            with contextlib.suppress(Exception):  # a node that is down keeps its leftovers until the next move
                self.engines[node].remove_transfer_containers(self.volume)
                # Made ahead and not used: the move ended before its handoff.
                self.engines[node].forget_retirement(self.volume)

    def _start_receiver(self, role: str, command: list[str], port: int, ready: bytes) -> tuple[str, int]:
        """A helper on the destination, published on an ephemeral port, once it listens."""
        engine = self.engines[self.destination]
        environment = {"FLOCKER_SECRET": self.credentials.password, "FLOCKER_ALLOWED": self.source.address}
        helper = engine.run_helper(self.image, f"{self.volume}-{role}-{self.move_id}", command, self.labels, self.volume, environment, port)
        return helper, engine.wait_for_helper_port(helper, port, ready, role)

    def _delta_port(self) -> int:
        if self.port is None:
            self.receiver, self.port = self._start_receiver("receive", delta_receiver_command(), DELTA_PORT, b"flocker-delta listening")
        return self.port

    def _source_helper(self) -> str:
        """One helper on the source for the whole move, mounting the volume read-only, allowed
        to search btrfs's extent items (where the volume is on btrfs, rounds reread only what changed).

        Every copy round and the verification run in it as an exec: starting a container
        costs 0.5-1 s on a busy node against 0.1-0.3 s for an exec, and phase 2 and the
        verification run while the application is stopped.
        """
        if self.sender is None:
            self.sender = self.engines[self.source].run_helper(
                self.image,
                f"{self.volume}-send-{self.move_id}",
                ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"],
                self.labels,
                self.volume,
                read_only=True,
                searches_extents=True,
            )
        return self.sender

    def _run_on_source(
        self,
        what: str,
        command: list[str],
        env: dict[str, str],
        timeout: float,
        progress: Callable[[str], str | None],
        armed: ArmedCommand | None = None,
        said: Callable[[str], bool] | None = None,
    ) -> tuple[int | None, str]:
        """Run a sending command on the source (or fire the ``armed`` one) until it exits,
        reporting progress as it goes; one that shows no progress for the stall timeout is
        ended, and so is one that failed after that long without any. A command whose output
        has ``said`` all it will (a delta round's result line) is not waited for further:
        its exit, and the engine's end of its output after it, took 10-20 ms of a move's
        downtime, twice (phase 2, the verification); its exit code is None then."""
        engine = self.engines[self.source]
        helper = self._source_helper()
        running = armed or engine.exec_in_helper(helper, heartbeat(command), env)
        chunks: list[bytes] = []
        failed: list[BaseException] = []
        over: list[str] = []  # "said", once the output said all it will; "ended", once it ended
        waking = threading.Event()

        def read() -> None:
            try:
                for chunk in running.fire():
                    chunks.append(chunk)
                    if said is not None and b"\n" in chunk and said(b"".join(chunks).decode(errors="replace")):
                        over.append("said")
                        waking.set()
            except Exception as exc:  # handed to the waiting thread, which raises it
                failed.append(exc)
            finally:
                over.append("ended")
                waking.set()

        # The output stream ends when the command exits: no polling delay on the way out.
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        started = time.monotonic()
        deadline, reported = started + timeout, started
        watch = StallWatch(self.stall, started)
        while True:
            if waking.wait(STALL_POLL):
                break
            now = time.monotonic()
            watch.saw(b"".join(chunks).decode(errors="replace"), now)
            if now > deadline or watch.stalled(now):
                engine.remove_helper(helper)
                self.sender = None
                if watch.stalled(now):
                    raise self._stalled(what)
                raise DeadlinePassed(f"copy from {self.source.name} to {self.destination.name} took over {timeout:.0f}s")
            if now - reported >= PROGRESS_EVERY:
                reported = now
                line = progress(b"".join(chunks[-20:]).decode(errors="replace"))
                if line:
                    report(f"move {self.label}: {line}")
        if over[0] == "said":
            return None, b"".join(chunks).decode(errors="replace")
        if failed:
            raise failed[0]
        code = running.exit_code()
        # Given up by its own limit on the node (a little longer than the stall timeout).
        if code != 0 and watch.stalled(time.monotonic()):
            raise self._stalled(what)
        return code, b"".join(chunks).decode(errors="replace")

    def _stalled(self, what: str) -> MoveFailed:
        """A copy that made no progress for the stall timeout: most likely the link between the nodes."""
        source, destination = self.source, self.destination
        return MoveFailed(
            f"{what} from {source.name} to {destination.name} made no progress for {self.stall:g}s (the volume's stall_timeout)",
            remedy=(
                f"check that {source.name} ({source.address}) reaches {destination.name} ({destination.address}): the network "
                "between them, a firewall; once it does, run `pulumi up` again and the move starts over (if the link is only "
                "slow, raise the volume's stall_timeout)"
            ),
        )

    def _check_space(self, *said: str) -> None:
        """A copy that failed because the destination's disk is full says so, and not in tar's words."""
        if any(mark in words for words in said for mark in NO_SPACE):
            size = f" ({human_bytes(self.total)})" if self.total is not None else ""
            problem = f"disk full: no space left for the copy of {self.volume}{size} from {self.source.name}"
            raise DiskFull(problem, node=self.destination.name)

    def _delta(self, final: bool, timeout: float, phase: str) -> dict:
        """One delta round (on_node/delta_copy.py); phase 2's was armed at the end of phase 1."""
        started = time.monotonic()

        def progress(output: str) -> str | None:
            found = delta_progress(output)
            if found is None:
                return None
            read, total = found
            share = f" of {human_bytes(total)}" if total else ""
            return f"{phase}: {human_bytes(read)}{share} read, {human_bytes(read / max(time.monotonic() - started, 1e-3))}/s"

        stall = node_stall(self.stall)
        command = delta_send_command(self.destination.address, self._delta_port(), self.total, final, armed=False, stall=stall)
        armed = self._armed.pop("phase 2", None) if final else None
        env = {"FLOCKER_SECRET": self.credentials.password}
        _, output = self._run_on_source(phase, command, env, timeout, progress, armed, said=delta_said)
        try:
            return delta_result(output)
        except DeltaFailed as exc:
            if exc.stalled:
                raise self._stalled(phase) from exc
            self._check_space(str(exc))
            raise MoveFailed(f"{phase} from {self.source.name} to {self.destination.name} failed: {exc}") from exc

    def arm(self) -> None:
        """Start phase 2's round and the verification now, connected and waiting for a line on
        stdin: both run while the application is stopped, and an exec's start (40-100 ms)
        plus Python's and the state's load would be part of it. A transport that cannot
        hijack a connection runs them as plain execs then. The source's retirement marker
        is made now too (``prepare_handoff``)."""
        self._disarm()
        self.prepare_handoff()
        port = self._delta_port()
        engine, helper = self.engines[self.source], self._source_helper()
        env = {"FLOCKER_SECRET": self.credentials.password}
        address, stall = self.destination.address, node_stall(self.stall)
        try:
            phase2 = delta_send_command(address, port, self.total, True, armed=True, stall=stall)
            self._armed["phase 2"] = engine.arm_in_helper(helper, phase2, env)
            verify = delta_verify_command(address, port, armed=True, stall=stall)
            self._armed["verify"] = engine.arm_in_helper(helper, verify, env)
        except Exception:  # any failure to hijack a connection means the same: plain execs
            self._disarm()

    def prepare_handoff(self) -> None:
        """The source's retirement marker, made before the application stops, for the handoff
        to rename. Creating a container syncs the node's file system (Docker mounts and
        unmounts an overlay for it): in the handoff, with phase 2's pages dirty on a node
        that shares it, that cost 0.03 s at 0.26 GB and 0.13 s at 2 GB of PostgreSQL here."""
        with contextlib.suppress(Exception):  # any failure means the same: the handoff makes the marker itself
            self.engines[self.source].prepare_retirement(self.volume, self.image, self.volume_labels)

    def _disarm(self) -> None:
        for armed in self._armed.values():
            armed.close()
        self._armed.clear()

    def _stream(self, timeout: float) -> StreamRound:
        """Round 1 into an empty destination: a raw tar stream, no delta to compute."""
        total = self.total
        started = time.monotonic()
        receiver, port = self._start_receiver("stream", stream_receiver_command(), STREAM_PORT, b"listening")

        def progress(output: str) -> str | None:
            sent = parse_stream_progress(output)
            return None if sent is None else stream_progress_line(sent, total, time.monotonic() - started)

        command = stream_sender_command(self.destination.address, port, timeout, node_stall(self.stall))
        what = "phase 1 round 1 (stream)"
        code, output = self._run_on_source(what, command, {"FLOCKER_SECRET": self.credentials.password}, timeout, progress)
        if code != 0 or not stream_received(output):
            logs = self.engines[self.destination].helper_logs(receiver, tail=3)
            self._check_space(output, logs)
            where = f"{self.source.name} to {self.destination.name}"
            raise MoveFailed(f"stream from {where} failed: {last_lines(output)} / {last_lines(logs)}")
        return StreamRound(parse_stream_total(output), round(time.monotonic() - started, 3))

    def push(self, final: bool, timeout: float) -> tuple[Round, ...]:
        """Phase 1 (pre-copy rounds until the predicted phase 2 fits the budget or stops
        shrinking) or phase 2 (one round, the application stopped)."""
        rounds: list[Round] = []
        if not final and self.fresh:
            stream = self._stream(timeout)
            rounds.append(stream)
            self.fresh, self.rounds = False, 1
            report(f"move {self.label}: phase 1 round 1 (stream): sent {human_bytes(stream.size)}")
        while True:
            self.rounds += 1
            phase = "phase 2" if final else f"phase 1 round {self.rounds}"
            result = self._delta(final, timeout, phase)
            done = f"read {human_bytes(result['bytes_read'])} in {result['files_read']} files, sent {human_bytes(result['bytes_sent'])}"
            if final:
                predicted = f" (predicted {self.predicted:.2f}s)" if self.predicted is not None else ""
                report(f"move {self.label}: phase 2: {done} in {result['seconds']:.2f}s{predicted}")
                return (*rounds, DeltaRound.of(result, final))
            predicted = predicted_seconds(result)
            rounds.append(DeltaRound.of(result, final, predicted))
            fits = predicted <= self.budget
            shrinking = self.predicted is None or predicted < SHRINKING * self.predicted
            stop = fits or not shrinking or self.rounds >= MAX_ROUNDS
            why = (
                "fits the budget"
                if fits
                else "no longer shrinking"
                if not shrinking
                else f"{MAX_ROUNDS} rounds done"
                if stop
                else "copying again"
            )
            report(
                f"move {self.label}: {phase}: {done} in {result['seconds']:.2f}s; "
                f"phase 2 predicted {predicted:.2f}s (budget {self.budget:g}s): {why}"
            )
            self.predicted = predicted
            if stop:
                return tuple(rounds)

    def verify(self, timeout: float) -> None:
        """The destination's tree against the source's: every entry's type, mode, owner, size,
        modification time and block digests, the destination's from its own disk (see
        on_node/delta_copy.py). Only digests cross the network."""
        if self.receiver is None:
            raise RuntimeError(f"no copy on {self.destination.name} to verify")
        command = delta_verify_command(self.destination.address, self._delta_port(), armed=False, stall=node_stall(self.stall))
        armed = self._armed.pop("verify", None)
        env = {"FLOCKER_SECRET": self.credentials.password}
        _, output = self._run_on_source("the verification", command, env, timeout, lambda _: None, armed, said=delta_said)
        try:
            result = delta_result(output)
        except DeltaFailed as exc:
            if exc.stalled:
                raise self._stalled("the verification") from exc
            raise MoveFailed(f"verifying the copy failed: {exc}", node=self.destination.name) from exc
        if not result["equal"]:
            raise MoveFailed(f"the copy differs from the source: {'; '.join(result['differences'])}", node=self.destination.name)


def stream_progress_line(sent: int, total: int | None, seconds: float) -> str:
    """Bytes, share, rate and time left of the stream; the total is the source's size when it began."""
    rate = sent / max(seconds, 1e-3)
    line = f"phase 1 round 1 (stream): {human_bytes(sent)}"
    if total:
        left = max(total - sent, 0) / max(rate, 1.0)
        line += f" of {human_bytes(total)} ({min(100, sent * 100 // total)}%)"
        return f"{line}, {human_bytes(rate)}/s, {int(left) // 60}:{int(left) % 60:02d} left"
    return f"{line}, {human_bytes(rate)}/s"
