#!/usr/bin/env python3
"""A small stand-in for Logstash: newline-separated lines on TCP 5000 -> documents in the store.

Each line becomes {"message": line, "@timestamp": ..., "@version": "1", "host": peer} in
index "logstash" of the store linked as alias "es" (Docker link variables
ES_PORT_9200_TCP_ADDR/ES_PORT_9200_TCP_PORT, else host "es" port 9200; ES_URL overrides).

A line is acknowledged by the store before the next one is read from that connection, so TCP
back-pressure slows senders down instead of buffering lines in memory. When the store is
unreachable (e.g. while it is being moved to another node) a line is retried with backoff
for up to LOGSTASH_RETRY_SECONDS (60 s); a line that still cannot be stored is reported on
stderr with its text, never dropped silently. Empty lines are skipped.
"""

from __future__ import annotations

import json
import os
import signal
import socketserver
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

PORT = int(os.environ.get("LOGSTASH_PORT", "5000"))
INDEX = os.environ.get("LOGSTASH_INDEX", "logstash")
RETRY_SECONDS = float(os.environ.get("LOGSTASH_RETRY_SECONDS", "60"))
REQUEST_TIMEOUT = 10.0
MAX_LINE = 1 << 20


def log(message: str) -> None:
    print(f"{datetime.now(UTC).isoformat()} logstash-standin: {message}", file=sys.stderr, flush=True)


def store_url() -> str:
    if os.environ.get("ES_URL"):
        return os.environ["ES_URL"].rstrip("/")
    host = os.environ.get("ES_PORT_9200_TCP_ADDR") or "es"
    port = os.environ.get("ES_PORT_9200_TCP_PORT") or "9200"
    return f"http://{host}:{port}"


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored = 0
        self.failed = 0


STATS = Stats()


def index_line(url: str, line: str, peer: str) -> bool:
    """POST one line; True once the store acknowledged it, False after giving up (logged)."""
    doc = {
        "message": line,
        "@timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "@version": "1",
        "host": peer,
    }
    data = json.dumps(doc, ensure_ascii=False).encode()
    deadline = time.monotonic() + RETRY_SECONDS
    delay = 0.2
    attempt = 0
    last_error = ""
    while True:
        attempt += 1
        request = urllib.request.Request(f"{url}/{INDEX}/_doc", data=data, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                response.read()
            if attempt > 1:
                log(f"store reachable again after {attempt} attempts")
            return True
        except urllib.error.HTTPError as e:
            last_error = f"HTTP {e.code}: {e.read()[:300]!r}"
            if 400 <= e.code < 500 and e.code not in (408, 429):
                break  # the store refuses this document: retrying cannot help
        except (OSError, ValueError) as e:  # connection refused/reset, timeout, name not found
            last_error = repr(e)
        if attempt == 1:
            log(f"store at {url} failed ({last_error}); retrying for up to {RETRY_SECONDS:.0f}s")
        if time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    log(f"GIVING UP on a line after {attempt} attempts ({last_error}); line lost: {line!r}")
    return False


class LineHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        peer = self.client_address[0]
        url = store_url()
        while True:
            raw = self.rfile.readline(MAX_LINE)
            if not raw:
                return
            line = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
            if not line:
                continue
            ok = index_line(url, line, peer)
            with STATS.lock:
                if ok:
                    STATS.stored += 1
                else:
                    STATS.failed += 1


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def main() -> None:
    server = Server(("0.0.0.0", PORT), LineHandler)

    def stop(signum: int, _frame: object) -> None:
        log(f"signal {signum}: stopping (stored {STATS.stored} lines, gave up on {STATS.failed})")
        threading.Thread(target=server.shutdown, daemon=True).start()

    # PID 1 in a container ignores SIGTERM unless handled: docker stop would wait 10 s.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"listening on 0.0.0.0:{PORT}, indexing into {store_url()}/{INDEX}")
    # serve_forever notices shutdown() only between polls: 0.5 s by default, all of it downtime in a move.
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    log("stopped")


if __name__ == "__main__":
    main()
