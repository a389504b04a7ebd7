"""Errors meant for people: their message is the whole story, no traceback needed.

Every failure a user can foresee and act on is a ``ProviderError`` of one of the kinds
below; the provider host shows only its message (provider_host.py). Anything else that
escapes a hook is a bug, and keeps its traceback.

An error is raised where its cause is known (mostly the Docker layer, which knows the node);
the layers above add what they know as it passes: the step that failed (the executor, a
move), the resource (the hooks), and what was done about it (rolled back, restarted on the
source). The message names them all, and ends with what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self


class ProviderError(Exception):
    """A failure the user can act on."""

    # What to do about a failure of this kind; one raise site may know better (``remedy=``).
    remedy = "fix what the message says, then run `pulumi up` again"

    def __init__(self, problem: str, *, node: str | None = None, remedy: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.node = node
        if remedy is not None:
            self.remedy = remedy
        self.resource: str | None = None
        self.step: str | None = None
        self.done: list[str] = []

    def within(self, *, resource: str | None = None, step: str | None = None) -> Self:
        """Context from a layer above; the innermost layer's, where it had one, stays."""
        self.resource = self.resource or resource
        self.step = self.step or step
        return self

    def then(self, done: str) -> Self:
        """What was done after the failure, told after it."""
        if done:
            self.done.append(done)
        return self

    def summary(self) -> str:
        """Step, node and problem: what another failure's message quotes of this one."""
        step = f"step '{self.step}' failed: " if self.step else ""
        node = f"node {self.node}: " if self.node else ""
        return f"{step}{node}{self.problem}"

    def __str__(self) -> str:
        resource = f"{self.resource}: " if self.resource else ""
        done = "".join(f"; {d}" for d in self.done)
        return f"{resource}{self.summary()}{done}. What to do: {self.remedy}"


def told(exc: Exception, done: str) -> Exception:
    """``exc`` with what was done after it: in the message of ours, as a note under a bug's traceback."""
    if isinstance(exc, ProviderError):
        return exc.then(done)
    if done:
        exc.add_note(done)
    return exc


def together(failures: Sequence[ProviderError]) -> ProviderError:
    """The failures of steps run at once as one: a lone failure as it is; several as one of
    the kind they share (``ProviderError`` for several kinds), quoting each."""
    if len(failures) == 1:
        return failures[0]
    kind = next(k for k in type(failures[0]).__mro__ if issubclass(k, ProviderError) and all(isinstance(f, k) for f in failures))
    return kind("; ".join(failure.summary() for failure in failures))


def brief(exc: BaseException) -> str:
    """A failure quoted in another's message or in a warning: without its own remedy."""
    return exc.summary() if isinstance(exc, ProviderError) else str(exc)


class InvalidInput(ProviderError):
    """A resource's inputs that cannot be used (found before anything changes)."""

    remedy = "correct the resource's arguments in the program (or the stack config they come from), then run `pulumi up` again"


class NodeFileError(ProviderError):
    """The node file is missing, unreadable or not of the expected form."""

    remedy = (
        'correct the node file (JSON: {"nodes": [{"name": ..., "address": ..., "docker_host": ...}]}), or name another one '
        "with FLOCKER_NODES_FILE or `pulumi config set flocker:nodesFile PATH`; the local cluster's is written by `make cluster`"
    )


class NodeUnreachable(ProviderError):
    """A node's Docker engine did not answer, or stopped answering."""

    remedy = (
        "start the node (or its Docker engine), or correct how it is reached (docker_host in the node file, "
        "flocker:dockerHostTemplate, TLS files), then run `pulumi up` again"
    )


class EngineRefused(ProviderError):
    """A node's Docker engine answered a request with an error of its own."""

    remedy = "the engine's words say why (a full disk, a name in use, a bad option); fix that on the node, then run `pulumi up` again"


class NotOurs(ProviderError):
    """An object with our name exists but we did not create it: we will not touch it."""

    remedy = "rename or remove that object on the node, or choose another resource name, then run `pulumi up` again"


class ImageUnavailable(ProviderError):
    """An image is not on the node and could not be pulled there."""

    remedy = (
        "put the image on the node (`make images` loads the local cluster's onto every node) or push it to a registry "
        "the node can reach (and `docker login` to it on the machine running pulumi), then run `pulumi up` again"
    )


class PortTaken(ProviderError):
    """No port a container or route needs is free on the node."""

    remedy = "free the port on the node (stop what holds it) or choose another external port, then run `pulumi up` again"


class ContainerFailed(ProviderError):
    """An application's container exited, restarted or disappeared while starting."""

    remedy = (
        "its last log lines (or `docker logs` on the node) say why: fix its image, command, environment or volume, "
        "then run `pulumi up` again"
    )


class DeadlinePassed(ProviderError):
    """Something did not happen within the time it was given."""

    remedy = (
        "see why it is slow or stuck on the node (`docker logs`, `docker inspect`); if it only needs longer, "
        "raise the resource's wait_timeout (an application) or move_timeout (a volume), then run `pulumi up` again"
    )


class RoutingFailed(ProviderError):
    """A node's router did not put routes in force, or did not remove them."""

    remedy = (
        "the router's log (`docker logs` of the flocker-*-router container on the node) says why; "
        "fix that, then run `pulumi up` again: routes are written again"
    )


class MoveFailed(ProviderError):
    """A move's own work failed: its helpers, a copy round, the verification of the copy."""

    remedy = "the helpers' words above say why; fix that, then run `pulumi up` again: the move starts over from what was copied"


class DiskFull(MoveFailed):
    """The destination's disk filled up during a move's copy."""

    remedy = (
        "make room on the node's disk that holds Docker's volumes (or give it a bigger one), or move the volume to a node "
        "with room for it, then run `pulumi up` again"
    )


class PlanError(ProviderError):
    """What the nodes hold cannot be made what the program asks for."""
