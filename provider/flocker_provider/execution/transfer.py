"""How a volume travels node to node: a tar stream into an empty copy, then delta rounds.

The programs on the nodes (``on_node``) are run in two helper containers for the move: a
receiver on the destination, which accepts connections from the source node's address only
and with a password made for this move only, and the sender on the source. Data never
passes through the machine that runs `pulumi`. Everything here is pure: command lines in,
results and predictions out.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

from flocker_provider import on_node
from flocker_provider.on_node.delta_copy import PROGRESS, RESULT

DELTA_PORT = 8730
STREAM_PORT = 8731
MOUNT = "/data"
DELTA_STATE = "/tmp/flocker-delta.state"
STREAM_STARTED = "/tmp/flocker-stream.started"  # in the source helper, written as its stream begins


@dataclass(frozen=True)
class Credentials:
    password: str


def new_credentials() -> Credentials:
    return Credentials(password=secrets.token_urlsafe(24))


def heartbeat(command: list[str]) -> list[str]:
    """``command`` with an empty output line every 20 s while it runs.

    Its output is read over a Docker API connection that times out after a minute of
    silence, and a dry run over a large tree, or a slow stream between checkpoints, can be
    silent that long. Empty lines mean nothing to any of the parsers here.
    """
    # sleep must not hold the output open: the stream ends only when every writer is gone.
    script = 'while sleep 20 >/dev/null 2>&1; do echo; done & beat=$!; "$@"; code=$?; kill $beat; exit $code'
    return ["sh", "-c", script, "sh", *command]


# The first copy into an empty destination is a plain tar stream: rsync's protocol costs
# more than half the throughput of a raw stream (measured: 12.4 s against 5.2 s for
# 1.09 GB), and with nothing on the other side there is no delta to find. The receiver
# is on_node/stream_receive.py.
TAR_RECORD = 10240  # GNU tar's default record size; checkpoints count records
# Records between progress lines: 10 MiB. The stall watch sees progress by these lines, so a
# stream that moves slower than this per stall timeout counts as stalled (0.3 MiB/s at 30 s).
TAR_CHECKPOINT = 1024


# The receiver answers with this line and tar's exit status once everything is on disk.
# The sender must wait for it: its exit alone proves nothing about the extraction, and
# when the helper that runs it goes away its network namespace takes unsent socket
# buffers (and the FIN) with it, which left the receiver waiting forever.
STREAM_DONE = "flocker-received"


def stream_receiver_command() -> list[str]:
    """Destination side of the bulk copy; the password in FLOCKER_SECRET, the source address in FLOCKER_ALLOWED."""
    return on_node.command("stream_receive", str(STREAM_PORT), MOUNT, STREAM_DONE)


def stream_sender_command(address: str, port: int, timeout: float, stall: float) -> list[str]:
    """Source side: the password, then the volume as a tar stream, to the receiver; prints its answer.

    The connection gives up on a destination that leaves a connect or what was sent
    unanswered for ``stall`` seconds (see ``node_stall``)."""
    tar = f"tar -C {MOUNT} --numeric-owner --totals --checkpoint={TAR_CHECKPOINT} --checkpoint-action=echo=%u -cf - ."
    # Two-way socat: after tar's end it half-closes and keeps reading the answer for up to -t seconds.
    # The answer is printed once tar has printed its totals, and all of it goes to stdout
    # (exec 2>&1): Docker copies an exec's stdout and stderr by separate readers, so tar's
    # totals (stderr, written in pieces) and the answer (stdout) came out interleaved
    # mid-line ("...149MiB/s)flocker-received 0") and a good copy failed as unconfirmed (seen
    # in CI twice, on small volumes, with ten moves at once).
    # 6:18 is IPPROTO_TCP, TCP_USER_TIMEOUT (in ms); keepalive probes see a link cut while tar waits for the answer.
    liveness = f"connect-timeout={stall:g},keepalive,keepidle=1,keepintvl=1,sockopt-int=6:18:{int(stall * 1000)}"
    stream = f'{{ printf %s "$FLOCKER_SECRET"; {tar}; }} | socat -t {timeout:.0f} - TCP:{address}:{port},{liveness}'
    # When tar began, on this node's clock: the next round trusts files unchanged since then.
    started = f"date +%s%N > {STREAM_STARTED}"
    return ["sh", "-c", f"exec 2>&1; {started}; answer=$({stream}); code=$?; printf '%s\\n' \"$answer\"; exit $code"]


def stream_received(output: str) -> bool:
    """Whether the receiver confirmed a complete extraction."""
    return re.search(rf"^{STREAM_DONE} 0$", output, re.MULTILINE) is not None


def parse_stream_progress(output: str) -> int | None:
    """Bytes streamed so far, from tar's newest checkpoint line."""
    matches = re.findall(r"^tar: (\d+)$", output, re.MULTILINE)
    return int(matches[-1]) * TAR_RECORD if matches else None


def parse_stream_total(output: str) -> int:
    return _number(r"Total bytes written:", output)


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern + r"\s*([\d,\.]+)", text)
    return int(match.group(1).replace(",", "").split(".")[0]) if match else 0


# The delta rounds (on_node/delta_copy.py): the sender keeps what the destination holds in
# a state file inside the source helper, which lives as long as the move.


def delta_receiver_command() -> list[str]:
    return on_node.command("delta_copy", "receive", "--root", MOUNT, "--port", str(DELTA_PORT))


def delta_send_command(address: str, port: int, total: int | None, final: bool, armed: bool, stall: float) -> list[str]:
    """One round from the source; armed, it connects first and starts at a line on stdin."""
    args = ["send", "--root", MOUNT, "--to", f"{address}:{port}", "--state", DELTA_STATE, "--streamed", STREAM_STARTED]
    args += ["--stall", f"{stall:g}"]
    args += ["--total", str(total)] if total else []
    args += ["--final"] if final else []
    args += ["--armed"] if armed else []
    return on_node.command("delta_copy", *args)


def delta_verify_command(address: str, port: int, armed: bool, stall: float) -> list[str]:
    args = ["verify", "--root", MOUNT, "--to", f"{address}:{port}", "--state", DELTA_STATE, "--stall", f"{stall:g}"]
    return on_node.command("delta_copy", *args, *(["--armed"] if armed else []))


class DeltaFailed(Exception):
    """What a delta round or the verification said went wrong, in its own words; ``stalled``
    when it was the destination not answering in time."""

    def __init__(self, message: str, stalled: bool = False) -> None:
        super().__init__(message)
        self.stalled = stalled


def delta_result(output: str) -> dict:
    """The result line a delta round or a verification ends with."""
    lines = [line for line in output.splitlines() if line.startswith(RESULT + " ")]
    if not lines:
        raise DeltaFailed(f"no result: {last_lines(output)}")
    result = json.loads(lines[-1][len(RESULT) + 1 :])
    if "error" in result:
        raise DeltaFailed(result["error"], stalled=result.get("stalled") is True)
    return result


def delta_said(output: str) -> bool:
    """Whether a round's or a verification's output holds its result line: all it says."""
    return re.search(rf"^{RESULT} .*\n", output, re.MULTILINE) is not None


def delta_progress(output: str) -> tuple[int, int] | None:
    """(bytes read, total) from the newest progress line of a round."""
    matches = re.findall(rf"^{PROGRESS} (\d+) (\d+)$", output, re.MULTILINE)
    return (int(matches[-1][0]), int(matches[-1][1])) if matches else None


# How much later than the host's stall watch the programs on the nodes give up on their
# own: the watch decides whenever it can see the stall (and names it); the programs' own
# limit covers what it cannot see, a link cut while the source waits for an answer.
STALL_MARGIN = 2.0


def node_stall(stall: float) -> float:
    """The stall limit of the programs on the nodes, for a move's ``stall`` timeout."""
    return stall + STALL_MARGIN


def progress_marks(output: str) -> int:
    """How many progress lines a copy program has printed: tar's checkpoints, a round's lines.
    Each means it moved on (a round prints them only while it walks, reads or sends, or
    waits for an answer on a connection the destination still acknowledges)."""
    return len(re.findall(rf"^(?:tar: \d+|{PROGRESS} \d+ \d+)$", output, re.MULTILINE))


class StallWatch:
    """When a copy last showed progress. One that showed none for ``seconds`` has stalled:
    the link between the nodes cut, a node that stopped answering."""

    def __init__(self, seconds: float, now: float) -> None:
        self.seconds = seconds
        self._marks = 0
        self._since = now

    def saw(self, output: str, now: float) -> None:
        marks = progress_marks(output)
        if marks != self._marks:
            self._marks, self._since = marks, now

    def idle(self, now: float) -> float:
        return now - self._since

    def stalled(self, now: float) -> bool:
        return self.idle(now) >= self.seconds


# Fixed costs of a round that are not reading: firing the armed exec, the receiver's
# commit, the result's way back (measured 20-40 ms here).
ROUND_OVERHEAD = 0.05


def predicted_seconds(result: dict) -> float:
    """How long the next round will take: the files changed since this one read them
    (``dirty_bytes``, from the survey at its end), read at this round's rate, plus a walk of
    the tree (the survey's own time) and the fixed costs."""
    seconds = max(result["seconds"] - result.get("survey_seconds", 0), 1e-3)
    rate = result["bytes_read"] / seconds if result["bytes_read"] > 2**20 else 1e9  # too little read to measure a rate
    return round(result.get("survey_seconds", 0) + (result.get("dirty_bytes") or 0) / rate + ROUND_OVERHEAD, 3)


def last_lines(output: str) -> str:
    """The last three lines of a helper's output, on one line, for an error message."""
    return " / ".join(line for line in output.strip().splitlines()[-3:])


def human_bytes(size: float | None) -> str:
    if size is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
