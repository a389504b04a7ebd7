"""Secret inputs, kept out of everything the provider prints, raises or records in plain text.

The engine hands a dynamic provider every input in plain text (it cannot accept secrets), so
the SDK sends, beside the inputs, where each secret is (``secret_inputs``: paths into the
inputs, never values). Every value found there is blanked from progress lines, check
failures and errors, whichever resource's hook shows them (a secret is one whoever prints
it), and the outputs the provider derives from them are returned as secrets: the engine
only keeps an output secret by itself when an input of the same name was.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from pulumi.output import Unknown
from pulumi.runtime import rpc

SECRET_PATHS = "secret_inputs"
SHOWN_AS = "[secret]"

_lock = threading.Lock()
_known: set[str] = set()


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    elif value is not None and not isinstance(value, bool | Unknown):
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        if text:
            yield text


def _at(props: Mapping[str, Any], path: list[Any]) -> Any:
    value: Any = props
    for step in path:
        if isinstance(value, Mapping) and step in value:
            value = value[step]
        elif isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            value = value[step]
        else:
            return None
    return value


def secret_keys(props: Mapping[str, Any]) -> set[str]:
    """The top-level inputs of ``props`` that are, or hold, a secret."""
    paths = props.get(SECRET_PATHS)
    return {str(path[0]) for path in paths if path} if isinstance(paths, list) else set()


def learn(props: Mapping[str, Any]) -> None:
    """Remember the secret values of ``props`` (a hook's inputs or recorded outputs)."""
    paths = props.get(SECRET_PATHS)
    if not isinstance(paths, list):
        return
    found = {text for path in paths if isinstance(path, list) for text in _leaves(_at(props, path))}
    with _lock:
        _known.update(found)


def redacted(text: str) -> str:
    with _lock:
        # Longest first: a secret holding another is blanked whole.
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        text = text.replace(value, SHOWN_AS)
    return text


def sealed(outs: dict[str, Any], props: Mapping[str, Any], derived: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """``outs`` with each output of ``derived`` (output -> the inputs it is made of) made a
    secret when one of its inputs is one."""
    secret = secret_keys(props)
    return {
        key: rpc.wrap_rpc_secret(value) if secret & set(derived.get(key, ())) and value is not None else value
        for key, value in outs.items()
    }
