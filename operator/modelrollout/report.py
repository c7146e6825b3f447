"""``modelrollout report``: an A/B test's (or a bandit's) report for the people who decide on it.

Pure functions of a ModelExperiment (as the API returns it): a title and a one-line
verdict, the hypothesis, the design, the results per metric, the lift and the traffic
over time (plots), the segments, data quality, and the decision with what happens next.
A bandit (``strategy: Bandit``) gets its own: what was compared and how, each model's
standing, the comparison that decides, the allocation over time, and the decision.
Markdown or one self-contained HTML file (plots inline as SVG); Markdown's plots are PNG
files written beside it.  matplotlib is optional (``pip install modelrollout[report]``):
without it everything but the plots renders.

Everything read from the object is untrusted: any field may be missing or of another
type, and every text is escaped for the output (HTML-escaped; in Markdown backslash-escaped,
so a ``|`` cannot split a table and no value can start a heading or a list).
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import io
import json
import math
import os
import re
import sys
import urllib.parse
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from modelrollout.plugin import render as plugin_render

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Format = Literal["md", "html"]
PLOTS_HINT = "pip install modelrollout[report]"
SUMMARY_LIMIT = 256 * 1024  # bytes: markdown_summary() stays below this (it goes into a ConfigMap)
# The spec's defaults (spec_ab.ABTestSpec, spec.AnalysisSpec, spec_ab.ObjectiveSpec), shown when unset.
DEFAULT_SPLIT = 50
DEFAULT_MAX_DURATION = "14d"
DEFAULT_INTERVAL = "1m"
DEFAULT_ALPHA = 0.05
DEFAULT_POWER = 0.8
SHIP, DISCARD, ITERATE = "Ship", "Discard", "Iterate"
# A bandit's defaults (spec_bandit.BanditSpec), shown when unset.
BANDIT = "Bandit"
DEFAULT_BANDIT_INTERVAL = "1m"
DEFAULT_MIN_WEIGHT = 10
DEFAULT_MAX_STEP_CHANGE = 20
DEFAULT_CONFIDENCE = 0.95
DEFAULT_INTERVALS_REQUIRED = 3
DEFAULT_BANDIT_MAX_DURATION = "7d"
DEFAULT_BANDIT_MINIMUM_EFFECT = 0.05
EXPLORING, CONFIRMING, DECIDED = "Exploring", "Confirming", "Decided"
BASELINE_BEST = "BaselineBest"
ALLOCATION_ROWS = 20  # rows of the allocation table (without plots): evenly spaced, first and last kept
PLOT_POINTS = 500  # most points per line a plot draws (the operator keeps 100; a saved file may hold more)
PLOT_MODELS = 20  # most models a bandit's plot and allocation table show
AWAITING_PROMOTION = "AwaitingPromotion"
MISSING = "-"


class ReportError(Exception):
    """The experiment could not be read (file or API): one sentence for the command line."""


@dataclasses.dataclass(frozen=True)
class Report:
    """A rendered report and the PNG files written for it (Markdown only)."""

    text: str
    format: Format
    assets: tuple[Path, ...] = ()


# ------------------------------------------------------------------------------------ the API
def render(
    experiment: Mapping[str, Any],
    fmt: Format,
    *,
    plots: bool = True,
    assets_dir: Path | None = None,
    output: Path | None = None,
) -> str:
    """The report as Markdown or HTML text (see :func:`build` for the arguments)."""
    return build(experiment, fmt, plots=plots, assets_dir=assets_dir, output=output).text


def build(
    experiment: Mapping[str, Any],
    fmt: Format,
    *,
    plots: bool = True,
    assets_dir: Path | None = None,
    output: Path | None = None,
) -> Report:
    """The report, with the PNG files it wrote.

    ``output`` is the file the text will be written to (the caller writes it): Markdown's
    plots go to ``assets_dir`` (default: ``output``'s folder) and are linked relative to
    ``output``.  Markdown without either leaves the plots out with a note; HTML inlines them.
    """
    if fmt not in ("md", "html"):
        raise ValueError(f"unknown report format {fmt!r} (md or html)")
    view = _View(experiment)
    blocks = _document(view, plots=plots)
    if fmt == "html":
        return Report(_HtmlWriter(view).write(blocks), "html")
    if assets_dir is None and output is not None:
        assets_dir = output.parent
    writer = _MarkdownWriter(view, assets_dir=assets_dir, output=output)
    return Report(writer.write(blocks), "md", tuple(writer.assets))


def markdown_summary(experiment: Mapping[str, Any]) -> str:
    """The report in Markdown without plots, below :data:`SUMMARY_LIMIT` bytes (for a ConfigMap).

    Long tables are cut to their first rows and long texts shortened, each with a note.
    """
    view = _View(experiment)
    blocks = _document(view, plots=False)
    text = ""
    for max_rows, max_chars in ((None, None), (100, 1000), (20, 300), (5, 100)):
        text = _MarkdownWriter(view, max_rows=max_rows, max_chars=max_chars).write(blocks)
        if len(text.encode()) < SUMMARY_LIMIT:
            return text
    note = "\n\n*(The report was cut here: it was too long. The full report: `modelrollout report`.)*\n"
    budget = SUMMARY_LIMIT - len(note.encode()) - 4
    cut = text.encode()[:budget].decode(errors="ignore")
    return cut[: cut.rfind("\n") + 1 or len(cut)] + note


def load_file(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """A saved ModelExperiment (YAML or JSON; ``-`` reads stdin); a List picks ``name`` or its only item."""
    where = "stdin" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
        document = yaml.safe_load(text)
    except OSError as e:
        raise ReportError(f"cannot read {where}: {e.strerror or e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ReportError(f"{where} is neither YAML nor JSON: {e}") from None
    if not isinstance(document, dict):
        raise ReportError(f"{where} does not hold a ModelExperiment (an object with metadata, spec, status)")
    items = document.get("items")
    if isinstance(items, list):
        found = [i for i in items if isinstance(i, dict)]
        if name is not None:
            found = [i for i in found if _map(i.get("metadata")).get("name") == name]
        if len(found) != 1:
            which = f'no item named "{name}"' if name is not None else f"{len(found)} items (name one)"
            raise ReportError(f"{where} is a list with {which}")
        document = found[0]
    elif name is not None and _map(document.get("metadata")).get("name") not in (None, name):
        raise ReportError(f'{where} holds "{_map(document.get("metadata")).get("name")}", not "{name}"')
    return document


def fetch(
    name: str, namespace: str | None = None, kubeconfig: str | None = None, context: str | None = None
) -> dict[str, Any]:
    """Read one ModelExperiment from the cluster kubectl talks to (as ``kubectl mexp`` does)."""
    import kubernetes

    from modelrollout.plugin import commands

    try:
        client, default_namespace = commands.connect(kubeconfig, context)
        with client:
            api = kubernetes.client.CustomObjectsApi(client)
            session = commands.Session(api, client.configuration.host)
            return session.get(namespace or default_namespace, name)
    except commands.PluginError as e:
        raise ReportError(str(e)) from None


# ----------------------------------------------------------------------------- reading values
def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    """The entries of a list that are objects (others are skipped: nothing to show of them)."""
    return [v for v in _list(value) if isinstance(v, Mapping)]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int | None:
    number = _number(value)
    return round(number) if number is not None and number >= 0 else None


def _pair(value: Any) -> tuple[float, float] | None:
    numbers = [_number(v) for v in _list(value)]
    if len(numbers) != 2 or numbers[0] is None or numbers[1] is None:
        return None
    return min(numbers[0], numbers[1]), max(numbers[0], numbers[1])


def _text(value: Any) -> str:
    """Any value as text: strings as they are, other values as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, default=str, sort_keys=True, ensure_ascii=False)


def _share(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and 0 < number < 1 else None


# --------------------------------------------------------------------------------- formatting
def _pct(value: float, signed: bool = True) -> str:
    """A relative change: ``+12.0 %``."""
    return f"{value * 100:+.1f} %" if signed else f"{abs(value) * 100:.1f} %"


def _whole(value: float) -> str:
    """A share as a whole percentage: ``80 %``."""
    return f"{value * 100:.0f} %"


def _effect(value: float) -> str:
    """A minimum effect or margin: ``2 %``, ``2.5 %``."""
    return f"{value * 100:.3g} %"


def _confidence(alpha: float) -> str:
    return f"{round((1 - alpha) * 100, 1):g} %"


def _interval(interval: tuple[float, float]) -> str:
    return f"{_pct(interval[0])} to {_pct(interval[1])}"


def _thousands(value: int) -> str:
    return f"{value:,}"


def _when(value: Any) -> str:
    moment = value if isinstance(value, datetime.datetime) else plugin_render.parse_time(value)
    if moment is None:
        return _text(value) or MISSING
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(seconds: float) -> str:
    return plugin_render.human_duration(seconds)


# ------------------------------------------------------------------------------------ document
@dataclasses.dataclass(frozen=True)
class _Span:
    text: str
    style: Literal["", "b", "code"] = ""


_Inline = str | _Span


@dataclasses.dataclass(frozen=True)
class _Heading:
    level: int
    text: str


@dataclasses.dataclass(frozen=True)
class _Para:
    parts: tuple[_Inline, ...]
    kind: str = ""  # "verdict" or "note": styled in HTML


@dataclasses.dataclass(frozen=True)
class _Bullets:
    items: tuple[tuple[_Inline, ...], ...]


@dataclasses.dataclass(frozen=True)
class _Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class _Plots:
    """Where the plots go (or the note saying why there are none)."""


_Block = _Heading | _Para | _Bullets | _Table | _Plots


def _p(*parts: _Inline, kind: str = "") -> _Para:
    return _Para(tuple(parts), kind)


def _b(text: str) -> _Span:
    return _Span(text, "b")


def _code(text: str) -> _Span:
    return _Span(text, "code")


# -------------------------------------------------------------------------------- the experiment
class _View:
    """The fields the report reads, each checked once: what is missing or odd becomes None."""

    def __init__(self, body: Any) -> None:
        self.body: Mapping[str, Any] = _map(body)
        self.meta = _map(self.body.get("metadata"))
        self.spec = _map(self.body.get("spec"))
        self.status = _map(self.body.get("status"))
        self.ab = _map(self.spec.get("abTest"))
        self.name = _text(self.meta.get("name")) or "experiment"
        self.namespace = _text(self.meta.get("namespace"))
        self.strategy = _text(self.spec.get("strategy")) or "ABTest"
        self.aa = self.ab.get("aa") is True

        base = _map(self.spec.get("baseline"))
        cand = _map(self.spec.get("candidate"))
        listed = _mappings(self.spec.get("candidates"))
        # Several candidates: each one's record (status.candidates); the report's candidate is the
        # winner, else the leader (status.objective names it), else the first.
        self.records = [r for r in _mappings(self.status.get("candidates")) if _text(r.get("workload"))]
        self.several = len(listed) > 1 or len(self.records) > 1
        result = _map(self.status.get("objective"))
        chosen = _text(self.status.get("winner")) or _text(result.get("variant"))
        if not cand and listed:
            cand = next((c for c in listed if chosen and _text(c.get("workload")) == chosen), listed[0])
        self.baseline = _text(base.get("workload")) or "the baseline"
        self.candidate = _text(cand.get("workload")) or "the candidate"
        self.baseline_subset = _text(base.get("subset"))
        self.candidate_subset = _text(cand.get("subset"))
        self.who = f"the candidate {self.candidate}" if self.several else "the candidate"

        goal = _map(self.spec.get("objective"))
        self.objective = result
        self.metric = _text(result.get("metric")) or _text(goal.get("metric")) or "the objective"
        direction = result.get("direction") or goal.get("direction")
        self.decrease = direction == "Decrease"
        self.sign = -1.0 if self.decrease else 1.0
        effect = _number(result.get("minimumEffect"))
        effect = effect if effect is not None else _number(goal.get("minimumEffect"))
        self.minimum_effect = effect if effect is not None and effect > 0 else None
        self.power = _share(goal.get("power")) or DEFAULT_POWER
        self.power_set = _share(goal.get("power")) is not None
        self.alpha = _share(_map(self.spec.get("analysis")).get("alpha")) or DEFAULT_ALPHA
        # The objective's intervals: at alpha over the candidates when there are several.
        self.objective_alpha = (
            self.alpha / max(len(listed), len(self.records), 1) if self.several else self.alpha
        )
        self.lift = _number(result.get("lift"))
        self.interval = _pair(result.get("interval"))

        split = self.ab.get("split")
        self.split_set = isinstance(split, int) and not isinstance(split, bool) and 0 <= split <= 100
        self.split = split if isinstance(split, int) and self.split_set else DEFAULT_SPLIT

        self.phase = _text(self.status.get("phase"))
        self.reason = _text(self.status.get("reason"))
        self.message = _text(self.status.get("message"))
        outcome = self.status.get("outcome")
        self.outcome = outcome if outcome in (SHIP, DISCARD, ITERATE) else None
        self.plan = _map(self.status.get("abPlan"))
        self.bandit = _Bandit(self) if self.strategy == BANDIT else None

    @property
    def title(self) -> str:
        return f"{'Bandit' if self.bandit is not None else 'A/B test'} report: {self.name}"

    # -- the variants
    def role(self, workload: str) -> str:
        return {self.baseline: "baseline", self.candidate: "candidate"}.get(workload, "")

    def label(self, workload: str) -> str:
        role = self.role(workload)
        return f"{workload} ({role})" if role else workload

    def ordered(self, keys: Sequence[str]) -> list[str]:
        known = [w for w in (self.baseline, self.candidate) if w in keys]
        return known + sorted(k for k in keys if k not in known)

    def samples(self, value: Any = None) -> dict[str, int]:
        """Observations per workload: the objective's, else ``status.samples``."""
        found = _map(value) if value is not None else _map(self.objective.get("samples"))
        if not found and value is None:
            found = _map(self.status.get("samples"))
        counts = {_text(k): _count(v) for k, v in found.items()}
        return {k: v for k, v in counts.items() if v is not None}

    def smaller_arm(self) -> int | None:
        samples = self.samples()
        arms = [samples[w] for w in (self.baseline, self.candidate) if w in samples]
        return min(arms) if len(arms) == 2 else None

    # -- the objective
    def good(self, value: float) -> float:
        """A lift turned so that positive is the objective's direction."""
        return self.sign * value

    def good_interval(self) -> tuple[float, float] | None:
        if self.interval is None:
            return None
        low, high = self.good(self.interval[0]), self.good(self.interval[1])
        return min(low, high), max(low, high)

    def kind(self, metric: str) -> str:
        return plugin_render.metric_kind(self.body, metric)

    def value(self, value: Any, metric: str) -> str:
        number = _number(value)
        if number is None:
            return MISSING
        kind = self.kind(metric)
        if kind == "rate":
            percent = number * 100
            return f"{percent:.2f} %" if abs(percent) >= 1 else f"{percent:.3g} %"
        if kind == "ms":
            return f"{number:.1f} ms" if abs(number) < 10 else f"{number:.0f} ms"
        return f"{number:.4g}"

    # -- time
    def started(self) -> datetime.datetime | None:
        for value in (
            self.status.get("startedAt"),
            _map(self.status.get("bandit")).get("startedAt"),
            _map((_list(self.status.get("history")) or [None])[0]).get("time"),
            _map((_list(self.status.get("timeline")) or [None])[0]).get("time"),
        ):
            moment = plugin_render.parse_time(value)
            if moment is not None:
                return moment
        return None

    def last_seen(self) -> datetime.datetime | None:
        candidates = [self.status.get("lastEvaluatedAt")]
        candidates += [_map(h).get("time") for h in reversed(_list(self.status.get("history")))][:1]
        candidates += [_map(t).get("time") for t in reversed(_list(self.status.get("timeline")))][:1]
        moments = [m for m in (plugin_render.parse_time(v) for v in candidates) if m is not None]
        return max(moments) if moments else None

    def max_duration(self) -> str:
        return _text(self.ab.get("maxDuration")) or DEFAULT_MAX_DURATION

    @property
    def finished(self) -> bool:
        return self.phase in plugin_render.FINAL_PHASES

    @property
    def awaiting_promotion(self) -> bool:
        return self.phase == "Paused" and (self.reason == AWAITING_PROMOTION or self.outcome == SHIP)

    def guardrails(self) -> list[Mapping[str, Any]]:
        """``status.guardrails``, else ``status.metrics`` without the objective and secondary metrics."""
        if isinstance(self.status.get("guardrails"), list):
            return _mappings(self.status["guardrails"])
        others = {self.metric} | {_text(_map(s).get("metric")) for s in _list(self.status.get("secondary"))}
        return [
            m
            for m in _mappings(self.status.get("metrics"))
            if m.get("role") not in ("Objective", "Secondary") and _text(m.get("name")) not in others
        ]

    def failed_guardrails(self) -> list[Mapping[str, Any]]:
        return [g for g in self.guardrails() if g.get("verdict") == "Fail"]

    def srm_failed(self) -> bool:
        srm = _map(self.status.get("srm"))
        if srm.get("passed") is False and srm.get("checked") is not False:
            return True
        return any(
            _map(c).get("type") == "SampleRatioMismatch" and _map(c).get("status") == "True"
            for c in _list(self.status.get("conditions"))
        )


# ----------------------------------------------------------------------------------- the bandit
@dataclasses.dataclass(frozen=True)
class _Arm:
    """One model's standing (an entry of ``status.bandit.arms``)."""

    workload: str
    weight: float | None
    successes: float | None
    trials: float | None
    pooled: float | None
    stratified: float | None
    best: float | None


@dataclasses.dataclass(frozen=True)
class _Comparison:
    """One candidate against the baseline (an entry of ``status.bandit.comparison``)."""

    workload: str
    baseline: float | None
    candidate: float | None
    lift: float | None
    interval: tuple[float, float] | None
    better: bool | None
    reason: str


@dataclasses.dataclass(frozen=True)
class _Allocation:
    """One point of ``status.bandit.allocation``: the weights (%) and the probabilities of being best."""

    time: datetime.datetime
    weights: Mapping[str, float]
    best: Mapping[str, float]


def _name(value: Any) -> str:
    """A name (workload, metric, stage): a string, else nothing (a number or an object is no name)."""
    return value.strip() if isinstance(value, str) else ""


def _probability(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and 0 <= number <= 1 else None


def _percent(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and 0 <= number <= 100 else None


def _amount(value: Any) -> float | None:
    """A count that may be fractional (Prometheus' ``increase()``), not negative."""
    number = _number(value)
    return number if number is not None and number >= 0 else None


def _bounded(value: Any, low: int, high: int) -> int | None:
    """An integer setting within its bounds (a boolean or a float is no integer)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if low <= value <= high else None


def _names(values: Any) -> list[str]:
    """The names among ``values``, each once, in order."""
    found: list[str] = []
    for value in values:
        name = _name(value)
        if name and name not in found:
            found.append(name)
    return found


def _per_model(value: Any, check: Callable[[Any], float | None]) -> dict[str, float]:
    """``{workload: number}`` with the entries whose number passes ``check`` (others are left out)."""
    found = {}
    for key, number in _map(value).items():
        checked = check(number)
        if _name(key) and checked is not None:
            found[_name(key)] = checked
    return found


class _Bandit:
    """``spec.bandit`` and ``status.bandit`` (strategy Bandit), each field checked once: what is missing
    or odd becomes None (or is left out of a list) and is not shown."""

    def __init__(self, view: _View) -> None:
        settings = _map(view.spec.get("bandit"))
        found = _map(view.status.get("bandit"))
        base = _map(view.spec.get("baseline"))
        listed = _mappings(view.spec.get("candidates")) or [_map(view.spec.get("candidate"))]
        self.baseline = _name(base.get("workload"))
        self.candidates = [w for w in _names(c.get("workload") for c in listed) if w != self.baseline]
        self.subsets = {
            _name(v.get("workload")): _name(v.get("subset"))
            for v in (base, *listed)
            if _name(v.get("subset"))
        }
        # The settings: None when unset (the default is shown) or odd.
        self.reward = _name(settings.get("reward")) or _name(found.get("reward"))
        self.interval = _name(settings.get("interval"))
        self.min_weight = _bounded(settings.get("minWeight"), 1, 100)
        self.max_step = _bounded(settings.get("maxStepChange"), 1, 100)
        self.confidence = _share(settings.get("confidence"))
        self.intervals_required = _bounded(settings.get("intervalsRequired"), 1, 100)
        self.max_duration = _name(settings.get("maxDuration"))
        effect = _number(settings.get("minimumEffect"))
        self.minimum_effect = effect if effect is not None and 0 < effect <= 10 else None
        promote = settings.get("autoPromote")
        self.auto_promote = promote if isinstance(promote, bool) else None
        # What the operator wrote.
        stage = found.get("stage")
        self.stage = stage if stage in (EXPLORING, CONFIRMING, DECIDED) else None
        self.intervals = _count(found.get("intervals"))
        self.leader = _name(found.get("leader"))
        self.chances = _per_model(found.get("probabilityBest"), _probability)
        self.status_alpha = _share(found.get("alpha"))
        self.winner = _name(view.status.get("winner"))
        self.records = {_name(r.get("workload")): r for r in view.records if _name(r.get("workload"))}
        self.arms: dict[str, _Arm] = {}
        for entry in _mappings(found.get("arms")):
            workload = _name(entry.get("workload"))
            if workload and workload not in self.arms:
                self.arms[workload] = _Arm(
                    workload,
                    _percent(entry.get("weight")),
                    _amount(entry.get("successes")),
                    _amount(entry.get("trials")),
                    _probability(entry.get("pooledRate")),
                    _probability(entry.get("stratifiedRate")),
                    _probability(entry.get("probabilityBest")),
                )
        self.comparison: dict[str, _Comparison] = {}
        for entry in _mappings(found.get("comparison")):
            workload = _name(entry.get("workload"))
            better = entry.get("better")
            if workload and workload not in self.comparison:
                self.comparison[workload] = _Comparison(
                    workload,
                    _probability(entry.get("baseline")),
                    _probability(entry.get("candidate")),
                    _number(entry.get("lift")),
                    _pair(entry.get("interval")),
                    better if isinstance(better, bool) else None,
                    _name(entry.get("reason")),
                )
        points = []
        for entry in _mappings(found.get("allocation")):
            moment = plugin_render.parse_time(entry.get("time"))
            if moment is not None:
                weights = _per_model(entry.get("weights"), _percent)
                points.append(
                    _Allocation(moment, weights, _per_model(entry.get("probabilityBest"), _probability))
                )
        points.sort(key=lambda p: p.time)
        self.allocation = points
        # Alpha per comparison: the status's, else the spec's over the candidates (as the operator does).
        self.spec_alpha = view.alpha
        self.count = len(self.candidates) or len(self.comparison)
        self.level = self.status_alpha or self.spec_alpha / max(self.count, 1)

    # -- the models
    def models(self) -> list[str]:
        """The baseline, the candidates in spec order, then any other model the status names."""
        known = [self.baseline] if self.baseline else []
        known += self.candidates
        return _names([*known, *self.arms, *self.comparison, *self.records])

    def plotted(self) -> list[str]:
        """The models of the allocation plot and table: the known ones, else the allocation's own."""
        known = self.models()
        if not known:
            known = _names(w for point in self.allocation for w in (*point.weights, *point.best))
        return known[:PLOT_MODELS]

    def label(self, workload: str) -> str:
        if workload == self.baseline:
            return f"{workload} (baseline)"
        if workload == self.winner:
            return f"{workload} (winner)"
        if workload == self.leader and not self.winner and self.stage != DECIDED:
            return f"{workload} (leader)"
        return workload

    def dropped(self, workload: str) -> bool:
        return _map(self.records.get(workload)).get("state") == "Dropped"

    def every_candidate_dropped(self) -> bool:
        candidates = self.candidates or [w for w in self.records if w != self.baseline]
        return bool(candidates) and all(self.dropped(w) for w in candidates)

    def dropped_why(self, workload: str) -> str:
        record = _map(self.records.get(workload))
        reason, message = _name(record.get("reason")), _name(record.get("message"))
        return f"{reason}: {message}" if reason and message else reason or message

    def state(self, workload: str) -> str:
        """The model's state for the table: baseline, active (or set aside while confirming), dropped."""
        if workload == self.baseline:
            return "baseline"
        record = _map(self.records.get(workload))
        if self.dropped(workload):
            why = self.dropped_why(workload)
            return f"dropped ({why})" if why else "dropped"
        arm = self.arms.get(workload)
        if self.stage == CONFIRMING and self.leader and workload != self.leader and arm and arm.weight == 0:
            return f"set aside while {self.leader} is confirmed"
        state = _name(record.get("state"))
        return state.lower() if state else MISSING

    def worse(self) -> list[_Comparison]:
        """The candidates significantly worse than the baseline."""
        return [c for c in self.comparison.values() if c.interval is not None and c.interval[1] < 0]

    # -- the settings with their defaults
    def every(self) -> str:
        return self.interval or DEFAULT_BANDIT_INTERVAL

    def longest(self) -> str:
        return self.max_duration or DEFAULT_BANDIT_MAX_DURATION

    def reward_name(self) -> str:
        return self.reward or "the reward"

    def alpha_text(self) -> str:
        """``alpha 0.025 (0.05 over 2 candidates)``."""
        text = f"alpha {self.level:.3g}"
        if self.count > 1 and math.isclose(self.level, self.spec_alpha / self.count, rel_tol=1e-4):
            text += f" ({self.spec_alpha:g} over {self.count} candidates)"
        return text


def _which(name: str, value: object | None) -> str:
    """``(minWeight)``, or ``(minWeight, the default)`` when it is not set (None or no text)."""
    return f"({name}, the default)" if value is None or value == "" else f"({name})"


def _plural(count: int, word: str) -> str:
    return f"{_thousands(count)} {word}" + ("" if count == 1 else "s")


def _weight_text(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.0f} %" if value == round(value) else f"{value:.1f} %"


def _amount_text(value: float | None) -> str:
    if value is None:
        return MISSING
    return _thousands(round(value)) if value == round(value) else f"{value:,.1f}"


def _rate_text(value: float | None) -> str:
    if value is None:
        return MISSING
    percent = value * 100
    return f"{percent:.2f} %" if abs(percent) >= 1 else f"{percent:.3g} %"


def _chance_text(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else MISSING


# ------------------------------------------------------------------------------------- sentences
def _change(view: _View, *, signed: bool = False) -> str:
    """``raised conversion by 12.0 % (95 % always-valid interval +3.1 % to +21.4 %)``."""
    return _lift_words(view.metric, view.lift, view.interval, view.objective_alpha, signed=signed)


def _lift_words(
    metric: str,
    lift: float | None,
    interval: tuple[float, float] | None,
    alpha: float,
    *,
    signed: bool = False,
    than: str = "",
) -> str:
    """A lift in words; ``than`` (`` over the baseline v1``) goes before the interval."""
    if lift is None:
        return f"showed no measurable lift of {metric}{than}"
    if signed:
        text = f"changed {metric} by {_pct(lift)}"
    elif lift > 0:
        text = f"raised {metric} by {_pct(lift, signed=False)}"
    elif lift < 0:
        text = f"lowered {metric} by {_pct(lift, signed=False)}"
    else:
        text = f"did not change {metric}"
    text += than
    if interval is not None:
        text += f" ({_confidence(alpha)} always-valid interval {_interval(interval)})"
    return text


def _what_matters(view: _View) -> str:
    return (
        f"the {_effect(view.minimum_effect)} that matters"
        if view.minimum_effect
        else "an effect that matters"
    )


def _segment_name(value: Any) -> str:
    labels = _map(value)
    if labels:
        return ", ".join(f"{_text(k)}={_text(v)}" for k, v in labels.items())
    return _text(value) or "?"


def verdict(experiment: Mapping[str, Any]) -> str:
    """The report's one-line verdict: what was decided and why."""
    return _verdict(_View(experiment))


def _verdict(view: _View) -> str:
    if view.bandit is not None:
        return _bandit_verdict(view, view.bandit)
    if view.aa:
        return _aa_verdict(view)
    if view.outcome == SHIP:
        label = "Ship (awaiting promotion)" if view.awaiting_promotion else "Ship"
        text = f"{label}: {view.who} {_change(view)}"
        good = view.good(view.lift) if view.lift is not None else None
        if view.minimum_effect and good is not None and good >= view.minimum_effect:
            text += f", more than {_what_matters(view)}"
        return text + "."
    if view.outcome == DISCARD:
        return f"Discard: {_discard_why(view)}."
    if view.outcome == ITERATE:
        return (
            f"Iterate: no clear answer within the maximum duration ({view.max_duration()}): "
            f"{'the leading candidate ' + view.candidate if view.several else 'the candidate'} "
            f"{_change(view, signed=True)}, which neither shows nor rules out {_what_matters(view)}."
        )
    if view.phase in ("RolledBack", "Failed"):
        ended = "Rolled back" if view.phase == "RolledBack" else "Failed"
        return f"{ended}: {view.message or view.reason or '?'}."
    if view.phase == "Succeeded":
        return f"Promoted: {view.message or 'the candidate receives all traffic'}."
    if view.lift is None:
        return "Running, no decision yet: not enough data for a lift so far."
    leading = f"the leading candidate {view.candidate}" if view.several else "the candidate"
    return f"Running, no decision yet: so far {leading} {_change(view, signed=True)}."


def _discard_why(view: _View) -> str:
    if view.several:
        dropped = "; ".join(
            f"{_text(r.get('workload'))}: {_text(r.get('message')) or _text(r.get('reason')) or 'dropped'}"
            for r in view.records
        )
        return (
            f"every candidate was dropped ({dropped})"
            if dropped
            else view.message or "every candidate failed"
        )
    unfair = [s for s in _mappings(view.status.get("segments")) if s.get("unfair") is True]
    if view.reason == "UnfairToSegment" or (unfair and view.reason != "Discarded"):
        margin = _share(_map(view.ab.get("fairness")).get("margin"))
        beyond = f" by more than the fairness margin of {_effect(margin)}" if margin else ""
        where = _segment_list(unfair)
        return f"the candidate harms {where or 'a segment'}{beyond}, even if it helps overall"
    failed = view.failed_guardrails()
    if failed:
        names = ", ".join(_text(g.get("name")) or "?" for g in failed)
        why = _text(failed[0].get("reason"))
        return f"the guardrail {names} failed" + (f" ({why})" if why else "")
    if view.srm_failed() and view.reason not in ("Discarded",):
        return (
            "the users' split does not match the configured split (sample ratio mismatch), "
            "so the results cannot be trusted"
        )
    good = view.good_interval()
    if good is not None and good[1] < 0:
        wrong = " (the wrong way)" if view.decrease and view.lift is not None and view.lift > 0 else ""
        return f"the candidate {_change(view)}{wrong}"
    if good is not None and view.minimum_effect and good[1] < view.minimum_effect:
        return (
            f"the candidate {_change(view, signed=True)}: an improvement as large as "
            f"{_what_matters(view)} is ruled out"
        )
    return view.message or f"the candidate {_change(view, signed=True)}"


def _aa_verdict(view: _View) -> str:
    if view.outcome == ITERATE and view.reason == "NoDifference":
        return (
            f"A/A test passed: the two identical arms showed no difference in {view.metric}"
            + (
                f" ({_confidence(view.alpha)} always-valid interval {_interval(view.interval)})"
                if view.interval
                else ""
            )
            + " and the split matched, so the assignment and the metrics can be trusted."
        )
    if view.outcome == DISCARD or view.reason == "AAFailed":
        return (
            "A/A test failed: identical arms should not differ, but they did"
            + (f" ({view.message})" if view.message else "")
            + "; the assignment or the metrics are broken, so fix them before trusting A/B tests."
        )
    if view.outcome == ITERATE:
        return (
            f"A/A test ended without enough data: {view.message or 'the test reached its maximum duration'}."
        )
    return f"A/A test running: no decision yet; so far the identical arms {_change(view, signed=True)}."


def _reading(view: _View) -> str:
    """The objective row's plain reading."""
    good = view.good_interval()
    if good is None:
        return MISSING
    if good[1] < 0:
        return "worse (significant)"
    if good[0] > 0:
        if view.minimum_effect and good[0] >= view.minimum_effect:
            return "better, by more than the minimum effect"
        return "better (significant)"
    if view.minimum_effect and good[1] < view.minimum_effect:
        return "no improvement that matters"
    return "no clear difference"


def _secondary_reading(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return MISSING
    if interval[0] > 0:
        return "higher (significant)"
    if interval[1] < 0:
        return "lower (significant)"
    return "no clear difference"


# ------------------------------------------------------------------------------------- sections
def _document(view: _View, *, plots: bool) -> list[_Block]:
    if view.bandit is not None:
        return _bandit_document(view, view.bandit, plots=plots)
    blocks: list[_Block] = [_Heading(1, view.title)]
    blocks += _header(view)
    blocks += _hypothesis(view)
    blocks += _design(view)
    blocks += _results(view)
    blocks += _candidates(view)
    if plots:
        blocks += [_Heading(2, "Over time"), _Plots()]
    blocks += _segments(view)
    blocks += _quality(view)
    blocks += _decision(view)
    return blocks


def _header(view: _View) -> list[_Block]:
    where = f"{view.namespace}/{view.name}" if view.namespace else view.name
    facts = [
        f"Experiment {where}",
        f"candidate {view.candidate} vs baseline {view.baseline}",
        f"status {view.phase or 'not yet observed'}",
    ]
    seen = view.last_seen()
    if seen is not None:
        facts.append(f"last evaluated {_when(seen)}")
    blocks: list[_Block] = [_p(" · ".join(facts)), _p(_b(_verdict(view)), kind="verdict")]
    if view.strategy != "ABTest":
        blocks.append(
            _p(
                f"This experiment's strategy is {view.strategy}: this report is made for A/B tests, "
                "so it shows only what the status holds.",
                kind="note",
            )
        )
    return blocks


def _hypothesis(view: _View) -> list[_Block]:
    if view.aa:
        text = (
            f"This is an A/A test: both arms run the same model. It checks the split, the metrics and the "
            f"sample ratio on {view.metric}; the only good result is no difference."
        )
        return [_Heading(2, "Hypothesis"), _p(text)]
    model = f"The candidate model {view.candidate}"
    if view.candidate_subset:
        model += f" (subset {view.candidate_subset})"
    than = f"the baseline model {view.baseline}"
    if view.baseline_subset:
        than += f" (subset {view.baseline_subset})"
    verb = "lowers" if view.decrease else "raises"
    text = f"{model} {verb} {view.metric} compared with {than}"
    if view.minimum_effect:
        text += (
            f" by at least {_effect(view.minimum_effect)} (relative). A smaller change is not worth "
            "shipping, so the test looks for at least that much."
        )
    else:
        text += "."
    return [_Heading(2, "Hypothesis"), _p(text)]


def _cohort(matches: list[Any]) -> str:
    if not matches:
        return "every user"
    described = [_describe_match(m) for m in matches]
    return "requests where " + "; or where ".join(d for d in described if d)


def _describe_match(match: Any) -> str:
    parts = []
    labels = {"uri": "the path", "scheme": "the scheme", "method": "the method", "authority": "the host"}
    for key, condition in _map(match).items():
        if key in ("headers", "queryParams", "withoutHeaders") and isinstance(condition, Mapping):
            what = {"headers": "header", "queryParams": "query parameter", "withoutHeaders": "header"}[key]
            for name, string_match in condition.items():
                text = f"{what} {_text(name)} {_string_match(string_match)}"
                parts.append(f"not ({text})" if key == "withoutHeaders" else text)
        elif key in labels:
            parts.append(f"{labels[key]} {_string_match(condition)}")
        else:
            parts.append(f"{_text(key)} is {_text(condition)}")
    return " and ".join(parts) or "any request"


def _string_match(value: Any) -> str:
    match = _map(value)
    if "exact" in match:
        return f'is "{_text(match["exact"])}"'
    if "prefix" in match:
        return f'starts with "{_text(match["prefix"])}"'
    if "regex" in match:
        return f'matches the pattern "{_text(match["regex"])}"'
    return f"is {_text(value)}"


def _design(view: _View) -> list[_Block]:
    items: list[tuple[_Inline, ...]] = []
    default = "" if view.split_set else " (the default)"
    if view.aa:
        items.append(
            (
                _b("Split: "),
                f"{view.split} % / {100 - view.split} % between two identical arms{default}.",
            )
        )
    elif view.several:
        names = [_text(c.get("workload")) for c in _mappings(view.spec.get("candidates"))]
        items.append(
            (
                _b("Split: "),
                f"{view.split} % of participating users see the candidates {', '.join(names)}, shared "
                f"equally (a dropped one's share goes back to the baseline), {100 - view.split} % the "
                f"baseline {view.baseline}{default}.",
            )
        )
    else:
        items.append(
            (
                _b("Split: "),
                f"{view.split} % of participating users see the candidate {view.candidate}, "
                f"{100 - view.split} % the baseline {view.baseline}{default}.",
            )
        )
    items.append((_b("Who takes part: "), _cohort(_list(view.ab.get("match"))) + "."))
    cookie = _text(_map(view.ab.get("stickiness")).get("cookie")) or f"mexp-{view.name}"
    items.append(
        (
            _b("Stickiness: "),
            "each user is assigned once and stays in their variant (cookie ",
            _code(cookie),
            ").",
        )
    )
    items.append((_b("Duration: "), _duration_text(view)))
    stats = (
        f"significance level (alpha) {view.alpha:g} ({_confidence(view.alpha)} always-valid intervals: "
        "they stay correct however often the test is looked at)"
    )
    if view.minimum_effect:
        stats += f"; power {_whole(view.power)} to detect {_effect(view.minimum_effect)}"
    items.append((_b("Statistics: "), stats + "."))
    planned = _plan_text(view)
    if planned:
        items.append((_b("Planned sample size: "), planned))
    promote = (
        "promoted automatically on Ship"
        if view.ab.get("autoPromote") is True
        else "on Ship it waits for a person to promote it (autoPromote is off)"
    )
    every = _text(view.ab.get("interval")) or DEFAULT_INTERVAL
    items.append((_b("Operation: "), f"evaluated every {every}" + ("." if view.aa else f"; {promote}.")))
    segments = [_text(s) for s in _list(view.spec.get("segments"))]
    if segments:
        items.append((_b("Segments analysed: "), ", ".join(segments) + "."))
    return [_Heading(2, "Design"), _Bullets(tuple(items))]


def _ran(view: _View) -> str:
    """How long the experiment ran (or has been running), from its start to the last evaluation."""
    start, end = view.started(), view.last_seen()
    if start is None:
        return "not started yet" if not view.phase else "start time unknown"
    if end is None or end < start:
        return f"started {_when(start)}"
    took = _span((end - start).total_seconds())
    if view.finished or view.outcome:
        return f"ran {took} ({_when(start)} to {_when(end)})"
    return f"running for {took} so far (since {_when(start)})"


def _duration_text(view: _View) -> str:
    text = _ran(view)
    expected = _text(view.plan.get("expectedDuration"))
    if expected:
        text += f"; the plan expected about {expected}"
    most = view.max_duration()
    default = "" if view.ab.get("maxDuration") else ", the default"
    return text + f"; at most {most} (maxDuration{default})."


def _plan_text(view: _View) -> str:
    per_arm = _count(view.plan.get("samplesPerArm"))
    if per_arm is None:
        return _text(view.plan.get("message"))
    text = f"{_thousands(per_arm)} observations per arm"
    rate, base = _number(view.plan.get("requestsPerSecond")), view.plan.get("baselineRate")
    sources = []
    if _number(base) is not None:
        sources.append(f"the baseline's {view.metric} of {view.value(base, view.metric)}")
    if rate is not None:
        sources.append(f"{rate:.4g} requests/s")
    if sources:
        text += " (planned from " + " and ".join(sources) + ")"
    smaller = view.smaller_arm()
    if smaller is not None and per_arm > 0:
        text += f"; so far {_thousands(smaller)} in the smaller arm ({_whole(smaller / per_arm)} of the plan)"
    return text + "."


def _results(view: _View) -> list[_Block]:
    headers = ("Metric", "Role", "Baseline", "Candidate", "Lift", "Interval", "Reading")
    rows: list[tuple[str, ...]] = []
    if view.objective or view.spec.get("objective"):
        rows.append(
            (
                view.metric,
                "Objective",
                view.value(view.objective.get("baseline"), view.metric),
                view.value(view.objective.get("candidate"), view.metric),
                _pct(view.lift) if view.lift is not None else MISSING,
                f"{_interval(view.interval)} ({_confidence(view.objective_alpha)})"
                if view.interval
                else MISSING,
                _reading(view),
            )
        )
    for metric in _mappings(view.status.get("secondary")):
        name = _text(metric.get("metric") or metric.get("name")) or "?"
        variant = _text(metric.get("variant"))
        alpha = _share(metric.get("alpha"))
        lift, interval = _number(metric.get("lift")), _pair(metric.get("interval"))
        rows.append(
            (
                f"{name} ({variant})" if variant else name,
                f"Secondary (alpha {alpha:.3g})" if alpha else "Secondary",
                view.value(metric.get("baseline"), name),
                view.value(metric.get("candidate"), name),
                _pct(lift) if lift is not None else MISSING,
                f"{_interval(interval)} ({_confidence(alpha or view.alpha)})" if interval else MISSING,
                _secondary_reading(interval),
            )
        )
    for guardrail in view.guardrails():
        name = _text(guardrail.get("name") or guardrail.get("metric")) or "?"
        variant = _text(guardrail.get("variant"))
        verdict_text = _text(guardrail.get("verdict")) or MISSING
        reason = _text(guardrail.get("reason"))
        rows.append(
            (
                f"{name} ({variant})" if variant else name,
                "Guardrail",
                view.value(guardrail.get("baseline"), name),
                view.value(guardrail.get("candidate"), name),
                MISSING,
                MISSING,
                f"{verdict_text}: {reason}" if reason else verdict_text,
            )
        )
    blocks: list[_Block] = [_Heading(2, "Results")]
    if not rows:
        return [*blocks, _p("No results yet: the operator has not evaluated the test.")]
    blocks.append(
        _p(
            "Lift is the candidate's relative change over the baseline. The interval holds the lifts the "
            "data are compatible with; an interval entirely above or below zero is a significant difference. "
            "Secondary metrics use a stricter alpha, corrected for comparing several metrics; guardrails "
            "protect against harm and roll the candidate back when they fail."
        )
    )
    blocks.append(_Table(headers, tuple(rows)))
    samples = view.samples()
    if samples:
        shown = "; ".join(f"{view.label(w)} {_thousands(samples[w])}" for w in view.ordered(list(samples)))
        blocks.append(_p(f"Observations of {view.metric}: {shown}."))
    return blocks


def _candidates(view: _View) -> list[_Block]:
    """Several candidates: each one's lift and interval against the baseline, its state, the winner."""
    if not view.several:
        return []
    headers = ("Candidate", "State", "Baseline", "Candidate value", "Lift", "Interval", "Reading")
    winner = _text(view.status.get("winner"))
    rows = []
    for record in view.records:
        workload = _text(record.get("workload"))
        entry = _map(record.get("objective"))
        lift, interval = _number(entry.get("lift")), _pair(entry.get("interval"))
        state = _text(record.get("state")) or MISSING
        if state == "Dropped":
            why = _text(record.get("message")) or _text(record.get("reason"))
            reading = f"dropped: {why}" if why else "dropped"
        else:
            reading = _candidate_reading(view, interval)
        rows.append(
            (
                workload + (" (winner)" if workload == winner else ""),
                state,
                view.value(entry.get("baseline"), view.metric),
                view.value(entry.get("candidate"), view.metric),
                _pct(lift) if lift is not None else MISSING,
                _interval(interval) if interval else MISSING,
                reading,
            )
        )
    count = len(_mappings(view.spec.get("candidates"))) or len(view.records)
    level = view.objective_alpha
    blocks: list[_Block] = [
        _Heading(2, "Candidates"),
        _p(
            f"{count} candidates shared the split; each is compared with the baseline on {view.metric} on "
            f"its own, at alpha {level:.3g} ({_confidence(level)} always-valid intervals, corrected for "
            "comparing several candidates). A candidate that is worse, cannot reach the effect that matters, "
            "harms a segment or breaks a guardrail is dropped and its users go back to the baseline; the "
            "first candidate to ship ends the test, the one with the largest lift winning."
        ),
    ]
    if not rows:
        return [*blocks, _p("No results per candidate yet.")]
    blocks.append(_Table(headers, tuple(rows)))
    if winner:
        blocks.append(_p(_b("Winner: "), f"{winner}."))
    return blocks


def _candidate_reading(view: _View, interval: tuple[float, float] | None) -> str:
    if interval is None:
        return MISSING
    low, high = sorted((view.good(interval[0]), view.good(interval[1])))
    if high < 0:
        return "worse (significant)"
    if low > 0:
        return "better (significant)"
    if view.minimum_effect and high < view.minimum_effect:
        return "no improvement that matters"
    return "no clear difference"


def _segments(view: _View) -> list[_Block]:
    entries = _mappings(view.status.get("segments"))
    if not entries:
        if _list(view.spec.get("segments")):
            return [_Heading(2, "Segments"), _p("No per-segment results yet.")]
        return []
    headers = ("Segment", "Baseline", "Candidate", "Lift", "Interval", "Observations", "Flags")
    rows = []
    for entry in entries:
        metric = _text(entry.get("metric")) or view.metric
        lift, interval = _number(entry.get("lift")), _pair(entry.get("interval"))
        samples = view.samples(entry.get("samples") or {})
        flags = [
            f
            for f, on in (("reversed", entry.get("reversed")), ("unfair", entry.get("unfair")))
            if on is True
        ]
        variant = _text(entry.get("variant"))
        rows.append(
            (
                _segment_name(entry.get("segment")) + (f" ({variant})" if variant else ""),
                view.value(entry.get("baseline"), metric),
                view.value(entry.get("candidate"), metric),
                _pct(lift) if lift is not None else MISSING,
                _interval(interval) if interval else MISSING,
                " / ".join(_thousands(samples[w]) for w in view.ordered(list(samples))) or MISSING,
                ", ".join(flags) or "none",
            )
        )
    blocks: list[_Block] = [
        _Heading(2, "Segments"),
        _p(
            f"The lift of {view.metric} per segment (observations: baseline / candidate). Intervals are "
            "corrected for looking at many segments."
        ),
        _Table(headers, tuple(rows)),
    ]
    overall = f" ({_pct(view.lift)})" if view.lift is not None else ""
    reversed_ = [e for e in entries if e.get("reversed") is True]
    if reversed_:
        one = len(reversed_) == 1
        blocks.append(
            _p(
                _b(f"{'Reversal' if one else 'Reversals'} in {_segment_list(reversed_)}: "),
                f"the candidate's effect points the other way {'here' if one else 'in these segments'} "
                f"than overall{overall}. When a segment goes against the total, the overall number mixes "
                "groups of different sizes and baselines (Simpson's paradox): look at "
                f"{'this segment' if one else 'these segments'} on {'its' if one else 'their'} own before "
                "deciding, for instance whether the candidate should serve them at all.",
            )
        )
    unfair = [e for e in entries if e.get("unfair") is True]
    if unfair:
        margin = _share(_map(view.ab.get("fairness")).get("margin"))
        beyond = (
            f"by more than the fairness margin of {_effect(margin)}"
            if margin
            else "beyond the fairness margin"
        )
        blocks.append(
            _p(
                _b(f"Unfair to {_segment_list(unfair)}: "),
                f"the candidate is worse than the baseline there {beyond}, which discards the candidate.",
            )
        )
    return blocks


def _segment_list(entries: Sequence[Mapping[str, Any]]) -> str:
    """``region=eu (-10.0 %), region=fr (-3.0 %)``."""
    return ", ".join(
        _segment_name(e.get("segment"))
        + (f" ({_pct(lift)})" if (lift := _number(e.get("lift"))) is not None else "")
        for e in entries
    )


def _quality(view: _View) -> list[_Block]:
    srm = _map(view.status.get("srm"))
    message = _text(srm.get("message"))
    condition = next(
        (
            _map(c)
            for c in _list(view.status.get("conditions"))
            if _map(c).get("type") == "SampleRatioMismatch"
        ),
        {},
    )
    if srm.get("checked") is False:
        why = re.sub(r"^not checked:\s*", "", message) or "no counts of assigned users"
        line: tuple[_Inline, ...] = (_b("Sample ratio: not checked. "), why[:1].upper() + why[1:] + ".")
    elif view.srm_failed():
        why = message or _text(condition.get("message"))
        line = (
            _b("Sample ratio: MISMATCH. "),
            "The share of users in each variant does not match the configured split"
            + (f" ({why})" if why else "")
            + ". Something sorts users unevenly (a variant failing for some users, bots, a lost cookie): "
            "the results are not trustworthy until the cause is found.",
        )
    elif srm.get("passed") is True or condition.get("status") == "False":
        line = (
            _b("Sample ratio: passed. "),
            "The share of users in each variant matches the configured split"
            + (f" ({message})" if message and message != "the users' shares match the split" else "")
            + ".",
        )
    else:
        line = (_b("Sample ratio: "), "no check recorded yet.")
    blocks: list[_Block] = [_Heading(2, "Data quality"), _p(*line)]
    samples = view.samples()
    base, cand = samples.get(view.baseline), samples.get(view.candidate)
    if base is not None and cand is not None and base + cand > 0 and not view.several:
        share = cand / (base + cand) * 100
        blocks.append(
            _p(
                f"Observations of {view.metric} split {100 - share:.1f} % baseline / {share:.1f} % candidate "
                f"(configured {100 - view.split} / {view.split})."
            )
        )
    return blocks


def _decision(view: _View) -> list[_Block]:
    meaning = {
        SHIP: "Ship: the candidate is better by enough to matter.",
        DISCARD: "Discard: the candidate is not worth shipping (worse, the improvement that matters is ruled "
        "out, a guardrail failed or a segment is harmed).",
        ITERATE: "Iterate: the test could not tell; change something and test again.",
    }
    if view.aa:
        passed = view.reason == "NoDifference"
        meaning = {
            SHIP: "Ship: unexpected for an A/A test.",
            DISCARD: "Discard: the identical arms differed, so the experiment pipeline is broken.",
            ITERATE: "No difference between the identical arms, as it should be."
            if passed
            else "Iterate: not enough data to check the pipeline.",
        }
    items: list[tuple[_Inline, ...]] = []
    if view.outcome:
        items.append((_b("Outcome: "), meaning[view.outcome]))
    else:
        items.append((_b("Outcome: "), "none yet."))
    state = view.phase or "not yet observed"
    if view.reason:
        state += f" (reason {view.reason})"
    items.append((_b("Status: "), state + "."))
    if view.message:
        items.append((_b("The operator says: "), view.message))
    weights = {_text(k): v for k, v in _map(view.status.get("weights")).items() if _count(v) is not None}
    if weights:
        shown = ", ".join(f"{view.label(w)} {_count(weights[w])} %" for w in view.ordered(list(weights)))
        items.append((_b("Traffic now: "), shown + "."))
    items.append((_b("Next: "), *_next(view)))
    blocks: list[_Block] = [_Heading(2, "Decision"), _Bullets(tuple(items))]
    if view.outcome == ITERATE and not view.aa:
        blocks += _iterate(view)
    return blocks


def _next(view: _View) -> tuple[_Inline, ...]:
    kept = "current" if view.several else f"{view.split} / {100 - view.split}"
    every = _text(view.ab.get("interval")) or DEFAULT_INTERVAL
    return _next_step(
        view,
        promoted=(view.who, "the candidate", f"the candidate {view.candidate}"),
        held=(f"the {kept} split", "the experiment is paused at its current traffic"),
        baseline=f"the baseline {view.baseline}",
        continuing=f"the test continues, evaluated every {every} until it reaches a decision, at most "
        f"{view.max_duration()} after it started.",
    )


def _next_step(
    view: _View,
    *,
    promoted: tuple[str, str, str],
    held: tuple[str, str],
    baseline: str,
    continuing: str,
) -> tuple[_Inline, ...]:
    """What happens next, by phase.  ``promoted``: who waits for promotion, who a promotion sends all
    traffic to, who has it once Succeeded; ``held``: what a wait for promotion keeps, and the pause."""
    where = f" -n {view.namespace}" if view.namespace else ""
    waiting, receiver, winner = promoted
    kept, paused = held
    if view.awaiting_promotion:
        return (
            f"{waiting} is not promoted automatically. The operator keeps {kept} and waits "
            "for the modelrollout.io/promote annotation: ",
            _code(f"kubectl mexp promote {view.name}{where}"),
            f" sends all traffic to {receiver}, ",
            _code(f"kubectl mexp abort {view.name}{where}"),
            " keeps the baseline.",
        )
    if view.phase == "Paused":
        return (f"{paused}; ", _code(f"kubectl mexp resume {view.name}{where}"), " carries on.")
    if view.phase == "Succeeded":
        return (f"nothing: {winner} now receives all traffic.",)
    if view.phase == "RolledBack":
        return (f"nothing: all traffic is back on {baseline}.",)
    if view.phase == "Failed":
        return ("the experiment failed; fix the cause named above and restart it.",)
    return (continuing,)


def _iterate(view: _View) -> list[_Block]:
    parts = [
        f"The test was inconclusive at its maximum duration ({view.max_duration()}): "
        + (
            f"the interval {_interval(view.interval)} contains both no change and {_what_matters(view)}."
            if view.interval
            else "there was not enough data for an interval."
        )
    ]
    per_arm, smaller = _count(view.plan.get("samplesPerArm")), view.smaller_arm()
    if per_arm and smaller and view.minimum_effect:
        detectable = view.minimum_effect * math.sqrt(per_arm / smaller)
        parts.append(
            f"With {_thousands(smaller)} observations per arm it could reliably ({_whole(view.power)} "
            f"power) detect an effect of about {_effect(detectable)}; detecting "
            f"{_effect(view.minimum_effect)} needs about {_thousands(per_arm)} per arm."
        )
    elif view.interval:
        parts.append(
            f"Effects below {_pct(view.interval[0])} or above {_pct(view.interval[1])} are ruled out; "
            "smaller ones cannot be told apart from no change."
        )
    parts.append(
        "To get an answer: run longer (raise abTest.maxDuration), bring more users into the test (a wider "
        "cohort or a split closer to 50 %), or test a bolder change. Or accept that any effect is smaller "
        "than what matters."
    )
    return [_Heading(3, "Why Iterate"), _p(" ".join(parts))]


# ------------------------------------------------------------------------------ a bandit's report
def _bandit_document(view: _View, bandit: _Bandit, *, plots: bool) -> list[_Block]:
    blocks: list[_Block] = [_Heading(1, view.title)]
    blocks += _bandit_header(view, bandit)
    blocks += _bandit_design(view, bandit)
    blocks += _bandit_models(view, bandit)
    blocks += _bandit_comparison(bandit)
    if plots:
        blocks += [_Heading(2, "Over time"), _Plots()]
    else:
        blocks += _allocation_table(bandit)
    blocks += _bandit_decision(view, bandit)
    return blocks


def _bandit_header(view: _View, bandit: _Bandit) -> list[_Block]:
    where = f"{view.namespace}/{view.name}" if view.namespace else view.name
    facts = [f"Bandit {where}"]
    if bandit.candidates:
        one = len(bandit.candidates) == 1
        facts.append(
            f"{'candidate' if one else 'candidates'} {', '.join(bandit.candidates)} vs baseline "
            f"{bandit.baseline or '?'}"
        )
    facts.append(f"status {view.phase or 'not yet observed'}")
    seen = view.last_seen()
    if seen is not None:
        facts.append(f"last evaluated {_when(seen)}")
    return [_p(" · ".join(facts)), _p(_b(_bandit_verdict(view, bandit)), kind="verdict")]


def _bandit_verdict(view: _View, bandit: _Bandit) -> str:
    base = f"the baseline {bandit.baseline}" if bandit.baseline else "the baseline"
    reward = bandit.reward_name()

    def change(entry: _Comparison | None, *, signed: bool = False, than: str = "") -> str:
        lift = entry.lift if entry else None
        interval = entry.interval if entry else None
        return _lift_words(reward, lift, interval, bandit.level, signed=signed, than=than)

    if view.outcome == SHIP:
        chosen = bandit.winner or (bandit.leader if bandit.leader != bandit.baseline else "")
        entry = bandit.comparison.get(chosen)
        who = chosen or "the winning candidate (the status does not name it)"
        if entry is not None and entry.lift is not None:
            claim = change(entry, than=f" over {base}")
        else:
            claim = f"is significantly better than {base}"
        if view.phase == "Succeeded":
            return f"Ship: {who} was promoted and now receives all traffic: it {claim}."
        if view.awaiting_promotion:
            return f"Ship (awaiting promotion): {who} {claim}; it waits for a person to promote it."
        state = view.phase + (f", reason {view.reason}" if view.reason else "") if view.phase else "unknown"
        return f"Ship: {who} {claim}; not promoted yet (status {state})."
    if view.outcome == DISCARD:
        return f"Discard: {_bandit_discard_why(view, bandit, base)}."
    if view.outcome == ITERATE:
        racing = [c for c in bandit.comparison.values() if not bandit.dropped(c.workload)]
        details = _lifts(bandit, racing)
        return (
            f"Iterate: no clear answer within the maximum duration ({bandit.longest()}), so {base} keeps all "
            "traffic: no candidate is significantly better and not every one is worse"
            + (f" ({details})" if details else "")
            + "."
        )
    if view.phase in ("RolledBack", "Failed"):
        ended = "Rolled back" if view.phase == "RolledBack" else "Failed"
        return f"{ended}: {view.message or view.reason or '?'}."
    if view.phase == "Succeeded":
        who = bandit.winner or "a candidate"
        return f"Promoted: {who} now receives all traffic" + (f" ({view.message})." if view.message else ".")
    state = "Paused, no decision yet" if view.phase == "Paused" else "Running, no decision yet"
    if not bandit.intervals:
        return f"{state}: the bandit has measured no interval so far."
    so_far = _plural(bandit.intervals, "interval")
    if bandit.stage == CONFIRMING and bandit.leader:
        entry = bandit.comparison.get(bandit.leader)
        return (
            f"{state}: after {so_far} the bandit is confirming {bandit.leader} against {base} at an even "
            f"split; so far {bandit.leader} {change(entry, signed=True)}."
        )
    text = f"{state}: exploring, {so_far} so far"
    if bandit.leader:
        leader = base if bandit.leader == bandit.baseline else bandit.leader
        chance = bandit.chances.get(bandit.leader)
        text += f"; the most likely best model is {leader}" + (
            f" (probability {_chance_text(chance)})" if chance is not None else ""
        )
    return text + "."


def _bandit_discard_why(view: _View, bandit: _Bandit, base: str) -> str:
    if bandit.every_candidate_dropped():
        dropped = "; ".join(
            f"{w}: {bandit.dropped_why(w) or 'dropped'}" for w in bandit.models() if bandit.dropped(w)
        )
        return f"every candidate was dropped ({dropped}), so {base} keeps all traffic"
    if view.reason == BASELINE_BEST:
        chance = bandit.chances.get(bandit.baseline)
        shown = f" (probability {_chance_text(chance)} of being the best)" if chance is not None else ""
        return (
            f"the bandit found {base} the best model{shown} and no candidate significantly better, so "
            "the baseline keeps all traffic"
        )
    worse = bandit.worse()
    if worse:
        names = ", ".join(c.workload for c in worse)
        return (
            f"no candidate beat {base}, and {names} {'is' if len(worse) == 1 else 'are'} significantly "
            f"worse ({_lifts(bandit, worse)}), so the baseline keeps all traffic"
        )
    return view.message or "no candidate was worth shipping, so the baseline keeps all traffic"


def _lifts(bandit: _Bandit, entries: Sequence[_Comparison]) -> str:
    """``lift of conversion, 97.5 % always-valid interval: v2 -8.9 %, -32.5 % to +23.1 %; v3 ...``."""
    shown = [
        f"{c.workload} {_pct(c.lift)}" + (f", {_interval(c.interval)}" if c.interval else "")
        for c in entries
        if c.lift is not None
    ]
    if not shown:
        return ""
    return f"lift of {bandit.reward_name()}, {_confidence(bandit.level)} always-valid interval: " + "; ".join(
        shown
    )


def _bandit_design(view: _View, bandit: _Bandit) -> list[_Block]:
    base = bandit.baseline or "?"
    reward = bandit.reward_name()

    def model(workload: str) -> str:
        subset = bandit.subsets.get(workload)
        return f"{workload} (subset {subset})" if subset else workload

    intro = (
        f"A multi-armed bandit shared the traffic between the baseline {base} and "
        f"{'the candidate' if len(bandit.candidates) == 1 else 'the candidates'} "
        f"{', '.join(bandit.candidates) or '?'}, sending more of it to the models most likely to earn the "
        f"most {reward} while it ran. A comparison of each candidate with the baseline then decided "
        "whether one is better and ships."
    )
    items: list[tuple[_Inline, ...]] = []
    items.append(
        (
            _b("Models: "),
            f"the baseline {model(bandit.baseline) if bandit.baseline else '?'}; "
            f"{'the candidate' if len(bandit.candidates) == 1 else 'the candidates'} "
            f"{', '.join(model(w) for w in bandit.candidates) or '?'}.",
        )
    )
    items.append(
        (
            _b("Reward: "),
            f"{bandit.reward}, a ratio of successes to trials (such as conversions per request); higher is "
            "better."
            if bandit.reward
            else "not set.",
        )
    )
    min_weight = bandit.min_weight or DEFAULT_MIN_WEIGHT
    max_step = bandit.max_step or DEFAULT_MAX_STEP_CHANGE
    items.append(
        (
            _b("Allocation: "),
            f"an equal split to start; then every {bandit.every()} {_which('interval', bandit.interval)} "
            "the traffic moves towards each model's probability of being the best (Thompson sampling). "
            f"Every model in the race keeps at least {min_weight} % {_which('minWeight', bandit.min_weight)} "
            f"and no weight moves more than {max_step} points at a time "
            f"{_which('maxStepChange', bandit.max_step)}.",
        )
    )
    guardrails = _bandit_guardrail_names(view, bandit)
    items.append(
        (
            _b("Guardrails: "),
            f"{', '.join(guardrails)}: each candidate is judged against the baseline, and one that fails is "
            "dropped at once (weight 0) while the others carry on."
            if guardrails
            else "none besides the reward.",
        )
    )
    confidence = bandit.confidence or DEFAULT_CONFIDENCE
    required = bandit.intervals_required or DEFAULT_INTERVALS_REQUIRED
    items.append(
        (
            _b("Stopping rule: "),
            f"the exploration stops once one model has been the best with probability at least "
            f"{confidence:g} {_which('confidence', bandit.confidence)} for "
            f"{_plural(required, 'interval')} in a row "
            f"{_which('intervalsRequired', bandit.intervals_required)}, or after {bandit.longest()} at the "
            f"latest {_which('maxDuration', bandit.max_duration)}.",
        )
    )
    effect = bandit.minimum_effect or DEFAULT_BANDIT_MINIMUM_EFFECT
    items.append(
        (
            _b("Decision: "),
            "the stopping rule alone does not control errors, so a stratified comparison decides: each "
            f"candidate against the baseline on {reward}, the Mantel-Haenszel rate ratio over the intervals "
            "(each interval a stratum, so a base rate that drifts while the traffic moves cannot fake a "
            f"difference), with {_confidence(bandit.level)} always-valid intervals at {bandit.alpha_text()}, "
            f"tuned for lifts of about {_effect(effect)} {_which('minimumEffect', bandit.minimum_effect)}. "
            "A candidate whose whole interval lies above zero ships. When the stopping rule picks a "
            "candidate that is not significantly better yet, it is confirmed against the baseline at an "
            "even split until the comparison decides; when it picks the baseline, the candidates are "
            "discarded; at the maximum duration the baseline stays.",
        )
    )
    items.append((_b("Duration: "), _bandit_duration(view, bandit)))
    if bandit.auto_promote is False:
        promote = "on Ship the winner waits for a person to promote it (autoPromote is off)."
    else:
        promote = "the winner is promoted automatically on Ship (autoPromote" + (
            ")." if bandit.auto_promote else ", the default)."
        )
    items.append((_b("Operation: "), promote))
    return [_Heading(2, "What was compared"), _p(intro), _Bullets(tuple(items))]


def _bandit_guardrail_names(view: _View, bandit: _Bandit) -> list[str]:
    """The metrics but the reward that judge the candidates (those with thresholds, builtins, or the
    Guardrail role; a ratio or a mean without thresholds is only measured)."""
    names = []
    for metric in _mappings(view.spec.get("metrics")):
        name = _name(metric.get("name"))
        if not name or name == bandit.reward:
            continue
        role = metric.get("role")
        thresholds = any(metric.get(k) is not None for k in ("max", "min", "maxRelativeIncrease"))
        measured_only = ("ratio" in metric or "mean" in metric) and not thresholds
        if role == "Guardrail" or (role is None and not measured_only):
            names.append(name)
    return _names(names)


def _bandit_duration(view: _View, bandit: _Bandit) -> str:
    text = _ran(view)
    if bandit.intervals is not None:
        text += f", {_plural(bandit.intervals, 'interval')} measured"
    return text + f"; at most {bandit.longest()} {_which('maxDuration', bandit.max_duration)}."


def _bandit_models(view: _View, bandit: _Bandit) -> list[_Block]:
    headers = ("Model", "Weight", "Trials", "Successes", "Pooled rate", "Stratified rate", "P(best)", "State")
    rows = []
    for workload in bandit.models():
        arm = bandit.arms.get(workload)
        chance = arm.best if arm and arm.best is not None else bandit.chances.get(workload)
        rows.append(
            (
                bandit.label(workload),
                _weight_text(arm.weight if arm else None),
                _amount_text(arm.trials if arm else None),
                _amount_text(arm.successes if arm else None),
                _rate_text(arm.pooled if arm else None),
                _rate_text(arm.stratified if arm else None),
                _chance_text(chance),
                bandit.state(workload),
            )
        )
    blocks: list[_Block] = [_Heading(2, "Results per model")]
    if not bandit.arms and not bandit.records:
        return [*blocks, _p("No results yet: the bandit has measured no interval.")]
    reward = bandit.reward_name()
    blocks.append(
        _p(
            f"Weight: the share of traffic the bandit gave each model at its last allocation. Trials and "
            f"successes: the {reward} counts summed over the intervals; the pooled rate divides those sums. "
            "The stratified rate is the rate the model would have had serving all the traffic of the "
            "intervals it took part in: a base rate that drifts while the bandit moves traffic can make "
            "pooled rates rank the models the wrong way round (Simpson's paradox), stratified ones not. "
            "Neither decides: the comparison below does. P(best): the posterior probability that the model "
            "is the best, which drives the allocation."
        )
    )
    blocks.append(_Table(headers, tuple(rows)))
    guardrails = [
        g for g in view.guardrails() if g.get("role") != "Reward" and _name(g.get("name")) != bandit.reward
    ]
    if guardrails:
        blocks.append(_Heading(3, "Guardrails at the last evaluation"))
        checks = []
        for guardrail in guardrails:
            name = _text(guardrail.get("name") or guardrail.get("metric")) or "?"
            variant = _text(guardrail.get("variant"))
            verdict_text = _text(guardrail.get("verdict")) or MISSING
            reason = _text(guardrail.get("reason"))
            checks.append(
                (
                    f"{name} ({variant})" if variant else name,
                    view.value(guardrail.get("baseline"), name),
                    view.value(guardrail.get("candidate"), name),
                    f"{verdict_text}: {reason}" if reason else verdict_text,
                )
            )
        blocks.append(_Table(("Metric (candidate)", "Baseline", "Candidate", "Verdict"), tuple(checks)))
    return blocks


def _bandit_comparison(bandit: _Bandit) -> list[_Block]:
    base = bandit.baseline or "the baseline"
    blocks: list[_Block] = [
        _Heading(2, "The comparison that decides"),
        _p(
            f"Each candidate against the baseline {base} on {bandit.reward_name()}: the Mantel-Haenszel "
            "rate ratio over the intervals in which both had traffic, as a relative lift with its "
            f"{_confidence(bandit.level)} always-valid interval at {bandit.alpha_text()}: corrected for "
            "comparing several candidates, and valid however often it is looked at. A candidate whose whole "
            "interval lies above zero is significantly better; the one with the largest lift ships."
        ),
    ]
    if not bandit.comparison:
        return [*blocks, _p("No comparison yet: the bandit has measured no interval.")]
    headers = (
        "Candidate",
        "Baseline rate",
        "Candidate rate",
        "Lift",
        "Interval",
        "Significantly better",
        "Reading",
    )
    rows = []
    for workload in bandit.models():
        entry = bandit.comparison.get(workload)
        if entry is None:
            continue
        better = {True: "yes", False: "no", None: MISSING}[entry.better]
        reading = _comparison_reading(entry.interval) if entry.interval else entry.reason or MISSING
        rows.append(
            (
                bandit.label(workload),
                _rate_text(entry.baseline),
                _rate_text(entry.candidate),
                _pct(entry.lift) if entry.lift is not None else MISSING,
                _interval(entry.interval) if entry.interval else MISSING,
                better,
                reading,
            )
        )
    blocks.append(_Table(headers, tuple(rows)))
    return blocks


def _comparison_reading(interval: tuple[float, float]) -> str:
    if interval[0] > 0:
        return "better (significant)"
    if interval[1] < 0:
        return "worse (significant)"
    return "no clear difference"


def _allocation_table(bandit: _Bandit) -> list[_Block]:
    """The allocation over time as a table (the report without plots): at most ALLOCATION_ROWS points."""
    points = bandit.allocation
    models = bandit.plotted()
    if not points or not models:
        return []
    shown = _thin(points, ALLOCATION_ROWS)
    # Seconds when the bandit re-allocates more often than every minute.
    layout = "%Y-%m-%d %H:%M:%S UTC" if any(p.time.second for p in shown) else "%Y-%m-%d %H:%M UTC"
    rows = []
    for point in shown:
        best = max(point.best, key=lambda w: point.best[w]) if point.best else ""
        rows.append(
            (
                point.time.astimezone(datetime.UTC).strftime(layout),
                *(_weight_text(point.weights.get(w)) for w in models),
                f"{best} ({_chance_text(point.best[best])})" if best else MISSING,
            )
        )
    note = "The traffic per model (%) at each re-allocation, and the model then most likely the best."
    if len(shown) < len(points):
        note += f" {len(shown)} of the {len(points)} points recorded (evenly picked, first and last kept)."
    return [
        _Heading(2, "Allocation over time"),
        _p(note),
        _Table(("Time", *models, "Most likely best"), tuple(rows)),
    ]


def _thin(points: Sequence[Any], limit: int) -> list[Any]:
    """At most ``limit`` of ``points``, evenly spaced, the first and the last kept."""
    if len(points) <= limit:
        return list(points)
    if limit < 2:
        return list(points[-limit:])
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def _bandit_decision(view: _View, bandit: _Bandit) -> list[_Block]:
    base = bandit.baseline or "the baseline"
    reward = bandit.reward_name()
    chosen = bandit.winner or "the winner"
    meaning = {
        SHIP: f"Ship: {chosen} is significantly better than {base} on {reward}"
        + ("; it was promoted." if view.phase == "Succeeded" else "."),
        DISCARD: f"Discard: no candidate is worth shipping (dropped by a guardrail, significantly worse, or "
        f"{base} is the best model); {base} keeps all traffic.",
        ITERATE: f"Iterate: the bandit could not tell within its maximum duration; {base} keeps all traffic. "
        "To get an answer: run longer (raise bandit.maxDuration), bring more traffic, or test a bolder "
        "change.",
    }
    items: list[tuple[_Inline, ...]] = []
    items.append((_b("Outcome: "), meaning[view.outcome] if view.outcome else "none yet."))
    if bandit.stage is not None:
        so_far = _plural(bandit.intervals or 0, "interval")
        if bandit.stage == DECIDED:
            stage = f"decided after {so_far}."
        elif bandit.stage == CONFIRMING:
            stage = f"confirming {bandit.leader or 'the leader'} against {base}, {so_far} so far."
        else:
            stage = f"exploring, {so_far} so far."
        items.append((_b("Stage: "), stage))
    state = view.phase or "not yet observed"
    if view.reason:
        state += f" (reason {view.reason})"
    items.append((_b("Status: "), state + "."))
    if view.message:
        items.append((_b("The operator says: "), view.message))
    weights = _per_model(view.status.get("weights"), _percent)
    if weights:
        order = _names([*bandit.models(), *weights])
        shown = ", ".join(f"{bandit.label(w)} {_weight_text(weights[w])}" for w in order if w in weights)
        items.append((_b("Traffic now: "), shown + "."))
    items.append((_b("Next: "), *_bandit_next(view, bandit)))
    return [_Heading(2, "Decision"), _Bullets(tuple(items))]


def _bandit_next(view: _View, bandit: _Bandit) -> tuple[_Inline, ...]:
    winner = bandit.winner or "the winner"
    return _next_step(
        view,
        promoted=(winner, "it", winner),
        held=("the current weights", "the bandit is paused at its current weights"),
        baseline=bandit.baseline or "the baseline",
        continuing=f"the bandit re-allocates every {bandit.every()} until it decides, at most "
        f"{bandit.longest()} after it started.",
    )


# ----------------------------------------------------------------------------------------- plots
def _timeline(view: _View) -> list[tuple[datetime.datetime, Mapping[str, Any]]]:
    points = []
    for entry in _list(view.status.get("timeline")):
        point = _map(entry)
        moment = plugin_render.parse_time(point.get("time"))
        if moment is not None:
            points.append((moment, point))
    points.sort(key=lambda p: p[0])
    return points


def _label(text: str, limit: int = 60) -> str:
    """Text for matplotlib: ``$`` would start mathtext, a leading ``_`` hides a legend entry."""
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return (" " + text if text.startswith("_") else text).replace("$", r"\$")


def _percent_or_nan(value: float | None) -> float:
    return value * 100 if value is not None else math.nan


def _figures(view: _View) -> list[tuple[str, str, Figure]]:
    """(file suffix, caption, figure) for each plot with data.  Raises ImportError without matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if view.bandit is not None:
        return _bandit_figures(view.bandit)
    points = _timeline(view)
    figures: list[tuple[str, str, Figure]] = []

    lifted = [(t, p) for t, p in points if _number(p.get("lift")) is not None or _pair(p.get("interval"))]
    if lifted:
        # With several candidates each point is the leader's (its ``variant``): a line per leader, so a
        # change of leader never joins two candidates' lifts.
        leaders = list(dict.fromkeys(_text(p.get("variant")) for _, p in lifted))
        figure = Figure(figsize=(7.5, 3.6), layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        for index, leader in enumerate(leaders):
            color = f"C{index}"
            times: Any = [t for t, _ in lifted]  # datetimes: matplotlib's stubs want arrays
            mine = [p if _text(p.get("variant")) == leader else {} for _, p in lifted]
            lifts = [_percent_or_nan(_number(p.get("lift"))) for p in mine]
            bands = [_pair(p.get("interval")) for p in mine]
            low = [_percent_or_nan(b[0] if b else None) for b in bands]
            high = [_percent_or_nan(b[1] if b else None) for b in bands]
            named = f"{_label(leader, 30)}: " if len(leaders) > 1 else ""
            interval = f"{named}{_confidence(view.objective_alpha)} interval"
            ax.fill_between(times, low, high, alpha=0.25, color=color, label=interval)
            ax.plot(times, lifts, color=color, marker="o", markersize=3, label=f"{named}lift")
        ax.axhline(0, color="black", linewidth=1, label="no change")
        if view.minimum_effect:
            edge = view.sign * view.minimum_effect * 100
            ax.axhline(
                edge,
                color="tab:green",
                linestyle="--",
                linewidth=1,
                label=f"minimum effect ({_pct(view.sign * view.minimum_effect)})",
            )
        ax.set_ylabel("lift (%)")
        whose = "the leading candidate" if len(leaders) > 1 else "candidate"
        ax.set_title(_label(f"Lift of {view.metric}, {whose} over baseline"))
        ax.legend(loc="best", fontsize="small")
        ax.grid(True, alpha=0.3)
        figures.append(("lift", f"Lift of {view.metric} over time, with its interval", figure))

    variants: list[str] = []
    for _, point in points:
        for key in [*_map(point.get("weights")), *_map(point.get("samples"))]:
            if _text(key) not in variants:
                variants.append(_text(key))
    if points and variants:
        variants = view.ordered(variants)
        times = [t for t, _ in points]
        figure = Figure(figsize=(7.5, 4.8), layout="constrained")
        FigureCanvasAgg(figure)
        top, bottom = figure.subplots(2, 1, sharex=True)
        # The baseline wide and pale, the candidate dashed on top: equal weights stay both visible.
        styles: dict[str, dict[str, Any]] = {
            view.baseline: {"color": "tab:gray", "linewidth": 4, "alpha": 0.55},
            view.candidate: {"color": "tab:orange", "linewidth": 1.8, "linestyle": "--"},
        }
        for workload in variants:
            weights = [_number(_map(p.get("weights")).get(workload)) for _, p in points]
            samples = [_number(_map(p.get("samples")).get(workload)) for _, p in points]
            style = styles.get(workload, {})
            label = _label(view.label(workload))
            top.step(
                times, [w if w is not None else math.nan for w in weights], where="post", label=label, **style
            )
            bottom.plot(
                times,
                [s if s is not None else math.nan for s in samples],
                marker="o",
                markersize=2,
                label=label,
                **style,
            )
        top.set_ylabel("traffic (%)")
        top.set_ylim(-5, 105)
        top.set_title("Traffic split and observations per variant")
        top.legend(loc="best", fontsize="small")
        bottom.set_ylabel("observations (cumulative)")
        top.grid(True, alpha=0.3)
        bottom.grid(True, alpha=0.3)
        figures.append(("traffic", "Traffic split and cumulative observations per variant over time", figure))
    return figures


def _bandit_figures(bandit: _Bandit) -> list[tuple[str, str, Figure]]:
    """The allocation over time: each model's weight, and below its probability of being the best."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = _thin(bandit.allocation, PLOT_POINTS)
    models = bandit.plotted()
    if not points or not models:
        return []
    times: Any = [p.time for p in points]  # datetimes: matplotlib's stubs want arrays
    with_best = any(p.best for p in points)
    figure = Figure(figsize=(7.5, 4.8 if with_best else 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2 if with_best else 1, 1, sharex=True, squeeze=False)[:, 0]
    top = axes[0]
    for workload in models:
        # The baseline wide and pale, the winner bold: equal weights stay visible.
        style: dict[str, Any] = {"linewidth": 1.8}
        if workload == bandit.baseline:
            style = {"color": "tab:gray", "linewidth": 4, "alpha": 0.55}
        elif workload == bandit.winner:
            style = {"linewidth": 2.6}
        label = _label(bandit.label(workload))
        weights = [p.weights.get(workload, math.nan) for p in points]
        top.step(times, weights, where="post", label=label, **style)
        if with_best:
            chances = [p.best.get(workload, math.nan) for p in points]
            axes[1].step(times, chances, where="post", label=label, **style)
    top.set_ylabel("traffic (%)")
    top.set_ylim(-5, 105)
    top.set_title("Traffic per model, as the bandit allocated it")
    top.legend(loc="best", fontsize="small")
    top.grid(True, alpha=0.3)
    caption = "Traffic per model over time, as the bandit allocated it"
    if with_best:
        axes[1].set_ylabel("P(best)")
        axes[1].set_ylim(-0.05, 1.05)
        axes[1].grid(True, alpha=0.3)
        caption += ", and each model's probability of being the best"
    return [("allocation", caption, figure)]


@dataclasses.dataclass(frozen=True)
class _Drawn:
    """The plots as files' content (``(suffix, caption, PNG or SVG bytes)``), or a note why there are none."""

    plots: tuple[tuple[str, str, bytes], ...] = ()
    note: str = ""


def _draw(view: _View, kind: Literal["png", "svg"]) -> _Drawn:
    """Draw and save the plots in a deterministic, quiet matplotlib context (no pyplot, no global state)."""
    try:
        import matplotlib
    except ImportError:
        return _Drawn(note=f"Plots need matplotlib: {PLOTS_HINT}")
    plots = []
    settings = matplotlib.rc_context({"svg.fonttype": "none", "date.converter": "concise"})
    with settings, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs and the like: not the reader's concern
        try:
            for suffix, caption, figure in _figures(view):
                buffer = io.BytesIO()
                # Ids in inline SVGs must differ between the plots of one page: a salt per plot.
                with matplotlib.rc_context({"svg.hashsalt": f"modelrollout-report-{suffix}"}):
                    if kind == "svg":
                        figure.savefig(buffer, format="svg", metadata={"Date": None})
                    else:
                        figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
                plots.append((suffix, caption, buffer.getvalue()))
        except Exception as e:  # odd data must not cost the reader the rest of the report
            return _Drawn(note=f"The plots could not be drawn: {e}")
    if not plots:
        what = "allocation" if view.bandit is not None else "timeline"
        return _Drawn(
            note=f"No plots: the status holds no {what} yet (the operator adds a point at each evaluation)."
        )
    return _Drawn(tuple(plots))


# --------------------------------------------------------------------------------------- writers
_WHITE = re.compile(r"\s+")
_TAG = re.compile(r"<[^<>]+>")
_SVG_ID = re.compile(r'(\sid=")([^"]+)"')
_SVG_REF = re.compile(r'(url\(#|href="#)([^")]+)')
_PLAIN_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._/:=-]*")  # else escaped as text
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#$])")
_MD_LINE_START = re.compile(r"^(\d+)([.)])|^([-+=])")


class _MarkdownWriter:
    def __init__(
        self,
        view: _View,
        *,
        assets_dir: Path | None = None,
        output: Path | None = None,
        max_rows: int | None = None,
        max_chars: int | None = None,
    ) -> None:
        self.view, self.assets_dir, self.output = view, assets_dir, output
        self.max_rows, self.max_chars = max_rows, max_chars
        self.assets: list[Path] = []

    def write(self, blocks: Sequence[_Block]) -> str:
        chunks = [self._block(b) for b in blocks]
        return "\n\n".join(c for c in chunks if c) + "\n"

    def _escape(self, text: str) -> str:
        text = _one_line(text)
        if self.max_chars is not None and len(text) > self.max_chars:
            text = text[: self.max_chars - 1] + "…"
        return _MD_SPECIAL.sub(r"\\\1", text)

    def _inline(self, parts: Sequence[_Inline]) -> str:
        out = []
        for part in parts:
            span = part if isinstance(part, _Span) else _Span(part)
            text = self._escape(span.text)
            if span.style == "b" and text.strip():
                lead, core, trail = _strip(text)
                out.append(f"{lead}**{core}**{trail}")
            elif span.style == "code" and _PLAIN_CODE.fullmatch(span.text):
                out.append(f"`{span.text}`")
            else:
                out.append(text)
        line = "".join(out)
        return _MD_LINE_START.sub(lambda m: f"{m[1]}\\{m[2]}" if m[1] else f"\\{m[3]}", line, count=1)

    def _block(self, block: _Block) -> str:
        if isinstance(block, _Heading):
            return "#" * block.level + " " + self._escape(block.text)
        if isinstance(block, _Para):
            text = self._inline(block.parts)
            return f"> {text}" if block.kind == "verdict" else (f"*{text}*" if block.kind == "note" else text)
        if isinstance(block, _Bullets):
            return "\n".join(f"- {self._inline(item)}" for item in block.items)
        if isinstance(block, _Table):
            return self._table(block)
        return self._plots()

    def _table(self, table: _Table) -> str:
        rows = list(table.rows)
        hidden = 0
        if self.max_rows is not None and len(rows) > self.max_rows:
            hidden, rows = len(rows) - self.max_rows, rows[: self.max_rows]

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(self._escape(c) or MISSING for c in cells) + " |"

        lines = [line(table.headers), "|" + "|".join(" --- " for _ in table.headers) + "|"]
        lines += [line(_fit(row, len(table.headers))) for row in rows]
        if hidden:
            lines.append(f"\n*{hidden} more rows not shown (the full report: `modelrollout report`).*")
        return "\n".join(lines)

    def _plots(self) -> str:
        if self.assets_dir is None:
            return (
                "*Plots are left out: a Markdown report's plots are PNG files beside it "
                "(write the report to a file with -o FILE).*"
            )
        stem = self.output.stem if self.output is not None else _slug(self.view.name)
        drawn = _draw(self.view, "png")
        if drawn.note:
            return f"*{self._escape(drawn.note)}*"
        lines = []
        for suffix, caption, data in drawn.plots:
            path = self.assets_dir / f"{stem}-{suffix}.png"
            try:
                self.assets_dir.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            except OSError as e:
                return f"*{self._escape(f'Plots are left out: cannot write {path}: {e.strerror or e}')}*"
            self.assets.append(path)
            lines.append(f"![{self._escape(caption)}]({self._link(path)})")
        return "\n\n".join(lines)

    def _link(self, path: Path) -> str:
        if self.output is not None:
            target = os.path.relpath(path.resolve(), self.output.resolve().parent)
        else:
            target = str(path)
        return urllib.parse.quote(Path(target).as_posix())


class _HtmlWriter:
    STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 62rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.5; color: #222; }
h1 { margin-bottom: .25rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }
.verdict { font-size: 1.15rem; padding: .75rem 1rem; border-left: .4rem solid #888; background: #f4f4f4; }
.verdict.ship { border-color: #2e7d32; background: #edf7ee; }
.verdict.discard { border-color: #c62828; background: #fdecea; }
.verdict.iterate { border-color: #ef8f00; background: #fff5e0; }
.note { color: #555; font-style: italic; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .95rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9rem; }
code { background: #f0f0f0; padding: 0 .2rem; }
""".strip()

    def __init__(self, view: _View) -> None:
        self.view = view

    def write(self, blocks: Sequence[_Block]) -> str:
        title = html.escape(self.view.title)
        body = "\n".join(self._block(b) for b in blocks)
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{title}</title>\n'
            f"<style>\n{self.STYLE}\n</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
        )

    @staticmethod
    def _escape(text: str) -> str:
        return html.escape(_one_line(text))

    def _inline(self, parts: Sequence[_Inline]) -> str:
        out = []
        for part in parts:
            span = part if isinstance(part, _Span) else _Span(part)
            text = self._escape(span.text)
            out.append(
                {"b": f"<strong>{text}</strong>", "code": f"<code>{text}</code>"}.get(span.style, text)
            )
        return "".join(out)

    def _block(self, block: _Block) -> str:
        if isinstance(block, _Heading):
            return f"<h{block.level}>{self._escape(block.text)}</h{block.level}>"
        if isinstance(block, _Para):
            if block.kind == "verdict":
                outcome = (self.view.outcome or "running").lower()
                return f'<p class="verdict {outcome}">{self._inline(block.parts)}</p>'
            css = f' class="{block.kind}"' if block.kind else ""
            return f"<p{css}>{self._inline(block.parts)}</p>"
        if isinstance(block, _Bullets):
            items = "\n".join(f"<li>{self._inline(item)}</li>" for item in block.items)
            return f"<ul>\n{items}\n</ul>"
        if isinstance(block, _Table):
            head = "".join(f"<th>{self._escape(h)}</th>" for h in block.headers)
            rows = "\n".join(
                "<tr>"
                + "".join(f"<td>{self._escape(c)}</td>" for c in _fit(row, len(block.headers)))
                + "</tr>"
                for row in block.rows
            )
            return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"
        return self._plots()

    def _plots(self) -> str:
        drawn = _draw(self.view, "svg")
        if drawn.note:
            return f'<p class="note">{self._escape(drawn.note)}</p>'
        parts = []
        for suffix, caption, data in drawn.plots:
            svg = data.decode()
            svg = _prefix_ids(svg[svg.find("<svg") :].strip(), f"{suffix}-")
            caption_html = f"<figcaption>{self._escape(caption)}</figcaption>"
            parts.append(f'<figure id="plot-{suffix}">\n{svg}\n{caption_html}\n</figure>')
        return "\n".join(parts)


def _prefix_ids(svg: str, prefix: str) -> str:
    """Ids unique on the page: matplotlib numbers its groups (figure_1, axes_1) afresh in every SVG."""
    ids = {m[2] for tag in _TAG.findall(svg) for m in _SVG_ID.finditer(tag)}

    def tag(match: re.Match[str]) -> str:
        text = _SVG_ID.sub(lambda m: f'{m[1]}{prefix}{m[2]}"', match[0])
        return _SVG_REF.sub(lambda m: f"{m[1]}{prefix if m[2] in ids else ''}{m[2]}", text)

    return _TAG.sub(tag, svg)  # tags only: text has no raw "<", so the figure's labels stay as they are


def _one_line(text: str) -> str:
    """Runs of white space (newlines too) as one space: no value can start a new Markdown block."""
    return _WHITE.sub(" ", text)


def _strip(text: str) -> tuple[str, str, str]:
    core = text.strip()
    start = text.find(core)
    return text[:start], core, text[start + len(core) :]


def _fit(row: Sequence[str], width: int) -> list[str]:
    """Exactly ``width`` cells: a table never gets ragged, whatever the data."""
    cells = [str(c) for c in row[:width]]
    return cells + [MISSING] * (width - len(cells))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "experiment"
