"""Entry point of the dynamic provider process (``pulumi-resource-pulumi-python``).

Pulumi's own host answers every failed hook with a full Python traceback. For errors
meant for people (bad input, an unreachable node, a failed step) we send only the
message; a real bug still gets its traceback.
"""

from __future__ import annotations

import runpy
import sys
import traceback

from .docker_layer import NodeUnreachable, NotOurs
from .engine_watch import end_with_engine
from .errors import ProviderError
from .executor import StepFailed

_FOR_PEOPLE = (ProviderError, NodeUnreachable, NotOurs, StepFailed)


def main() -> None:
    original = traceback.format_exc

    def format_exc(*args: object, **kwargs: object) -> str:
        exc = sys.exc_info()[1]
        return str(exc) if isinstance(exc, _FOR_PEOPLE) else original(*args, **kwargs)

    # Pulumi's host module serves as soon as it is imported and calls
    # `traceback.format_exc` at failure time, so the patch must be in place first.
    # This process runs nothing but the provider, so the patch reaches nothing else.
    traceback.format_exc = format_exc
    end_with_engine()
    runpy.run_module("pulumi.dynamic.__main__", run_name="__main__")


if __name__ == "__main__":
    main()
