"""Docker engines reached over SSH: one `ssh` connection per engine and provider process.

docker-py's own ``ssh://`` transport does not do here. It refuses to start without
paramiko even when told to run the system's ``ssh``; it then runs one ``ssh`` per HTTP
connection, so every exec (and a move makes dozens) pays a handshake; and its socket's
close() raises BrokenPipeError once that ``ssh`` has exited, which failed a plain
``exec_run`` about one time in two against a local sshd.

Instead the provider runs the system's ``ssh`` once per engine, forwarding a local socket
in a directory only we can enter to the engine's socket on the host, and docker-py talks
to that socket as to a local engine: every connection, exec sessions and the exit watch
included, is a channel of the one SSH connection, and keys, agents, ``~/.ssh/config`` and
known hosts are the user's own, as with ``ssh`` at a shell.

``ssh://[user@]host[:port][/path/of/docker.sock]``: the path is the engine's socket on
the host, ``/var/run/docker.sock`` unless given (e.g. a rootless engine's).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_SOCKET = "/var/run/docker.sock"
# How long the handshake and the forwarding's setup may take (ssh's ConnectTimeout covers
# only the TCP connect).
READY_SECONDS = 30
READY_POLL = 0.02


class TunnelError(Exception):
    """ssh could not set up the forwarding; the message is ssh's own last words."""


@dataclass(frozen=True)
class SshTarget:
    user: str | None
    host: str
    port: int | None
    socket: str

    def command(self, local: str) -> list[str]:
        return [
            "ssh",
            *("-o", "BatchMode=yes"),  # never a password prompt: nobody is there to answer it
            *("-o", "ExitOnForwardFailure=yes"),
            # Our own connection, whatever the user's config shares: a forwarding added to a
            # shared master would outlive this provider, and its socket our directory.
            *("-o", "ControlPath=none"),
            "-T",  # no terminal, even if the config asks for one: nobody types here
            *("-o", "ConnectTimeout=20"),
            # A dead host or network is found within a minute, and the next connect starts afresh.
            *("-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"),
            *("-L", f"{local}:{self.socket}"),
            *(("-p", str(self.port)) if self.port else ()),
            *(("-l", self.user) if self.user else ()),
            "--",
            self.host,
            # Reads the provider's end of a pipe until it closes: a provider that is killed
            # takes its ssh (and the forwarding) with it instead of leaving it running.
            "cat >/dev/null",
        ]


def parse(docker_host: str) -> SshTarget:
    parts = urlsplit(docker_host)
    if parts.scheme != "ssh" or not parts.hostname:
        raise ValueError(f"{docker_host}: expected ssh://[user@]host[:port][/path/of/docker.sock]")
    return SshTarget(
        user=unquote(parts.username) if parts.username else None,
        host=parts.hostname,
        port=parts.port,
        socket=unquote(parts.path) if parts.path not in ("", "/") else DEFAULT_SOCKET,
    )


class Tunnel:
    def __init__(self, target: SshTarget) -> None:
        self.target = target
        # Private: whoever can connect to the socket can do anything the engine can.
        self.directory = tempfile.mkdtemp(prefix="flocker-ssh-")
        self.socket = os.path.join(self.directory, "docker.sock")
        self.log = os.path.join(self.directory, "ssh.log")
        try:
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(target.command(self.socket), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        except FileNotFoundError:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise TunnelError("no ssh client here (ssh:// nodes need OpenSSH's `ssh` on the PATH)") from None
        deadline = time.monotonic() + READY_SECONDS
        while not os.path.exists(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                words = self.last_words() or f"no forwarding within {READY_SECONDS} s"
                self.close()
                raise TunnelError(words)
            time.sleep(READY_POLL)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def last_words(self) -> str:
        """ssh's last line on stderr (why it failed, or why a channel did)."""
        try:
            with open(self.log, errors="replace") as log:
                lines = [line.strip() for line in log if line.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdin:
            self.process.stdin.close()
        shutil.rmtree(self.directory, ignore_errors=True)


_TUNNELS: dict[str, Tunnel] = {}
# One lock per engine, so that a host that does not answer (ssh waits up to ConnectTimeout)
# delays only its own operations, not the first connection to every other node.
_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def tunnel(docker_host: str) -> Tunnel:
    """The live forwarding to ``docker_host``, started (again) if there is none."""
    with _GUARD:
        lock = _LOCKS.setdefault(docker_host, threading.Lock())
    with lock:
        with _GUARD:
            found = _TUNNELS.pop(docker_host, None)
        if found is not None and found.alive():
            created = found
        else:
            if found is not None:
                found.close()
            created = Tunnel(parse(docker_host))
        with _GUARD:
            _TUNNELS[docker_host] = created
        return created


@atexit.register
def close_all() -> None:
    with _GUARD:
        for found in _TUNNELS.values():
            found.close()
        _TUNNELS.clear()
