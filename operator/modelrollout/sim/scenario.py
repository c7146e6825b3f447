"""The public scenario format of ``modelrollout simulate`` (YAML), validated with pydantic.

A scenario says how much traffic arrives, how the rollout is scheduled, how
each variant behaves and how that changes over time.  It is a public format
(documented in ``docs/simulate.md``), so every mistake is reported with the
field it is in (``candidate.errorRate: ...``), and unknown fields are refused
rather than silently ignored::

    traffic: {rate: 200}                 # requests/s, Poisson arrivals
    schedule: {steps: [5, 25, 50, 100], stepDuration: 60s, interval: 10s}   # minSamples: 100
    baseline:  {errorRate: 0.01, latency: {median: 200, sigma: 0.5}}
    candidate: {errorRate: 0.02, latency: {median: 200, sigma: 0.5}}
    events:                              # optional changes over time
      - {at: 120s, variant: both, errorRate: 0.03}       # baseline | candidate | both
      - {at: 150s, variant: candidate, latency: {median: 300}}
    analysis: {alpha: 0.05, failureLimit: 1}   # optional overrides of the experiment's analysis
    errors: {dispersion: 100}            # optional: bursty errors (see below)
    duration: 15m                        # optional cap on virtual time per run

Latency is lognormal (``median`` in ms, ``sigma`` of its log) and bucketed
into Istio's histogram buckets.  ``errors.dispersion`` makes errors bursty:
each interval, each variant's error probability is drawn from a Beta
distribution with the configured rate as its mean and ``dispersion`` as its
concentration (smaller is burstier); without it errors are plain Bernoulli.
The experiment under test has the two builtin guardrails ``error-rate`` and
``latency-p95`` with no thresholds, i.e. the operator's defaults.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from modelrollout import spec, spec_base
from modelrollout.localstack import traffic

BASELINE = "baseline"
CANDIDATE = "candidate"

Probability = Annotated[float, Field(ge=0, le=1)]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Traffic(_Model):
    rate: Annotated[float, Field(gt=0)]  # requests per second reaching the service (both variants)


class Schedule(_Model):
    steps: list[int] = Field(default_factory=lambda: [5, 25, 50, 100])
    step_duration: spec_base.Duration = datetime.timedelta(seconds=60)
    interval: spec_base.Duration = datetime.timedelta(seconds=10)
    min_samples: Annotated[int, Field(ge=0)] = 100


class Latency(_Model):
    median: Annotated[float, Field(gt=0)]  # ms
    sigma: Annotated[float, Field(ge=0)]  # of log(latency)


class LatencyChange(_Model):
    median: Annotated[float, Field(gt=0)] | None = None
    sigma: Annotated[float, Field(ge=0)] | None = None


class Behaviour(_Model):
    error_rate: Probability
    latency: Latency

    def profile(self) -> traffic.VariantProfile:
        return traffic.VariantProfile(self.error_rate, self.latency.median, self.latency.sigma)


class Event(_Model):
    at: spec_base.Duration  # from the start of the experiment
    variant: Literal["baseline", "candidate", "both"]
    error_rate: Probability | None = None
    latency: LatencyChange | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> Event:
        if self.error_rate is None and self.latency is None:
            raise ValueError("an event must set errorRate or latency")
        return self

    def apply(self, profile: traffic.VariantProfile) -> traffic.VariantProfile:
        latency = self.latency or LatencyChange()
        return traffic.VariantProfile(
            profile.error_rate if self.error_rate is None else self.error_rate,
            profile.latency_median_ms if latency.median is None else latency.median,
            profile.latency_sigma if latency.sigma is None else latency.sigma,
        )


class AnalysisOverrides(_Model):
    alpha: Annotated[float, Field(gt=0, lt=1)] | None = None
    failure_limit: Annotated[int, Field(ge=1)] | None = None


class Errors(_Model):
    dispersion: Annotated[float, Field(gt=0)]  # Beta concentration of the per-interval error probability


class Scenario(_Model):
    traffic: Traffic
    schedule: Schedule = Field(default_factory=Schedule)
    baseline: Behaviour
    candidate: Behaviour
    events: list[Event] = Field(default_factory=list)
    analysis: AnalysisOverrides = Field(default_factory=AnalysisOverrides)
    errors: Errors | None = None
    duration: spec_base.Duration | None = None

    @model_validator(mode="after")
    def _runs_at_least_one_interval(self) -> Scenario:
        if self.duration is not None and self.duration < self.schedule.interval:
            raise ValueError("duration must be at least one schedule.interval")
        return self

    def experiment(self) -> spec.ExperimentSpec:
        """The ModelExperiment spec the simulated operator runs (validated like any other)."""
        analysis = {
            key: value
            for key, value in (("alpha", self.analysis.alpha), ("failureLimit", self.analysis.failure_limit))
            if value is not None
        }
        raw = {
            "virtualService": {"name": "simulated"},
            "baseline": {"subset": BASELINE, "workload": BASELINE},
            "candidate": {"subset": CANDIDATE, "workload": CANDIDATE},
            "canary": {
                "steps": self.schedule.steps,
                "interval": self.schedule.interval,
                "minStepDuration": self.schedule.step_duration,
                "minSamples": self.schedule.min_samples,
            },
            "analysis": analysis,
        }
        try:
            return spec.parse_spec(raw)
        except spec.SpecError as e:  # e.g. steps not ascending: say it in the scenario's terms
            raise ScenarioError([_scenario_terms(str(problem)) for problem in e.problems]) from None

    def nominal_seconds(self) -> float:
        """When a candidate whose every check passes at the first chance is promoted."""
        steps = self.schedule.steps
        before_full = steps.index(100) if 100 in steps else len(steps)
        interval = self.schedule.interval.total_seconds()
        per_step = math.ceil(self.schedule.step_duration.total_seconds() / interval - 1e-9) * interval
        return before_full * max(per_step, interval)

    def horizon_seconds(self) -> float:
        """Virtual time after which an undecided run stops: ``duration``, or 4x the nominal plan."""
        if self.duration is not None:
            return self.duration.total_seconds()
        return 4 * max(self.nominal_seconds(), self.schedule.interval.total_seconds())

    def timeline(self) -> Timeline:
        return Timeline.of(self)


@dataclasses.dataclass(frozen=True)
class Timeline:
    """Each variant's profile from each change point on (events applied in time order)."""

    starts: tuple[float, ...]  # seconds; the first is 0
    profiles: tuple[dict[str, traffic.VariantProfile], ...]

    @classmethod
    def of(cls, scenario: Scenario) -> Timeline:
        current = {BASELINE: scenario.baseline.profile(), CANDIDATE: scenario.candidate.profile()}
        starts, profiles = [0.0], [dict(current)]
        for event in sorted(scenario.events, key=lambda e: e.at):
            for variant in (BASELINE, CANDIDATE):
                if event.variant in (variant, "both"):
                    current[variant] = event.apply(current[variant])
            at = event.at.total_seconds()
            if at == starts[-1]:
                profiles[-1] = dict(current)
            else:
                starts.append(at)
                profiles.append(dict(current))
        return cls(tuple(starts), tuple(profiles))

    def segments(self, start: float, end: float) -> list[tuple[float, dict[str, traffic.VariantProfile]]]:
        """The pieces of [start, end) with one profile each: (length in seconds, profiles)."""
        index = bisect.bisect_right(self.starts, start) - 1
        pieces: list[tuple[float, dict[str, traffic.VariantProfile]]] = []
        while start < end:
            stop = self.starts[index + 1] if index + 1 < len(self.starts) else end
            stop = min(stop, end)
            pieces.append((stop - start, self.profiles[index]))
            start, index = stop, index + 1
        return pieces


class ScenarioError(ValueError):
    """The scenario cannot be simulated; ``problems`` name the fields at fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid scenario: " + "; ".join(problems))


def parse(raw: Mapping[str, Any] | None) -> Scenario:
    """Validate a scenario document or raise :class:`ScenarioError`."""
    if not isinstance(raw, Mapping):
        raise ScenarioError([f"a scenario is a mapping of fields, got {type(raw).__name__}"])
    try:
        scenario = Scenario.model_validate(dict(raw))
    except pydantic.ValidationError as e:
        raise ScenarioError([_problem(error) for error in e.errors()]) from None
    scenario.experiment()  # the schedule must also make a valid experiment
    return scenario


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ScenarioError([f"{path}: not valid YAML: {e}"]) from None
    return parse(raw)


def _problem(error: Any) -> str:
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    ctx = error.get("ctx") or {}
    subpath = ctx.get("subpath", "")
    if subpath:
        path += subpath if subpath.startswith("[") else f".{subpath}"
    message = error["msg"].removeprefix("Value error, ")
    value = ctx.get("value", error.get("input"))
    if error["type"] == "extra_forbidden":
        message = "is not a field of the scenario format (misspelled?)"
    elif error["type"] == "missing":
        message, value = "is required", None
    shown = "" if value is None or isinstance(value, Mapping) else f" (got {value!r})"
    return f"{path or 'scenario'}: {message}{shown}"


def _scenario_terms(problem: str) -> str:
    for spec_path, scenario_path in (
        ("spec.canary.minStepDuration", "schedule.stepDuration"),
        ("spec.canary", "schedule"),
        ("spec.analysis", "analysis"),
    ):
        problem = problem.replace(spec_path, scenario_path)
    return problem
