"""The one error type of the loader, and where in a file an error was found.

Every problem, from a missing file to a dangling link, becomes a ``ConfigError``
whose text follows one shape, so users learn to read a single format:

    <file>[, line N]: [application '<name>'][, ][key '<path>']: <reason>.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn


class ConfigError(Exception):
    """A configuration problem; ``str(error)`` (and ``message``) is ready to show."""

    file: str
    application: str | None
    key: str | None
    line: int | None
    reason: str
    message: str

    def __init__(
        self,
        file: str,
        reason: str,
        *,
        application: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.file = file
        self.application = application
        self.key = key
        self.line = line
        self.reason = reason
        self.message = format_error(file, reason, application=application, key=key, line=line)
        super().__init__(self.message)


def format_error(
    file: str,
    reason: str,
    *,
    application: str | None = None,
    key: str | None = None,
    line: int | None = None,
) -> str:
    location = file if line is None else f"{file}, line {line}"
    subject = []
    if application is not None:
        subject.append(f"application '{application}'")
    if key is not None:
        subject.append(f"key '{key}'")
    if subject:
        location = f"{location}: {', '.join(subject)}"
    return f"{location}: {reason}."


@dataclass(frozen=True)
class Where:
    """A position inside a parsed file: file, application and dotted key path.

    Validators receive one of these instead of building messages themselves, so
    every error names its place the same way.
    """

    file: str
    application: str | None = None
    key: str | None = None

    def at(self, part: str | int) -> Where:
        if isinstance(part, int):
            key = f"{self.key or ''}[{part}]"
        elif self.key is None:
            key = part
        else:
            key = f"{self.key}.{part}"
        return Where(self.file, self.application, key)

    def fail(self, reason: str) -> NoReturn:
        raise ConfigError(self.file, reason, application=self.application, key=self.key)


def describe(value: object) -> str:
    """Show a YAML value the way the user wrote it, for 'got ...' in messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a value of type '{type(value).__name__}'"
