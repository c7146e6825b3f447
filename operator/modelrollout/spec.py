"""The ``ModelExperiment`` spec as typed, validated models (pydantic v2).

Parsing is the first thing the reconciler does with an experiment, and the
only place a spec is validated at run time: the CRD schema rejects most bad
specs at admission, but an emulator, an old CRD or ``--validate=false`` can
let anything through.  Every problem becomes a :class:`SpecProblem` that
names the exact field (``spec.canary.steps[2]``) and the bad value, so the
user can fix the manifest from the status message alone.
"""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import ConfigDict, Field, field_validator, model_validator

from modelrollout import templates
from modelrollout.spec_ab import ABTestSpec, ObjectiveSpec, ShadowSpec, check_segments
from modelrollout.spec_bandit import BanditSpec
from modelrollout.spec_base import _DNS_LABEL, _DNS_SUBDOMAIN, Duration, _fitting, _Model, _problem
from modelrollout.spec_hooks import NotificationSpec, ValueFrom, WebhookSpec, WebhookType


class Strategy(str, enum.Enum):
    CANARY = "Canary"
    AB_TEST = "ABTest"
    SHADOW = "Shadow"
    BANDIT = "Bandit"


# Strategies this version of the operator can run; any others would be in the API
# contract already (so manifests validate) but refused with a clear error.
SUPPORTED_STRATEGIES: frozenset[Strategy] = frozenset(
    {Strategy.CANARY, Strategy.AB_TEST, Strategy.SHADOW, Strategy.BANDIT}
)


class NoDataPolicy(str, enum.Enum):
    HOLD = "Hold"
    FAIL = "Fail"


class WeightDrift(str, enum.Enum):
    """What to do when the managed weights were changed outside the operator."""

    RESTORE = "Restore"
    PAUSE = "Pause"


class MetricRole(str, enum.Enum):
    """What a metric is for besides an A/B test's objective (canaries judge every metric as a guardrail)."""

    GUARDRAIL = "Guardrail"  # fails the experiment (rolls back) when it breaks
    SECONDARY = "Secondary"  # reported with its lift, corrected for multiple comparisons


class Builtin(str, enum.Enum):
    ERROR_RATE = "error-rate"
    LATENCY_P95 = "latency-p95"
    LATENCY_P99 = "latency-p99"


class VirtualServiceRef(_Model):
    name: str
    namespace: str | None = None
    routes: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _name_is_dns(cls, value: str) -> str:
        return _fitting(value, _DNS_SUBDOMAIN, 253, "must be a Kubernetes object name (lower-case RFC 1123)")

    @field_validator("namespace")
    @classmethod
    def _namespace_is_dns(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 63 or not _DNS_LABEL.fullmatch(value)):
            raise _problem("must be a Kubernetes namespace name (lower-case RFC 1123 label)", value=value)
        return value

    @field_validator("routes")
    @classmethod
    def _routes_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise _problem("must name at least one route, or be omitted", value=value)
            for index, route in enumerate(value):
                if value.index(route) != index:
                    raise _problem("names a route twice", subpath=f"[{index}]", value=route)
        return value


class Variant(_Model):
    """One model version: where Istio routes to it and how metrics name it."""

    host: str | None = None
    subset: str | None = None
    workload: str

    @field_validator("workload")
    @classmethod
    def _workload_is_dns(cls, value: str) -> str:
        return _fitting(
            value, _DNS_LABEL, 63, "must be a Kubernetes workload name (lower-case RFC 1123 label)"
        )

    @model_validator(mode="after")
    def _routable(self) -> Variant:
        if self.host is None and self.subset is None:
            raise _problem("needs a subset or a host to route to", value=self.model_dump(exclude_none=True))
        return self

    def describe(self) -> str:
        where = self.subset if self.subset is not None else self.host
        return f"{self.workload} ({where})"


class CanarySpec(_Model):
    steps: list[Annotated[int, Field(strict=True)]] = Field(default_factory=lambda: [5, 25, 50, 100])
    interval: Duration = datetime.timedelta(minutes=1)
    # Default: one interval, i.e. every step gets at least one full evaluation.
    min_step_duration: Duration | None = None
    min_samples: Annotated[int, Field(ge=0, strict=True)] = 100

    @field_validator("steps")
    @classmethod
    def _steps_ascending(cls, value: list[int]) -> list[int]:
        if not value:
            raise _problem("must list at least one step", value=value)
        for index, weight in enumerate(value):
            if not 1 <= weight <= 100:
                raise _problem("must be a weight in 1..100", subpath=f"[{index}]", value=weight)
            if index and weight <= value[index - 1]:
                raise _problem(
                    f"must be greater than the step before it ({value[index - 1]})",
                    subpath=f"[{index}]",
                    value=weight,
                )
        return value

    @property
    def step_duration(self) -> datetime.timedelta:
        return self.min_step_duration if self.min_step_duration is not None else self.interval


class RatioQuery(_Model):
    success: str
    total: str

    @field_validator("success", "total")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        _check_template(value)
        return value


class MeanQuery(_Model):
    """A mean per observation (revenue per request): ``sum`` over ``count``, both over the interval.

    ``squares`` (the sum of squared values) gives the exact variance; without it
    the variance is estimated from how the interval means vary (batch means).
    """

    sum: str
    count: str
    squares: str | None = None

    @field_validator("sum", "count", "squares")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is not None:
            _check_template(value)
        return value


class MetricSpec(_Model):
    name: str
    builtin: Builtin | None = None
    query: str | None = None
    ratio: RatioQuery | None = None
    mean: MeanQuery | None = None
    role: MetricRole | None = (
        None  # default: Secondary for a ratio or mean without thresholds, else Guardrail
    )
    # NaN would silently disable a threshold (no comparison with it is true); JSON has neither it nor inf.
    max: Annotated[float, Field(allow_inf_nan=False)] | None = None
    min: Annotated[float, Field(allow_inf_nan=False)] | None = None
    max_relative_increase: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None

    @field_validator("name")
    @classmethod
    def _name_is_dns(cls, value: str) -> str:
        return _fitting(value, _DNS_LABEL, 63, "must be a lower-case name such as error-rate")

    @field_validator("query")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is not None:
            _check_template(value)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> MetricSpec:
        sources = [key for key in ("builtin", "query", "ratio", "mean") if getattr(self, key) is not None]
        if len(sources) != 1:
            got = " and ".join(sources) if sources else "none of them"
            raise _problem(
                f"metric {self.name!r} sets {got}; it needs exactly one of builtin, query, ratio or mean",
                value=None,
            )
        if self.role is MetricRole.SECONDARY and self.ratio is None and self.mean is None:
            raise _problem(
                "Secondary needs a ratio or mean metric (a lift needs counts)",
                subpath="role",
                value="Secondary",
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _problem(f"is above max ({self.max})", subpath="min", value=self.min)
        return self

    @property
    def has_thresholds(self) -> bool:
        return self.max is not None or self.min is not None or self.max_relative_increase is not None

    @property
    def effective_role(self) -> MetricRole:
        if self.role is not None:
            return self.role
        if (self.ratio is not None or self.mean is not None) and not self.has_thresholds:
            return MetricRole.SECONDARY
        return MetricRole.GUARDRAIL

    @property
    def relative_increase_limit(self) -> float | None:
        """``maxRelativeIncrease``, or the builtin's default when no threshold is set at all."""
        if self.max_relative_increase is not None:
            return self.max_relative_increase
        if self.builtin is not None and self.max is None and self.min is None:
            return BUILTIN_DEFAULT_RELATIVE_INCREASE[self.builtin]
        return None


def _check_template(template: str) -> None:
    unknown = templates.unknown_placeholders(template)
    if unknown:
        known = ", ".join(sorted(templates.VARIABLES))
        raise _problem(f"uses unknown placeholder {{{{ {unknown[0]} }}}} (known: {known})", value=template)


# A builtin listed without thresholds still guards something: the candidate
# may not be much worse than the baseline.  (2x the error rate, 1.5x latency.)
BUILTIN_DEFAULT_RELATIVE_INCREASE: Mapping[Builtin, float] = {
    Builtin.ERROR_RATE: 1.0,
    Builtin.LATENCY_P95: 0.5,
    Builtin.LATENCY_P99: 0.5,
}


def _default_metrics() -> list[MetricSpec]:
    return [
        MetricSpec(name="error-rate", builtin=Builtin.ERROR_RATE),
        MetricSpec(name="latency-p95", builtin=Builtin.LATENCY_P95),
    ]


class AnalysisSpec(_Model):
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    failure_limit: Annotated[int, Field(ge=1, strict=True)] = 1
    no_data: NoDataPolicy = NoDataPolicy.HOLD
    no_data_limit: Annotated[int, Field(ge=1, strict=True)] = 5

    @field_validator("alpha")
    @classmethod
    def _not_vanishing(cls, value: float) -> float:
        # The sequential tests' bound is (guardrails / alpha): an alpha near the smallest float makes
        # it infinite (which no status JSON holds) or divides by zero.
        if value < 1e-12:
            raise _problem("must be at least 1e-12", value=value)
        return value


# RFC 7617: a basic-auth user-id has no ':' and no control characters.
_USERNAME = re.compile(r"^[^:\x00-\x1f\x7f]+$")


class BasicAuth(_Model):
    """HTTP basic auth: a literal ``username`` or one from a Secret, and always a password from a Secret."""

    username: str | None = None
    username_from: ValueFrom | None = None
    password_from: ValueFrom

    @field_validator("username")
    @classmethod
    def _plain_username(cls, value: str | None) -> str | None:
        if value is not None and (not value or len(value) > 253 or not _USERNAME.fullmatch(value)):
            raise _problem("must be 1-253 printable characters without ':'", value=value)
        return value

    @model_validator(mode="after")
    def _one_username(self) -> BasicAuth:
        if (self.username is None) == (self.username_from is None):
            raise _problem("needs exactly one of username or usernameFrom", value=None)
        return self


class TLSConfig(_Model):
    """How to trust an https:// Prometheus: a CA from a Secret (PEM), or (for tests only) nothing at all."""

    ca_from: ValueFrom | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _ca_or_skip(self) -> TLSConfig:
        if self.ca_from is not None and self.insecure_skip_verify:
            raise _problem("sets both caFrom and insecureSkipVerify: a CA is of no use unverified")
        return self


class PrometheusSpec(_Model):
    address: str | None = None
    timeout: Duration = datetime.timedelta(seconds=10)
    # Credentials, read from Secrets in the experiment's namespace at each evaluation (never stored).
    bearer_token_from: ValueFrom | None = None
    basic_auth: BasicAuth | None = None
    tls_config: TLSConfig | None = None

    @field_validator("address")
    @classmethod
    def _is_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"^https?://[^/\s]+(/\S*)?$", value):
            raise _problem("must be an http:// or https:// URL", value=value)
        return value.rstrip("/") if value is not None else None

    @model_validator(mode="after")
    def _one_credential(self) -> PrometheusSpec:
        if self.bearer_token_from is not None and self.basic_auth is not None:
            raise _problem("sets both bearerTokenFrom and basicAuth: choose one", value=None)
        return self


MAX_CANDIDATES = 8  # as the CRD's maxItems


class ExperimentSpec(_Model):
    virtual_service: VirtualServiceRef
    baseline: Variant
    candidate: Variant | None = None
    candidates: list[Variant] | None = None
    strategy: Strategy = Strategy.CANARY
    canary: CanarySpec = Field(default_factory=CanarySpec)
    metrics: list[MetricSpec] = Field(default_factory=_default_metrics)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec)
    paused: bool = False
    on_weight_drift: WeightDrift = WeightDrift.RESTORE
    webhooks: list[WebhookSpec] = Field(default_factory=list)
    notifications: list[NotificationSpec] = Field(default_factory=list)
    ab_test: ABTestSpec | None = None
    objective: ObjectiveSpec | None = None
    segments: list[str] | None = None
    shadow: ShadowSpec | None = None
    bandit: BanditSpec | None = None

    @field_validator("segments")
    @classmethod
    def _segment_labels(cls, value: list[str] | None) -> list[str] | None:
        return check_segments(value)

    @field_validator("strategy")
    @classmethod
    def _supported(cls, value: Strategy) -> Strategy:
        if value not in SUPPORTED_STRATEGIES:
            raise _problem("is not supported by this version of the operator yet", value=value.value)
        return value

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, value: list[MetricSpec]) -> list[MetricSpec]:
        names = [metric.name for metric in value]
        for index, name in enumerate(names):
            if names.index(name) != index:
                raise _problem("repeats a metric name", subpath=f"[{index}].name", value=name)
        return value

    @field_validator("webhooks", "notifications")
    @classmethod
    def _unique_hook_names(cls, value: list[WebhookSpec] | list[NotificationSpec]) -> Any:
        names = [hook.name for hook in value]
        for index, name in enumerate(names):
            if names.index(name) != index:
                raise _problem("repeats a name", subpath=f"[{index}].name", value=name)
        return value

    @model_validator(mode="after")
    def _one_candidate(self) -> ExperimentSpec:
        if (self.candidate is None) == (self.candidates is None):
            raise _problem("needs exactly one of candidate or candidates", value=None)
        if self.candidates is not None and not 1 <= len(self.candidates) <= MAX_CANDIDATES:
            count = len(self.candidates)
            raise _problem(f"must list 1 to {MAX_CANDIDATES} candidates", subpath="candidates", value=count)
        seen = {self.baseline.workload: "the baseline's"}
        for index, variant in enumerate(self.arms):
            where = "candidate.workload" if self.candidate is not None else f"candidates[{index}].workload"
            if variant.workload in seen:
                other = seen[variant.workload]
                what = (
                    "baseline and candidate are the same workload"
                    if other == "the baseline's"
                    else (f"repeats {other} workload")
                )
                raise _problem(what, subpath=where, value=variant.workload)
            seen[variant.workload] = f"candidates[{index}]'s"
        several = len(self.arms) > 1
        if several and self.ab_test is not None and self.ab_test.aa:
            # Checked whenever given, as the CRD's rule does (whatever the strategy).
            raise _problem(
                f"an A/A test compares the baseline with one copy of itself; it cannot run with "
                f"{len(self.arms)} candidates (list one candidate, or set abTest.aa to false)",
                subpath="abTest.aa",
                value=True,
            )
        if several and (self.strategy is Strategy.SHADOW or self.shadow is not None):
            raise _problem(
                "lists several candidates; a shadow mirrors to one candidate (Istio mirrors to one host)",
                subpath="candidates",
                value=len(self.arms),
            )
        return self

    @model_validator(mode="after")
    def _gates_that_can_open(self) -> ExperimentSpec:
        """A gate the strategy never reaches would be ignored silently: refused, as the CRD does."""
        for index, hook in enumerate(self.webhooks):
            if hook.type is WebhookType.CONFIRM_STEP and self.strategy is not Strategy.CANARY:
                why = f"gates a canary's steps; strategy {self.strategy.value} has none"
            elif hook.type is WebhookType.CONFIRM_PROMOTION and self.strategy is Strategy.SHADOW:
                why = "gates a promotion; a Shadow never promotes (users stay on the baseline)"
            else:
                continue
            raise _problem(why, subpath=f"webhooks[{index}].type", value=hook.type.value)
        return self

    @model_validator(mode="after")
    def _ab_test(self) -> ExperimentSpec:
        if self.strategy is Strategy.AB_TEST and self.objective is None:
            raise _problem("is required for strategy ABTest", subpath="objective", value=None)
        # Checked whenever given, as the CRD's rules do (whatever the strategy).
        objective = [("objective.metric", self.objective.metric)] if self.objective is not None else []
        by_name = {metric.name: metric for metric in self.metrics}
        for where, name in (*objective, *self._fairness_metric()):
            metric = by_name.get(name)
            if metric is None:
                raise _problem(
                    f"names no metric in spec.metrics (known: {', '.join(by_name) or 'none'})",
                    subpath=where,
                    value=name,
                )
            if metric.ratio is None and metric.mean is None:
                raise _problem(
                    "must name a ratio or mean metric (a lift needs counts)", subpath=where, value=name
                )
        return self

    def _fairness_metric(self) -> list[tuple[str, str]]:
        fairness = self.ab_test.fairness if self.ab_test is not None else None
        if fairness is None or fairness.metric is None:
            return []
        return [("abTest.fairness.metric", fairness.metric)]

    @model_validator(mode="after")
    def _shadow(self) -> ExperimentSpec:
        if self.strategy is Strategy.SHADOW and self.shadow is None:
            raise _problem("is required for strategy Shadow", subpath="shadow", value=None)
        if self.shadow is not None and self.strategy not in (Strategy.SHADOW, Strategy.CANARY):
            raise _problem(
                f"is for strategy Shadow, or a shadow phase before a Canary; not for {self.strategy.value}",
                subpath="shadow",
                value=None,
            )
        agreement = self.shadow.agreement if self.shadow is not None else None
        if agreement is not None:
            metric = next((m for m in self.metrics if m.name == agreement.metric), None)
            if metric is None or metric.ratio is None:
                known = ", ".join(m.name for m in self.metrics if m.ratio is not None) or "none"
                raise _problem(
                    f"must name a ratio metric in spec.metrics (agreed / compared; ratio metrics: {known})",
                    subpath="shadow.agreement.metric",
                    value=agreement.metric,
                )
        return self

    @model_validator(mode="after")
    def _bandit(self) -> ExperimentSpec:
        if self.strategy is Strategy.BANDIT and self.bandit is None:
            raise _problem("is required for strategy Bandit (at least bandit.reward)", subpath="bandit")
        if self.bandit is None:
            return self  # checked whenever given, as the CRD's rules do (whatever the strategy)
        metric = self.metric(self.bandit.reward)
        if metric is None or metric.ratio is None:
            known = ", ".join(m.name for m in self.metrics if m.ratio is not None) or "none"
            raise _problem(
                f"must name a ratio metric in spec.metrics (successes / trials; ratio metrics: {known})",
                subpath="bandit.reward",
                value=self.bandit.reward,
            )
        variants = len(self.arms) + 1
        if self.bandit.min_weight * variants > 100:
            raise _problem(
                f"times the number of variants ({variants}) must not exceed 100",
                subpath="bandit.minWeight",
                value=self.bandit.min_weight,
            )
        return self

    @property
    def is_bandit(self) -> bool:
        return self.strategy is Strategy.BANDIT

    @property
    def has_shadow_phase(self) -> bool:
        """Shadow alone, or a shadow phase before the canary's steps."""
        return self.shadow is not None

    @property
    def is_ab_test(self) -> bool:
        return self.strategy is Strategy.AB_TEST

    @property
    def ab(self) -> ABTestSpec:
        """The A/B settings (defaults when ``abTest`` is omitted)."""
        return self.ab_test if self.ab_test is not None else ABTestSpec()

    @property
    def interval(self) -> datetime.timedelta:
        """How often the experiment is evaluated (a shadow phase uses the canary's interval)."""
        if self.is_bandit and self.bandit is not None:
            return self.bandit.interval
        return self.ab.interval if self.is_ab_test else self.canary.interval

    def metric(self, name: str) -> MetricSpec | None:
        return next((metric for metric in self.metrics if metric.name == name), None)

    @property
    def agreement_metric(self) -> str | None:
        return self.shadow.agreement.metric if self.shadow is not None and self.shadow.agreement else None

    @property
    def guardrails(self) -> list[MetricSpec]:
        """The metrics that roll back when they break: all of a canary's (but the shadow's agreement,
        measured on the candidate alone); an A/B test's and a bandit's Guardrail ones."""
        if self.is_bandit:
            reward = self.bandit.reward if self.bandit is not None else None
            return [m for m in self.metrics if m.name != reward and m.effective_role is MetricRole.GUARDRAIL]
        if not self.is_ab_test:
            return [m for m in self.metrics if m.name != self.agreement_metric]
        objective = self.objective.metric if self.objective is not None else None
        return [m for m in self.metrics if m.name != objective and m.effective_role is MetricRole.GUARDRAIL]

    @property
    def secondary_metrics(self) -> list[MetricSpec]:
        objective = self.objective.metric if self.objective is not None else None
        return [m for m in self.metrics if m.name != objective and m.effective_role is MetricRole.SECONDARY]

    @property
    def the_candidate(self) -> Variant:
        """The candidate (the first one when there are several)."""
        return self.arms[0]

    @property
    def arms(self) -> tuple[Variant, ...]:
        """Every candidate, in the order the spec lists them (the baseline is not one)."""
        if self.candidate is not None:
            return (self.candidate,)
        assert self.candidates is not None  # guaranteed by _one_candidate
        return tuple(self.candidates)

    @property
    def workloads(self) -> tuple[str, ...]:
        """The candidates' workloads, in spec order."""
        return tuple(variant.workload for variant in self.arms)

    def pair(self, candidate: Variant) -> ExperimentSpec:
        """This experiment seen as baseline against one of its candidates, its alpha shared among them
        (Bonferroni: each of k comparisons at alpha / k keeps the chance of any false alarm under alpha)."""
        if len(self.arms) == 1:
            return self
        alpha = self.analysis.alpha / len(self.arms)
        return self.model_copy(
            update={
                "candidate": candidate,
                "candidates": None,
                "analysis": self.analysis.model_copy(update={"alpha": alpha}),
            }
        )

    def virtual_service_namespace(self, experiment_namespace: str) -> str:
        return self.virtual_service.namespace or experiment_namespace

    def webhooks_of(self, type_: WebhookType) -> list[WebhookSpec]:
        return [hook for hook in self.webhooks if hook.type is type_]


class SpecProblem(pydantic.BaseModel):
    """One thing wrong with a spec: where, what, and the offending value."""

    model_config = ConfigDict(frozen=True)
    path: str
    message: str
    value: Any = None

    def __str__(self) -> str:
        shown = _short_repr(self.value)
        return f"{self.path}: {self.message}" + (f" (got {shown})" if shown else "")


class SpecError(ValueError):
    """The spec cannot be run; ``problems`` says where and why."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


def parse_spec(raw: Mapping[str, Any] | None) -> ExperimentSpec:
    """Validate ``raw`` (the ``spec`` of a ModelExperiment) or raise :class:`SpecError`."""
    if raw is not None and not isinstance(raw, Mapping):
        # Only an API server that does not validate (an emulator, an old CRD) lets this through.
        raise SpecError([SpecProblem(path="spec", message="must be an object with fields", value=raw)])
    try:
        return ExperimentSpec.model_validate(dict(raw or {}))
    except pydantic.ValidationError as e:
        raise SpecError([_as_problem(error) for error in e.errors()]) from None


def _as_problem(error: Any) -> SpecProblem:
    path = "spec"
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        else:  # an unknown field's name may hold a newline: keep the problem on one line
            path += f".{part}" if str(part).isprintable() else f"[{str(part)!r}]"
    ctx = error.get("ctx") or {}
    subpath = ctx.get("subpath", "")
    if subpath:
        path += subpath if subpath.startswith("[") else f".{subpath}"
    value = ctx["value"] if "value" in ctx else error.get("input")
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "is not a field of ModelExperiment (misspelled?)"
    elif error["type"] == "missing":
        message = "is required"
        value = None
    return SpecProblem(path=path, message=message, value=value)


def _short_repr(value: Any) -> str:
    if value is None:
        return ""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested deeper than repr goes; an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


StrategyName = Literal["Canary", "ABTest", "Shadow", "Bandit"]
