"""The ELK example's program (examples/elk/__main__.py): what each image set deploys.

The official images cannot be pulled here, so their settings are checked as the program's
specs: what makes Elastic's three images one working stack. The program itself runs under
Pulumi's mocks (no engine, no Docker), and what it declares must pass the provider's own
input checks.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from pulumi.runtime.config import set_all_config
from pulumi_mocks import node_file, record

from flocker_provider.inputs import ApplicationInputs, VolumeInputs, parse_application, parse_volume

REPO = Path(__file__).resolve().parents[2]
PROGRAM = REPO / "examples" / "elk" / "__main__.py"
PROJECT = "flocker-elk"  # Pulumi.yaml's name: the program's config namespace


def load_program() -> ModuleType:
    # Under another name than __main__: the module's specs without running the program.
    spec = importlib.util.spec_from_file_location("elk_program", PROGRAM)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


elk = load_program()


@pytest.fixture
def nodes_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The local cluster's node names, at addresses of their own: nodes resolve the same every run."""
    nodes = [
        {"name": f"node{i}", "address": f"192.0.2.{i}", "docker_host": f"tcp://192.0.2.{i}:2375", "insecure_plain_tcp": True}
        for i in range(1, 5)
    ]
    yield from node_file(tmp_path, monkeypatch, nodes)
    set_all_config({})


def run_program(config: dict[str, str]) -> tuple[dict[str, ApplicationInputs], dict[str, VolumeInputs]]:
    """The program under mocks with this stack config: each application and volume as the provider reads it."""
    set_all_config({f"{PROJECT}:{key}": value for key, value in config.items()})
    declared = record(elk.main, PROJECT).resources
    # The parsers raise InvalidInputs, naming each bad property, as `pulumi preview` would.
    apps = {name: parse_application(inputs) for typ, name, inputs in declared if typ.endswith(":Application")}
    volumes = {name: parse_volume(inputs) for typ, name, inputs in declared if typ.endswith(":Volume")}
    return apps, volumes


def test_local_images_are_the_ones_make_images_builds() -> None:
    specs = elk.specs("local")
    assert list(specs) == ["elasticsearch", "logstash", "kibana"]  # the link target first
    assert {name: spec["image"] for name, spec in specs.items()} == {
        "elasticsearch": "flocker/opensearch:local",
        "logstash": "flocker/rsyslog:local",
        "kibana": "flocker/logpage:local",
    }
    built = re.findall(r"^IMAGES=\((.*)\)$", (REPO / "scripts" / "build-images.sh").read_text(), re.MULTILINE)[0].split()
    assert {spec["image"].split("/")[1].split(":")[0] for spec in specs.values()} <= set(built)
    assert {name: spec["node"] for name, spec in specs.items()} == {"elasticsearch": "node1", "logstash": "node2", "kibana": "node3"}


def test_local_store_keeps_its_data_on_the_volume() -> None:
    store = elk.specs("local")["elasticsearch"]
    # The mountpoint must be where the image keeps its data, or a move carries an empty volume.
    path_data = re.findall(r"^path\.data:\s*(\S+)$", (REPO / "images" / "opensearch" / "opensearch.yml").read_text(), re.MULTILINE)
    assert store["volume"] == {"mountpoint": path_data[0]} == {"mountpoint": "/var/lib/elasticsearch"}
    # A JVM start is part of a move's downtime: connections are held longer than the default 30 s.
    assert store["hold_seconds"] >= 60 and store["wait_timeout"] >= 120
    assert "health_check" not in store  # the image has its own (HEALTHCHECK: shards assigned)


def test_local_shipper_and_page_reach_the_store_by_the_link() -> None:
    specs = elk.specs("local")
    for name in ("logstash", "kibana"):
        assert specs[name]["links"] == [{"alias": "es", "local_port": 9200, "remote_port": 9200}], name
    assert specs["logstash"]["ports"] == [{"internal": 5000, "external": 5000}]
    assert specs["kibana"]["ports"] == [{"internal": 8080, "external": 80}]
    # rsyslog writes to the link's host name and port, into the index the walkthrough counts.
    conf = (REPO / "images" / "rsyslog" / "rsyslog.conf").read_text()
    for setting in ('server="es"', 'serverport="9200"', 'searchIndex="logstash"', 'port="5000"', 'action.resumeRetryCount="-1"'):
        assert setting in conf, setting


def test_official_elasticsearch_is_a_single_node_with_its_data_on_the_volume() -> None:
    store = elk.specs("official")["elasticsearch"]
    assert store["image"].startswith("docker.elastic.co/elasticsearch/elasticsearch:8.")
    env = store["environment"]
    assert env["discovery.type"] == "single-node"  # else it waits for a cluster and enforces bootstrap checks
    assert env["xpack.security.enabled"] == "false"  # else HTTPS with a generated password: `es:9200` would not answer
    # The image's data path: anywhere else, the data stays in the old container on a move.
    assert store["volume"] == {"mountpoint": "/usr/share/elasticsearch/data"}
    assert store["ports"] == [{"internal": 9200, "external": 9200}]
    check = store["health_check"]
    assert "_cluster/health?wait_for_status=yellow" in check["command"] and check["command"].startswith("curl -fsS ")
    assert check["interval"] <= 1 and check["start_period"] >= 120
    assert store["hold_seconds"] >= 60 and store["wait_timeout"] >= 120


def test_official_logstash_runs_a_pipeline_from_5000_to_the_linked_store() -> None:
    logstash = elk.specs("official")["logstash"]
    assert logstash["image"].startswith("docker.elastic.co/logstash/logstash:8.")
    assert logstash["links"] == [{"alias": "es", "local_port": 9200, "remote_port": 9200}]
    assert logstash["ports"] == [{"internal": 5000, "external": 5000}]
    command = logstash["command"]
    assert command[:2] == ["logstash", "-e"] and len(command) == 3
    pipeline = command[2]
    assert re.search(r"input \{ tcp \{ port => 5000 codec => line \} \}", pipeline), pipeline
    assert 'hosts => ["http://es:9200"]' in pipeline and 'index => "logstash"' in pipeline, pipeline
    assert 'data_stream => "false"' in pipeline, pipeline
    assert pipeline.count("{") == pipeline.count("}"), pipeline
    assert logstash["environment"] == {"XPACK_MONITORING_ENABLED": "false"}


def test_official_kibana_reads_the_linked_store() -> None:
    kibana = elk.specs("official")["kibana"]
    assert kibana["image"].startswith("docker.elastic.co/kibana/kibana:8.")
    assert kibana["environment"] == {"ELASTICSEARCH_HOSTS": "http://es:9200"}
    assert kibana["links"] == [{"alias": "es", "local_port": 9200, "remote_port": 9200}]
    assert kibana["ports"] == [{"internal": 5601, "external": 80}]


def test_the_three_official_images_are_one_release() -> None:
    versions = {spec["image"].rsplit(":", 1)[1] for spec in elk.specs("official").values()}
    assert versions == {elk.ELASTIC_VERSION}


def test_an_unknown_image_set_is_refused() -> None:
    with pytest.raises(ValueError, match="config images: expected one of local, official, got 'elastic'"):
        elk.specs("elastic")


def test_the_program_declares_the_official_stack_as_the_provider_reads_it(nodes_file: Path) -> None:
    apps, volumes = run_program({"images": "official"})
    assert sorted(apps) == ["elasticsearch", "kibana", "logstash"]
    assert sorted(volumes) == ["elasticsearch"]
    # The move is the volume's: it holds new connections as long as the application says.
    assert volumes["elasticsearch"].routing.hold_seconds == elk.STORE_HOLD_SECONDS
    assert volumes["elasticsearch"].node.name == "node1"
    store = apps["elasticsearch"].application
    assert store.image == f"docker.elastic.co/elasticsearch/elasticsearch:{elk.ELASTIC_VERSION}"
    assert store.volume is not None and store.volume.mountpoint == "/usr/share/elasticsearch/data"
    assert dict(store.environment)["discovery.type"] == "single-node"
    assert store.health_check is not None and store.health_check.interval == 1
    assert apps["elasticsearch"].routing.hold_seconds == elk.STORE_HOLD_SECONDS
    logstash = apps["logstash"].application
    assert logstash.command == ("logstash", "-e", elk.LOGSTASH_PIPELINE)
    assert [(link.alias, link.remote_port) for link in logstash.links] == [("es", 9200)]
    assert dict(apps["kibana"].application.environment) == {"ELASTICSEARCH_HOSTS": "http://es:9200"}
    assert {name: app.node.name for name, app in apps.items()} == {"elasticsearch": "node1", "logstash": "node2", "kibana": "node3"}


def test_the_program_declares_the_local_stack_by_default_and_follows_node_and_image_config(nodes_file: Path) -> None:
    apps, volumes = run_program({"elasticsearchNode": "node4", "logstashImage": "flocker/rsyslog@sha256:" + "0" * 64})
    assert volumes["elasticsearch"].node.name == "node4"
    assert volumes["elasticsearch"].routing.hold_seconds == elk.STORE_HOLD_SECONDS
    assert apps["elasticsearch"].application.image == "flocker/opensearch:local"
    assert apps["elasticsearch"].node.name == "node4"
    assert apps["elasticsearch"].application.volume.mountpoint == "/var/lib/elasticsearch"
    assert apps["logstash"].application.image == "flocker/rsyslog@sha256:" + "0" * 64
    # An image replaced keeps its set's settings.
    assert [(link.alias, link.remote_port) for link in apps["logstash"].application.links] == [("es", 9200)]
    assert apps["kibana"].application.image == "flocker/logpage:local"


def test_the_program_names_a_bad_image_set(nodes_file: Path) -> None:
    with pytest.raises(Exception, match="config images: expected one of local, official, got 'latest'"):
        run_program({"images": "latest"})
