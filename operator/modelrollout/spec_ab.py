"""The A/B test's part of the spec: split, stickiness, cohort, objective, fairness.

``strategy: ABTest`` asks "is the candidate better for the business?": users
are assigned to a variant once (a cookie keeps them there), business metrics
are compared with always-valid intervals, and the outcome is Ship, Discard or
Iterate (docs/abtest.md).
"""

from __future__ import annotations

import datetime
import enum
import re
from typing import Annotated, Any

from pydantic import Field, field_validator

from modelrollout import templates
from modelrollout.spec_base import Duration, _Model, _problem

# A cookie name is an RFC 6265 token; kept to what is also safe in a regex and a header.
_COOKIE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
# Prometheus label names (segments are labels of the business metrics).
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Istio HTTPMatchRequest fields a cohort may use; StringMatch fields take exact, prefix or regex.
_STRING_MATCH_FIELDS = frozenset({"uri", "scheme", "method", "authority"})
_MAP_MATCH_FIELDS = frozenset({"headers", "withoutHeaders", "queryParams"})
_OTHER_MATCH_FIELDS = frozenset({"ignoreUriCase", "sourceLabels", "sourceNamespace", "port", "name"})
_MAX_PORT = 65535


class Direction(str, enum.Enum):
    INCREASE = "Increase"
    DECREASE = "Decrease"


class Stickiness(_Model):
    """Cookie affinity: a user's first request is split by weight, the cookie keeps them there."""

    cookie: str | None = None  # default: mexp-<experiment>
    max_age: Duration | None = None  # default: abTest.maxDuration

    @field_validator("cookie")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and not _COOKIE.fullmatch(value):
            raise _problem("must be a cookie name (1-64 letters, digits or !#$%&'*+.^_`|~-)", value=value)
        return value


class FairnessSpec(_Model):
    """No segment may be harmed by more than ``margin`` (relative), corrected across segments."""

    margin: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
    metric: str | None = None  # default: the objective


class ABTestSpec(_Model):
    # Percent of participating users on the candidate; with several, on all (shared equally).
    split: Annotated[int, Field(ge=1, le=99, strict=True)] = 50
    interval: Duration = datetime.timedelta(minutes=1)
    max_duration: Duration = datetime.timedelta(days=14)
    auto_promote: bool = False
    stickiness: Stickiness = Field(default_factory=Stickiness)
    match: list[dict[str, Any]] | None = None
    # Both arms run the same model: checks split, metrics and SRM; the only good outcome is "no difference".
    # One candidate only (spec.py refuses it with several).
    aa: bool = False
    # Per-variant count of newly assigned users over {{ interval }}: the unit the split randomizes.
    assignment_query: str | None = None
    min_samples: Annotated[int, Field(ge=1, strict=True)] = 100
    fairness: FairnessSpec | None = None

    @field_validator("interval", "max_duration")
    @classmethod
    def _positive(cls, value: datetime.timedelta) -> datetime.timedelta:
        if value <= datetime.timedelta(0):
            raise _problem("must be longer than 0s", value=str(value))
        return value

    @field_validator("match")
    @classmethod
    def _cohort(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value is None:
            return value
        if not value:
            raise _problem("must list at least one match, or be omitted", value=value)
        for index, match in enumerate(value):
            _check_match(match, f"[{index}]")
        return value

    @field_validator("assignment_query")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is not None:
            unknown = templates.unknown_placeholders(value)
            if unknown:
                known = ", ".join(sorted(templates.VARIABLES))
                raise _problem(
                    f"uses unknown placeholder {{{{ {unknown[0]} }}}} (known: {known})", value=value
                )
        return value


def _field(name: Any) -> str:
    """A name from the manifest as a path step: ``.x-tier``, or ``['a\\nb']`` (one line per problem)."""
    return f".{name}" if str(name).isprintable() else f"[{str(name)!r}]"


def _check_match(match: Any, where: str) -> None:
    """An Istio HTTPMatchRequest: known fields, string matches with exactly one of exact/prefix/regex."""
    if not isinstance(match, dict):
        raise _problem("must be an Istio HTTPMatchRequest object", subpath=where, value=match)
    for key, condition in match.items():
        if key in _STRING_MATCH_FIELDS:
            _check_string_match(condition, f"{where}.{key}")
        elif key in _MAP_MATCH_FIELDS:
            if not isinstance(condition, dict) or not condition:
                raise _problem("must map names to string matches", subpath=f"{where}.{key}", value=condition)
            for name, string_match in condition.items():
                # Header names are ASCII: compared as the CRD's rule does (lowerAscii), so "\u212a" is no K.
                if key == "headers" and str(name).isascii() and str(name).lower() == "cookie":
                    raise _problem(
                        "may not match on the cookie header: the experiment's stickiness uses it",
                        subpath=f"{where}.{key}{_field(name)}",
                        value=string_match,
                    )
                _check_string_match(string_match, f"{where}.{key}{_field(name)}")
        elif key in _OTHER_MATCH_FIELDS:
            _check_other_field(key, condition, f"{where}.{key}")
        else:
            known = ", ".join(sorted(_STRING_MATCH_FIELDS | _MAP_MATCH_FIELDS | _OTHER_MATCH_FIELDS))
            raise _problem(
                f"is not a field of an Istio HTTPMatchRequest (known: {known})",
                subpath=f"{where}{_field(key)}",
                value=condition,
            )


def _check_other_field(key: str, value: Any, where: str) -> None:
    """The rest of an HTTPMatchRequest is copied into the VirtualService as is: typed as Istio types it."""
    if key == "ignoreUriCase" and not isinstance(value, bool):
        raise _problem("must be true or false", subpath=where, value=value)
    if key in ("name", "sourceNamespace") and not isinstance(value, str):
        raise _problem("must be a string", subpath=where, value=value)
    if key == "port" and (
        isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_PORT
    ):
        raise _problem(f"must be a port number in 1..{_MAX_PORT}", subpath=where, value=value)
    if key == "sourceLabels":
        if not isinstance(value, dict):
            raise _problem("must map label names to values", subpath=where, value=value)
        for name, label in value.items():
            if not isinstance(label, str):
                raise _problem("must be a string", subpath=f"{where}{_field(name)}", value=label)


def _check_string_match(condition: Any, where: str) -> None:
    if (
        not isinstance(condition, dict)
        or len(condition) != 1
        or next(iter(condition))
        not in (
            "exact",
            "prefix",
            "regex",
        )
    ):
        raise _problem("needs exactly one of exact, prefix or regex", subpath=where, value=condition)
    kind, text = next(iter(condition.items()))
    if not isinstance(text, str):
        raise _problem("must be a string", subpath=f"{where}.{kind}", value=text)
    if kind == "regex":
        try:
            re.compile(text)
        except re.error as e:
            raise _problem(
                f"is not a valid regular expression: {e}", subpath=f"{where}.regex", value=text
            ) from None


class ObjectiveSpec(_Model):
    metric: str
    direction: Direction = Direction.INCREASE
    minimum_effect: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)]
    power: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.8


def check_segments(value: list[str] | None) -> list[str] | None:
    """Segment labels: Prometheus label names, each once."""
    if value is None:
        return value
    for index, label in enumerate(value):
        if not _LABEL.fullmatch(label):
            raise _problem(
                "must be a Prometheus label name such as region", subpath=f"[{index}]", value=label
            )
        if value.index(label) != index:
            raise _problem("repeats a segment label", subpath=f"[{index}]", value=label)
    return value


class AgreementSpec(_Model):
    """The candidate must agree with the baseline at least ``min`` of the time (a ratio metric)."""

    metric: str
    min: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class ShadowSpec(_Model):
    """Dark launch: a copy of ``mirrorPercent`` % of the baseline's requests goes to the candidate."""

    mirror_percent: Annotated[int, Field(ge=1, le=100, strict=True)] = 100
    duration: Duration
    agreement: AgreementSpec | None = None

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: datetime.timedelta) -> datetime.timedelta:
        if value <= datetime.timedelta(0):
            raise _problem("must be longer than 0s", value=str(value))
        return value
