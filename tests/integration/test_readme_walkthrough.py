"""The README's walkthrough, run from the README itself, so that the two cannot drift apart (issue 13).

The commands are read from README.md: the shell blocks of its opening (before its first
``## `` section: the quick start, ``make up``) and of its section ``## Walkthrough``, in order.
Each must match one entry of ``COMMANDS``, which says how it runs here and what the README
says it shows, checked on its output and on the nodes. Most run as typed, in one shell that
keeps what a command exports and where it ``cd``s, as a user's does. Those that would start,
stop or install into the cluster, or that name the README's stack (``local``) or a directory
outside the test, are mapped to their equivalent on the session's running cluster: it is
shared, so it is never started, stopped or installed into here, and the stacks are the
test's own, destroyed after it. A command the README gains that ``COMMANDS`` does not know
fails the test, named (``test_every_walkthrough_command_is_known`` says so without a cluster).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from .harness import BIN, REPO, ClusterNode, Pulumi, eventually, ours, router_rules
from .test_elk_example import INDEXED_WITHIN
from .test_flocker_deploy import remove_leftovers, snapshot, where

pytestmark = pytest.mark.cluster

README = REPO / "README.md"
WALKTHROUGH = "## Walkthrough"
# The addresses the README's commands name: those of scripts/cluster.sh's default cluster (0).
README_ADDRESSES = {"node1": "172.16.255.250", "node2": "172.16.255.251", "node3": "172.16.255.252", "node4": "172.16.255.253"}
# What the stack's images are, for a check that a node has them all.
ELK_IMAGES = ("flocker/opensearch:local", "flocker/rsyslog:local", "flocker/logpage:local", "flocker/base:local")
COMMAND_SECONDS = 900


@dataclass(frozen=True)
class Command:
    text: str  # as in the README, without its comment
    comment: str  # what the README says of it


def shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)


def walkthrough(readme: str) -> list[str]:
    """The shell blocks of the README's opening and of its walkthrough section, in order."""
    opening = readme.partition("\n## ")[0]
    start = re.search(rf"^{re.escape(WALKTHROUGH)}", readme, re.MULTILINE)
    if start is None:
        raise AssertionError(f"README.md has no section starting {WALKTHROUGH!r}: the walkthrough this test runs")
    section = readme[start.start() :]
    end = re.search(r"^## ", section[len(WALKTHROUGH) :], re.MULTILINE)
    if end is not None:
        section = section[: len(WALKTHROUGH) + end.start()]
    return shell_blocks(opening) + shell_blocks(section)


def split_comment(line: str) -> tuple[str, str]:
    # A `#` after white space starts a shell comment; one inside quotes would not, but the
    # README quotes none, and a command cut short by one would match no entry of COMMANDS.
    found = re.search(r"(?:^|\s)#(?=\s|$)", line)
    if found is None:
        return line.strip(), ""
    return line[: found.start()].strip(), line[found.end() :].strip()


def commands(block: str) -> list[Command]:
    """The block's commands: a line each, with its continuations and here-document."""
    found = []
    lines = iter(block.splitlines())
    for line in lines:
        text, comment = split_comment(line)
        while text.endswith("\\"):
            more, said = split_comment(next(lines, ""))
            text, comment = f"{text[:-1].rstrip()} {more}", comment or said
        if not text:
            continue
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", text)
        if heredoc is not None:
            body = []
            for inner in lines:
                body.append(inner)
                if inner.strip() == heredoc.group(1):
                    break
            text = "\n".join([text, *body])
        found.append(Command(text, comment))
    return found


def readme_commands(readme: str) -> list[Command]:
    return [command for block in walkthrough(readme) for command in commands(block)]


class Shell:
    """One user's shell across commands: what a command exports, and where it ``cd``s, hold for the next."""

    def __init__(self, env: dict[str, str], cwd: Path, scratch: Path) -> None:
        self.env, self.cwd = env, cwd
        self.where, self.exported = scratch / "cwd", scratch / "env"

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        # pipefail: `printf ... | socat ...` fails when socat does, not only when printf does.
        script = f'set -o pipefail\n{command}\nstatus=$?\npwd > "$WALK_CWD"\nenv -0 > "$WALK_ENV"\nexit $status\n'
        env = {**self.env, "WALK_CWD": str(self.where), "WALK_ENV": str(self.exported)}
        try:
            result = subprocess.run(["bash", "-c", script], cwd=self.cwd, env=env, capture_output=True, text=True, timeout=COMMAND_SECONDS)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{command!r} had not ended after {COMMAND_SECONDS}s:\n{exc.stdout}\n{exc.stderr}") from exc
        if self.exported.exists():
            pairs = (entry.partition("=") for entry in self.exported.read_text().split("\0") if entry)
            self.env = {name: value for name, _, value in pairs if name not in ("WALK_CWD", "WALK_ENV")}
            self.cwd = Path(self.where.read_text().strip())
        return result


@dataclass
class Walk:
    nodes: list[ClusterNode]
    stack: str  # the Python program's, as `make up` makes it
    deploy_stack: str  # flocker-deploy's
    backend: str
    files: Path  # where the README copies Flocker's files
    shell: Shell
    lines: list[str] = field(default_factory=list)  # sent to the store that runs now
    noted: dict = field(default_factory=dict)  # the nodes before a command that must change nothing

    def pulumi(self, *args: str) -> str:
        """What the stack's `pulumi ARGS` prints, asked in the walk's shell environment."""
        command = ["pulumi", *args, "--stack", self.stack, "--non-interactive"]
        result = subprocess.run(command, cwd=REPO, env=self.shell.env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def outputs(self) -> dict:
        return json.loads(self.pulumi("stack", "output", "--json"))


Check = Callable[[Walk, Command, re.Match[str], subprocess.CompletedProcess[str]], None]


@dataclass(frozen=True)
class Known:
    """A command the README may show, in full (a regular expression), and how it runs here."""

    pattern: str
    # What runs: ``{typed}`` is the README's command; ``{stack}``, ``{files}`` and the
    # pattern's groups are filled in. Empty: not run, for the reason given.
    runs: str = "{typed}"
    why: str = ""  # why it is not run as typed
    shows: Check | None = None  # what the README says it shows
    before: Callable[[Walk, re.Match[str]], None] | None = None
    again: bool = False  # a read: run again until ``shows`` holds, as a user would look again


# -- what the README says the commands show --------------------------------------------


def installed(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    assert (REPO / ".venv" / "bin" / "pulumi").exists(), "no pulumi in the clone's .venv: run `make install` before this test"


def deployed(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    # "`make up` deployed Elasticsearch on node1 (...), Logstash on node2 (.251) and Kibana on node3 (.252)".
    outputs = walk.outputs()
    placed = {service: outputs[f"{service}_node"] for service in ("elasticsearch", "logstash", "kibana")}
    assert placed == {"elasticsearch": "node1", "logstash": "node2", "kibana": "node3"}, outputs
    assert "ELK is up on the local cluster:" in result.stdout, result.stdout
    walk.lines = []


def own_state(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    # "this shell: pulumi, flocker-deploy, local state", the state being the test's own here:
    # make's `?=` keeps the backend and node file the shell had.
    env = walk.shell.env
    assert env["PATH"].split(os.pathsep)[0] == str(REPO / ".venv" / "bin"), env["PATH"]
    assert env.get("PULUMI_BACKEND_URL") == walk.backend, env.get("PULUMI_BACKEND_URL")
    assert env.get("FLOCKER_NODES_FILE") == os.environ["FLOCKER_NODES_FILE"], env.get("FLOCKER_NODES_FILE")


def shipper_listening(walk: Walk, match: re.Match[str]) -> None:
    # Within seconds of `make up` a user types no faster; a line sent twice would be counted twice.
    eventually(lambda: socket.create_connection((match["address"], 5000), timeout=2).close() or True, what="the shipper listening")


def sent(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    walk.lines += [line for line in match["lines"].split("\\n") if line]


def counted(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    claimed = re.search(r'\{"count":(\d+)', command.comment)
    if claimed is not None and int(claimed.group(1)) != len(walk.lines):
        pytest.fail(f"the README says {command.text!r} shows count {claimed.group(1)}, after it sent {len(walk.lines)} lines: {walk.lines}")
    try:
        count = json.loads(result.stdout).get("count")
    except ValueError:
        count = None
    assert count == len(walk.lines), f"{len(walk.lines)} documents expected, it said {result.stdout!r}"


def listed(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    missing = [line for line in walk.lines if line not in result.stdout]
    assert walk.lines and not missing, f"the page does not list {missing} of {walk.lines}:\n{result.stdout}"


def images_on_nodes(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    # "adds node4 (...) and loads the images onto it": every node the command asks for has them.
    count = int(match["count"] or 3)
    for node in walk.nodes[:count]:
        have = {tag for image in node.client().images.list() for tag in image.tags}
        assert set(ELK_IMAGES) <= have, f"{node.name} lacks {sorted(set(ELK_IMAGES) - have)} after {command.text!r}"


def printed(result: subprocess.CompletedProcess[str]) -> str:
    """What a command shows in the terminal: flocker-deploy writes its plan lines to stderr."""
    return result.stdout + result.stderr


def quoted_line(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    # The README quotes what it prints; `…` stands for what varies (the volume's size).
    quoted = re.fullmatch(r'"(.*)"', command.comment)
    assert quoted is not None, f"the README no longer quotes what {command.text!r} prints: {command.comment!r}"
    pattern = ".*?".join(re.escape(part) for part in quoted.group(1).split("…"))
    assert re.search(pattern, printed(result)), f"{quoted.group(1)!r} not in what {command.text!r} printed:\n{printed(result)}"


def config_set(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    assert walk.pulumi("config", "get", match["key"]).strip() == match["value"]


def moved(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    # "phase 1 while it serves, phase 2, OpenSearch starts on node4".
    node = walk.pulumi("config", "get", "elasticsearchNode").strip()
    assert f"moves from node1 to {node}" in printed(result), printed(result)
    assert walk.outputs()["elasticsearch_node"] == node


def destroyed(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    left = ours(walk.nodes, walk.stack)
    assert all(not items for items in left.values()), left
    walk.lines = []


def placed_as_the_files_say(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    # "deploys to three nodes, ends with what runs where" / "moves it with its data".
    placement = yaml.safe_load((walk.shell.cwd / "deployment.yml").read_text())["nodes"]
    node_of = {node.address: node.name for node in walk.nodes}
    wanted = {app: node_of[address] for address, apps in placement.items() for app in apps or ()}
    assert {app: node for app, (node, _) in where(result.stdout).items()} == wanted, result.stdout


def note_the_nodes(walk: Walk, match: re.Match[str]) -> None:
    walk.noted = snapshot(walk.nodes, walk.deploy_stack)


def changed_nothing(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    # "says what would move; changes nothing".
    assert "moves from node1 to node4" in printed(result), printed(result)
    assert "nothing was changed" in printed(result), printed(result)
    assert snapshot(walk.nodes, walk.deploy_stack) == walk.noted


def deploy_destroyed(walk: Walk, command: Command, match: re.Match[str], result: subprocess.CompletedProcess[str]) -> None:
    assert f"stack {walk.deploy_stack}: destroyed" in result.stdout, result.stdout
    left = ours(walk.nodes, walk.deploy_stack)
    assert all(not items for items in left.values()), left
    walk.lines = []


ADDRESS = r"(?P<address>172\.16\.255\.\d+)"
NOT_IN_A_SHARED_CLUSTER = "the session's cluster is shared: it is never started, stopped or installed into here"


def with_make_exports(command: str) -> str:
    """``command`` as a make target runs it: with the Makefile's exports, which stay in make."""
    return f'(eval "$(make -s env)" && {command})'


COMMANDS: tuple[Known, ...] = (
    # make up = make install, make cluster, make images, then scripts/elk-up.sh with the
    # Makefile's exports. The session's cluster runs with its images built (scripts/run-tests.sh
    # builds them), so only the last runs, on the test's stack.
    Known(r"make up", with_make_exports("bash scripts/elk-up.sh {stack}"), NOT_IN_A_SHARED_CLUSTER, deployed),
    Known(r"make test", "", "the suite this test is part of: it would start and stop a cluster of its own"),
    Known(r"make install", "", NOT_IN_A_SHARED_CLUSTER + "; what it made is checked", installed),
    # make cluster = make install, scripts/cluster.sh up N and scripts/build-images.sh
    # --load-only: the session's cluster has its nodes (the test is skipped with fewer than 4),
    # so only the load, which must leave every node with the images.
    Known(
        r"(?:NODES=(?P<count>\d) )?make cluster",
        with_make_exports("bash scripts/build-images.sh --load-only"),
        NOT_IN_A_SHARED_CLUSTER,
        images_on_nodes,
    ),
    Known(
        r"make down",
        with_make_exports("pulumi destroy --yes --stack {stack} --non-interactive"),
        NOT_IN_A_SHARED_CLUSTER + ": only the stack goes",
        destroyed,
    ),
    Known(r'eval "\$\(make -s env\)"', shows=own_state),
    Known(rf"printf '(?P<lines>[^']*)' \| socat - TCP:{ADDRESS}:5000", shows=sent, before=shipper_listening),
    Known(r"sleep \d+"),
    # Lines reach the store within the README's 2 s on a quiet machine; a busy one takes longer.
    Known(rf"(?:sleep \d+ && )?curl -s {ADDRESS}:9200/logstash/_count", shows=counted, again=True),
    Known(rf"curl -s {ADDRESS}/", shows=listed, again=True),
    Known(
        r"pulumi config set (?P<key>\w+) (?P<value>\S+) --stack local",
        "pulumi config set {key} {value} --stack {stack}",
        "the test's stack",
        config_set,
    ),
    Known(r"pulumi preview --stack local", "pulumi preview --stack {stack}", "the test's stack", quoted_line),
    Known(
        r"pulumi up --stack local",
        "pulumi up --yes --stack {stack}",
        "the test's stack; `pulumi up` asks whether to go on, and with no terminal it wants --yes for the answer",
        moved,
    ),
    Known(r"pulumi destroy --yes --stack local", "pulumi destroy --yes --stack {stack}", "the test's stack", destroyed),
    Known(
        r"mkdir -p /tmp/elk && cp examples/elk/\*\.yml /tmp/elk/ && cd /tmp/elk",
        "mkdir -p {files} && cp examples/elk/*.yml {files}/ && cd {files}",
        "a directory of the test's own: a user's /tmp/elk is left alone",
    ),
    Known(r"cat > deployment\.yml <<'YML'\n(?:.*\n)*YML"),
    # flocker-deploy's state and stack are the test's through FLOCKER_DEPLOY_STATE and
    # FLOCKER_DEPLOY_STACK (see the `walk` fixture), so its commands run as typed.
    Known(r"flocker-deploy deployment\.yml application\.yml", shows=placed_as_the_files_say),
    Known(r"flocker-deploy --preview deployment\.yml application\.yml", shows=changed_nothing, before=note_the_nodes),
    Known(r"flocker-deploy --destroy", shows=deploy_destroyed),
)


def known_for(command: Command) -> tuple[Known, re.Match[str]]:
    found = [(known, match) for known in COMMANDS if (match := re.fullmatch(known.pattern, command.text)) is not None]
    if not found:
        raise AssertionError(
            f"README.md's walkthrough has a command this test does not know: {command.text!r}. "
            "Add it to COMMANDS in tests/integration/test_readme_walkthrough.py: how it runs on the shared cluster, and what it shows"
        )
    assert len(found) == 1, f"{command.text!r} matches more than one entry of COMMANDS: {[known.pattern for known, _ in found]}"
    return found[0]


def test_every_walkthrough_command_is_known() -> None:
    """Needs no cluster: a README edit is caught wherever the integration tests are collected."""
    found = readme_commands(README.read_text())
    assert "make up" in [command.text for command in found], found
    for command in found:
        known_for(command)


@pytest.fixture
def walk(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> Iterator[Walk]:
    if len(nodes) < 4:
        pytest.skip(f"the walkthrough moves Elasticsearch to a 4th node, the cluster has {len(nodes)}")
    elsewhere = {node.name: node.address for node in nodes if README_ADDRESSES.get(node.name, node.address) != node.address}
    if elsewhere:
        pytest.skip(f"the README's commands name the default cluster's addresses {README_ADDRESSES}; this cluster's are {elsewhere}")
    deploy_stack, deploy_state = f"{stack_name}d", workdir / "flocker-deploy"
    pulumi = Pulumi(workdir, stack_name, project_dir=REPO)  # for the clean-up: the same backend
    backend = pulumi.env["PULUMI_BACKEND_URL"]
    # A user's shell, but for the state: make's exports (`?=`) keep the backend, the node file
    # and the passphrase given here. No MAKEFLAGS of a `make test` around this run: a user's
    # shell has none, and with them `make -s env` would print more than its exports.
    env = {name: value for name, value in os.environ.items() if name not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    env |= {
        "PULUMI_BACKEND_URL": backend,
        "PULUMI_CONFIG_PASSPHRASE": "",
        "FLOCKER_DEPLOY_STATE": str(deploy_state),
        "FLOCKER_DEPLOY_STACK": deploy_stack,
    }
    scratch = workdir / "shell"
    scratch.mkdir()
    shell = Shell(env, REPO, scratch)
    try:
        yield Walk(nodes, stack_name, deploy_stack, backend, workdir / "elk", shell)
    finally:
        pulumi.destroy()
        (REPO / f"Pulumi.{stack_name}.yaml").unlink(missing_ok=True)
        subprocess.run(
            [str(BIN / "flocker-deploy"), "--destroy", "--state-dir", str(deploy_state), "--stack", deploy_stack],
            env={**env, "PATH": f"{BIN}:{env['PATH']}"},
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
        )
        left = {stack: ours(nodes, stack) for stack in (stack_name, deploy_stack)}
        rules = {stack: router_rules(nodes, stack) for stack in (stack_name, deploy_stack)}
        for stack in (stack_name, deploy_stack):
            remove_leftovers(nodes, stack)
        assert all(not items for found in left.values() for items in found.values()), left
        assert all(not found for by_node in rules.values() for found in by_node.values()), rules


def test_the_readme_walkthrough_works_as_typed(walk: Walk) -> None:
    planned = [(command, *known_for(command)) for command in readme_commands(README.read_text())]
    for command, known, match in planned:
        if not known.runs:
            print(f"README: {command.text!r}: not run: {known.why}")
            if known.shows is not None:
                known.shows(walk, command, match, subprocess.CompletedProcess([], 0, "", ""))
            continue
        runs = known.runs.format(typed=command.text, stack=walk.stack, files=walk.files, **match.groupdict())
        print(f"README: {command.text!r}" + (f" runs as {runs!r}: {known.why}" if runs != command.text else ""))
        if known.before is not None:
            known.before(walk, match)
        deadline = time.monotonic() + INDEXED_WITHIN
        while True:
            result = walk.shell.run(runs)
            try:
                assert result.returncode == 0, f"{runs!r} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
                if known.shows is not None:
                    known.shows(walk, command, match, result)
                break
            except AssertionError:
                if not known.again or time.monotonic() > deadline:
                    raise
                time.sleep(1)
