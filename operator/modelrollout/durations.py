"""Durations as users write them (``30s``, ``5m``, ``1h30m``, ``14d``).

Kubernetes users know Go's duration strings; PromQL uses the same units for
range selectors. One parser keeps the CRD pattern, the spec model and the
query templates agreeing on what a well-formed duration is.
"""

from __future__ import annotations

import datetime
import re

# Units PromQL and Go both understand, plus days and weeks (PromQL has them), in milliseconds:
# integers, so no length of digits overflows a float.
_UNIT_MILLIS: dict[str, int] = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}
# Go's time.Duration ends at 2^63-1 ns (about 292 years): no Kubernetes tool takes a longer one, and a
# longer one overflows the date arithmetic of the decision core (now + 2 * minStepDuration).
_MAX_MILLIS = (2**63 - 1) // 1_000_000
_TOO_LONG = "is too long (at most 2562047h, Go's longest duration)"
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
    parts = _PART.findall(text)
    if any(len(n.lstrip("0")) > 20 for n, _ in parts):  # int() refuses 4300 digits and more
        raise DurationError(_TOO_LONG)
    millis = sum(int(n) * _UNIT_MILLIS[unit] for n, unit in parts)
    if millis <= 0:
        raise DurationError("must be longer than zero")
    if millis > _MAX_MILLIS:
        raise DurationError(_TOO_LONG)
    return datetime.timedelta(milliseconds=millis)


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
