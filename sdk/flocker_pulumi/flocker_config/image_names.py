"""Docker image references, parsed by Docker's grammar rather than Flocker's.

Flocker split ``image`` on the last ':' so ``registry:5000/repo`` became repository
``registry`` with tag ``5000/repo``. Here a ':' only starts a tag when it comes after
the last '/', and the registry part may carry a port.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Grammar from distribution/reference (the code Docker itself uses).
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
# ASCII: Docker's \w, unlike Python's, is not Unicode.
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}")
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}")
_MAX_NAME_LENGTH = 255

DEFAULT_TAG = "latest"


@dataclass(frozen=True)
class ImageName:
    """``repository`` includes any registry host; ``tag`` is None only with a digest."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_image_name(text: str) -> ImageName:
    """Parse ``[registry[:port]/]path[:tag][@digest]``; ValueError says why not."""
    if not isinstance(text, str):
        raise ValueError(f"an image name must be a string, not {type(text).__name__}")
    if text != text.strip() or any(c.isspace() for c in text):
        raise ValueError("an image name cannot contain spaces")
    if not text:
        raise ValueError("the image name is empty")

    remainder, at, digest = text.partition("@")
    if at:
        _check_digest(digest)
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    tag: str | None = None
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"the tag {tag!r} is not valid (letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-')")
    if not remainder:
        raise ValueError("the repository part of the image name is empty")
    _check_repository(remainder)
    if tag is None and not at:
        tag = DEFAULT_TAG
    return ImageName(remainder, tag, digest if at else None)


def _check_digest(digest: str) -> None:
    if digest.startswith("sha256:"):
        if not _SHA256.fullmatch(digest):
            raise ValueError("a sha256 digest must be 'sha256:' followed by 64 lowercase hex digits")
    elif not _DIGEST.fullmatch(digest):
        raise ValueError(f"the digest {digest!r} is not of the form 'algorithm:hex'")


def _check_repository(repository: str) -> None:
    if len(repository) > _MAX_NAME_LENGTH:
        raise ValueError(f"the repository name is longer than {_MAX_NAME_LENGTH} characters")
    components = repository.split("/")
    first = components[0]
    # Docker's rule: the first component names a registry only if it looks like a host.
    if len(components) > 1 and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.fullmatch(first):
            raise ValueError(f"the registry {first!r} is not a valid host[:port]")
        components = components[1:]
    for component in components:
        if not component:
            raise ValueError(f"the repository {repository!r} has an empty path component")
        if not _PATH_COMPONENT.fullmatch(component):
            if component.lower() != component:
                raise ValueError(f"the repository {repository!r} must be lowercase")
            raise ValueError(
                f"the repository path component {component!r} is not valid "
                "(lowercase letters and digits, separated by '.', '_', '__' or '-')"
            )
