"""Writing route files into a router container, and knowing when the router has put them in force.

A write is lines ``PORT BODY``; the program below writes each file with a rename (the router
never reads half a file) and answers ``ok PORT`` once the router has copied it to
``applied/`` (it does once the route is in force), ``late PORT`` past the deadline, or
``failed PORT``. It wakes the router with SIGUSR1 when the router says it takes the signal
(``WAKE_FILE``) rather than waiting for its next poll. The lines come from the exec's
arguments (one exec per write) or, in a ``RouteSession``, from the stdin of one exec kept
open: a move writes routes on every node twice while its application is down, and an exec
per write (runc joining the container) cost 50-100 ms each there, with four nodes at once on
a busy machine.

Python, in the router's own image, rather than the shell it was: a shell forks ``mv``,
``cmp`` and ``sleep`` for every write and every look at the acknowledgement, and looked
every 10 ms; this looks every millisecond and forks nothing.
"""

from __future__ import annotations

import json
from typing import Any

from flocker_provider.docker_layer.attached_exec import AttachedExec
from flocker_provider.on_node.router import WAKE_FILE

ROUTES_DIR = "/routes/ports"
ACK_SECONDS = 10

PROGRAM = f"""
import os, signal, sys, time
ROUTES = {ROUTES_DIR!r}
APPLIED = os.path.join(os.path.dirname(ROUTES), "applied")
WAKE = os.path.join(os.path.dirname(ROUTES), {WAKE_FILE!r})

def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None

def take(line):
    port, _, body = line.rstrip("\\n").partition(" ")
    data = body.encode()
    try:
        os.makedirs(ROUTES, exist_ok=True)
        with open(os.path.join(ROUTES, "." + port + ".tmp"), "wb") as f:
            f.write(data)
        os.replace(os.path.join(ROUTES, "." + port + ".tmp"), os.path.join(ROUTES, port + ".json"))
    except OSError:
        return "failed " + port
    try:
        os.kill(int((read(WAKE) or b"").split()[0]), signal.SIGUSR1)
    except (ValueError, IndexError, OSError):
        pass  # no router that takes the signal: its next poll reads the file
    deadline = time.monotonic() + {ACK_SECONDS}
    while read(os.path.join(APPLIED, port + ".json")) != data:
        if time.monotonic() > deadline:
            return "late " + port
        time.sleep(0.001)
    return "ok " + port

for line in sys.argv[1:] or sys.stdin:
    print(take(line), flush=True)
"""
COMMAND = ["python3", "-c", PROGRAM]


def route_lines(routes: dict[int, dict]) -> list[str]:
    # JSON has no newline in it: one line per route, whatever the application's name.
    return [f"{port} {json.dumps(body, sort_keys=True)}" for port, body in sorted(routes.items())]


def problems(answers: list[str], ports: list[int], router: str) -> list[str]:
    """What the answers to a write of ``ports`` say went wrong, for people."""
    said = {}
    for answer in answers:
        verdict, _, port = answer.strip().partition(" ")
        if port.isdigit():
            said[int(port)] = verdict
    found = []
    for port in ports:
        verdict = said.get(port)
        if verdict == "ok":
            continue
        if verdict == "late":
            found.append(f"the router did not take the route of port {port} within {ACK_SECONDS} s (see `docker logs {router}`)")
        elif verdict == "failed":
            found.append(f"could not write the route file of port {port}")
        else:
            found.append(f"no answer for the route of port {port}: {' / '.join(answers)[-300:]}")
    return found


class RouteSession:
    """One exec in a router container taking route lines on its stdin until closed.

    Every read has a deadline: a connection that stops answering must fail the step, which
    then falls back to an exec per write.
    """

    def __init__(self, api: Any, container_id: str) -> None:
        self._exec = AttachedExec(api, container_id, COMMAND)
        self._pending = b""

    def write(self, lines: list[str]) -> list[str]:
        self._exec.socket.settimeout(ACK_SECONDS + 5)
        self._exec.send("".join(f"{line}\n" for line in lines).encode())
        return [self._answer() for _ in lines]

    def _answer(self) -> str:
        while b"\n" not in self._pending:
            payload = self._exec.frame()
            if payload is None:
                raise ConnectionError("the route writer in the router container ended")
            self._pending += payload
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode(errors="replace")

    def close(self) -> None:
        self._exec.close()
