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
STREAM_PORT = 8731
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


def heartbeat(command: list[str]) -> list[str]:
    """``command`` with an empty output line every 20 s while it runs.

    Its output is read over a Docker API connection that times out after a minute of
    silence, and a dry run over a large tree, or a slow stream between checkpoints, can be
    silent that long. Empty lines mean nothing to any of the parsers here.
    """
    # sleep must not hold the output open: the stream ends only when every writer is gone.
    script = 'while sleep 20 >/dev/null 2>&1; do echo; done & beat=$!; "$@"; code=$?; kill $beat; exit $code'
    return ["sh", "-c", script, "sh", *command]


def client_command(address: str, port: int) -> list[str]:
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
    return [*args, "--info=progress2", f"{MOUNT}/", f"rsync://{USER}@{address}:{port}/{MODULE}/"]


# The first copy into an empty destination is a plain tar stream: rsync's protocol costs
# more than half the throughput of a raw stream (measured: 12.4 s against 5.2 s for
# 1.09 GB), and with nothing on the other side there is no delta to find. The receiver
# takes one connection, from the source's address only, that must start with the move's
# password; then tar reads the socket directly.
_RECEIVER = """
import hmac, os, socket, subprocess, sys
secret = os.environ["FLOCKER_SECRET"].encode()
allowed = os.environ["FLOCKER_ALLOWED"]
server = socket.create_server(("0.0.0.0", %(port)d))
print("flocker-receiver listening", flush=True)
while True:
    conn, (peer, _) = server.accept()
    conn.settimeout(30)
    got = b""
    try:
        while peer == allowed and len(got) < len(secret):
            chunk = conn.recv(len(secret) - len(got))
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    if peer != allowed or not hmac.compare_digest(got, secret):
        print("refused a connection from", peer, flush=True)
        conn.close()
        continue
    conn.settimeout(None)
    tar = ["tar", "-x", "-p", "--numeric-owner", "-C", "%(mount)s", "-f", "-"]
    code = subprocess.run(tar, stdin=conn.fileno()).returncode
    conn.sendall(b"%(done)s %%d\\n" %% code)
    conn.close()
    sys.exit(code)
"""

TAR_RECORD = 10240  # GNU tar's default record size; checkpoints count records
TAR_CHECKPOINT = 10240  # records between progress lines: 100 MiB


# The receiver answers with this line and tar's exit status once everything is on disk.
# The sender must wait for it: its exit alone proves nothing about the extraction, and
# when the helper that runs it goes away its network namespace takes unsent socket
# buffers (and the FIN) with it, which left the receiver waiting forever.
STREAM_DONE = "flocker-received"


def stream_receiver_command() -> list[str]:
    """Destination side of the bulk copy; the password in FLOCKER_SECRET, the source address in FLOCKER_ALLOWED."""
    return ["python3", "-c", _RECEIVER % {"port": STREAM_PORT, "mount": MOUNT, "done": STREAM_DONE}]


def stream_sender_command(address: str, port: int, timeout: float) -> list[str]:
    """Source side: the password, then the volume as a tar stream, to the receiver; prints its answer."""
    tar = f"tar -C {MOUNT} --numeric-owner --totals --checkpoint={TAR_CHECKPOINT} --checkpoint-action=echo=%u -cf - ."
    # Two-way socat: after tar's end it half-closes and keeps reading the answer for up to -t seconds.
    # The answer is printed once tar has printed its totals: written as they arrive, the two
    # interleaved mid-line ("Total bytes written: flocker-received 0 / 194560") and a good
    # copy failed as unconfirmed (seen in CI, on a 190 KiB volume).
    stream = f'{{ printf %s "$FLOCKER_SECRET"; {tar}; }} | socat -t {timeout:.0f} - TCP:{address}:{port}'
    return ["sh", "-c", f"answer=$({stream}); code=$?; printf '%s\\n' \"$answer\"; exit $code"]


def stream_received(output: str) -> bool:
    """Whether the receiver confirmed a complete extraction."""
    return re.search(rf"^{STREAM_DONE} 0$", output, re.MULTILINE) is not None


def parse_stream_progress(output: str) -> int | None:
    """Bytes streamed so far, from tar's newest checkpoint line."""
    matches = re.findall(r"^tar: (\d+)$", output, re.MULTILINE)
    return int(matches[-1]) * TAR_RECORD if matches else None


def parse_stream_total(output: str) -> int:
    return _number(r"Total bytes written:", output)


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


LISTING = "/tmp/flocker-listing"


def listing_command() -> list[str]:
    """The volume tree as sorted lines (kept in LISTING) and their digest on stdout.

    What the copy must have made identical: every entry's type, mode and owner, and of
    files their link count, size and modification second; of symlinks the target.
    Directory sizes and times are left out (file systems differ, and deleting a file
    changes its directory's time). The verification compares the two digests: both
    sides scan their own disk at once, and only a digest crosses the network.
    """
    script = (
        f"set -e; cd {MOUNT}; "
        r"find . \( -type f -printf 'f %m %U:%G %n %s %Ts %p\n' \) -o \( -type l -printf 'l %U:%G %p -> %l\n' \) "
        rf"-o -printf '%y %m %U:%G %p\n' > {LISTING}.unsorted; "
        f"LC_ALL=C sort {LISTING}.unsorted > {LISTING}; wc -l < {LISTING}; sha256sum < {LISTING}"
    )
    return ["sh", "-c", script]


def listing_differences(source: str, destination: str, limit: int = 5) -> list[str]:
    """The first lines only one side's listing has, said for people."""
    theirs, ours = set(destination.splitlines()), set(source.splitlines())
    found = [f"only on the source: {line}" for line in source.splitlines() if line not in theirs]
    found += [f"only on the destination: {line}" for line in destination.splitlines() if line not in ours]
    return found[:limit]


def human_bytes(size: float | None) -> str:
    if size is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
