"""Plugins of a Pulumi engine that is gone end too.

The engine starts its plugins (this provider, the language host) in process groups of
their own, so a `pulumi` killed with SIGKILL (a cancelled CI job, `timeout -s KILL`, an
OOM kill) leaves them running. Seen here: the orphaned provider went on with a move that
no state would record, failed where its progress lines met the closed pipe, and restarted
the application on the source while the next `pulumi up` was starting. Every step of a
move leaves the nodes in a state that the next `up` finishes from (the old copy stays
until the new one is proven), so ending at once is safe; going on is not.
"""

from __future__ import annotations

import os
import threading
import time

# How soon an orphaned plugin notices: well under the time between two steps of a move.
POLL = 0.1
# What the engine would see, were it there: killed.
EXIT_CODE = 137


def end_with_engine() -> None:
    """Ends this process, at once and without cleanup, when its parent (the engine) is gone."""
    engine = os.getppid()

    def watch() -> None:
        while os.getppid() == engine:
            time.sleep(POLL)
        os._exit(EXIT_CODE)

    threading.Thread(target=watch, name="engine-watch", daemon=True).start()
