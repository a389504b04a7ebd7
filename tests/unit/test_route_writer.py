"""Route writes: the answers of the writer in the router container, and the session's framing."""

import socket
import struct
import threading

import pytest

from flocker_provider.docker_layer.attached_exec import ArmedExec
from flocker_provider.docker_layer.route_writer import RouteSession, problems, route_lines


def test_one_line_per_route_in_port_order() -> None:
    lines = route_lines({9200: {"target": None, "application": "a b"}, 80: {"target": "10.0.0.2:21000"}})
    assert lines == ['80 {"target": "10.0.0.2:21000"}', '9200 {"application": "a b", "target": null}']


def test_problems_name_each_port_that_is_not_in_force() -> None:
    answers = ["ok 80", "late 443", "failed 8080"]
    assert problems(answers, [80, 443, 8080, 9200], "flocker-dev.router") == [
        "the router did not take the route of port 443 within 10 s (see `docker logs flocker-dev.router`)",
        "could not write the route file of port 8080",
        "no answer for the route of port 9200: ok 80 / late 443 / failed 8080",
    ]
    assert problems(["ok 80"], [80], "r") == []


class FakeApi:
    """Docker's exec API with the exec's end of a socket pair; the test plays the shell."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair()

    def exec_create(self, container: str, cmd: list[str], stdin: bool, environment: dict | None = None) -> dict:
        assert stdin and cmd[1] == "-c"
        self.command, self.environment = cmd, environment
        return {"Id": "exec1"}

    def exec_start(self, exec_id: str, socket: bool) -> object:
        return self.ours

    def exec_inspect(self, exec_id: str) -> dict:
        return {"ExitCode": 3}


def frame(data: bytes) -> bytes:
    return struct.pack(">BxxxL", 1, len(data)) + data


def test_a_session_sends_lines_and_reads_framed_answers_split_anywhere() -> None:
    api = FakeApi()
    received: list[bytes] = []

    def shell() -> None:
        while b"".join(received).count(b"\n") < 2:
            received.append(api.theirs.recv(1024))
        # One answer split across frames, the next in the same frame as the rest of the first.
        api.theirs.sendall(frame(b"o") + frame(b"k 80\nok 9") + frame(b"200\n"))

    player = threading.Thread(target=shell)
    player.start()
    session = RouteSession(api, "router")
    assert session.write(["80 {}", "9200 {}"]) == ["ok 80", "ok 9200"]
    player.join()
    assert b"".join(received) == b"80 {}\n9200 {}\n"
    session.close()
    assert api.theirs.recv(10) == b""  # end of input: the shell ends


def test_an_armed_exec_runs_its_command_only_when_fired() -> None:
    api = FakeApi()
    armed = ArmedExec(api, "helper", ["rsync", "-a", "/data/"], {"RSYNC_PASSWORD": "x"})
    assert api.command[3:] == ["sh", "rsync", "-a", "/data/"] and api.environment == {"RSYNC_PASSWORD": "x"}
    api.theirs.settimeout(0.2)
    with pytest.raises(TimeoutError):
        api.theirs.recv(10)  # nothing said yet: the command waits

    def shell() -> None:
        assert api.theirs.recv(10) == b"go\n"
        api.theirs.sendall(frame(b"sent 10 bytes\n") + frame(b"total size 4"))
        api.theirs.close()  # the command exits

    player = threading.Thread(target=shell)
    player.start()
    assert b"".join(armed.fire()) == b"sent 10 bytes\ntotal size 4"
    player.join()
    assert armed.exit_code() == 3
