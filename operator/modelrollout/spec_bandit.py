"""The bandit's part of the spec (``strategy: Bandit``, ``core/banditrun.py``).

A multi-armed bandit shares the traffic among the baseline and the candidates
by how likely each is to be the best on a reward (a ratio metric, such as
conversions / requests), re-allocating every ``interval`` within ``minWeight``
and ``maxStepChange``; it stops when one arm has been the best with probability
``confidence`` for ``intervalsRequired`` intervals in a row (or at
``maxDuration``), and a stratified comparison with the baseline decides.
"""

from __future__ import annotations

import datetime
from typing import Annotated

from pydantic import Field, field_validator

from modelrollout.spec_base import _DNS_LABEL, Duration, _fitting, _Model, _problem

# The defaults where API.md is silent (README "Bandit"): a floor of 10 % keeps enough baseline
# traffic for the final comparison (benchmarks/RESULTS.md: at 5 % it has almost no power).
DEFAULT_MIN_WEIGHT = 10
DEFAULT_MAX_STEP_CHANGE = 20
DEFAULT_MAX_DURATION = datetime.timedelta(days=7)


class BanditSpec(_Model):
    reward: str  # a ratio metric of spec.metrics (successes / trials), higher is better
    min_weight: Annotated[int, Field(ge=1, le=100, strict=True)] = DEFAULT_MIN_WEIGHT
    max_step_change: Annotated[int, Field(ge=1, le=100, strict=True)] = DEFAULT_MAX_STEP_CHANGE
    confidence: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.95
    intervals_required: Annotated[int, Field(ge=1, le=100, strict=True)] = 3
    interval: Duration = datetime.timedelta(minutes=1)
    max_duration: Duration = DEFAULT_MAX_DURATION
    # The relative lift the final comparison is tuned for: its always-valid interval is narrowest
    # for effects of about this size (core.lift.mixture_tau).
    minimum_effect: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 0.05
    auto_promote: bool = True

    @field_validator("reward")
    @classmethod
    def _reward_is_a_name(cls, value: str) -> str:
        return _fitting(value, _DNS_LABEL, 63, "must be a metric name such as conversion")

    @field_validator("interval", "max_duration")
    @classmethod
    def _positive(cls, value: datetime.timedelta) -> datetime.timedelta:
        if value <= datetime.timedelta(0):
            raise _problem("must be longer than 0s", value=str(value))
        return value
