"""Driving the real Pulumi CLI and the real node engines from tests."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.tls

from flocker_provider.docker_layer.docker_node import API_VERSION, DockerNode
from flocker_provider.nodes import tls_from_dir
from flocker_provider.on_node.kernel_forwarding import rule_names
from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import RouterSpec
from flocker_provider.planning.models import Node

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MANAGED = "io.flocker-pulumi.managed"
STACK_LABEL = "io.flocker-pulumi.stack"

# The Elasticsearch stand-in with its data in a volume: an acknowledged write (a PUT
# answered) is on disk, so it is the application the move tests and benchmarks use.
STORE = """
import pulumi
from flocker_pulumi import FlockerApplication

config = pulumi.Config()
store = FlockerApplication(
    "store",
    image="flocker/elasticsearch:local",
    node=config.require("node"),
    ports=[{"internal": 9200, "external": 9200}],
    volume={"mountpoint": "/var/lib/elasticsearch"},
)
pulumi.export("node", store.node)
pulumi.export("last_move", store.volume.last_move)
"""


@dataclass(frozen=True)
class ClusterNode:
    name: str
    address: str
    docker_host: str
    tls: str = ""  # the client certificates' directory (Docker's ca.pem, cert.pem, key.pem), if it has TLS
    engine_socket: str = ""  # the engine's unix socket on this machine
    netns: str = ""  # the node's network namespace
    volumes_mb: int = 0  # the size of a filesystem of its own under its volumes (FLOCKER_NODE<I>_DISK_MB), if any
    volumes_fs: str = ""  # "btrfs" where its volumes are on a btrfs of their own (scripts/cluster.sh)

    def client(self) -> docker.DockerClient:
        """A client of the node's engine as the provider's connect() makes one: the API version
        fixed, not asked for before the next line, where REQUESTS_CA_BUNDLE and the like stop
        overriding the node's CA."""
        tls = self.provider_node().tls
        tls_config = tls and docker.tls.TLSConfig(client_cert=(tls.client_cert, tls.client_key), ca_cert=tls.ca_cert, verify=True)
        client = docker.DockerClient(base_url=self.docker_host, tls=tls_config, timeout=60, version=API_VERSION)
        client.api.trust_env = False
        return client

    def provider_node(self) -> Node:
        """The node as the provider takes it from the node file."""
        return Node(self.name, self.address, self.docker_host, tls_from_dir(self.tls) if self.tls else None)

    def entry(self) -> dict[str, str]:
        """Its entry in a node file of a test's own."""
        return {"name": self.name, "address": self.address, "docker_host": self.docker_host, **({"tls": self.tls} if self.tls else {})}


def load_nodes(path: str | os.PathLike[str] | None = None) -> list[ClusterNode] | None:
    """The nodes of the node file ``path``, by default the session's (``FLOCKER_NODES_FILE``)."""
    path = path or os.environ.get("FLOCKER_NODES_FILE")
    if not path or not Path(path).exists():
        return None
    data = json.loads(Path(path).read_text())
    keys = ("tls", "engine_socket", "netns", "volumes_mb", "volumes_fs")
    return [ClusterNode(n["name"], n["address"], n["docker_host"], **{k: n[k] for k in keys if k in n}) for n in data["nodes"]]


class Pulumi:
    """One project directory, one stack, its own file backend: tests never share state."""

    def __init__(self, workdir: Path, stack: str, project_dir: Path | None = None) -> None:
        self.state = workdir / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.dir = project_dir or workdir / "project"
        self.stack = stack
        self.env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "PULUMI_BACKEND_URL": f"file://{self.state}",
            "PULUMI_CONFIG_PASSPHRASE": "",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_PYTHON_CMD": sys.executable,
        }

    def write_program(self, program: str, name: str = "flocker-test") -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "Pulumi.yaml").write_text(f"name: {name}\nruntime: python\n")
        (self.dir / "__main__.py").write_text(textwrap.dedent(program))

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        command = ["pulumi", *args, "--stack", self.stack, "--non-interactive", "--cwd", str(self.dir)]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        command = ["pulumi", *args, "--stack", self.stack, "--non-interactive", "--cwd", str(self.dir)]
        return subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def init(self, config: dict[str, str] | None = None) -> None:
        subprocess.run(
            ["pulumi", "stack", "init", self.stack, "--cwd", str(self.dir), "--non-interactive"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        self.config(config or {})

    def config(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self.run("config", "set", key, value)

    def up(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("up", "--yes", "--skip-preview", check=check)

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.run("stack", "output", "--json").stdout)

    def destroy(self) -> None:
        self.run("destroy", "--yes", "--skip-preview", check=False)


def make(workdir: Path, stack: str, program: str, node: str) -> Pulumi:
    """A new stack of ``program`` with its `node` config set."""
    pulumi = Pulumi(workdir, stack)
    pulumi.write_program(program)
    pulumi.init({"node": node})
    return pulumi


def by_name(nodes: list[ClusterNode], name: str) -> ClusterNode:
    return next(n for n in nodes if n.name == name)


def ours(nodes: list[ClusterNode], stack: str) -> dict[str, list[str]]:
    """Names of containers and volumes of this stack on each node."""
    found: dict[str, list[str]] = {}
    for node in nodes:
        client = node.client()
        filters = {"label": [f"{MANAGED}=true", f"{STACK_LABEL}={stack}"]}
        names = [f"container:{c.name}" for c in client.containers.list(all=True, filters=filters)]
        names += [f"volume:{v.name}" for v in client.volumes.list(filters=filters)]
        found[node.name] = sorted(names)
    return found


def router_rules(nodes: list[ClusterNode], stack: str) -> dict[str, list[str]]:
    """The iptables rules and chains of this stack's router left on each node (both backends).

    Read from a throw-away container on the node's host network, as the router itself sees them.
    """
    names = rule_names(f"flocker-{stack}.router")
    marks = (names.comment, names.dnat, names.snat, names.accept)
    found: dict[str, list[str]] = {}
    for node in nodes:
        output = node.client().containers.run(
            "flocker/base:local",
            ["sh", "-c", "iptables-nft-save 2>/dev/null; iptables-legacy-save 2>/dev/null; true"],
            network_mode="host",
            cap_add=["NET_ADMIN"],
            remove=True,
        )
        found[node.name] = [line for line in output.decode().splitlines() if any(mark in line for mark in marks)]
    return found


def node_state(nodes: list[ClusterNode]) -> dict[str, list[tuple[str, str, str]]]:
    """Everything on every node: containers with their state, and volumes."""
    state = {}
    for node in nodes:
        client = node.client()
        items = [("container", c.name, c.status) for c in client.containers.list(all=True)]
        items += [("volume", v.name, "") for v in client.volumes.list()]
        state[node.name] = sorted(items)
    return state


def eventually(check: Callable[[], Any], timeout: float = 60, interval: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing being waited for may not answer yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last error: {last})")


def http_json(method: str, url: str, body: Any = None, timeout: float = 5) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def http_ndjson(url: str, body: str, timeout: float = 300) -> Any:
    """POST of newline-delimited JSON (OpenSearch's `_bulk`), the answer's JSON."""
    request = urllib.request.Request(url, data=body.encode(), method="POST", headers={"Content-Type": "application/x-ndjson"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def http_text(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def es_count(address: str, index: str = "logstash") -> int:
    try:
        return http_json("GET", f"http://{address}:9200/{index}/_count")["count"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return 0
        raise


def send_lines(address: str, lines: list[str], port: int = 5000) -> None:
    with socket.create_connection((address, port), timeout=10) as conn:
        conn.sendall("".join(line + "\n" for line in lines).encode())


def volume_checksums(node: ClusterNode, volume: str, image: str = "flocker/base:local") -> str:
    """sha256 of every file in a volume, read by a helper container on that node."""
    return _in_volume(node, volume, "find . -type f -print0 | sort -z | xargs -0r sha256sum", image)


def volume_prefix_checksums(node: ClusterNode, volume: str, like: ClusterNode, image: str = "flocker/base:local") -> tuple[str, str]:
    """``volume_checksums`` on ``like``, and on ``node`` the sha256 of as many first bytes of
    each of those files as ``like`` has: equal when every file on ``like`` is there on ``node``,
    grown at most by appending (a store's log after writes went on)."""
    sizes = _in_volume(like, volume, "find . -type f -printf '%s %p\\n' | sort -k2", image)
    script = 'while read -r size path; do printf \'%s  %s\\n\' "$(head -c $size "$path" | sha256sum | cut -d\' \' -f1)" "$path"; done'
    return volume_checksums(like, volume, image), _in_volume(node, volume, f'printf "%s" "$SIZES" | {{ {script}; }}', image, SIZES=sizes)


def _in_volume(node: ClusterNode, volume: str, script: str, image: str, **environment: str) -> str:
    output = node.client().containers.run(
        image,
        ["sh", "-c", f"cd /data && {script}"],
        environment=environment,
        volumes={volume: {"bind": "/data", "mode": "ro"}},
        remove=True,
    )
    return output.decode()


class Writer(threading.Thread):
    """Indexes documents into the store as fast as acknowledged, at the first endpoint that answers.

    ``endpoints`` are ``ADDRESS:PORT``. With routing, the store's old address keeps serving
    after a move (held, then forwarded), so the outage of a move is the longest time
    between two acknowledged writes, whichever endpoint gave them. Document ``i`` goes into
    index ``{index}-{i // PAGE}``: a search returns at most 10,000 hits, and a writer on a
    fast day acknowledges more than that (CI's did, and its writes past 10,000 read as lost).
    """

    PAGE = 10_000

    def __init__(self, endpoints: list[str], index: str = "acks") -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.index = index
        self.acknowledged: list[int] = []
        self.served: list[float] = []  # time.monotonic() of each acknowledged write
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            for endpoint in self.endpoints:
                try:
                    http_json("PUT", f"http://{endpoint}/{self.index}-{i // self.PAGE}/_doc/{i}", {"n": i}, timeout=2)
                # A store stopping mid-answer cuts the response short (IncompleteRead):
                # not acknowledged, like a refused connection.
                except (OSError, urllib.error.URLError, http.client.HTTPException):
                    continue
                self.acknowledged.append(i)
                self.served.append(time.monotonic())
                i += 1
                break
            else:
                time.sleep(0.05)

    def served_since(self, moment: float) -> bool:
        return bool(self.served) and self.served[-1] > moment

    def outage(self) -> float:
        """The longest time between two acknowledged writes."""
        return max((b - a for a, b in zip(self.served, self.served[1:], strict=False)), default=0.0)


class BulkWriter(threading.Thread):
    """Indexes documents into OpenSearch in `_bulk` requests of ``batch``, one after another,
    through ``endpoint`` (``ADDRESS:PORT``), until stopped. A document is acknowledged when its
    item in the answer says it was created: OpenSearch has fsynced it into its translog then.
    A request that fails (the store stopping, a held connection timing out) is not retried
    with the same ids, so what is acknowledged is exactly what a client was told."""

    def __init__(self, endpoint: str, index: str = "acks", batch: int = 50, timeout: float = 150) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.index, self.batch, self.timeout = endpoint, index, batch, timeout
        self.acknowledged: list[int] = []
        self.failed_requests = 0
        self.stop = threading.Event()

    def run(self) -> None:
        first = 0
        while not self.stop.is_set():
            ids = range(first, first + self.batch)
            first += self.batch
            body = "".join(f'{{"index":{{"_id":"{i}"}}}}\n{{"n":{i},"text":"document {i} of {self.index}"}}\n' for i in ids)
            try:
                items = http_ndjson(f"http://{self.endpoint}/{self.index}/_bulk", body, timeout=self.timeout)["items"]
            except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError):
                self.failed_requests += 1
                time.sleep(0.2)
                continue
            self.acknowledged += [int(item["index"]["_id"]) for item in items if item["index"].get("status") in (200, 201)]


def missing_documents(address: str, index: str, ids: list[int]) -> list[int]:
    """Which of ``ids`` the OpenSearch at ``address`` does not have, asked by id (`_mget` reads
    the translog too: no refresh needed, and no search window of 10,000 hits)."""
    missing = []
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        docs = http_json("POST", f"http://{address}:9200/{index}/_mget", {"ids": [str(i) for i in chunk]}, timeout=60)["docs"]
        missing += [int(doc["_id"]) for doc in docs if not doc.get("found")]
    return missing


def missing_writes(address: str, writer: Writer) -> list[int]:
    """Which of the writer's acknowledged writes the OpenSearch at ``address`` does not have,
    asked by id in each index the writer spread them over."""
    pages: dict[int, list[int]] = {}
    for i in writer.acknowledged:
        pages.setdefault(i // writer.PAGE, []).append(i)
    return [i for page, ids in sorted(pages.items()) for i in missing_documents(address, f"{writer.index}-{page}", ids)]


def stop_returned_at(last_move: dict[str, Any]) -> float:
    """When a move's stop of the application returned, on this process's monotonic clock: it
    no longer answers on the source then, and not yet on the destination (a write in flight
    when the stop began may still be acknowledged during it)."""
    stop = next(s for s in last_move["steps"] if s["step"].startswith("stop "))
    return stop["started_at"] + stop["seconds"] - (time.time() - time.monotonic())


def gaps_around(served: list[float], moment: float) -> tuple[float, float]:
    """A client's pause between acknowledgements around ``moment`` (its downtime then), and
    its longest pause at any other time."""
    gaps = [(round(b - a, 3), a <= moment < b) for a, b in zip(served, served[1:], strict=False)]
    return next(gap for gap, around in gaps if around), max((gap for gap, around in gaps if not around), default=0.0)


def move_while_writing(
    store: Pulumi, endpoints: list[ClusterNode], source: str, destination: str, writes_before: int = 50
) -> tuple[Writer, subprocess.CompletedProcess[str]]:
    """Moves the store (config `node`) while a Writer indexes into it through ``endpoints``'
    port 9200; returns the stopped writer and what `pulumi up` printed."""
    writer = Writer([f"{node.address}:9200" for node in endpoints])
    writer.start()
    eventually(lambda: len(writer.acknowledged) > writes_before, what="writes before the move")
    store.config({"node": destination})
    result = store.up()
    assert f"moves from {source} to {destination}" in result.stdout, result.stdout
    time.sleep(1)  # and some writes after it
    writer.stop.set()
    writer.join()
    return writer, result


def lost_writes(store_node: ClusterNode, writer: Writer) -> list[int]:
    """The writer's acknowledged writes that the store on ``store_node`` does not have."""
    found: set[int] = set()
    for page in sorted({i // writer.PAGE for i in writer.acknowledged}):
        search = f"http://{store_node.address}:9200/{writer.index}-{page}/_search?size={writer.PAGE}"
        try:
            found |= {hit["_source"]["n"] for hit in http_json("GET", search)["hits"]["hits"]}
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # no such index: none of that page's writes are there
                raise
    return sorted(set(writer.acknowledged) - found)


def route_round_trip(engine: DockerNode, router: RouterSpec) -> None:
    """A route written through the router's exec session, read back and removed."""
    route = {"target": None, "hold_seconds": 5, "application": "web"}
    engine.prepare_routes(router)
    # The session is an exec that stays open in the router: the transport carries hijacked
    # connections, so writes are not left to an exec each.
    assert engine.client.containers.get(router.name).attrs["ExecIDs"], f"no route session open over {engine.node.docker_host}"
    engine.point_routes(router, {18400: route})
    assert engine.read_routes(router) == {18400: route}
    engine.remove_routes(router, "web", (18400,))


def process_ended(pid: int) -> bool:
    """Whether process ``pid`` has ended: gone, or a zombie (an orphan's reaper may be slow,
    or, in some sandboxes, never come)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
    return found


class Sampler(threading.Thread):
    """How many nodes run ``container``'s process at once, sampled every half second: never more
    than one. By its process, not by Docker's status: a stopped container whose processes are
    gone is "running" until Docker has also taken its network down, while the move starts the
    destination's (every node's processes are this machine's)."""

    def __init__(self, nodes: list[ClusterNode], container: str) -> None:
        super().__init__(daemon=True)
        self.nodes, self.container = nodes, container
        self.most = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            running = 0
            for node in self.nodes:
                with contextlib.suppress(Exception):  # an engine busy for a moment: the next sample counts
                    found = node.client().containers.list(filters={"name": self.container, "status": "running"})
                    pids = [c.attrs["State"]["Pid"] for c in found if c.name == self.container]
                    running += any(pid and not process_ended(pid) for pid in pids)
            self.most = max(self.most, running)


def in_namespace(node: ClusterNode, *command: str) -> str:
    return subprocess.run(["ip", "netns", "exec", node.netns, *command], check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def rate_limited(device: str, rate: str, burst: str, node: ClusterNode | None = None) -> Iterator[None]:
    """What leaves ``device`` (``node``'s, in its namespace, else this machine's) at ``rate``
    (a token bucket of ``burst`` bytes) until the end of the block. `replace`, not `add`: a
    limit a killed run left on the device is taken over, and removed at the end."""
    command = ["ip", "netns", "exec", node.netns, "tc"] if node else ["tc"]
    qdisc = [*command, "qdisc", "replace", "dev", device, "root", "tbf", "rate", rate, "burst", burst, "latency", "100ms"]
    subprocess.run(qdisc, check=True, capture_output=True, text=True)
    try:
        yield
    finally:
        subprocess.run([*command, "qdisc", "del", "dev", device, "root"], check=True, capture_output=True, text=True)


def slowed(node: ClusterNode) -> contextlib.AbstractContextManager[None]:
    """``node``'s traffic out at 200 Mbit/s, so that a copy from it takes seconds to cut into."""
    return rate_limited("eth0", "200mbit", "64kb", node)


def host_veth(node: ClusterNode) -> str:
    """The name, on this machine, of the other end of ``node``'s eth0 (a veth on the cluster's
    bridge): the link a node's incoming traffic leaves this machine's side by."""
    peer = in_namespace(node, "cat", "/sys/class/net/eth0/iflink").strip()
    for device in Path("/sys/class/net").iterdir():
        if (device / "ifindex").read_text().strip() == peer:
            return device.name
    raise LookupError(f"{node.name}: no device here has ifindex {peer} (the peer of its eth0)")


def transfer_helpers(nodes: list[ClusterNode]) -> list[str]:
    return [c.name for n in nodes for c in n.client().containers.list(all=True, filters={"label": f"{L.KIND}={L.KIND_TRANSFER}"})]
