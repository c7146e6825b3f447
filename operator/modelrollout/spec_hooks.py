"""Webhooks (gates an HTTP endpoint opens) and notifications (what the experiment tells a chat).

A gate webhook answers "may the experiment go on?": 2xx opens it, anything
else keeps it shut and the experiment holds -- but never forever: after
``deadline`` it stops asking and holds with a condition saying so (or rolls
back, if ``onDeadline: Rollback``), the trap Flagger users fall into (#1450).
URLs and tokens may come from a Secret, since a Slack webhook URL *is* a
credential; they are read when needed and never written anywhere.
"""

from __future__ import annotations

import datetime
import enum
import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from modelrollout.spec_base import _DNS_LABEL, _DNS_SUBDOMAIN, Duration, _fitting, _Model, _problem

_URL = re.compile(r"^https?://[^/\s]+(/\S*)?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def is_url(value: str) -> bool:
    return _URL.fullmatch(value) is not None


class WebhookType(str, enum.Enum):
    PRE_ROLLOUT = "pre-rollout"  # before any traffic moves
    CONFIRM_STEP = "confirm-step"  # before each increase of the candidate's weight
    CONFIRM_PROMOTION = "confirm-promotion"  # before the candidate gets everything
    POST_ROLLOUT = "post-rollout"  # once the experiment has finished, whatever the outcome

    @property
    def is_gate(self) -> bool:
        return self is not WebhookType.POST_ROLLOUT


class OnDeadline(str, enum.Enum):
    HOLD = "Hold"  # stop asking; hold the traffic where it is until a human acts
    ROLLBACK = "Rollback"


class NotifierType(str, enum.Enum):
    WEBHOOK = "webhook"  # the notification as JSON, POSTed
    SLACK = "slack"  # Slack's incoming-webhook format


class NotificationKind(str, enum.Enum):
    STARTED = "Started"
    STEP_ADVANCED = "StepAdvanced"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    GATE_DEADLINE_EXCEEDED = "GateDeadlineExceeded"  # a human has to act


class SecretKeyRef(_Model):
    """A key of a Secret in the experiment's namespace."""

    name: str
    key: str

    @field_validator("name")
    @classmethod
    def _name_is_dns(cls, value: str) -> str:
        return _fitting(value, _DNS_SUBDOMAIN, 253, "must be a Secret name (lower-case RFC 1123)")

    @field_validator("key")
    @classmethod
    def _key_is_valid(cls, value: str) -> str:
        return _fitting(value, _SECRET_KEY, 253, "must be a Secret key (letters, digits, '-', '_', '.')")


class ValueFrom(_Model):
    secret_key_ref: SecretKeyRef


class Endpoint(_Model):
    """Where to send: a literal ``url`` or one read from a Secret, plus an optional bearer token."""

    name: str
    url: str | None = None
    url_from: ValueFrom | None = None
    token_from: ValueFrom | None = None
    timeout: Duration = datetime.timedelta(seconds=10)
    retries: Annotated[int, Field(ge=0, le=10, strict=True)] = 2

    @field_validator("name")
    @classmethod
    def _name_is_dns(cls, value: str) -> str:
        return _fitting(value, _DNS_LABEL, 63, "must be a lower-case name such as qa-signoff")

    @field_validator("url")
    @classmethod
    def _is_url(cls, value: str | None) -> str | None:
        if value is not None and not _URL.fullmatch(value):
            raise _problem("must be an http:// or https:// URL", value=value)
        return value

    @field_validator("timeout")
    @classmethod
    def _sensible_timeout(cls, value: datetime.timedelta) -> datetime.timedelta:
        if not datetime.timedelta(0) < value <= datetime.timedelta(minutes=5):
            raise _problem("must be more than 0s and at most 5m", value=str(value))
        return value

    @model_validator(mode="after")
    def _one_url(self) -> Endpoint:
        if (self.url is None) == (self.url_from is None):
            raise _problem(f"{self.name!r} needs exactly one of url or urlFrom", value=None)
        return self


class WebhookSpec(Endpoint):
    type: WebhookType
    # How long a gate may stay shut before the experiment stops asking.
    deadline: Duration = datetime.timedelta(hours=1)
    on_deadline: OnDeadline = OnDeadline.HOLD
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("deadline")
    @classmethod
    def _positive_deadline(cls, value: datetime.timedelta) -> datetime.timedelta:
        if value <= datetime.timedelta(0):
            raise _problem("must be longer than zero", value=str(value))
        return value


class NotificationSpec(Endpoint):
    type: NotifierType = NotifierType.WEBHOOK
    events: list[NotificationKind] = Field(default_factory=lambda: list(NotificationKind))
    timeout: Duration = datetime.timedelta(seconds=5)
