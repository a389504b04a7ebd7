"""Container specs: links are filled in for the node the container starts on; what the labels
record, and what the container's own environment keeps of secrets."""

import dataclasses
import json

import pytest

from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import SEALED_VARIABLE, ContainerSpec, container_spec, recorded_hash
from flocker_provider.planning.models import Application, HealthCheck, Link, Owner, Port

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
    labels, ours = spec.recorded()
    assert not any("hunter2" in value for value in labels.values())
    assert ours == {}  # nothing sealed: the labels are those of before
    # A container's Config.Env: the image's own variables, ours, the links'.
    env = ["PATH=/usr/bin", "PASSWORD=hunter2=x", "LEVEL=info", *(f"{k}={v}" for k, v in spec.on_node("10.0.0.1")[0].items())]
    found = ContainerSpec.from_json(labels["io.flocker-pulumi.spec"], env)
    assert found == spec
    assert found.config_hash() == labels["io.flocker-pulumi.config-hash"] == recorded_hash(labels, env)


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


SECRET_TAG, SECRET_WORD, SECRET_CHECK = "tag-5f1c9e", "word-8a2d41", "check-c03b7f"
SECRET_APP = dataclasses.replace(
    APP,
    image=f"logstash:{SECRET_TAG}",
    environment=(("PASSWORD", "hunter2"), ("LEVEL", "info")),
    command=("logstash", "--token", SECRET_WORD),
    health_check=HealthCheck(command=("CMD-SHELL", f"test -n {SECRET_CHECK}"), interval=0.5),
)
SECRET_INPUTS = ("image", "environment", "command", "health_check")


def started(spec: ContainerSpec) -> tuple[dict[str, str], list[str]]:
    """The labels and ``Config.Env`` of a container Docker started from ``spec``."""
    labels, ours = spec.recorded()
    environment, _ = spec.on_node("10.0.0.1")
    return labels, ["PATH=/usr/bin", *(f"{k}={v}" for k, v in {**environment, **ours}.items())]


def test_secret_inputs_are_in_no_label_and_read_back_from_the_environment() -> None:
    spec = container_spec(SECRET_APP, OWNER, "v", SECRET_INPUTS)
    assert spec.sealed == ("command", "environment", "health_check", "image")
    labels, env = started(spec)
    for secret in (SECRET_TAG, SECRET_WORD, SECRET_CHECK, "hunter2"):
        assert not any(secret in value for value in labels.values()), secret
    recorded = json.loads(labels[L.SPEC])
    assert "image" not in recorded and "command" not in recorded and "health_check" not in recorded
    assert sorted(recorded["environment"]) == ["LEVEL", "PASSWORD"] and recorded["links"]  # what is no secret stays
    assert [entry for entry in env if entry.startswith(f"{SEALED_VARIABLE}=")]
    # A move starts the destination from the spec read back, and its hash is the one discovered.
    assert ContainerSpec.from_json(labels[L.SPEC], env) == spec
    assert recorded_hash(labels, env) == spec.config_hash()


def test_the_label_of_secret_settings_holds_a_keyed_hash_only() -> None:
    # A plain hash of every other field (in the label) and a guessable secret would confirm a guess.
    spec = container_spec(SECRET_APP, OWNER, "v", ("image",))
    (first, _), (second, _) = started(spec), started(spec)
    assert first[L.CONFIG_HASH] != spec.config_hash()
    assert first[L.CONFIG_HASH] != second[L.CONFIG_HASH]  # a key of its own per container


def test_a_label_that_does_not_confirm_the_spec_read_back_reads_as_out_of_date() -> None:
    labels, env = started(container_spec(SECRET_APP, OWNER, "v", ("image",)))
    _, other = started(container_spec(dataclasses.replace(SECRET_APP, image="logstash:other"), OWNER, "v", ("image",)))
    assert recorded_hash(labels, other) == ""  # replaced, never taken for the spec it is not


@pytest.mark.parametrize(
    "changed",
    [
        {"image": "logstash:tag-other"},
        {"command": ("logstash", "--token", "word-other")},
        {"health_check": HealthCheck(command=("CMD-SHELL", "test -n check-other"), interval=0.5)},
        {"environment": (("PASSWORD", "hunter3"), ("LEVEL", "info"))},
    ],
)
def test_a_secret_settings_change_changes_the_config_hash(changed: dict) -> None:
    before = container_spec(SECRET_APP, OWNER, "v", SECRET_INPUTS)
    after = container_spec(dataclasses.replace(SECRET_APP, **changed), OWNER, "v", SECRET_INPUTS)
    assert after.config_hash() != before.config_hash()
    assert recorded_hash(*started(before)) != after.config_hash()


def test_an_input_made_a_secret_restarts_the_container_labelled_without_it() -> None:
    # Its labels cannot change in place: the container of before shows the value until replaced.
    plain, secret = (container_spec(SECRET_APP, OWNER, "v", inputs) for inputs in ((), ("image",)))
    assert plain.config_hash() != secret.config_hash()
    assert recorded_hash(*started(plain)) != secret.config_hash()


def test_a_container_labelled_before_secrets_were_sealed_keeps_its_hash() -> None:
    """Started by the provider of before (no ``sealed`` in its label): found as it was, so an
    application without secrets is not restarted by the upgrade. One with a secret input is,
    once (its label names the secret, or a plain hash of it)."""
    spec = container_spec(APP, OWNER, "v")
    body = dataclasses.asdict(spec)
    del body["sealed"], body["flush_command"]
    body["environment"] = [name for name, _ in spec.environment]
    before = {**dict(spec.labels), L.SPEC: json.dumps(body, sort_keys=True), L.CONFIG_HASH: spec.config_hash()}
    assert before == spec.recorded()[0]
    env = ["LEVEL=info"]
    assert ContainerSpec.from_json(before[L.SPEC], env) == spec
    assert recorded_hash(before, env) == spec.config_hash()
    assert recorded_hash(before, env) != container_spec(APP, OWNER, "v", ("environment",)).config_hash()


def test_a_secret_image_is_not_named_by_the_lines_of_a_move() -> None:
    # A move's lines and report are its volume's, which does not know the application's secrets.
    spec = container_spec(SECRET_APP, OWNER, "v", ("image",))
    assert spec.shown_image == "[secret]" and container_spec(SECRET_APP, OWNER, "v").shown_image == SECRET_APP.image


def test_a_flush_command_is_recorded_read_back_and_part_of_the_hash() -> None:
    flushed = container_spec(dataclasses.replace(APP, flush_command=("psql", "-c", "CHECKPOINT")), OWNER, "v")
    labels, _ = flushed.recorded()
    assert ContainerSpec.from_json(labels[L.SPEC], ["LEVEL=info"]) == flushed
    assert flushed.config_hash() != container_spec(APP, OWNER, "v").config_hash()
    # Secret, it is kept out of the label, as every sealed field.
    sealed = container_spec(dataclasses.replace(APP, flush_command=("psql", "-c", "CHECKPOINT")), OWNER, "v", ("flush_command",))
    labels, ours = sealed.recorded()
    assert "CHECKPOINT" not in labels[L.SPEC]
    assert ContainerSpec.from_json(labels[L.SPEC], ["LEVEL=info", *(f"{k}={v}" for k, v in ours.items())]) == sealed
