"""What ``kubectl mexp`` prints, as pure functions of the objects and a clock.

No I/O here: every function takes the experiment bodies (as the API returns
them) and ``now``, and returns text, so each rendering is unit-testable and the
commands module only fetches, patches and prints.
"""

from __future__ import annotations

import datetime
import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from modelrollout.core.model import Gate, Phase

DEFAULT_STEPS = (5, 25, 50, 100)  # API.md: spec.canary.steps' default
FINAL_PHASES = frozenset(p.value for p in Phase if p.is_final)
MISSING = "-"
RATE_BUILTINS = frozenset({"error-rate"})
LATENCY_BUILTINS = frozenset({"latency-p95", "latency-p99"})


# ------------------------------------------------------------------------------------------ basics
def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Left-aligned columns three spaces apart, as kubectl prints them."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append((indent + "   ".join(cells)).rstrip())
    return "\n".join(lines)


def parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def human_duration(seconds: float) -> str:
    """kubectl's ``HumanDuration``: 45s, 3m12s, 42m, 5h3m, 20h, 3d4h, 120d, 2y30d."""
    if seconds < -1:
        return "<invalid>"
    s = max(int(seconds), 0)
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d" if hours % 24 == 0 else f"{days}d{hours % 24}h"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if years < 8:
        return f"{years}y" if days % 365 == 0 else f"{years}y{days % 365}d"
    return f"{years}y"


def age(value: Any, now: datetime.datetime) -> str:
    moment = parse_time(value)
    return MISSING if moment is None else human_duration((now - moment).total_seconds())


def _text(value: Any) -> str:
    return MISSING if value is None or value == "" else str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _num(value: float) -> str:
    """Significant digits as the operator's messages print them."""
    return f"{value:.3g}" if abs(value) < 1e6 else f"{value:.1e}"


def _pair(value: Any) -> tuple[float, float] | None:
    """A ``[low, high]`` interval, or None."""
    numbers = [_number(v) for v in _list(value)]
    if len(numbers) != 2 or numbers[0] is None or numbers[1] is None:
        return None
    return numbers[0], numbers[1]


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# ------------------------------------------------------------------------------------ experiments
def identity(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = _map(body.get("metadata"))
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def strategy(body: Mapping[str, Any]) -> str:
    return str(_map(body.get("spec")).get("strategy") or "Canary")


def steps(body: Mapping[str, Any]) -> list[int] | None:
    """The canary's steps (the default when unset), or None for a strategy without steps."""
    spec = _map(body.get("spec"))
    configured = _map(spec.get("canary")).get("steps")
    if isinstance(configured, list) and configured:
        return [s for s in configured if isinstance(s, int)]
    return list(DEFAULT_STEPS) if strategy(body) == "Canary" else None


def interval_text(body: Mapping[str, Any]) -> str:
    """How often it is evaluated: what the operator wrote in ``status.interval``, else the strategy's
    interval in the spec (an experiment the operator has not seen yet), else the default ``1m``."""
    written = _map(body.get("status")).get("interval")
    if isinstance(written, str) and written:
        return written
    key = {"ABTest": "abTest", "Bandit": "bandit"}.get(strategy(body), "canary")
    return _text(_map(_map(body.get("spec")).get(key)).get("interval") or "1m")


def step_text(body: Mapping[str, Any]) -> str:
    step = _map(body.get("status")).get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        return MISSING
    known = steps(body)
    return f"{step}/{len(known)}" if known else str(step)


def workloads(body: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """The baseline's workload and the candidates', as the spec names them."""
    spec = _map(body.get("spec"))
    baseline = _map(spec.get("baseline")).get("workload")
    candidates = [_map(spec.get("candidate")).get("workload")]
    if isinstance(spec.get("candidates"), list):
        candidates = [_map(c).get("workload") for c in spec["candidates"]]
    return (
        str(baseline) if baseline else None,
        [str(c) for c in candidates if c],
    )


def roles(body: Mapping[str, Any]) -> dict[str, str]:
    """workload -> ``baseline`` or ``candidate``, baseline first."""
    baseline, candidates = workloads(body)
    found = {baseline: "baseline"} if baseline else {}
    return {**found, **{c: "candidate" for c in candidates}}


def _ordered(known: Mapping[str, Any], roles: Mapping[str, str]) -> list[str]:
    """The spec's variants first (baseline, candidates), then any others the status names."""
    return [w for w in roles if w in known] + sorted(w for w in known if w not in roles)


def weights(body: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(role, workload, percent) per variant, from ``status.weights`` or else ``candidateWeight``."""
    status = _map(body.get("status"))
    baseline, candidates = workloads(body)
    named = roles(body)
    known = {str(k): v for k, v in _map(status.get("weights")).items() if isinstance(v, int)}
    if known:
        return [(named.get(w, "variant"), w, known[w]) for w in _ordered(known, named)]
    weight = status.get("candidateWeight")
    if not isinstance(weight, int):
        return []
    return [
        ("baseline", baseline or "baseline", 100 - weight),
        ("candidate", candidates[0] if candidates else "candidate", weight),
    ]


# ------------------------------------------------------------------------------------------- get
def get_table(
    items: Sequence[Mapping[str, Any]], now: datetime.datetime, *, namespaces: bool, wide: bool = False
) -> str:
    headers = ["NAME", "STRATEGY", "PHASE", "STEP", "WEIGHT", "DECISION", "AGE", "REASON"]
    if namespaces:
        headers.insert(0, "NAMESPACE")
    if wide:
        headers += ["INTERVAL", "FAILED", "MESSAGE"]
    rows = []
    for body in items:
        namespace, name = identity(body)
        status = _map(body.get("status"))
        weight = status.get("candidateWeight")
        row = [
            name,
            strategy(body),
            _text(status.get("phase")),
            step_text(body),
            f"{weight}%" if isinstance(weight, int) else MISSING,
            _text(status.get("decision")),
            age(_map(body.get("metadata")).get("creationTimestamp"), now),
            _text(status.get("reason")),
        ]
        if namespaces:
            row.insert(0, namespace)
        if wide:
            row += [
                interval_text(body),
                _text(status.get("failedChecks")),
                _text(status.get("message")),
            ]
        rows.append(row)
    return table(headers, rows)


# ---------------------------------------------------------------------------------------- status
def metric_kind(body: Mapping[str, Any], name: str) -> str:
    """``rate`` (shown in %), ``ms`` (latency) or ``value``, from the metric's spec."""
    spec_metrics = _list(_map(body.get("spec")).get("metrics"))
    metric = next((_map(m) for m in spec_metrics if _map(m).get("name") == name), None)
    if metric is None:  # defaulted metrics are named after their builtin
        metric = {"builtin": name} if name in RATE_BUILTINS | LATENCY_BUILTINS else {}
    builtin = metric.get("builtin")
    if builtin in RATE_BUILTINS or "ratio" in metric:
        return "rate"
    if builtin in LATENCY_BUILTINS:
        return "ms"
    return "value"


def show_value(value: Any, kind: str) -> str:
    number = _number(value)
    if number is None:
        return MISSING
    if kind == "rate":
        percent = number * 100
        return f"{percent:.2g}%" if abs(percent) < 1 else f"{percent:.1f}%"
    if kind == "ms":
        return f"{number:.1f}ms" if abs(number) < 10 else f"{number:.0f}ms"
    return f"{number:.4g}"


def evidence_text(metric: Mapping[str, Any]) -> str:
    """``0.835 < 40``: the evidence against the candidate next to the bound that rolls it back."""
    evidence, bound = _number(metric.get("evidence")), _number(metric.get("bound"))
    if evidence is None:
        return MISSING
    if bound is None:
        return _num(evidence)
    return f"{_num(evidence)} {'<' if evidence < bound else '>='} {_num(bound)}"


def ratio_text(metric: Mapping[str, Any]) -> str:
    """``1.1 [0.71, 1.6]``: the candidate/baseline ratio with its confidence interval."""
    effect = _number(metric.get("effect"))
    interval = _pair(metric.get("interval"))
    bounds = f"[{interval[0]:.2g}, {interval[1]:.2g}]" if interval else ""
    if effect is None:
        return bounds or MISSING
    return f"{effect:.2g} {bounds}".rstrip()


def _metrics_section(body: Mapping[str, Any], metrics: list[Any]) -> list[str]:
    rows = []
    for entry in metrics:
        metric = _map(entry)
        name = str(metric.get("name", "?"))
        kind = metric_kind(body, name)
        variant = metric.get("variant")  # several candidates: the one this entry compares
        rows.append(
            [
                f"{name} ({variant})" if isinstance(variant, str) else name,
                show_value(metric.get("baseline"), kind),
                show_value(metric.get("candidate"), kind),
                _text(metric.get("verdict")),
                evidence_text(metric),
                ratio_text(metric),
                _text(metric.get("reason")),
            ]
        )
    headers = ["METRIC", "BASELINE", "CANDIDATE", "VERDICT", "EVIDENCE/BOUND", "RATIO [CI]", "REASON"]
    return ["", "Metrics (last evaluation):", table(headers, rows, indent="  ")]


def _candidates_section(candidates: list[Mapping[str, Any]], winner: Any) -> list[str]:
    """Several candidates: who is still in the race, who was dropped and why, the ranking score (an A/B
    test's: the objective's lift and interval)."""
    rows = []
    for record in candidates:
        score = _map(record.get("score"))
        value = _number(score.get("value"))
        shown = f"{score.get('metric')} {value:.4g}" if value is not None else MISSING
        objective = _map(record.get("objective"))
        lift, interval = _number(objective.get("lift")), _pair(objective.get("interval"))
        if lift is not None:
            shown = f"{objective.get('metric')} lift {lift:+.1%}" + (
                f" [{interval[0]:+.1%}, {interval[1]:+.1%}]" if interval is not None else ""
            )
        workload = _text(record.get("workload"))
        rows.append(
            [
                workload + (" (winner)" if workload == winner else ""),
                _text(record.get("state")),
                shown,
                " ".join(str(record.get(k) or "") for k in ("reason", "message")).strip(),
            ]
        )
    return ["", "Candidates:", table(["CANDIDATE", "STATE", "SCORE", "WHY"], rows, indent="  ")]


def _samples_line(body: Mapping[str, Any], samples: Mapping[str, Any]) -> str:
    named = roles(body)
    parts = [
        f"{w} ({named[w]}) {samples[w]}" if w in named else f"{w} {samples[w]}"
        for w in _ordered(samples, named)
    ]
    return ", ".join(parts) or MISSING


def _since(status: Mapping[str, Any]) -> Any:
    """When the current phase began: its condition's last transition, else the step's start."""
    phase = status.get("phase")
    wanted = phase if phase in FINAL_PHASES else "Progressing"
    for condition in _list(status.get("conditions")):
        condition = _map(condition)
        if condition.get("type") == wanted and condition.get("lastTransitionTime"):
            return condition["lastTransitionTime"]
    return status.get("stepStartedAt")


def _when(value: Any, now: datetime.datetime) -> str:
    return MISSING if parse_time(value) is None else f"{value} ({age(value, now)} ago)"


def _objective(value: Any) -> str | None:
    objective = _map(value)
    lift = _number(objective.get("lift"))
    if lift is None:
        return None
    interval = _pair(objective.get("interval"))
    text = f"{objective.get('metric', '?')} lift {lift * 100:+.1f}%"
    if interval:
        text += f" [{interval[0] * 100:+.1f}%, {interval[1] * 100:+.1f}%]"
    return text


def _approval(value: Any, now: datetime.datetime) -> str | None:
    """``status.approval``: the webhooks of one gate the experiment waits on."""
    wait = _map(value)
    if not wait.get("type"):
        return None
    text = f"waiting for the {wait['type']} webhooks since {_when(wait.get('waitingSince'), now)}"
    if isinstance(wait.get("attempts"), int) and wait["attempts"]:
        text += f", {wait['attempts']} not approved"
    if wait.get("lastAnswer"):
        text += f", last answer: {wait['lastAnswer']}"
    if wait.get("deadlineExceeded") is True:
        text += " (deadline exceeded)"
    return text


def _gates(body: Mapping[str, Any]) -> list[str]:
    annotations = _map(_map(body.get("metadata")).get("annotations"))
    acted = _map(_map(body.get("status")).get("gates"))
    found = []
    for gate in Gate:
        if gate.value in annotations:
            value = annotations[gate.value]
            state = "acted on" if acted.get(gate.value) == value else "pending"
            found.append(f"{gate.short}={value} ({state})")
    return found


def status_report(body: Mapping[str, Any], now: datetime.datetime, history: int = 10) -> str:
    """``kubectl mexp status``: header, weights, metrics, samples, conditions, history, plan."""
    namespace, name = identity(body)
    spec, status = _map(body.get("spec")), _map(body.get("status"))
    meta = _map(body.get("metadata"))
    lines = [f"Experiment:   {namespace}/{name}  ({strategy(body)})"]
    field = "{:<14}{}".format
    if spec.get("paused") is True:
        resume = f"kubectl mexp resume {name} -n {namespace}"
        lines.append(field("Paused:", f"spec.paused is true (to carry on: {resume})"))
    gates = _gates(body)
    if gates:
        lines.append(field("Gates:", ", ".join(gates)))
    if not status:
        lines.append(field("Status:", "not yet observed by the operator"))
        lines.append(field("Created:", _when(meta.get("creationTimestamp"), now)))
        return "\n".join(lines)

    known_steps = steps(body)
    step = step_text(body)
    if known_steps:
        step += f"  (steps {', '.join(f'{s}%' for s in known_steps)})"
    step_started = status.get("stepStartedAt")
    if parse_time(step_started):
        step += f", step started {age(step_started, now)} ago"
    split = weights(body)
    lines += [
        field("Phase:", _text(status.get("phase"))),
        field("Since:", _when(_since(status), now)),
        field("Step:", step),
        field("Weights:", "  /  ".join(f"{r} {w} {p}%" for r, w, p in split) or MISSING),
        field("Decision:", _text(status.get("decision"))),
        field("Reason:", _text(status.get("reason"))),
        field("Message:", _text(status.get("message"))),
        field("Evaluated:", _when(status.get("lastEvaluatedAt"), now)),
    ]
    if status.get("outcome"):
        lines.append(field("Outcome:", str(status["outcome"])))
    objective = _objective(status.get("objective"))
    if objective:
        lines.append(field("Objective:", objective))
    approval = _approval(status.get("approval"), now)
    if approval:
        lines.append(field("Approval:", approval))
    observed, generation = status.get("observedGeneration"), meta.get("generation")
    if isinstance(observed, int) and isinstance(generation, int) and observed != generation:
        behind = f"status is for generation {observed}, the spec is at {generation} (not seen yet)"
        lines.append(field("Generation:", behind))
    lines.append(field("Samples:", _samples_line(body, _map(status.get("samples")))))
    if status.get("plan"):
        lines.append(field("Plan:", str(status["plan"])))

    candidates = [_map(c) for c in _list(status.get("candidates"))]
    if candidates:
        lines += _candidates_section(candidates, status.get("winner"))
    metrics = _list(status.get("metrics"))
    if metrics:
        lines += _metrics_section(body, metrics)
    else:
        lines += ["", "Metrics:      none evaluated yet"]

    conditions = [_map(c) for c in _list(status.get("conditions"))]
    if conditions:
        rows = [
            [
                _text(c.get("type")),
                _text(c.get("status")),
                _text(c.get("reason")),
                age(c.get("lastTransitionTime"), now),
                str(c.get("message") or ""),
            ]
            for c in conditions
        ]
        lines += ["", "Conditions:", table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows, indent="  ")]

    entries = [_map(h) for h in _list(status.get("history"))]
    if entries and history > 0:
        shown = entries[-history:]
        title = f"History (last {len(shown)} of {len(entries)}):" if len(shown) < len(entries) else "History:"
        rows = [
            [
                _text(h.get("time")),
                age(h.get("time"), now),
                _text(h.get("phase")),
                _text(h.get("step")),
                f"{h['weight']}%" if isinstance(h.get("weight"), int) else MISSING,
                _text(h.get("decision")),
                _text(h.get("reason")),
            ]
            for h in shown
        ]
        headers = ["TIME", "AGE", "PHASE", "STEP", "WEIGHT", "DECISION", "REASON"]
        lines += ["", title, table(headers, rows, indent="  ")]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ gates
def refusal(action: str, body: Mapping[str, Any]) -> str | None:
    """Why ``action`` makes no sense for the experiment as it stands, or None when it does."""
    namespace, name = identity(body)
    phase = _map(body.get("status")).get("phase")
    if action in ("promote", "abort", "pause") and phase in FINAL_PHASES:
        return (
            f'modelexperiment "{name}" in namespace "{namespace}" has already finished (phase {phase}): '
            f"{action} applies only to a running experiment; to run it again use: "
            f"kubectl mexp restart {name} -n {namespace}"
        )
    return None


def gate_value(now: datetime.datetime, current: str | None = None) -> str:
    """A fresh annotation value: the UTC time to the microsecond, never the value already set.

    The operator acts on a gate once per value, so every use needs a new one.
    """
    value = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    while value == current:
        value = f"{value}-{secrets.token_hex(3)}"
    return value
