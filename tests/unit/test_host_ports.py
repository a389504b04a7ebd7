"""The host port an application publishes on: stable across starts and nodes, outside the kernel's ephemeral range."""

from flocker_provider.planning.host_port_choice import host_port


def test_a_container_gets_the_same_host_port_every_time() -> None:
    assert host_port("flocker-dev-es", 9200, 0) == host_port("flocker-dev-es", 9200, 0)


def test_host_ports_stay_below_the_ephemeral_range() -> None:
    ports = {host_port(f"flocker-dev-app{i}", 80, attempt) for i in range(500) for attempt in range(8)}
    assert min(ports) >= 20000 and max(ports) <= 32767
    assert len(ports) > 3000  # spread, so that two containers rarely want the same port


def test_each_attempt_offers_another_port() -> None:
    assert len({host_port("flocker-dev-es", 9200, attempt) for attempt in range(8)}) == 8
