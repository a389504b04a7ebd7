"""Labels that mark what we created, so we never touch anything we did not create."""

from __future__ import annotations

from flocker_provider.planning.models import Owner

PREFIX = "io.flocker-pulumi"
MANAGED = f"{PREFIX}.managed"
PROJECT = f"{PREFIX}.project"
STACK = f"{PREFIX}.stack"
RESOURCE = f"{PREFIX}.resource"
KIND = f"{PREFIX}.kind"
CONFIG_HASH = f"{PREFIX}.config-hash"
SPEC = f"{PREFIX}.spec"
VOLUME = f"{PREFIX}.volume"
RETIRED = f"{PREFIX}.retired"
PARTIAL = f"{PREFIX}.partial"
RETIRES_ON = f"{PREFIX}.retires-on"  # a router's: the signal that has it hand its ports over

KIND_APPLICATION = "application"
KIND_VOLUME = "volume"
KIND_TRANSFER = "transfer"
KIND_ROUTER = "router"


def owner_labels(owner: Owner, kind: str) -> dict[str, str]:
    return {
        MANAGED: "true",
        PROJECT: owner.project,
        STACK: owner.stack,
        RESOURCE: owner.resource,
        KIND: kind,
    }


def is_ours(labels: dict[str, str] | None) -> bool:
    return bool(labels) and labels.get(MANAGED) == "true"


def same_owner(labels: dict[str, str] | None, owner: Owner) -> bool:
    labels = labels or {}
    return (
        is_ours(labels)
        and labels.get(PROJECT) == owner.project
        and labels.get(STACK) == owner.stack
        and labels.get(RESOURCE) == owner.resource
    )


def container_name(owner: Owner) -> str:
    """Docker container name of an application; the stack is in it so stacks can share nodes."""
    return f"flocker-{owner.stack}-{owner.resource}"


def retirement(volume: str) -> str:
    """The marker that says this node's copy of ``volume`` is retired: it counts under this name only."""
    return f"{volume}-retired"


def prepared_retirement(volume: str) -> str:
    """A move's retirement marker made ahead of its downtime, renamed to ``retirement`` at the
    handoff (a dot, as in staged names: no application's container name has one)."""
    return f"{volume}.retiring"


def volume_name(owner: Owner) -> str:
    return f"flocker-{owner.stack}-{owner.resource}"


def router_name(stack: str) -> str:
    """Name of a stack's router container and of its routes volume on every node."""
    # A dot: application containers are flocker-<stack>-<resource>, so this cannot clash with one.
    return f"flocker-{stack}.router"
