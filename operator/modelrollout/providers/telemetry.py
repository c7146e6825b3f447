"""Istio's standard telemetry for every workload at once: three queries per window, shared by all.

The builtin guardrails need, per variant and window, three numbers from the
serving proxies: requests, 5xx responses and the latency histogram.  Asked
per experiment that is ten queries an evaluation -- 1000 queries a second for
1000 experiments at 10 s.  Asked once for all workloads (``sum by
(destination_workload, destination_workload_namespace)``) at the same
window *end* (``at``), the same three answers serve every experiment whose
evaluation ends then.  Windows end on whole seconds (status times are
whole seconds), so experiments share answers whenever their windows line up.

The error rate and the latency quantiles are then computed here from those
counts -- exactly as PromQL's division and ``histogram_quantile`` would --
rather than asked for separately.  A failed batch fails for each workload
with its own outcome; a workload absent from an answer is "no data", never 0.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence

from modelrollout import durations, ports
from modelrollout.ports import QueryOutcome, QueryResult, SeriesResult
from modelrollout.providers.queries import gained

_BY = "destination_workload, destination_workload_namespace"
_SELECTOR = '{reporter="destination"'
_WINDOW = "<window>"
# Counts gained over the window, exactly (``queries.gained``): windows tile, so they add up.
_REQUESTS = "istio_requests_total" + _SELECTOR + "}"
_ERRORS = "istio_requests_total" + _SELECTOR + ', response_code=~"5.."}'
_BUCKETS = "istio_request_duration_milliseconds_bucket" + _SELECTOR + "}"
REQUESTS = f"sum by ({_BY}) ({gained(_REQUESTS, _WINDOW)})"
ERRORS = f"sum by ({_BY}) ({gained(_ERRORS, _WINDOW)})"
BUCKETS = f"sum by ({_BY}, le) ({gained(_BUCKETS, _WINDOW)})"

# How long an answer is kept: long enough for every experiment ending its window at the same
# second to find it (late ticks included), short enough that memory stays flat.  A tick later
# than this asks again: one more query, never a wrong answer.
KEEP_SECONDS = 15.0


@dataclasses.dataclass(frozen=True)
class _Answer:
    """One batched answer, indexed by (workload, namespace): looked up once per variant.

    Per series only its ``le`` label (None if it has none) and its value are kept: an answer
    for every workload is kept for a while, and the labels would be most of its memory.
    """

    outcome: QueryOutcome
    detail: str
    series: Mapping[tuple[str, str], list[tuple[str | None, float]]]

    @classmethod
    def of(cls, result: SeriesResult) -> _Answer:
        index: dict[tuple[str, str], list[tuple[str | None, float]]] = {}
        for labels, value in result.series:
            key = (labels.get("destination_workload", ""), labels.get("destination_workload_namespace", ""))
            index.setdefault(key, []).append((labels.get("le"), value))
        return cls(result.outcome, result.detail, index)

    @property
    def ok(self) -> bool:
        return self.outcome is QueryOutcome.OK


@dataclasses.dataclass(frozen=True)
class _Key:
    template: str
    window: datetime.timedelta
    at: datetime.datetime | None


class Telemetry:
    """Batched, cached answers of one provider; safe to use from many threads at once."""

    def __init__(self, provider: ports.MetricProvider, clock: Callable[[], float] = time.monotonic) -> None:
        # Weak: the operator keeps one Telemetry per provider, keyed weakly by the provider.
        self._provider = weakref.ref(provider)
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[_Key, tuple[float, concurrent.futures.Future[_Answer]]] = {}
        self.queries = 0  # batched queries actually sent (for benchmarks and tests)
        # Fetches started ahead (``prefetch``): one thread per batched query is plenty.
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=3, thread_name_prefix="telemetry")

    def requests(
        self, workload: str, namespace: str, window: datetime.timedelta, at: datetime.datetime | None
    ) -> QueryResult:
        return _one(self._answer(REQUESTS, window, at), workload, namespace)

    def errors(
        self, workload: str, namespace: str, window: datetime.timedelta, at: datetime.datetime | None
    ) -> QueryResult:
        """5xx responses; 0 when the workload served requests but none failed."""
        errors = _one(self._answer(ERRORS, window, at), workload, namespace)
        if errors.outcome is QueryOutcome.EMPTY:
            served = self.requests(workload, namespace, window, at)
            return QueryResult(QueryOutcome.OK, 0.0) if served.ok else served
        return errors

    def buckets(
        self, workload: str, namespace: str, window: datetime.timedelta, at: datetime.datetime | None
    ) -> SeriesResult:
        """The workload's latency histogram: one series per ``le``."""
        answer = self._answer(BUCKETS, window, at)
        if not answer.ok:
            return SeriesResult(answer.outcome, detail=answer.detail)
        found = answer.series.get((workload, namespace), ())
        series = tuple(({"le": le}, value) for le, value in found if le is not None)
        if not series:
            return SeriesResult(QueryOutcome.EMPTY, detail=_absent(workload, namespace))
        return SeriesResult(QueryOutcome.OK, series)

    def prefetch(
        self, templates: Sequence[str], window: datetime.timedelta, at: datetime.datetime | None
    ) -> None:
        """Start the answers to ``templates`` (``REQUESTS``, ``ERRORS``, ``BUCKETS``) that nobody
        has asked for yet, all at once in the background: the first experiment of a grid step then
        waits for the slowest of them rather than for their sum, and so does every tick behind it."""
        for template in templates:
            future, mine = self._claim(template, window, at)
            if mine:
                self._pool.submit(self._fetch, future, template, window, at)

    def _answer(self, template: str, window: datetime.timedelta, at: datetime.datetime | None) -> _Answer:
        future, mine = self._claim(template, window, at)
        if mine:
            self._fetch(future, template, window, at)
        return future.result()

    def _claim(
        self, template: str, window: datetime.timedelta, at: datetime.datetime | None
    ) -> tuple[concurrent.futures.Future[_Answer], bool]:
        """The answer's future, and whether the caller must fetch it (nobody asked before)."""
        key = _Key(template, window, at)
        now = self._clock()
        with self._lock:
            kept = self._answers.get(key)
            if kept is not None and (at is not None or now - kept[0] < 1.0):
                return kept[1], False
            future: concurrent.futures.Future[_Answer] = concurrent.futures.Future()
            self._answers[key] = (now, future)
            self.queries += 1
            self._forget_old(now)
        return future, True

    def _fetch(
        self,
        future: concurrent.futures.Future[_Answer],
        template: str,
        window: datetime.timedelta,
        at: datetime.datetime | None,
    ) -> None:
        promql = template.replace(_WINDOW, durations.format_duration(window))
        try:
            provider = self._provider()
            if provider is None:
                raise RuntimeError("the metric provider of this telemetry cache is gone")
            future.set_result(_Answer.of(provider.query_series(promql, at)))
        except BaseException as e:  # never leave the others waiting; they all get the failure
            future.set_exception(e)

    def _forget_old(self, now: float) -> None:
        for key in [k for k, (when, _) in self._answers.items() if now - when > KEEP_SECONDS]:
            del self._answers[key]


def _absent(workload: str, namespace: str) -> str:
    return f"no series for workload {workload} in namespace {namespace}"


def _one(answer: _Answer, workload: str, namespace: str) -> QueryResult:
    if not answer.ok:
        return QueryResult(answer.outcome, detail=answer.detail)
    values = [value for _, value in answer.series.get((workload, namespace), ())]
    if not values:
        return QueryResult(QueryOutcome.EMPTY, detail=_absent(workload, namespace))
    if len(values) > 1:
        return QueryResult(QueryOutcome.MULTIPLE_SERIES, detail=f"{len(values)} series for {workload}")
    return number(values[0])


def number(value: float) -> QueryResult:
    """A value as a query result: NaN and infinities are outcomes of their own, never numbers."""
    if math.isnan(value):
        return QueryResult(QueryOutcome.NAN, detail="the value is NaN (no traffic in the window?)")
    if math.isinf(value):
        return QueryResult(QueryOutcome.INF, detail="the value is infinite")
    return QueryResult(QueryOutcome.OK, value)


def ratio(events: QueryResult, total: QueryResult) -> QueryResult:
    """``events / total`` as PromQL divides: no total is no data, a total of 0 is NaN."""
    if not total.ok:
        return total
    if not events.ok:
        return events
    assert events.value is not None and total.value is not None  # ok results carry values
    return number(events.value / total.value if total.value else math.nan)


def bucket_quantile(quantile: float, buckets: Sequence[tuple[float, float]]) -> float:
    """PromQL's ``histogram_quantile`` over cumulative ``(le, count)`` buckets, ``+Inf`` last.

    The same rules as Prometheus' ``bucketQuantile``: linear interpolation
    within the bucket the rank falls in, the first bucket starting at 0, the
    ``+Inf`` bucket answered by the highest finite edge, NaN without data.
    """
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    counts = []
    highest = 0.0
    for _, count in buckets:  # counts may dip by float noise: make them monotonic, as Prometheus does
        highest = max(highest, count)
        counts.append(highest)
    observations = counts[-1]
    if observations == 0:
        return math.nan
    rank = quantile * observations
    b = next(i for i, count in enumerate(counts) if count >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], counts[b]
    if b > 0:
        start = buckets[b - 1][0]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)
