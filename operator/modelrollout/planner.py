"""What a new experiment's plan can detect (``status.plan``), computed off the tick path.

The sentence comes from a Monte Carlo (``core.planning``): a fraction of a second of CPU per
guardrail.  Inside a tick, a fleet of new experiments -- or one operator taking over a thousand --
would stall every other experiment's tick behind it.  So a :class:`Planner` computes summaries in
one background thread, one at a time and at a bounded share of one core, and keeps them by their
inputs.  The inputs are rounded to two significant digits (traffic, base rates), which is well
inside the summary's own precision (5 %, 400 runs), so experiments with the same steps and
similar traffic share one answer.  A tick asks; when the answer is not ready yet the tick goes on
without it, and a later evaluation writes it.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence

from modelrollout import ports, spec
from modelrollout.core import model, planning, sequential

logger = logging.getLogger(__name__)

# One guardrail's plan and what its bad events are ("error rate", "slow requests").
Inputs = tuple[tuple[planning.Plan, str], ...]

POWER = 0.8
KEPT = 4096  # summaries remembered (a few hundred bytes each)


def _rounded(value: float) -> float:
    """Two significant digits: 312.7 -> 310.0, 0.01234 -> 0.012."""
    return float(f"{value:.2g}")


def inputs(
    experiment: spec.ExperimentSpec,
    metrics: Sequence[model.MetricSample],
    requests: Mapping[str, ports.QueryResult],
    window: datetime.timedelta,
) -> Inputs:
    """The plans to summarize at the traffic of the first evaluation (none: nothing to say yet)."""
    total = sum(r.value for r in requests.values() if r.ok and r.value)
    if total <= 0:
        return ()
    guardrails = sum(1 for m in experiment.metrics if sequential.is_sequential(m))
    base = planning.Plan(
        rate=_rounded(total / window.total_seconds()),
        steps=experiment.canary.steps,
        step_duration=experiment.canary.step_duration,
        interval=experiment.canary.interval,
        baseline_rate=planning.SLOW_SHARE,
        alpha=experiment.analysis.alpha,
        guardrails=max(guardrails, 1),
        min_samples=experiment.canary.min_samples,
    )
    found: list[tuple[planning.Plan, str]] = []
    for metric, sample in zip(experiment.metrics, metrics, strict=True):
        if metric.builtin is spec.Builtin.ERROR_RATE and sample.counts:
            counts = sample.counts.get(experiment.baseline.workload)
            if counts is None or counts.events <= 0 or counts.total <= 0:
                continue  # no errors yet: nothing to scale an increase from
            rate = min(_rounded(counts.events / counts.total), 0.99)
            found.append((dataclasses.replace(base, baseline_rate=rate), "error rate"))
        elif metric.builtin in (spec.Builtin.LATENCY_P95, spec.Builtin.LATENCY_P99):
            found.append((planning.latency_plan(base), "slow requests"))
    return tuple(found)


def describe(plans: Inputs) -> str:
    """The sentence for ``status.plan`` (the expensive part: one Monte Carlo per guardrail)."""
    said: list[str] = []
    for plan, what in plans:
        effect = planning.minimum_detectable_effect(
            plan, POWER, runs=400, seed=0, precision=0.05, max_looks=10
        )
        said.append(f"{planning.increase(effect)} {what}" if effect else f"not even 32x {what}")
    return f"this plan detects >= {', '.join(said)} ({POWER * 100:.0f}% power)"


class Planner:
    """Summaries by their inputs: computed at once (``background=False``: tests, the CLI) or by
    one background thread that spends at most ``busy_share`` of one core on them."""

    def __init__(self, *, background: bool = False, busy_share: float = 0.25) -> None:
        if not 0 < busy_share <= 1:
            raise ValueError(f"busy_share must be in (0, 1], got {busy_share}")
        self._background = background
        self._busy_share = busy_share
        self._done: collections.OrderedDict[Inputs, str] = collections.OrderedDict()
        self._pending: dict[Inputs, None] = {}  # first asked, first computed
        self._asked: dict[Hashable, Inputs] = {}  # who waits for what
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._closing = threading.Event()  # wakes the thread's rest early, only to stop

    def summary(self, asker: Hashable, plans: Inputs | Callable[[], Inputs]) -> str | None:
        """The sentence for ``asker``'s plans, or None while it is being computed (or if there
        is nothing to summarize).  An asker that asks again before its answer is ready gets the
        answer to its first question: the traffic of later evaluations does not queue new work.
        ``plans`` may be a function building them (``inputs``): it is only called by a first question."""
        with self._changed:
            asked = self._asked.get(asker)
        if asked is None:
            asked = plans() if callable(plans) else plans
        with self._changed:
            plans = self._asked.setdefault(asker, asked)
            while len(self._asked) > KEPT:  # askers that went away before their answer
                self._asked.pop(next(iter(self._asked)))
            if not plans:
                self._asked.pop(asker, None)
                return None
            if plans in self._done:
                self._done.move_to_end(plans)
                self._asked.pop(asker, None)
                return self._done[plans]
            if self._background:
                self._pending.setdefault(plans, None)
                self._start()
                self._changed.notify_all()
                return None
        sentence = describe(plans)
        self._keep(plans, sentence)
        with self._changed:
            self._asked.pop(asker, None)
        return sentence

    def pending(self) -> int:
        with self._changed:
            return len(self._pending)

    def wait_idle(self, timeout: float) -> bool:
        """Until nothing is pending (tests); False if ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------ the background thread

    def _start(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="modelrollout-planner", daemon=True)
            self._thread.start()

    def _keep(self, plans: Inputs, sentence: str) -> None:
        with self._changed:
            self._done[plans] = sentence
            self._done.move_to_end(plans)
            while len(self._done) > KEPT:
                self._done.popitem(last=False)
            self._pending.pop(plans, None)
            self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                plans = next(iter(self._pending))
            started = time.perf_counter()
            try:
                sentence = describe(plans)
            except Exception:  # a plan that cannot be summarized must not stop the others
                logger.exception("could not compute a plan summary")
                sentence = "this plan's detection power could not be computed"
            self._keep(plans, sentence)
            # Rest, so that ticks keep the rest of the core (and of the GIL).
            self._closing.wait((time.perf_counter() - started) * (1 / self._busy_share - 1))
