"""Container specs: links are filled in for the node the container starts on."""

import dataclasses
import json

from flocker_provider.containers import ContainerSpec, container_spec
from flocker_provider.models import Application, HealthCheck, Link, Owner, Port

OWNER = Owner("p", "dev", "shipper")
APP = Application(
    name="shipper",
    image="logstash:1",
    environment=(("LEVEL", "info"),),
    links=(Link(alias="es-store", local_port=9200, remote_port=9201),),
)


def test_links_name_the_containers_own_node_with_flockers_variables() -> None:
    environment, hosts = container_spec(APP, OWNER, None).on_node("10.0.0.2")
    assert environment == {
        "LEVEL": "info",
        "ES_STORE_PORT_9200_TCP": "tcp://10.0.0.2:9201",
        "ES_STORE_PORT_9200_TCP_ADDR": "10.0.0.2",
        "ES_STORE_PORT_9200_TCP_PORT": "9201",
        "ES_STORE_PORT_9200_TCP_PROTO": "tcp",
    }
    assert hosts == {"es-store": "10.0.0.2"}


def test_the_spec_does_not_depend_on_the_node() -> None:
    # A container moved with its volume starts from its recorded spec: same hash, no second restart.
    spec = container_spec(APP, OWNER, "v")
    assert "10.0.0" not in spec.to_json()
    assert spec.on_node("10.0.0.1") != spec.on_node("10.0.0.2")
    environment, _ = spec.on_node("10.0.0.1")
    assert type(spec).from_json(spec.to_json(), [f"{k}={v}" for k, v in environment.items()]) == spec


def test_the_label_names_the_environment_without_its_values() -> None:
    # Any value may be a secret; labels are shown by `docker ps`, the container's Env is not.
    spec = container_spec(dataclasses.replace(APP, environment=(("PASSWORD", "hunter2=x"), ("LEVEL", "info"))), OWNER, "v")
    labels = spec.docker_labels()
    assert not any("hunter2" in value for value in labels.values())
    # A container's Config.Env: the image's own variables, ours, the links'.
    env = ["PATH=/usr/bin", "PASSWORD=hunter2=x", "LEVEL=info", *(f"{k}={v}" for k, v in spec.on_node("10.0.0.1")[0].items())]
    found = ContainerSpec.from_json(labels["io.flocker-pulumi.spec"], env)
    assert found == spec
    assert found.config_hash() == labels["io.flocker-pulumi.config-hash"]


def test_a_label_of_before_with_the_values_is_read_as_it_was() -> None:
    spec = container_spec(APP, OWNER, "v")
    old_label = json.dumps(dataclasses.asdict(spec), sort_keys=True)
    assert ContainerSpec.from_json(old_label, ["LEVEL=changed by hand"]) == spec


SPEC = ContainerSpec(
    name="flocker-dev-es",
    image="es:1",
    ports=(Port(9200, 9200),),
    volume_name="v",
    mountpoint="/d",
    links=(Link("es", 9200, 9200),),
    labels=(("io.flocker-pulumi.resource", "es"),),
)


def test_a_container_without_a_health_check_keeps_the_hash_it_had_before_health_checks() -> None:
    # A different hash would restart every application after a provider upgrade.
    assert SPEC.config_hash() == "96e2bfb3eb858081"


def test_a_health_check_is_part_of_the_spec() -> None:
    checked = dataclasses.replace(SPEC, health_check=HealthCheck(command=("CMD-SHELL", "true"), interval=0.5))
    assert checked.config_hash() != SPEC.config_hash()
    assert ContainerSpec.from_json(checked.to_json()) == checked
    assert ContainerSpec.from_json(SPEC.to_json()) == SPEC
    # The hash is of the values, as it always was: containers started before keep theirs.
    one, two = (dataclasses.replace(SPEC, environment=(("A", value),)) for value in "12")
    assert one.config_hash() != two.config_hash()
