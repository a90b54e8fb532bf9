"""Three spatial values (x, y, z) as a typed tuple, from an array, a shape, a list or JSON.

The one conversion for sizes, spacings and points that the code types ``tuple[int, int, int]`` /
``tuple[float, float, float]``: anything but exactly three values is a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import SupportsFloat, SupportsIndex, SupportsInt


def _three(values: list, what: str) -> None:
    if len(values) != 3:
        raise ValueError(f"expected 3 {what} values (x, y, z), got {len(values)}: {values}")


def int_triple(values: Iterable[SupportsInt | SupportsIndex | str]) -> tuple[int, int, int]:
    """``(int(x), int(y), int(z))`` of three values."""
    items = [int(v) for v in values]
    _three(items, "integer")
    return items[0], items[1], items[2]


def float_triple(
    values: Iterable[SupportsFloat | SupportsIndex | str],
) -> tuple[float, float, float]:
    """``(float(x), float(y), float(z))`` of three values."""
    items = [float(v) for v in values]
    _three(items, "float")
    return items[0], items[1], items[2]


__all__ = ["float_triple", "int_triple"]
