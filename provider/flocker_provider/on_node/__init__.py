"""Programs that run on the nodes, inside the helper containers of a move, not in the provider.

They use only the standard library (and python3-xxhash where the image has it) of the
transfer image's python3, and are put into each helper as files (``archive``) before it
starts, so they can be modules of their own, tested here like any other.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

# Where the helpers find them: outside the volume's mountpoint, in the container's own layer.
DIRECTORY = "/.flocker-node"
_HERE = Path(__file__).parent


def archive() -> bytes:
    """Every program of this package as a tar archive to put at the container's root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(_HERE.glob("*.py")):
            if path.name == "__init__.py":
                continue
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{DIRECTORY.lstrip('/')}/{path.name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def command(program: str, *args: str) -> list[str]:
    return ["python3", f"{DIRECTORY}/{program}.py", *args]
