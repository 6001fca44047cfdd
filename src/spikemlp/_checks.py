"""Type and range checks for the numbers a user passes: a wrong value is refused, never coerced.

``int(2.5)`` would silently give 2 and ``tau > 1`` is False for NaN only by accident of the comparison;
these helpers say what was wrong instead. A module of its own, importing nothing of spikemlp, so that
every part may use it.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["check_int", "check_real"]


def check_int(value, name: str, minimum: int | None = None) -> int:
    """``value`` as an int; ValueError unless it is an integer (not a bool, float or string) of at least
    ``minimum``. ValueError for a wrong type too, as the command line reports ValueErrors as one line."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def check_real(value, name: str, above: float | None = None) -> float:
    """``value`` as a float; ValueError unless it is a finite real number greater than ``above``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if above is not None and not value > above:
        raise ValueError(f"{name} must be greater than {above}, got {value}")
    return float(value)
