"""Entry point of the dynamic provider process (``pulumi-resource-pulumi-python``).

Pulumi's own host answers every failed hook with a full Python traceback. For errors
meant for people (errors.py: bad input, an unreachable node, a failed step) we send only the
message; a bug, anything else, still gets its traceback.
"""

from __future__ import annotations

import runpy
import sys
import traceback

from flocker_provider.engine_watch import end_with_engine
from flocker_provider.errors import ProviderError
from flocker_provider.secret_values import redacted

_TRACEBACK = traceback.format_exc


def format_exc(limit: int | None = None, chain: bool = True) -> str:
    """What a failed hook shows the user (Pulumi's host calls it with the failure being handled),
    without the secrets of any input: a bug's traceback may quote them too."""
    exc = sys.exc_info()[1]
    return redacted(str(exc) if isinstance(exc, ProviderError) else _TRACEBACK(limit, chain))


def main() -> None:
    # Pulumi's host module serves as soon as it is imported and calls
    # `traceback.format_exc` at failure time, so the patch must be in place first.
    # This process runs nothing but the provider, so the patch reaches nothing else.
    traceback.format_exc = format_exc
    end_with_engine()
    runpy.run_module("pulumi.dynamic.__main__", run_name="__main__")


if __name__ == "__main__":
    main()
