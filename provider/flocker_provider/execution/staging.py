"""Staged containers: a moving application's container, started on the destination during
phase 1 with its process held at a gate until the data is there.

Starting a container costs 0.2-0.3 s here (network namespace, veth, port mapping, runc),
all of it downtime when it happens after phase 2. A staged container has paid it before
the application stopped; letting it through the gate costs a few API calls.

The gate is a shell loop in front of the image's own command. It holds while
``/.flocker/gate`` (in the container's own writable layer) is not empty; SIGUSR2 empties it
and lets the process through. The file, not the signal, is what holds: a staged container
restarted by the engine (a reboot in the middle of a move) stays held until the next move
of its volume, or the volume's deletion, removes it, and a container let through and
restarted later passes straight on. The provider signals only containers it staged itself
in the same run, once the gate has said it holds (a signal that came before its trap would
be lost: the shell is the container's process 1), and waits until the gate says it let the
process through. Images without ``/bin/sh`` are not staged; they start after phase 2.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence

GATE_DIRECTORY = ".flocker"
GATE_FILE = f"/{GATE_DIRECTORY}/gate"
SHELL = "/bin/sh"
HELD_LINE = "flocker-gate: held until the volume has moved here"
LET_THROUGH_LINE = "flocker-gate: let through"
# POSIX sh (dash, busybox ash, bash): the application's argv follows as "$@". While held,
# SIGTERM ends the container at once; the sleep is reaped before the exec so the
# application does not inherit it as a child. Both lines go to the container's log, where
# the provider looks for them: held before it may signal, let through after it did.
GATE_SCRIPT = (
    f"trap 'exit 143' TERM INT; trap ': > {GATE_FILE}' USR2; held=; "
    f"[ -s {GATE_FILE} ] && {{ held=1; echo '{HELD_LINE}' >&2; }}; "
    f"while [ -s {GATE_FILE} ]; do sleep 1 & wait $!; kill $! 2>/dev/null; wait $! 2>/dev/null; done; "
    f"[ -n \"$held\" ] && echo '{LET_THROUGH_LINE}' >&2; "
    'exec "$@"'
)
GATE_ENTRYPOINT = [SHELL, "-c", GATE_SCRIPT, "flocker-gate"]
RELEASE_SIGNAL = "USR2"
# A dot: no application's container name has one.
STAGED_SUFFIX = ".staged"


def staged_name(container: str) -> str:
    """The name a container is staged under until it is let through."""
    return f"{container}{STAGED_SUFFIX}"


def is_staged(name: str) -> bool:
    return name.endswith(STAGED_SUFFIX)


def application_argv(entrypoint: Sequence[str] | str | None, cmd: Sequence[str] | str | None, command: Sequence[str] | None) -> list[str]:
    """What Docker would run: the image's entrypoint, then the application's command or else the image's."""

    def listed(value: Sequence[str] | str | None) -> list[str]:
        return [value] if isinstance(value, str) else list(value or [])

    return listed(entrypoint) + (list(command) if command else listed(cmd))


def gate_archive() -> bytes:
    """A tar of a held ``/.flocker/gate``, for Docker's put-archive at ``/``. Writable by
    everyone: the gate empties it as whatever user the image runs as."""
    body = b"held\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo(GATE_DIRECTORY)
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        file = tarfile.TarInfo(GATE_FILE.lstrip("/"))
        file.size, file.mode = len(body), 0o666
        tar.addfile(file, io.BytesIO(body))
    return buffer.getvalue()
