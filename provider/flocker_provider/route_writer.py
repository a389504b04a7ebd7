"""Writing route files into a router container, and knowing when the router has put them in force.

A write is lines ``PORT BODY``; the shell below writes each file with a rename (the router
never reads half a file) and answers ``ok PORT`` once the router has copied it to
``applied/`` (it does once the route is in force), ``late PORT`` past the deadline, or
``failed PORT``. It wakes the router with SIGUSR1 when the router says it takes the signal
(``WAKE_FILE``) rather than waiting for its next poll. The lines come from the exec's
arguments (one exec per write) or, in a ``RouteSession``, from the stdin of one exec kept
open: a move writes routes on every node twice while its application is down, and an exec
per write (runc joining the container) cost 50-100 ms each there, with four nodes at once on
a busy machine.
"""

from __future__ import annotations

import json
from typing import Any

from .attached_exec import AttachedExec
from .router_program import WAKE_FILE

ROUTES_DIR = "/routes/ports"
ACK_SECONDS = 10
_TRIES = ACK_SECONDS * 100  # one every 10 ms

SCRIPT = (
    f"mkdir -p {ROUTES_DIR}; "
    "take() { while read -r port body; do "
    f'printf "%s" "$body" > {ROUTES_DIR}/.$port.tmp && mv {ROUTES_DIR}/.$port.tmp {ROUTES_DIR}/$port.json '
    '|| { echo "failed $port"; continue; }; '
    f"pid=; {{ read -r pid < {ROUTES_DIR}/../{WAKE_FILE}; }} 2>/dev/null; "
    '[ -n "$pid" ] && kill -USR1 "$pid" 2>/dev/null; '
    f"i=0; until cmp -s {ROUTES_DIR}/$port.json {ROUTES_DIR}/../applied/$port.json || [ $i -gt {_TRIES} ]; do "
    "i=$((i+1)); sleep 0.01; done; "
    f'if [ $i -gt {_TRIES} ]; then echo "late $port"; else echo "ok $port"; fi; done; }}; '
    'if [ $# -gt 0 ]; then printf "%s\\n" "$@" | take; else take; fi'
)


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
        self._exec = AttachedExec(api, container_id, ["sh", "-c", SCRIPT])
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
