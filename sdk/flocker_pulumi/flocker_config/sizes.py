"""Storage sizes such as ``volume.maximum_size``, read the way Flocker 0.4 read them."""

from __future__ import annotations

import math
import re
from decimal import Decimal

# Binary multiples, as Flocker used: "1G" is 2**30 bytes.
_MULTIPLIERS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# ASCII digits: Python's \d is any script's digits.
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([KMGT]?)", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"500M"``, ``"2.5G"``, ``"1073741824"`` -> bytes, rounded up to a whole byte."""
    if not isinstance(text, str):
        raise ValueError(f"a size must be a string, not {type(text).__name__}")
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size; use a number of bytes or a number followed by K, M, G or T")
    number, unit = match.groups()
    # Decimal keeps "2.5G" and huge byte counts exact, where float would round.
    return math.ceil(Decimal(number) * _MULTIPLIERS[unit.upper()])
