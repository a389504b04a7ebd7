"""Execs, a part of the Docker layer (given docker-py's API client by it): mostly ones whose
stdin we keep, started ahead of the moment they are needed.

Starting an exec (runc joining the container) costs 40-100 ms on a busy node. A route
session pays it once for a whole operation; an armed exec pays it before a move stops its
application, for a command that phase 2 or the verification then runs at once.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

# The armed command waits for one line on its stdin, then becomes the command.
_ARMED = 'read -r go || exit 125; exec "$@"'
# What a process killed with the rest of its PID namespace exits with (128 + SIGKILL).
_KILLED = 137


class Exec:
    """An exec created in a container: what it exits with, once it has."""

    def __init__(self, api: Any, container_id: str, command: list[str], environment: dict[str, str] | None, stdin: bool) -> None:
        self._api = api
        self.exec_id = api.exec_create(container_id, command, stdin=stdin, environment=environment)["Id"]

    def exit_code(self) -> int | None:
        return self._api.exec_inspect(self.exec_id)["ExitCode"]


class StreamedExec(Exec):
    """A command without stdin, run by ``fire``, its output streamed as it comes."""

    def __init__(self, api: Any, container_id: str, command: list[str], environment: dict[str, str] | None = None) -> None:
        super().__init__(api, container_id, command, environment, stdin=False)

    def fire(self) -> Iterator[bytes]:
        yield from self._api.exec_start(self.exec_id, stream=True)


class AttachedExec(Exec):
    """An exec started with its stdin attached; its output comes in Docker's multiplexed
    frames (8-byte header: stream, size)."""

    def __init__(self, api: Any, container_id: str, command: list[str], environment: dict[str, str] | None = None) -> None:
        super().__init__(api, container_id, command, environment, stdin=True)
        self._response = api.exec_start(self.exec_id, socket=True)
        # docker-py hands back a SocketIO over plain TCP, the socket itself otherwise.
        self.socket = getattr(self._response, "_sock", self._response)

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def frame(self) -> bytes | None:
        """The next frame's payload; None once the exec has ended."""
        header = self._exactly(8)
        if header is None:
            return None
        _, size = struct.unpack(">BxxxL", header)
        payload = self._exactly(size)
        if payload is None:
            raise ConnectionError("the exec's output ended inside a frame")
        return payload

    def frames(self) -> Iterator[bytes]:
        while (payload := self.frame()) is not None:
            yield payload

    def _exactly(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = self.socket.recv(size - len(data))
            if not chunk:
                if data:
                    raise ConnectionError("the exec's output ended inside a frame")
                return None
            data += chunk
        return data

    def close(self) -> None:
        # End of input ends a command that reads it, and with it the exec.
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            self._response.close()


class ArmedExec(AttachedExec):
    """``command`` started now, run once ``fire`` says so. A command that ``waits`` reads the
    line itself, once it has done what it can ahead (a program loading its state)."""

    def __init__(
        self, api: Any, container_id: str, command: list[str], environment: dict[str, str] | None = None, waits: bool = False
    ) -> None:
        super().__init__(api, container_id, command if waits else ["sh", "-c", _ARMED, "sh", *command], environment)

    def fire(self) -> Iterator[bytes]:
        """Run the command; its output as it comes, until it exits."""
        self.send(b"go\n")
        yield from self.frames()
        self.close()  # the exec has ended; its connection goes back


class ExitWatch(AttachedExec):
    """A shell inside an application's container that waits on its stdin, so that the end
    of its output says the application's processes are gone.

    When a container's first process ends, the kernel kills every other process of its PID
    namespace, this shell included, and the exec's output ends within milliseconds. The
    engine's stop returns 0.2-0.4 s later, once it has taken the container's network
    down. Only an end by SIGKILL counts: a shell that ended otherwise (or never started)
    says nothing about the application.
    """

    def __init__(self, api: Any, container_id: str, shell: str) -> None:
        super().__init__(api, container_id, [shell, "-c", "read -r never"])

    def watching(self) -> bool:
        """Still waiting: the application has not ended since the watch began."""
        readable, _, _ = select.select([self.socket], [], [], 0)
        return not readable and bool(self._api.exec_inspect(self.exec_id)["Running"])

    def wait(self, timeout: float) -> bool:
        """True once the application's processes are gone; False if that cannot be told."""
        deadline = time.monotonic() + timeout
        self.socket.settimeout(max(timeout, 0.001))
        try:
            while self.frame() is not None:  # the shell writes nothing; anything is noise
                self.socket.settimeout(max(deadline - time.monotonic(), 0.001))
        except OSError:  # timed out, or the connection broke: nothing to tell
            return False
        return self.exit_code() == _KILLED
