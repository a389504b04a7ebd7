"""Container specs: links are filled in for the node the container starts on."""

from flocker_provider.containers import container_spec
from flocker_provider.models import Application, Link, Owner

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
    assert type(spec).from_json(spec.to_json()) == spec
