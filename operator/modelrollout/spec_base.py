"""What every part of the spec model shares: camelCase fields, durations, field-precise errors.

Kept apart from ``spec`` so the spec's parts (the experiment itself, its
webhooks and notifications) can live in modules of a readable size.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from modelrollout import durations

# RFC 1123 label, as Kubernetes requires for workload (Deployment) names.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# RFC 1123 subdomain, as Kubernetes requires for object names.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _problem(message: str, *, subpath: str = "", value: Any = None) -> PydanticCustomError:
    """A validation error whose location can point below the field (``[2]``)."""
    if isinstance(value, str):  # a lone surrogate (JSON can carry "\ud800") cannot cross into pydantic-core
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return PydanticCustomError("spec", message, {"subpath": subpath, "value": value})


def _fitting(value: str, pattern: re.Pattern[str], limit: int, message: str) -> str:
    """``value`` when ``pattern`` matches all of it within ``limit`` characters; else a field error."""
    if len(value) > limit or not pattern.fullmatch(value):
        raise _problem(message, value=value)
    return value


def _to_duration(value: Any) -> datetime.timedelta:
    if isinstance(value, datetime.timedelta):
        return value
    try:
        return durations.parse_duration(value)
    except durations.DurationError as e:
        raise _problem(str(e), value=value) from None


Duration = Annotated[datetime.timedelta, pydantic.BeforeValidator(_to_duration)]
Percent = Annotated[int, Field(ge=0, le=100, strict=True)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )
