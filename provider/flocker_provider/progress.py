"""Progress lines for people watching `pulumi up`.

The dynamic provider process is not connected to the engine's log, but its stdout is
shown as stack diagnostics, so progress goes there, one flushed line at a time.
"""

from __future__ import annotations

import sys
import threading

from flocker_provider.secret_values import redacted

_lock = threading.Lock()


def report(line: str) -> None:
    with _lock:
        print(redacted(f"flocker: {line}"), file=sys.stdout, flush=True)
