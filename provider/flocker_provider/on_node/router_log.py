"""What the router's modules say of what they do."""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    # stderr is the container's log; one flushed line per event so `docker logs` shows it at once.
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    sys.stderr.write(f"{stamp} router: {message}\n")
    sys.stderr.flush()
