"""Durations as users write them: ``30``, ``1.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"7d"``.

Internally every duration is a float number of seconds in a field whose name ends in ``_s``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration_s(value: Any) -> float:
    """Return ``value`` in seconds; raise ``ValueError`` naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '30s', '5m', '1h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not text:
            raise ValueError("empty duration")
        try:
            seconds = float(text)
        except ValueError:
            pos = 0
            seconds = 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS_S[match.group(2)]
                pos = match.end()
            if pos != len(text) or pos == 0:
                raise ValueError(
                    f"cannot parse duration {value!r}: use seconds or units ms, s, m, h, d, w (e.g. '1h30m')"
                ) from None
    else:
        raise ValueError("a duration must be a number of seconds or a string like '30s', '5m', '1h'")
    if seconds != seconds or seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    return seconds


DurationS = Annotated[float, BeforeValidator(parse_duration_s)]
"""A pydantic field type: accepts numbers or duration strings, holds seconds."""
