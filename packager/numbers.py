"""What counts as a number in the files the packer reads (config.json, GGUF
metadata, adapters): JSON and GGUF both hold booleans and floats where a
whole number belongs, and NaN where a real one does. One reading for all."""

from __future__ import annotations

import math


def whole(value: object, low: int = 1, high: int = 2**31 - 1) -> int | None:
    """`value` if it is a whole number from `low` to `high`, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def finite(value: object) -> float | None:
    """`value` as a float if it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def positive(value: object) -> float | None:
    """`value` as a float if it is a finite number above 0, else None."""
    number = finite(value)
    return number if number is not None and number > 0 else None
