"""The thin layer over docker-py: one object per node engine, nothing clever. Its router
(router_lifecycle.py) and a move's helpers (transfer_containers.py) are mixins of its own
modules; which host ports a container publishes on is chosen in host_port_choice.py.

Every call has a deadline (docker-py's client timeout plus our own loops), because the
Pulumi engine enforces none for dynamic providers.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator

import docker
import docker.errors
import docker.tls
import docker.utils
import requests.exceptions
import urllib3.exceptions

from flocker_provider import on_node
from flocker_provider.docker_layer import ssh_tunnel
from flocker_provider.docker_layer.attached_exec import ExitWatch
from flocker_provider.docker_layer.router_lifecycle import RouterLifecycle
from flocker_provider.docker_layer.transfer_containers import TransferContainers
from flocker_provider.errors import (
    ContainerFailed,
    DeadlinePassed,
    EngineRefused,
    ImageUnavailable,
    NodeUnreachable,
    NotOurs,
    PortTaken,
    ProviderError,
)
from flocker_provider.execution.staging import (
    GATE_ENTRYPOINT,
    HELD_LINE,
    LET_THROUGH_LINE,
    RELEASE_SIGNAL,
    SHELL,
    application_argv,
    gate_archive,
    is_staged,
    staged_name,
)
from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import ContainerSpec, MountedContainer, RouterSpec, recorded_hash
from flocker_provider.planning.host_port_choice import HOST_PORT_ATTEMPTS, host_ports, node_ports
from flocker_provider.planning.models import Node, NodeVolumeState, Owner, RunningContainer

API_TIMEOUT = 60
# Docker 20.10's API, which every engine since serves too. Fixed rather than asked for: over
# TLS, asking would go out before requests can be told to trust the node's own CA (connect()).
API_VERSION = "1.41"
# How often a starting application is looked at: after a move's start, every poll can be downtime.
WAIT_POLL = 0.1
# A staged container's gate says it holds within milliseconds of its start, and that it
# let the application through within milliseconds of the signal.
GATE_SECONDS = 30
GATE_POLL = 0.005
# Docker counts disk usage once at a time and refuses a second count meanwhile (409, "a disk
# usage operation is already running"): ten moves at once from the same nodes failed on it.
# Ours take turns per engine; another client's count is waited out.
_DISK_USAGE_LOCKS: dict[str, threading.Lock] = {}
_DISK_USAGE_LOCKS_GUARD = threading.Lock()
DISK_USAGE_RETRIES = 40
DISK_USAGE_RETRY_SECONDS = 0.25


@contextlib.contextmanager
def connect(node: Node) -> Iterator[DockerNode]:
    link: ssh_tunnel.Tunnel | None = None
    try:
        base_url = node.docker_host
        if base_url.startswith("ssh://"):
            link = ssh_tunnel.tunnel(base_url)
            base_url = link.url
        tls = None
        if node.tls is not None:
            tls = docker.tls.TLSConfig(
                client_cert=(node.tls.client_cert, node.tls.client_key),
                ca_cert=node.tls.ca_cert,
                verify=True,
            )
        client = docker.DockerClient(
            base_url=base_url,
            tls=tls,
            timeout=API_TIMEOUT,
            version=API_VERSION,
        )
        if tls is not None:
            # Otherwise REQUESTS_CA_BUNDLE and the like, set on many machines for other
            # programs, override the node's CA and every TLS node fails (docker-py #2433).
            client.api.trust_env = False
        client.ping()
    except Exception as exc:  # docker-py raises many unrelated types for "cannot connect"
        why = str(exc) if isinstance(exc, ssh_tunnel.TunnelError) else _short(exc)
        if link is not None:
            # docker-py sees only a closed socket; ssh's log says which channel failed.
            why = (
                f"logged in, but nothing answered at {link.target.socket} on the host "
                f"(ssh: {link.last_words() or why}): give the engine's socket as "
                "ssh://user@host/path/of/docker.sock, and check that this user may use it"
            )
        raise NodeUnreachable(f"Docker engine at {node.docker_host} did not answer: {why}", node=node.name) from exc
    engine = DockerNode(node, client)
    try:
        yield engine
    finally:
        engine.close()
        client.close()


def translated(exc: Exception, node: Node | None = None) -> Exception:
    """``exc`` as one of our errors when it is the engine's own failure (it refused a request,
    or stopped answering mid-way); anything else as it is: ours already, or a bug. Raised
    ``from`` its ``__cause__``: the engine's error for a new one, and its own for the others."""
    name = node.name if node is not None else None
    if isinstance(exc, docker.errors.APIError):
        error: ProviderError = EngineRefused(f"the Docker engine refused: {_short(exc)}", node=name)
    elif isinstance(exc, requests.exceptions.RequestException | urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        error = NodeUnreachable(f"the Docker engine stopped answering: {_short(exc)}", node=name)
    else:
        return exc
    for note in getattr(exc, "__notes__", ()):  # what was done after it (errors.told)
        error.then(note)
    error.__cause__, error.__suppress_context__ = exc, True
    return error


def _short(exc: BaseException) -> str:
    """The cause in a few words: docker-py wraps urllib3 wraps socket errors."""
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        # The engine's own words, without docker-py's "500 Server Error for <url>".
        return str(exc.explanation)[:300]
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return errno.group(1).strip()
    lines = text.strip().splitlines()
    return (lines[-1] if lines else type(exc).__name__)[:300]


class DockerNode(RouterLifecycle, TransferContainers):
    def __init__(self, node: Node, client: docker.DockerClient) -> None:
        self.node = node
        self.client = client
        super().__init__()
        # Containers this run staged and that said they hold: the only ones it lets through.
        self._held: set[str] = set()

    def close(self) -> None:
        self.close_route_sessions()

    def ping(self) -> None:
        """Returns when the engine answers; raises otherwise."""
        self.client.ping()

    # -- discovery ---------------------------------------------------------------------

    def _containers(self, all: bool = False, filters: dict | None = None) -> list[docker.models.containers.Container]:
        # docker-py lists, then inspects each container: one removed in between (another
        # stack's router going, a helper ending) would fail the whole step with "No such
        # container" (seen in CI, starting an application beside another stack's teardown).
        return self.client.containers.list(all=all, filters=filters, ignore_removed=True)

    def find_container(self, name: str) -> docker.models.containers.Container | None:
        try:
            container = self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        if not L.is_ours(container.labels):
            raise NotOurs(
                f"a container named {name} exists that flocker-pulumi did not create",
                node=self.node.name,
                remedy="rename or remove it on the node, or choose another application name, then run `pulumi up` again",
            )
        return container

    def discover_application(self, name: str) -> RunningContainer | None:
        container = self.find_container(name)
        if container is None:
            return None
        return RunningContainer(
            name=name,
            container_id=container.id,
            running=container.status == "running",
            config_hash=recorded_hash(container.labels, _environment(container)),
        )

    def discover_volume(self, name: str) -> NodeVolumeState:
        try:
            volume = self.client.volumes.get(name)
        except docker.errors.NotFound:
            return NodeVolumeState(name, exists=False)
        labels = volume.attrs.get("Labels") or {}
        if not L.is_ours(labels):
            raise NotOurs(f"a volume named {name} exists that flocker-pulumi did not create", node=self.node.name)
        markers = self._markers(name)
        return NodeVolumeState(name, exists=True, retired=_retired(name, markers), partial=any(L.PARTIAL in m.labels for m in markers))

    def container_owner_is(self, name: str, owner: Owner) -> bool:
        try:
            return L.same_owner(self.client.containers.get(name).labels, owner)
        except docker.errors.NotFound:
            return False

    def volume_owner_is(self, name: str, owner: Owner) -> bool:
        try:
            return L.same_owner(self.client.volumes.get(name).attrs.get("Labels"), owner)
        except docker.errors.NotFound:
            return False

    def mounting_containers(self, volume: str) -> tuple[MountedContainer, ...]:
        """Our application containers that mount ``volume``, with the spec each was started from."""
        found = []
        for container in self._mounting(volume):
            if is_staged(container.name):  # not the application yet: it waits for this very copy
                continue
            found.append(MountedContainer(container.name, _spec(container), container.status == "running"))
        return tuple(sorted(found, key=lambda c: c.name))

    def _mounting(self, volume: str) -> list[docker.models.containers.Container]:
        return self._containers(all=True, filters={"label": [f"{L.MANAGED}=true", f"{L.KIND}={L.KIND_APPLICATION}"], "volume": volume})

    # A retired copy, and a move's copy not handed over yet (partial), are marked by a
    # never-started container that mounts it: Docker volume labels cannot change after
    # creation, and the marker also keeps `docker volume prune` from deleting the copy. A
    # retirement marker counts under its own name only (``labels.retirement``): a move
    # creates it ahead under another, and renames it at the handoff.
    def _markers(self, volume: str) -> list[docker.models.containers.Container]:
        # One list for both kinds (the handoff's is in the downtime); a move's helpers carry the volume's label too.
        found = self._containers(all=True, filters={"label": [f"{L.VOLUME}={volume}"]})
        return [c for c in found if L.RETIRED in c.labels or L.PARTIAL in c.labels]

    def retire_volume(self, volume: str, image: str, labels: dict[str, str]) -> None:
        markers = self._markers(volume)
        if _retired(volume, markers):
            return
        prepared = [m for m in markers if m.name == L.prepared_retirement(volume)]
        if prepared:
            prepared[0].rename(L.retirement(volume))
        else:
            self._mark(volume, image, L.retirement(volume), {**labels, L.KIND: "retired-copy", L.RETIRED: "true"})

    def prepare_retirement(self, volume: str, image: str, labels: dict[str, str]) -> None:
        if not any(m.name in (L.retirement(volume), L.prepared_retirement(volume)) for m in self._markers(volume)):
            self._mark(volume, image, L.prepared_retirement(volume), {**labels, L.KIND: "retired-copy", L.RETIRED: "true"})

    def forget_retirement(self, volume: str) -> None:
        for marker in self._markers(volume):
            if marker.name == L.prepared_retirement(volume):
                marker.remove(force=True)

    def mark_partial(self, volume: str, image: str, labels: dict[str, str]) -> None:
        if not any(L.PARTIAL in m.labels for m in self._markers(volume)):
            # A dot, as in staged names: no application's container name has one.
            self._mark(volume, image, f"{volume}.partial", {**labels, L.KIND: "partial-copy", L.PARTIAL: "true"})

    def _mark(self, volume: str, image: str, name: str, labels: dict[str, str]) -> None:
        self.client.containers.create(
            image, command=["true"], name=name, labels={**labels, L.VOLUME: volume}, volumes={volume: {"bind": "/marked", "mode": "ro"}}
        )

    def make_live(self, volume: str) -> None:
        for marker in self._markers(volume):
            marker.remove(force=True)

    def start_existing(self, name: str) -> None:
        container = self.find_container(name)
        if container is not None and container.status != "running":
            self._start(container)

    def volume_size(self, name: str) -> int | None:
        """Bytes used, from the engine's own accounting (a read: it creates nothing)."""
        with _DISK_USAGE_LOCKS_GUARD:
            turn = _DISK_USAGE_LOCKS.setdefault(self.node.docker_host, threading.Lock())
        with turn:
            for attempt in range(DISK_USAGE_RETRIES):
                try:
                    usage = self.client.df()
                    break
                except docker.errors.APIError as exc:
                    if exc.status_code != 409 or attempt == DISK_USAGE_RETRIES - 1:
                        raise
                    time.sleep(DISK_USAGE_RETRY_SECONDS)
        for volume in usage.get("Volumes") or []:
            if volume.get("Name") == name:
                return (volume.get("UsageData") or {}).get("Size")
        return None

    def published_port_owner(self, port: int) -> str | None:
        """Name of a container (ours or not) publishing ``port`` on this node, if any."""
        for container in self._containers():
            if port in _host_ports(container):
                return container.name
        return None

    def host_port_holders(self, ports: Collection[int], router: RouterSpec) -> tuple[MountedContainer, ...]:
        """The stack's running applications that publish one of ``ports`` as a host port."""
        stack = dict(router.labels)
        wanted = [f"{L.MANAGED}=true", f"{L.KIND}={L.KIND_APPLICATION}", f"{L.PROJECT}={stack[L.PROJECT]}", f"{L.STACK}={stack[L.STACK]}"]
        found = [
            MountedContainer(container.name, _spec(container), True)
            for container in self._containers(filters={"label": wanted})
            # A staged container is a move's, which starts it under the application's name.
            if not is_staged(container.name) and _host_ports(container) & set(ports)
        ]
        return tuple(sorted(found, key=lambda c: c.name))

    def published_ports(self, name: str) -> dict[int, int]:
        """Internal port -> the host port the container publishes it on."""
        container = self.find_container(name)
        if container is None:
            raise ContainerFailed(f"container {name} is not there to route to", node=self.node.name)
        found = {}
        for key, bindings in (container.attrs["NetworkSettings"]["Ports"] or {}).items():
            if bindings:
                found[int(key.split("/")[0])] = int(bindings[0]["HostPort"])
        return found

    # -- changes -----------------------------------------------------------------------

    def _started_with(self, modules: tuple[str, ...], image: str, **config: object) -> docker.models.containers.Container:
        """A container that runs a program of ``on_node``: its modules are put into the
        container's own layer before it starts, where they outlive its restarts."""
        container = self.client.containers.create(image, **config)
        container.put_archive("/", on_node.archive(modules))
        container.start()
        return container

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        state = self.discover_volume(name)
        if not state.exists:
            self.client.volumes.create(name=name, labels=labels)

    def remove_volume(self, name: str) -> None:
        state = self.discover_volume(name)
        if state.exists:
            self.make_live(name)  # its markers mount it
            # A move cut short (the provider killed) leaves a staged container, which never
            # ran the application, and its helpers: they hold the volume and go with it.
            for container in self._mounting(name):
                if is_staged(container.name):
                    container.remove(force=True)
            self.remove_transfer_containers(name)
            self.client.volumes.get(name).remove(force=True)

    def start_container(self, spec: ContainerSpec) -> str:
        """Start ``spec``'s container: let a staged one through its gate, or create it."""
        staged = self.find_container(staged_name(spec.name))
        if staged is not None:
            if (
                staged.id in self._held
                and staged.status == "running"
                and recorded_hash(staged.labels, _environment(staged)) == spec.config_hash()
            ):
                return self._release(staged, spec)
            # Staged by an earlier run: whether it still holds is unknown, and a signal
            # meant for the gate must not reach an application already let through.
            staged.remove(force=True)
        self._ensure_image(spec.image, spec.shown_image)
        return self._create_and_start(spec, spec.name, self._container_kwargs(spec))

    def stage_container(self, spec: ContainerSpec) -> bool:
        """Create and start ``spec``'s container under its staged name, held at the gate
        (see staging.py); False when the image has no shell to hold it with."""
        self._ensure_image(spec.image, spec.shown_image)
        self.remove_container(staged_name(spec.name), timeout=0)  # of a move cut short
        config = self.client.images.get(spec.image).attrs.get("Config") or {}
        argv = application_argv(config.get("Entrypoint"), config.get("Cmd"), spec.command)
        if not argv:
            return False
        kwargs = {**self._container_kwargs(spec), "entrypoint": GATE_ENTRYPOINT, "command": argv}

        def hold(container: docker.models.containers.Container) -> bool:
            try:
                self.client.api.get_archive(container.id, SHELL)[0].close()
            except docker.errors.NotFound:
                return False
            container.put_archive("/", gate_archive())
            return True

        container_id = self._create_and_start(spec, staged_name(spec.name), kwargs, hold)
        if not container_id:
            return False
        self._await_gate(container_id, HELD_LINE, f"{staged_name(spec.name)} did not say it holds")
        self._held.add(container_id)
        return True

    def _release(self, staged: docker.models.containers.Container, spec: ContainerSpec) -> str:
        staged.kill(signal=RELEASE_SIGNAL)
        self._held.discard(staged.id)
        staged.rename(spec.name)
        # Running is not enough: a gate still holding runs too, and would be routed to.
        self._await_gate(staged.id, LET_THROUGH_LINE, f"{spec.name} was not let through its gate")
        return staged.id

    def _await_gate(self, container_id: str, line: str, failure: str) -> None:
        deadline = time.monotonic() + GATE_SECONDS
        while line.encode() not in (said := self.client.api.logs(container_id)):
            if time.monotonic() > deadline:
                tail = said.decode(errors="replace").strip()[-300:]
                raise DeadlinePassed(f"{failure} within {GATE_SECONDS}s" + (f"; its log: {tail}" if tail else ""), node=self.node.name)
            time.sleep(GATE_POLL)

    def _container_kwargs(self, spec: ContainerSpec) -> dict:
        environment, extra_hosts = spec.on_node(self.node.address)
        labels, ours = spec.recorded()
        kwargs: dict = {
            "environment": {**environment, **ours},
            "labels": labels,
            "restart_policy": _restart_policy(spec),
            "extra_hosts": extra_hosts,
        }
        if spec.volume_name:
            kwargs["volumes"] = {spec.volume_name: {"bind": spec.mountpoint, "mode": "rw"}}
        if spec.mem_limit:
            kwargs["mem_limit"] = spec.mem_limit
        if spec.cpu_shares:
            kwargs["cpu_shares"] = spec.cpu_shares
        if spec.command:
            kwargs["command"] = list(spec.command)
        if spec.health_check:
            check = spec.health_check
            kwargs["healthcheck"] = {
                "test": list(check.command),
                "interval": _nanoseconds(check.interval),
                "timeout": _nanoseconds(check.timeout),
                "retries": check.retries,
                "start_period": _nanoseconds(check.start_period),
            }
        return kwargs

    def _create_and_start(
        self,
        spec: ContainerSpec,
        name: str,
        kwargs: dict,
        before_start: Callable[[docker.models.containers.Container], bool] | None = None,
    ) -> str:
        """The container's id, or "" when ``before_start`` declined it (then it is removed)."""
        # Its host ports are chosen here (host_port_choice.py), not left to Docker.
        reservations = node_ports(self.node)
        with reservations.lock:
            # Never a port a router binds here: one routed now, one about to be, or this
            # container's own external port; the router would find it taken.
            avoid = self._routed_ports() | set(+reservations.reserved) | {p.external for p in spec.ports}
            for attempt in range(HOST_PORT_ATTEMPTS):
                chosen = host_ports(spec.name, [p.internal for p in spec.ports], attempt, avoid)
                ports = {f"{internal}/tcp": (self.node_bind_address(), port) for internal, port in chosen.items()}
                container = self.client.containers.create(spec.image, name=name, ports=ports, **kwargs)
                try:
                    if before_start is not None and not before_start(container):
                        container.remove(force=True)
                        return ""
                    self._start(container)
                    return container.id
                except (docker.errors.APIError, PortTaken) as exc:
                    # Created but not started: make room for the next candidate.
                    container.remove(force=True)
                    if not isinstance(exc, PortTaken):
                        raise
        raise PortTaken(f"no free host port for {spec.name} after {HOST_PORT_ATTEMPTS} candidates", node=self.node.name)

    def _start(self, container: docker.models.containers.Container) -> None:
        """Start a created container. Docker says that one of its host ports is taken only in
        words, which are read here and nowhere else."""
        try:
            container.start()
        except docker.errors.APIError as exc:
            text = str(exc).lower()
            if "port is already allocated" in text or "address already in use" in text:
                raise PortTaken(f"a host port of {container.name} is taken: {_short(exc)}", node=self.node.name) from exc
            raise

    def node_bind_address(self) -> str:
        # Publishing on every interface of the node is what Flocker did; the node's own
        # namespace (local cluster) or host (real nodes) decides which addresses exist.
        return "0.0.0.0"

    def ensure_image(self, image: str) -> None:
        self._ensure_image(image, image)

    def _ensure_image(self, image: str, shown: str) -> None:
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            repository, tag = docker.utils.parse_repository_tag(image)
            try:
                self.client.images.pull(repository, tag=tag or "latest")
            except docker.errors.APIError as exc:
                why = _short(exc)
                if shown != image:  # a secret: Docker's own words may name it, whole or in parts
                    for part in (image, repository, tag or ""):
                        why = why.replace(part, shown) if part else why
                raise ImageUnavailable(f"image {shown} is not on the node and could not be pulled: {why}", node=self.node.name) from exc

    def wait_running(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            container = self.find_container(name)
            if container is None:
                raise ContainerFailed(f"container {name} disappeared while starting", node=self.node.name)
            # Restarted by its restart policy since we started it: it exited, however briefly
            # "running" it looks between two attempts.
            crashed = container.attrs.get("RestartCount", 0) > 0
            if container.status == "running" and not crashed:
                health = container.attrs.get("State", {}).get("Health") or {}
                if health.get("Status") in (None, "healthy"):
                    return
            elif container.status in ("exited", "dead") or crashed:
                raise self._exited(container, name)
            if time.monotonic() > deadline:
                # "unhealthy" is not final (a check that passes later makes it healthy): only the deadline is.
                status = f"{container.status}{_health(container)}"
                raise DeadlinePassed(
                    f"{name} not up after {timeout:g}s (status {status})",
                    node=self.node.name,
                    remedy="if it only needs longer, raise the application's wait_timeout; if its health check fails, "
                    "its output above says why; then run `pulumi up` again",
                )
            time.sleep(WAIT_POLL)

    def confirm_running(self, name: str, seconds: float) -> None:
        """``name`` runs, unrestarted, for ``seconds`` from now."""
        first = self.find_container(name)
        started = first.attrs.get("State", {}).get("StartedAt") if first is not None else None
        deadline = time.monotonic() + seconds
        while True:
            container = self.find_container(name)
            if container is None:
                raise ContainerFailed(f"container {name} disappeared while starting", node=self.node.name)
            state = container.attrs.get("State", {})
            if container.status != "running" or container.attrs.get("RestartCount", 0) > 0 or state.get("StartedAt") != started:
                raise self._exited(container, name)
            if time.monotonic() >= deadline:
                return
            time.sleep(WAIT_POLL)

    def _exited(self, container: docker.models.containers.Container, name: str) -> ContainerFailed:
        logs = container.logs(tail=20).decode(errors="replace").strip()
        said = f"; last log lines:\n{logs}\n" if logs else ", writing no log"
        return ContainerFailed(f"{name} exited while starting{said}", node=self.node.name)

    def watch_exit(self, name: str) -> ExitWatch | None:
        """A watch on the end of ``name``'s processes (see ExitWatch); None if it cannot have one."""
        container = self.find_container(name)
        if container is None or container.status != "running":
            return None
        try:
            return ExitWatch(self.client.api, container.id, SHELL)
        except Exception:  # a transport that cannot hijack: the stop is waited for instead
            return None

    def run_in_container(self, name: str, command: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
        container = self.find_container(name)
        if container is None or container.status != "running":
            raise ContainerFailed(f"{name} is not running", node=self.node.name)
        ended: list[tuple[int | None, str]] = []
        failed: list[Exception] = []

        def run() -> None:
            try:
                result = container.exec_run(list(command))
                ended.append((result.exit_code, result.output.decode(errors="replace")))
            except Exception as exc:  # raised in the caller's thread below
                failed.append(exc)

        # exec_run has no timeout of its own: a thread, abandoned when it runs too long.
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout)
        if failed:
            raise failed[0]
        return ended[0] if ended else (None, "")

    def stop_container(self, name: str, timeout: int = 10) -> None:
        container = self.find_container(name)
        if container is not None and container.status == "running":
            container.stop(timeout=timeout)

    def stop_for_good(self, name: str, timeout: int = 10) -> None:
        container = self.find_container(name)
        if container is None:
            return
        # First: Docker starts a stopped container whose policy is "always" again when the
        # engine restarts (a node's reboot), however it was stopped.
        container.update(restart_policy={"Name": "no"})
        if container.status == "running":
            container.stop(timeout=timeout)

    def remove_container(self, name: str, timeout: int = 10) -> None:
        container = self.find_container(name)
        if container is None:
            return
        if container.status == "running":
            container.stop(timeout=timeout)
        container.remove(force=True)


def _host_ports(container: docker.models.containers.Container) -> set[int]:
    bindings = (container.attrs.get("HostConfig", {}).get("PortBindings") or {}).values()
    return {int(binding["HostPort"]) for bound in bindings for binding in bound or [] if str(binding.get("HostPort") or "").isdigit()}


def _health(container: docker.models.containers.Container) -> str:
    health = container.attrs.get("State", {}).get("Health")
    if not health:
        return ""
    last = (health.get("Log") or [{}])[-1]
    output = str(last.get("Output", "")).strip()[-300:]
    return f", {health.get('Status')}: its health check exited {last.get('ExitCode')}" + (f": {output}" if output else "")


def _nanoseconds(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _retired(volume: str, markers: list[docker.models.containers.Container]) -> bool:
    return any(L.RETIRED in m.labels and m.name == L.retirement(volume) for m in markers)


def _spec(container: docker.models.containers.Container) -> ContainerSpec:
    """The spec ``container`` was started from: its label, and its environment (the values, and the sealed fields)."""
    return ContainerSpec.from_json(container.labels[L.SPEC], _environment(container))


def _environment(container: docker.models.containers.Container) -> list[str]:
    return (container.attrs.get("Config") or {}).get("Env") or []


def _restart_policy(spec: ContainerSpec) -> dict:
    policy = spec.restart_policy
    name = {"never": "no", "always": "always", "on-failure": "on-failure"}[policy.name]
    result: dict = {"Name": name}
    if policy.name == "on-failure" and policy.maximum_retry_count is not None:
        result["MaximumRetryCount"] = policy.maximum_retry_count
    return result
