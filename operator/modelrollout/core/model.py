"""The vocabulary of the decision core: phases, verdicts, observations, decisions.

Everything here is immutable data.  The state an experiment is in lives in
its ``status`` (so a restarted operator continues where it was); ``State``
is that status as the core sees it, and a ``Decision`` says what the next
state is, what to do to the traffic, what to tell the user and when to look
again.  No I/O and no clock: "now" is always passed in.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping
from typing import Any, TypeGuard

from modelrollout import ports


class Phase(str, enum.Enum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"

    @property
    def is_final(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED)


class Action(str, enum.Enum):
    """What the last decision did; shown as ``status.decision``."""

    CONTINUE = "Continue"
    PROMOTE = "Promote"
    ROLLBACK = "Rollback"
    HOLD = "Hold"


class Verdict(str, enum.Enum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"  # data is there but does not decide yet
    NO_DATA = "NoData"  # the query ran and measured nothing
    ERROR = "Error"  # the query could not run (timeout, unreachable, invalid)

    @property
    def is_missing(self) -> bool:
        return self in (Verdict.NO_DATA, Verdict.ERROR)


class Gate(str, enum.Enum):
    """Manual gates: annotations a user (or Git) sets on the experiment."""

    PROMOTE = "modelrollout.io/promote"
    ABORT = "modelrollout.io/abort"
    RESTART = "modelrollout.io/restart"

    @property
    def short(self) -> str:
        return self.value.split("/", 1)[1]


@dataclasses.dataclass(frozen=True)
class Counts:
    """Events out of a total in one interval: errors of requests, slow of requests, successes.

    Floats: a user's ``ratio:`` queries may use ``increase()``, which extrapolates.
    """

    events: float
    total: float


MAX_COUNT = 1e12  # more requests in one window than any mesh serves: a broken exporter, not data


def plausible_count(value: float | None) -> TypeGuard[float]:
    """A count a window can hold: finite, not negative, below ``MAX_COUNT``."""
    return value is not None and 0 <= value < MAX_COUNT


@dataclasses.dataclass(frozen=True)
class Sums:
    """One interval's raw material of a ratio or mean metric for one variant (A/B tests).

    A ratio: ``total`` successes of ``count`` observations.  A mean: the ``total``
    of ``count`` values, and the sum of their ``squares`` when it is exported.
    """

    count: float
    total: float
    squares: float | None = None


# A latency histogram of one interval: cumulative counts per bucket edge (ms), ascending,
# the last edge being +inf (Prometheus' ``le`` buckets, as Istio exports them).
Histogram = tuple[tuple[float, float], ...]


@dataclasses.dataclass(frozen=True)
class MetricSample:
    """One metric's query results for every variant in one evaluation.

    ``results`` holds the value per variant (what threshold rules judge).  The
    sequential tests need the interval's raw material instead: ``counts`` for
    count metrics (error rate, ratio metrics) and ``histograms`` for latency.
    Either is None when it was not (or could not be) measured.
    """

    name: str
    results: Mapping[str, ports.QueryResult]  # workload -> result
    counts: Mapping[str, Counts] | None = None
    histograms: Mapping[str, Histogram] | None = None
    # Ratio and mean metrics: workload -> this interval's sums, overall and per segment
    # ("region=eu,device=ios" -> workload -> sums) when the experiment has segments.
    sums: Mapping[str, Sums] | None = None
    segments: Mapping[str, Mapping[str, Sums]] | None = None


@dataclasses.dataclass(frozen=True)
class MetricAssessment:
    """How one metric fared in one evaluation, with a one-line reason."""

    name: str
    verdict: Verdict
    reason: str
    baseline: float | None = None
    candidate: float | None = None
    # Room for the statistical analysis (filled in by analyses that compute them).
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class WebhookOutcome:
    """What one gate webhook answered this tick (``detail`` never carries its URL: it may be secret)."""

    name: str
    approved: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class ApprovalWait:
    """The experiment is waiting for the webhooks of one gate type to approve a transition."""

    type: str  # a spec_hooks.WebhookType value
    since: datetime.datetime
    attempts: int = 0  # answers received that did not approve
    answer: str = ""  # the last of them, in words
    expired: bool = False  # the deadline passed: no more calls until the spec changes


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the reconciler saw this tick.  ``metrics`` is None when no evaluation was due."""

    weights: Mapping[str, int] | None  # read back from the routes; None if they disagree
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    generation: int = 1
    metrics: tuple[MetricSample, ...] | None = None
    requests: Mapping[str, ports.QueryResult] | None = None  # per variant, this window
    # Answers of the webhooks of the gate the state waits at; None when none were called.
    webhooks: tuple[WebhookOutcome, ...] | None = None
    # A/B tests: users newly assigned per variant this window (abTest.assignmentQuery).
    assignments: Mapping[str, ports.QueryResult] | None = None


@dataclasses.dataclass(frozen=True)
class State:
    """The experiment's progress, persisted in ``status`` between ticks."""

    phase: Phase = Phase.PENDING
    step: int = 0  # 1-based index into steps; 0 before the first
    weights: Mapping[str, int] = dataclasses.field(default_factory=dict)
    step_started_at: datetime.datetime | None = None
    last_evaluated_at: datetime.datetime | None = None
    step_checks: int = 0  # passing evaluations in the current step
    failed_checks: int = 0  # failed evaluations in a row
    no_data_checks: int = 0  # evaluations in a row with a metric missing
    samples: Mapping[str, int] = dataclasses.field(default_factory=dict)  # requests this step
    gates: Mapping[str, str] = dataclasses.field(default_factory=dict)  # gate -> value acted on
    reason: str = ""  # stable CamelCase cause of the phase, e.g. GuardrailFailed
    message: str = ""
    action: Action | None = None
    observed_generation: int | None = None
    # Opaque per-metric memory of statistical analyses (e.g. an e-process).
    analysis: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    approval: ApprovalWait | None = None  # webhooks being waited on to approve a transition
    outcome: str | None = None  # A/B tests: Ship, Discard or Iterate once decided
    # What a strategy reports beyond the canary's fields (objective, segments, plan, timeline...),
    # each key a top-level field of status.
    results: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def to_iso(value: datetime.datetime) -> str:
    """A time as status writes it: UTC, whole seconds."""
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(value: Any) -> datetime.datetime | None:
    """A time read back from status; None for anything that is not one."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class Event:
    type: ports.EventType
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Decision:
    state: State
    weights: Mapping[str, int] | None  # the split the routes must hold; None: leave them alone
    events: tuple[Event, ...] = ()
    assessments: tuple[MetricAssessment, ...] = ()
    requeue_after: datetime.timedelta = datetime.timedelta(seconds=60)
    # Put back the routes saved before the experiment touched them (after a failure mid-rollout).
    restore_routes: bool = False

    @property
    def message(self) -> str:
        return self.state.message
