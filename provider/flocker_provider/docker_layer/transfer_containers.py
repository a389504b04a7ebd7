"""The Docker layer's part for a move's helpers: the containers that copy a volume, and the
commands run in them. A mixin of ``DockerNode`` (as docker-py assembles its API client),
so that the transfer channel sees helpers by id and never a docker-py object.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import docker
import docker.errors
from docker.models.containers import Container

from flocker_provider import on_node
from flocker_provider.docker_layer.attached_exec import ArmedExec, StreamedExec
from flocker_provider.errors import DeadlinePassed, MoveFailed
from flocker_provider.execution.transfer import MOUNT
from flocker_provider.planning import labels as L
from flocker_provider.planning.models import Node

HELPER_START_SECONDS = 30
HELPER_POLL = 0.05


class TransferContainers:
    """What ``DockerNode`` provides to these methods."""

    node: Node
    client: docker.DockerClient
    _started_with: Callable[..., Container]
    _containers: Callable[..., list[Container]]

    def run_helper(
        self,
        image: str,
        name: str,
        command: list[str],
        labels: dict[str, str],
        volume: str,
        environment: dict[str, str] | None = None,
        port: int | None = None,
        read_only: bool = False,
        searches_extents: bool = False,
    ) -> str:
        """A move's helper, by id: the volume at the transfer mountpoint, the programs that run
        on the nodes in its own layer, ``port`` published on an ephemeral one. One that
        ``searches_extents`` may read btrfs's extent items (on_node/btrfs_extents.py): the
        ioctl wants CAP_SYS_ADMIN, which it has no other use for."""
        container = self._started_with(
            on_node.MOVE_HELPERS,
            image,
            command=command,
            name=name,
            environment=environment or {},
            labels=labels,
            volumes={volume: {"bind": MOUNT, "mode": "ro" if read_only else "rw"}},
            ports={f"{port}/tcp": None} if port else {},
            cap_add=["SYS_ADMIN"] if searches_extents else [],
        )
        return container.id

    def wait_for_helper_port(self, helper: str, port: int, ready: bytes, role: str) -> int:
        """The host port ``helper`` publishes ``port`` on, once its log says ``ready``."""
        deadline = time.monotonic() + HELPER_START_SECONDS
        while time.monotonic() < deadline:
            container = self.client.containers.get(helper)
            bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp") or []
            if container.status != "running":
                raise MoveFailed(f"{role} helper stopped: {self.helper_logs(helper, tail=5)}", node=self.node.name)
            if bindings and ready in container.logs():
                return int(bindings[0]["HostPort"])
            time.sleep(HELPER_POLL)
        raise DeadlinePassed(f"{role} helper did not start within {HELPER_START_SECONDS}s", node=self.node.name)

    def helper_logs(self, helper: str, tail: int) -> str:
        return self.client.api.logs(helper, tail=tail).decode(errors="replace")

    def exec_in_helper(self, helper: str, command: list[str], environment: dict[str, str]) -> StreamedExec:
        return StreamedExec(self.client.api, helper, command, environment)

    def arm_in_helper(self, helper: str, command: list[str], environment: dict[str, str]) -> ArmedExec:
        """``command`` started now in ``helper``; it reads the line that runs it itself (``ArmedExec``)."""
        return ArmedExec(self.client.api, helper, command, environment, waits=True)

    def remove_helper(self, helper: str) -> None:
        """Ends ``helper`` and whatever runs in it (an exec cannot be killed on its own)."""
        with contextlib.suppress(docker.errors.APIError):  # gone already
            self.client.api.remove_container(helper, force=True)

    def remove_transfer_containers(self, volume: str) -> None:
        """The helpers of ``volume``'s moves on this node (receivers, senders)."""
        for container in self._containers(all=True, filters={"label": [f"{L.KIND}={L.KIND_TRANSFER}", f"{L.VOLUME}={volume}"]}):
            container.remove(force=True)
