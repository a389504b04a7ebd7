"""Reading a YAML file into plain Python values, with every failure as a ConfigError."""

from __future__ import annotations

import os

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from .errors import ConfigError, Where, describe

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses repeated keys, which PyYAML would silently overwrite.

    A repeated ``image:`` or node address is almost always a copy-paste mistake, and
    keeping only the last one would deploy something the user did not read.
    """

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # '<<' merges may legitimately be overridden by later keys
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable; the base class reports it with its own mark
            if duplicate:
                raise ConstructorError(None, None, f"duplicate key {describe(key)}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def read_yaml(path: str | os.PathLike[str]) -> object:
    """The document in ``path``; any I/O or YAML problem becomes a ConfigError."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        raise ConfigError(file, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(file, "is a directory, expected a YAML file") from None
    except OSError as error:
        raise ConfigError(file, f"cannot read the file ({error.strerror or error})") from None
    try:
        return yaml.load(data, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "unknown problem"
        line = None if mark is None else mark.line + 1
        raise ConfigError(file, f"not valid YAML ({problem})", line=line) from None
    except yaml.YAMLError as error:
        reason = getattr(error, "reason", None) or str(error)
        raise ConfigError(file, f"not valid YAML ({reason})") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        # PyYAML raises plain ValueError for scalars it half-recognises, e.g. the
        # timestamp 2014-13-45; the user still deserves a message, not a traceback.
        raise ConfigError(file, f"not valid YAML ({error})") from None


def top_level_mapping(file: str, document: object) -> dict:
    if isinstance(document, dict):
        return document
    if document is None:
        Where(file).fail("expected a mapping at the top level, got nothing (the file is empty)")
    Where(file).fail(f"expected a mapping at the top level, got {describe(document)}")
