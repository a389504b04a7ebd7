"""Reading a YAML file into plain Python values, with every failure as a ConfigError."""

from __future__ import annotations

import os

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

from .errors import ConfigError, Where, describe

_MERGE_TAG = "tag:yaml.org,2002:merge"
# Ten times what a large configuration needs (50 applications take some 15 KB and 1,000
# values), and small enough that PyYAML, which takes 10 s to read 1 MB, refuses the worst
# file within a second. The depth keeps the composer well within Python's stack.
MAX_YAML_BYTES = 128 * 1024
MAX_YAML_NODES = 10_000
MAX_YAML_DEPTH = 64


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


class _BoundedLoader(_UniqueKeyLoader):
    """Refuses documents that are small as text but huge as values ("billion laughs": each
    alias repeats a value that is itself made of aliases) while they are composed, before
    anything is built from them; and nesting deep enough to exhaust Python's stack.

    The composer shares one node among all the aliases to it; what is counted is the size
    of the document with every alias written out, which is what the code reading it sees.
    """

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self._values = 0  # so far, aliases expanded
        self._expanded: dict[int, int] = {}  # id(node) -> values in it, aliases expanded
        self._depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node:  # type: ignore[override]
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._expanded:  # still being composed: the alias is inside its own anchor
                raise ComposerError(None, None, "a value refers to itself through an alias", mark)
            self._count(self._expanded[id(node)], mark)
            return node
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise ComposerError(None, None, f"values nested deeper than {MAX_YAML_DEPTH} levels", mark)
        before = self._values
        self._count(1, mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._expanded[id(node)] = self._values - before
        return node

    def _count(self, values: int, mark: yaml.Mark) -> None:
        # As they come, not once a collection ends: a long flat list is refused at the limit.
        self._values += values
        if self._values > MAX_YAML_NODES:
            raise ComposerError(None, None, f"more than {MAX_YAML_NODES} values once its aliases are expanded", mark)


def read_yaml(path: str | os.PathLike[str]) -> object:
    """The document in ``path``; any I/O or YAML problem becomes a ConfigError."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as stream:
            # Never more than the limit in memory, whatever the file (or device) holds.
            data = stream.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(file, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(file, "is a directory, expected a YAML file") from None
    except OSError as error:
        raise ConfigError(file, f"cannot read the file ({error.strerror or error})") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(file, f"the file is larger than {MAX_YAML_BYTES} bytes; a configuration is far smaller")
    try:
        return yaml.load(data, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
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
