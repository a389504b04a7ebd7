"""Immutable values for desired and discovered state.

Everything the planner reads or returns is one of these frozen dataclasses, so two
plans can be compared with ``==`` and a test can state a whole expected plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RESTART_POLICIES = ("never", "always", "on-failure")


@dataclass(frozen=True)
class TLSConfig:
    """Client certificates for a ``tcp://`` Docker endpoint (``docker --tlsverify``)."""

    ca_cert: str
    client_cert: str
    client_key: str


@dataclass(frozen=True)
class Node:
    """A Docker host: how people name it, its address, and how to reach its engine."""

    name: str
    address: str
    docker_host: str
    tls: TLSConfig | None = None

    def docker_cli(self, *args: str) -> list[str]:
        """The ``docker`` command line that runs ``args`` against this node's engine, for the
        commands our messages tell people to run (with its client certificates, if it has them)."""
        tls = []
        if self.tls is not None:
            tls = ["--tlsverify", f"--tlscacert={self.tls.ca_cert}", f"--tlscert={self.tls.client_cert}", f"--tlskey={self.tls.client_key}"]
        return ["docker", "-H", self.docker_host, *tls, *args]


@dataclass(frozen=True)
class Port:
    internal: int
    external: int


@dataclass(frozen=True)
class Link:
    alias: str
    local_port: int
    remote_port: int


@dataclass(frozen=True)
class RestartPolicy:
    name: str = "never"
    maximum_retry_count: int | None = None


@dataclass(frozen=True)
class HealthCheck:
    """A command run inside the container (Docker's HEALTHCHECK): the application is up,
    and traffic goes to it, only once the command succeeds. Seconds, as people write them."""

    command: tuple[str, ...]  # ("CMD-SHELL", line) or ("CMD", program, *arguments)
    interval: float = 1.0
    timeout: float = 5.0
    retries: int = 3
    start_period: float = 0.0


@dataclass(frozen=True)
class VolumeMount:
    """The Flocker volume ``volume`` mounted at ``mountpoint`` inside the container."""

    volume: str
    mountpoint: str


@dataclass(frozen=True)
class Application:
    """Desired (or discovered) configuration of one container."""

    name: str
    image: str
    ports: tuple[Port, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    volume: VolumeMount | None = None
    links: tuple[Link, ...] = ()
    mem_limit: int | None = None
    cpu_shares: int | None = None
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    command: tuple[str, ...] | None = None
    health_check: HealthCheck | None = None
    flush_command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Volume:
    name: str
    maximum_size: int | None = None


@dataclass(frozen=True)
class Owner:
    """Which stack and resource an object we create belongs to (written as labels)."""

    project: str
    stack: str
    resource: str


@dataclass(frozen=True)
class RunningContainer:
    """What a node really runs for one application, as discovered."""

    name: str
    container_id: str
    running: bool
    config_hash: str


@dataclass(frozen=True)
class NodeVolumeState:
    """A volume as discovered on one node: ``retired``, a copy a move handed over;
    ``partial``, a move's copy not handed over yet (a failed move removes it)."""

    name: str
    exists: bool
    retired: bool = False
    partial: bool = False
