"""FlockerDeployment: the YAML files and hand-written code declare the same resources, as its
children; flocker-deploy's command line, which builds on it.

Programs run under Pulumi's mocks: no engine, no Docker. Each recorded resource is its
(type, name, inputs); the pickled provider (``__provider``) is left out, since it is the
same class either way and its bytes are not comparable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi
import pulumi.automation as auto
import pytest
from pulumi_mocks import Recorder, node_file, record

from flocker_provider.planning.models import Application, Link, Port
from flocker_pulumi import FilesError, FlockerApplication, FlockerDeployment
from flocker_pulumi import cluster as cluster_module
from flocker_pulumi.cli import flocker_deploy
from flocker_pulumi.component import TYPE, declaration_order
from flocker_pulumi.flocker_config import ConfigError, Configuration, ConfiguredApplication, load_configuration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "elk"
ARTICLE_ADDRESSES = ("172.16.255.250", "172.16.255.251", "172.16.255.252", "172.16.255.253")

Declared = tuple[str, str, str]  # (type, name, inputs as canonical JSON)


@pytest.fixture
def article_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A node file naming each of the article's addresses after itself, so nodes resolve the same every run."""
    yield from node_file(
        tmp_path,
        monkeypatch,
        [{"name": a, "address": a, "docker_host": f"tcp://{a}:2375", "insecure_plain_tcp": True} for a in ARTICLE_ADDRESSES],
    )


def children(recorder: Recorder) -> list[Declared]:
    """What a program declared, less the component itself."""
    return [(typ, name, json.dumps(inputs, sort_keys=True)) for typ, name, inputs in recorder.resources if typ != TYPE]


def record_program(program: Callable[[], Any]) -> Recorder:
    return record(program, "flocker-deploy")


def article(application: str = "application.yml", deployment: Path = EXAMPLES / "deployment.yml") -> Callable[[], FlockerDeployment]:
    return lambda: FlockerDeployment("elk", deployment_file=deployment, application_file=EXAMPLES / application)


def hand_written() -> None:
    FlockerApplication(
        "elasticsearch",
        image="flocker/opensearch:local",
        node="172.16.255.250",
        ports=[{"internal": 9200, "external": 9200}],
        volume={"mountpoint": "/var/lib/elasticsearch"},
    )
    FlockerApplication(
        "logstash",
        image="flocker/rsyslog:local",
        node="172.16.255.251",
        ports=[{"internal": 5000, "external": 5000}],
        links=[{"alias": "es", "local_port": 9200, "remote_port": 9200}],
    )
    FlockerApplication(
        "kibana",
        image="flocker/logpage:local",
        node="172.16.255.252",
        ports=[{"internal": 8080, "external": 80}],
        links=[{"alias": "es", "local_port": 9200, "remote_port": 9200}],
    )


def test_flocker_format_fig_format_configuration_and_code_declare_the_same_resources(article_nodes: Path) -> None:
    flocker = children(record_program(article()))
    fig = children(record_program(article("fig.yml")))
    loaded = load_configuration(EXAMPLES / "deployment.yml", EXAMPLES / "application.yml")
    given = children(record_program(lambda: FlockerDeployment("elk", configuration=loaded)))
    code = children(record_program(hand_written))

    assert set(flocker) == set(fig) == set(given) == set(code)
    assert len(flocker) == len(set(flocker)) == 4  # three applications and Elasticsearch's volume
    by_name = {(typ.rsplit(":", 1)[-1], name): json.loads(inputs) for typ, name, inputs in code}
    assert by_name["Application", "logstash"]["node_address"] == "172.16.255.251"
    assert by_name["Application", "logstash"]["links"] == [{"alias": "es", "local_port": 9200, "remote_port": 9200}]
    elasticsearch, volume = by_name["Application", "elasticsearch"], by_name["Volume", "elasticsearch"]
    assert (elasticsearch["image"], elasticsearch["ports"]) == ("flocker/opensearch:local", [{"internal": 9200, "external": 9200}])
    assert elasticsearch["volume"]["mountpoint"] == "/var/lib/elasticsearch"
    assert elasticsearch["volume"]["node"] == volume["node"] == "172.16.255.250"


def test_every_resource_has_its_own_urn(article_nodes: Path) -> None:
    # The volume takes its application's name: only the type tells them apart.
    urns = [(typ, name) for typ, name, _ in record_program(article()).resources]
    assert len(urns) == len(set(urns)), sorted(urns)


def test_children_are_the_components_and_keep_the_urns_they_had_at_the_stack_root(article_nodes: Path) -> None:
    monitor = record_program(article()).monitor
    (component,) = [urn for urn, request in monitor.requests.items() if request.type == TYPE]
    declared = {urn: request for urn, request in monitor.requests.items() if request.custom}
    assert sorted(request.name for request in declared.values()) == ["elasticsearch", "elasticsearch", "kibana", "logstash"]
    for urn, request in declared.items():
        assert request.parent == component, urn
        # An alias of no name and no type is of the resource's own: with no parent, it is the
        # URN that flocker-deploy gave it before it had a component (an update, not a replace).
        ((alias),) = request.aliases
        assert (alias.spec.noParent, alias.spec.name, alias.spec.type, alias.spec.parentUrn) == (True, "", "", ""), urn
    assert not monitor.requests[component].aliases


def test_the_component_registers_each_applications_node(article_nodes: Path, tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.yml"
    deployment.write_text('version: 1\nnodes:\n  "172.16.255.250": [elasticsearch]\n  "172.16.255.252": [kibana]\n')
    made: list[FlockerDeployment] = []
    recorder = record_program(lambda: made.append(article(deployment=deployment)()))
    (component,) = [urn for urn, request in recorder.monitor.requests.items() if request.type == TYPE]
    # The mocks give back inputs as outputs: the resolved node, and no addresses (the provider's).
    assert recorder.monitor.outputs[component] == {
        "applications": {"elasticsearch": {"node": "172.16.255.250"}, "kibana": {"node": "172.16.255.252"}}
    }
    # Applications on no node are not declared.
    assert sorted(made[0].application_resources) == ["elasticsearch", "kibana"]
    assert all(isinstance(app, FlockerApplication) for app in made[0].application_resources.values())
    assert "logstash" not in {name for _, name, _ in recorder.resources}


def test_flocker_deploys_program_is_the_component_and_exports_its_applications(
    article_nodes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", lambda name, value: exported.update({name: value}))
    seen: list[Any] = []
    program = flocker_deploy.make_program(load_configuration(EXAMPLES / "deployment.yml", EXAMPLES / "application.yml"))
    recorder = record_program(lambda: program() or pulumi.Output.from_input(exported[flocker_deploy.OUTPUT]).apply(seen.append))
    assert [name for typ, name, _ in recorder.resources if typ == TYPE] == [flocker_deploy.COMPONENT]
    assert set(children(recorder)) == set(children(record_program(hand_written)))
    # The shape where_table reads: application -> {"node", "addresses"} (the provider's, None under mocks).
    assert seen == [
        {
            "elasticsearch": {"node": "172.16.255.250", "addresses": None},
            "kibana": {"node": "172.16.255.252", "addresses": None},
            "logstash": {"node": "172.16.255.251", "addresses": None},
        }
    ]


def test_a_mistake_in_the_files_is_a_config_error_naming_the_file_before_anything_is_registered(
    article_nodes: Path, tmp_path: Path
) -> None:
    deployment = tmp_path / "deployment.yml"
    deployment.write_text('version: 1\nnodes:\n  "172.16.255.250": [elasticsearch]\n  "172.16.255.251": [logstahs]\n')
    recorder = Recorder()
    pulumi.runtime.set_mocks(recorder, project="flocker-deploy", stack="test", preview=False, monitor=recorder.monitor)
    with pytest.raises(ConfigError) as caught:
        pulumi.runtime.test(article(deployment=deployment))()
    assert caught.value.message == (
        f"{deployment}: application 'logstahs', key 'nodes.172.16.255.251[0]': not defined in {EXAMPLES / 'application.yml'}"
        " (listed on node '172.16.255.251')."
    )
    # A RunError too: Pulumi shows its message alone, without a traceback.
    assert isinstance(caught.value, pulumi.RunError)
    assert recorder.resources == []


def test_a_link_to_an_application_on_no_node_is_a_config_error_of_the_application_file(article_nodes: Path, tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.yml"
    deployment.write_text('version: 1\nnodes:\n  "172.16.255.251": [logstash]\n')
    recorder = Recorder()
    pulumi.runtime.set_mocks(recorder, project="flocker-deploy", stack="test", preview=False, monitor=recorder.monitor)
    with pytest.raises(FilesError) as caught:
        pulumi.runtime.test(article(deployment=deployment))()
    assert (caught.value.file, caught.value.reason) == (
        str(EXAMPLES / "application.yml"),
        "application 'logstash': link 'es' to port 9200: application 'elasticsearch' publishing it runs on no node",
    )
    assert recorder.resources == []


@pytest.mark.parametrize(
    "arguments",
    [{}, {"deployment_file": "d.yml"}, {"configuration": Configuration((), ()), "deployment_file": "d.yml", "application_file": "a.yml"}],
)
def test_the_component_takes_both_files_or_a_configuration(arguments: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="give deployment_file and application_file, or configuration"):
        FlockerDeployment("elk", **arguments)


def _app(name: str, external: int, *link_ports: int, node: str | None = "n1") -> ConfiguredApplication:
    links = tuple(Link(alias=f"to{p}", local_port=p, remote_port=p) for p in link_ports)
    return ConfiguredApplication(Application(name, "img:latest", ports=(Port(1, external),), links=links), node, None)


def _configuration(*apps: ConfiguredApplication) -> Configuration:
    return Configuration(applications=tuple(sorted(apps, key=lambda a: a.application.name)), nodes=("n1",))


def test_link_targets_are_declared_first_otherwise_alphabetical() -> None:
    configuration = _configuration(_app("a-client", 81, 83), _app("b-other", 82), _app("z-server", 83, 84), _app("y-db", 84))
    assert [item.application.name for item in declaration_order(configuration)] == ["b-other", "y-db", "z-server", "a-client"]


@pytest.mark.parametrize(
    ("apps", "message"),
    [
        ((_app("a", 81, 82), _app("b", 82, 81)), "applications 'a', 'b' link to each other in a cycle; one must be declared first"),
        (
            (_app("a", 81, 82), _app("b", 82, node=None)),
            "application 'a': link 'to82' to port 82: application 'b' publishing it runs on no node",
        ),
    ],
)
def test_undeclarable_links_are_refused(apps: tuple[ConfiguredApplication, ...], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        declaration_order(_configuration(*apps))
    assert str(caught.value) == message


# --- the command line -------------------------------------------------------------

CLI_ENV = ("FLOCKER_DEPLOY_STACK", "FLOCKER_DEPLOY_STATE", "FLOCKER_NODES_FILE", "FLOCKER_DOCKER_HOST_TEMPLATE", "FLOCKER_TLS_DIR")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in CLI_ENV:
        monkeypatch.delenv(name, raising=False)
    # main() points the engine at this interpreter; let monkeypatch restore what it changes.
    for name in ("PATH", "PULUMI_PYTHON_CMD", "PULUMI_SKIP_UPDATE_CHECK"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    return monkeypatch


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the Pulumi engine must not be reached")

    monkeypatch.setattr(auto, "create_or_select_stack", refuse)


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    args = flocker_deploy.parse_args(["deployment.yml", "application.yml"])
    assert (args.stack, args.state_dir) == ("flocker", os.path.expanduser("~/.flocker-deploy/state"))
    assert (args.preview, args.destroy, args.nodes_file, args.tls_dir, args.transfer_image) == (False, False, None, None, None)
    assert flocker_deploy.stack_config(args) == {
        "flocker:nodesFile": None,
        "flocker:dockerHostTemplate": "ssh://root@{address}",
        "flocker:tlsDir": None,
        "flocker:transferImage": None,
    }


def test_environment_gives_defaults_and_options_win(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.chdir(tmp_path)
    clean_env.setenv("FLOCKER_DEPLOY_STACK", "from-env")
    clean_env.setenv("FLOCKER_DEPLOY_STATE", "/env/state")
    clean_env.setenv("FLOCKER_NODES_FILE", "/env/nodes.json")
    clean_env.setenv("FLOCKER_DOCKER_HOST_TEMPLATE", "tcp://{address}:2375")
    clean_env.setenv("FLOCKER_TLS_DIR", "/env/tls")
    args = flocker_deploy.parse_args(["d.yml", "a.yml"])
    assert (args.stack, args.state_dir, args.nodes_file, args.docker_host_template, args.tls_dir) == (
        "from-env",
        "/env/state",
        "/env/nodes.json",
        "tcp://{address}:2375",
        "/env/tls",
    )
    args = flocker_deploy.parse_args(
        "--stack s --state-dir state --nodes-file nodes.json --tls-dir tls --transfer-image x:1 d.yml a.yml".split()
    )
    # Relative paths are made absolute: the provider runs in another directory.
    assert (args.stack, args.state_dir, args.nodes_file, args.tls_dir) == (
        "s",
        f"{tmp_path}/state",
        f"{tmp_path}/nodes.json",
        f"{tmp_path}/tls",
    )
    assert flocker_deploy.stack_config(args)["flocker:transferImage"] == "x:1"
    flocker_deploy.prepare_environment(args)
    assert os.environ["FLOCKER_NODES_FILE"] == f"{tmp_path}/nodes.json"
    assert os.environ["PULUMI_PYTHON_CMD"] == flocker_deploy.sys.executable
    assert os.environ["PATH"].split(os.pathsep)[0] == os.path.dirname(flocker_deploy.sys.executable)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["deployment.yml"],
        ["--preview", "--destroy"],
        ["--preview", "--destroy", "d.yml", "a.yml"],
        ["--unknown", "d.yml", "a.yml"],
        ["d.yml", "a.yml", "extra"],
    ],
)
def test_bad_command_lines_exit_2(clean_env: pytest.MonkeyPatch, no_engine: None, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        flocker_deploy.main(argv)
    assert caught.value.code == 2


def test_destroy_needs_no_files(clean_env: pytest.MonkeyPatch) -> None:
    args = flocker_deploy.parse_args(["--destroy", "--stack", "s"])
    assert args.destroy and args.deployment is None


def test_bad_configuration_exits_2_with_the_message_and_never_reaches_the_engine(
    clean_env: pytest.MonkeyPatch, no_engine: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment = tmp_path / "deployment.yml"
    deployment.write_text('nodes:\n  "172.16.255.250": [elasticsearch]\n')
    state = tmp_path / "state"
    with pytest.raises(ConfigError) as expected:
        load_configuration(deployment, EXAMPLES / "application.yml")

    code = flocker_deploy.main(["--state-dir", str(state), str(deployment), str(EXAMPLES / "application.yml")])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == f"{deployment}: key 'version': missing; expected 'version: 1'.\n" == f"{expected.value.message}\n"
    assert "Traceback" not in captured.err and captured.out == ""
    assert not state.exists()


def test_unreachable_link_target_exits_2_before_the_engine(
    clean_env: pytest.MonkeyPatch, no_engine: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment = tmp_path / "deployment.yml"
    deployment.write_text('version: 1\nnodes:\n  "172.16.255.251": [logstash]\n')
    application = EXAMPLES / "application.yml"
    assert flocker_deploy.main(["--state-dir", str(tmp_path / "state"), str(deployment), str(application)]) == 2
    assert capsys.readouterr().err == (
        f"{application}: application 'logstash': link 'es' to port 9200: application 'elasticsearch' publishing it runs on no node.\n"
    )


def test_good_configuration_reaches_the_engine_with_it(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple[Any, Any]] = []
    clean_env.setattr(flocker_deploy, "run", lambda args, configuration: seen.append((args, configuration)) or 0)
    deployment, application = EXAMPLES / "deployment.yml", EXAMPLES / "fig.yml"
    assert flocker_deploy.main(["--preview", "--stack", "s1", str(deployment), str(application)]) == 0
    ((args, configuration),) = seen
    assert args.preview and args.stack == "s1"
    assert configuration == load_configuration(deployment, application)


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        ("error: update failed", "error: update failed"),
        ("", "the Pulumi engine failed (exit code 255); its diagnostics are above"),
    ],
)
def test_engine_failures_exit_1_without_traceback(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stderr: str, message: str
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise auto.errors.CommandError(auto._cmd.CommandResult(stdout="streamed already", stderr=stderr, code=255))

    clean_env.setattr(flocker_deploy, "run", fail)
    code = flocker_deploy.main([str(EXAMPLES / "deployment.yml"), str(EXAMPLES / "application.yml")])
    assert code == 1
    assert capsys.readouterr().err == f"flocker-deploy: CommandError: {message}\n"


def test_where_table_lists_every_application() -> None:
    configuration = load_configuration(EXAMPLES / "deployment.yml", EXAMPLES / "application.yml")
    outputs = {
        "elasticsearch": {"node": "node1", "addresses": ["172.16.255.250:9200"]},
        "kibana": {"node": "node3", "addresses": ["172.16.255.252:80"]},
    }
    assert flocker_deploy.where_table(outputs, configuration).splitlines() == [
        "what runs where:",
        "APPLICATION    NODE   ADDRESSES",
        "elasticsearch  node1  172.16.255.250:9200",
        "kibana         node3  172.16.255.252:80",
        "logstash       -      not running",
    ]


def test_an_address_and_its_node_name_are_one_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, article_nodes: Path) -> None:
    # deployment.yml names nodes by address while the node file names them node1...: the
    # implicit volume must land on the same (resolved) node as its application.
    nodes = [
        {"name": f"node{i}", "address": a, "docker_host": f"tcp://{a}:2375", "insecure_plain_tcp": True}
        for i, a in enumerate(ARTICLE_ADDRESSES, 1)
    ]
    article_nodes.write_text(json.dumps({"nodes": nodes}))
    cluster_module._stack_inventory.cache_clear()
    declared = children(record_program(article()))
    elasticsearch = next(json.loads(i) for t, n, i in declared if n == "elasticsearch" and t.endswith("Application"))
    assert elasticsearch["node"] == elasticsearch["volume"]["node"] == "node1"
