"""How a volume travels node to node: rsync between two short-lived helper containers.

The destination runs an rsync daemon that knows one user with a password made for this
move only and accepts connections from the source node's address only; the source runs
the rsync client. Data never passes through the machine that runs `pulumi`.
Everything here is pure: command lines in, statistics out.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

DAEMON_PORT = 8730
MODULE = "volume"
USER = "flocker"
MOUNT = "/data"


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str


def new_credentials() -> Credentials:
    return Credentials(user=USER, password=secrets.token_urlsafe(24))


def daemon_command(allowed_address: str) -> list[str]:
    """Shell run in the destination helper; the password arrives in FLOCKER_SECRET."""
    config = "\n".join(
        [
            "use chroot = no",
            "uid = 0",
            "gid = 0",
            f"[{MODULE}]",
            f"path = {MOUNT}",
            "read only = no",
            f"auth users = {USER}",
            "secrets file = /tmp/flocker-rsyncd.secrets",
            "strict modes = yes",
            f"hosts allow = {allowed_address}",
            "hosts deny = *",
        ]
    )
    script = (
        "umask 077; "
        f'printf "{USER}:%s\\n" "$FLOCKER_SECRET" > /tmp/flocker-rsyncd.secrets; '
        f"printf '%s\\n' '{config}' > /tmp/flocker-rsyncd.conf; "
        f"exec rsync --daemon --no-detach --log-file=/dev/stderr --config=/tmp/flocker-rsyncd.conf --port={DAEMON_PORT}"
    )
    return ["sh", "-c", script]


def client_command(address: str, port: int, *, dry_run: bool = False) -> list[str]:
    """rsync from the mounted volume to the daemon; the password comes in RSYNC_PASSWORD.

    ``--inplace --no-whole-file`` makes rsync send only the changed blocks of a large
    file (a database's) instead of the whole file; ``--delete`` makes the copy exact.
    """
    args = [
        "rsync",
        "--archive",
        "--hard-links",
        "--numeric-ids",
        "--delete",
        "--inplace",
        "--no-whole-file",
        "--stats",
    ]
    if dry_run:
        args += ["--dry-run", "--itemize-changes"]
    else:
        args += ["--info=progress2"]
    return [*args, f"{MOUNT}/", f"rsync://{USER}@{address}:{port}/{MODULE}/"]


# rsync exits 24 when files vanished while it read them: expected while the
# application is still writing (phase 1), and harmless since phase 2 copies again.
VANISHED = 24


@dataclass(frozen=True)
class TransferStats:
    files: int
    total_size: int
    literal_bytes: int
    bytes_sent: int


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern + r"\s*([\d,\.]+)", text)
    return int(match.group(1).replace(",", "").split(".")[0]) if match else 0


def parse_stats(output: str) -> TransferStats:
    return TransferStats(
        files=_number(r"Number of files:", output),
        total_size=_number(r"Total file size:", output),
        literal_bytes=_number(r"Literal data:", output),
        bytes_sent=_number(r"Total bytes sent:", output),
    )


_PROGRESS = re.compile(r"([\d,]+)\s+(\d+)%\s+([\d\.]+[kMGT]?B/s)\s+(\d+:\d+:\d+)")


@dataclass(frozen=True)
class Progress:
    bytes_copied: int
    percent: int
    rate: str
    remaining: str


def parse_progress(output: str) -> Progress | None:
    """The newest ``--info=progress2`` line (rsync rewrites it with carriage returns)."""
    matches = _PROGRESS.findall(output.replace("\r", "\n"))
    if not matches:
        return None
    copied, percent, rate, remaining = matches[-1]
    return Progress(int(copied.replace(",", "")), int(percent), rate, remaining)


def itemized_differences(output: str) -> list[str]:
    """Lines of a dry run that name a file still different (stats lines excluded)."""
    lines = []
    for line in output.splitlines():
        # Itemized lines start with an 11-character change code such as '>f.st......'.
        if re.match(r"^[<>ch.*][fdLDS][\.\+\?cstpoguax]{9} ", line) or line.startswith("*deleting"):
            # A directory whose only difference is its time is not missing data.
            if re.match(r"^\.d\.\.t\.\.\.\.\.\. ", line):
                continue
            lines.append(line)
    return lines


def human_bytes(size: float | None) -> str:
    if size is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
