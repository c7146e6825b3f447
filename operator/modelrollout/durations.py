"""Durations as users write them (``30s``, ``5m``, ``1h30m``, ``14d``).

Kubernetes users know Go's duration strings; PromQL uses the same units for
range selectors. One parser keeps the CRD pattern, the spec model and the
query templates agreeing on what a well-formed duration is.
"""

from __future__ import annotations

import datetime
import re

# Units PromQL and Go both understand, plus days and weeks (PromQL has them).
_UNIT_SECONDS: dict[str, float] = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
}
# Kept in sync with the CRD's `pattern` for duration fields (tests check it).
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d|w))+$"
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_WHOLE = re.compile(DURATION_PATTERN)


class DurationError(ValueError):
    """The text is not a duration such as ``30s``, ``5m`` or ``1h30m``; the message says why."""


def parse_duration(text: str) -> datetime.timedelta:
    """Parse ``1h30m`` into a timedelta; raise :class:`DurationError` otherwise.

    The error message does not repeat the text: callers show it beside the value.
    """
    # fullmatch: `$` also matches before a trailing newline in Python (not in Go).
    if not isinstance(text, str) or not _WHOLE.fullmatch(text):
        raise DurationError("must be a duration like 30s, 5m, 1h30m or 14d")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))
    if seconds <= 0:
        raise DurationError("must be longer than zero")
    try:
        return datetime.timedelta(seconds=seconds)
    except OverflowError:
        raise DurationError("is too long (at most 999999999 days)") from None


def format_duration(value: datetime.timedelta) -> str:
    """Render a timedelta the way PromQL range selectors accept it (``90s`` -> ``1m30s``)."""
    millis = round(value.total_seconds() * 1000)
    if millis <= 0:
        raise DurationError("must be longer than zero")
    parts: list[str] = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
