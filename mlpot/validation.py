"""The one check behind the "must be a positive number" errors of mlpot's settings.

Settings arrive from YAML, ``--set`` and keyword arguments, so a value may be a bool, a string, NaN or
infinite as easily as a wrong number; every setting that must be a positive quantity is checked here,
with the same message shape everywhere: ``<name> must be a positive number [of <unit>], got <value>``.
"""

from __future__ import annotations

import math
from typing import Any, Optional


def positive_number(name: str, value: Any, unit: str = "") -> float:
    """``value`` as a float if it is a finite number > 0 (not a bool); else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        of_unit = f" of {unit}" if unit else ""
        raise ValueError(f"{name} must be a positive number{of_unit}, got {value!r}")
    return float(value)


def optional_positive_number(name: str, value: Any, unit: str = "", none: str = "None") -> Optional[float]:
    """As :func:`positive_number`, but ``None`` is allowed (spelled ``none`` in the message: "null" for YAML)."""
    if value is None:
        return None
    try:
        return positive_number(name, value, unit)
    except ValueError:
        of_unit = f" of {unit}" if unit else ""
        raise ValueError(f"{name} must be a positive number{of_unit} or {none}, got {value!r}") from None
