"""Programs that run on the nodes, in containers of ours, not in the provider: the router
(``router`` and the modules it imports) and the move's helpers (``delta_copy``, ``stream_receive``).

They use only the standard library (and python3-xxhash where the image has it) of the
transfer image's python3. Each container gets its program's modules and this file put into
its own layer (``archive``) before it starts, as this package, so the modules import one
another relatively (``from .routes import ...``) here and there alike; ``command`` runs one
as ``python3 -m``.
"""

from __future__ import annotations

import functools
import io
import tarfile
from pathlib import Path

# Where the containers find the package: outside any volume's mountpoint, in their own layer,
# which a restart (the router's policy is "always") keeps.
DIRECTORY = "/.flocker-node"
_HERE = Path(__file__).parent
PACKAGE = _HERE.name

# What each program imports of this package, itself last. A router's hash is of its own
# modules only: a change to a move helper's must not replace every router.
ROUTER = ("router_log", "routes", "kernel_forwarding", "splicing", "router")
MOVE_HELPERS = ("btrfs_extents", "delta_copy", "stream_receive")


@functools.cache
def archive(modules: tuple[str, ...]) -> bytes:
    """``modules`` and this package's ``__init__`` as a tar archive to put at the container's root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("__init__", *modules):
            data = (_HERE / f"{name}.py").read_bytes()
            info = tarfile.TarInfo(f"{DIRECTORY.lstrip('/')}/{PACKAGE}/{name}.py")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def command(program: str, *args: str) -> list[str]:
    # PYTHONPATH for this process only (env execs python3): the container's own execs, such as
    # the route writer's, are not ours to change.
    return ["env", f"PYTHONPATH={DIRECTORY}", "python3", "-m", f"{PACKAGE}.{program}", *args]
