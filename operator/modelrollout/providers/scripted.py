"""A metric provider whose answers are scripted, for unit tests and simulations.

The reconciler only sees :class:`~modelrollout.ports.QueryResult` values, so
every situation a real Prometheus can produce (a healthy candidate, a
regression, no data, a timeout) can be replayed without one.  The provider
records the queries it was asked, so a test can also assert on the PromQL.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping

from modelrollout.ports import QueryOutcome, QueryResult, SeriesResult

Answer = QueryResult | float
NO_ANSWER = QueryResult(QueryOutcome.EMPTY, detail="no scripted answer for this query")


class ScriptedProvider:
    """:class:`~modelrollout.ports.MetricProvider` answering from a function or a substring table.

    ``answers`` is either a function ``promql -> QueryResult`` (whatever it
    raises propagates: a broken script should fail the test), or a mapping
    from substrings to answers: the first key, in the mapping's order, found
    in the query decides, and a float ``x`` means ``QueryResult(OK, x)``.
    The mapping is read at every query, so a test may change it between
    reconciles.  A query nothing matches gets ``default``.
    """

    def __init__(
        self,
        answers: Callable[[str], QueryResult] | Mapping[str, Answer],
        default: QueryResult = NO_ANSWER,
        online: bool = True,
        series: Callable[[str], SeriesResult] | None = None,
    ) -> None:
        self.answers = answers
        self.default = default
        self.online = online
        self.series = series
        self.queries: list[str] = []

    def query(self, promql: str, at: datetime.datetime | None = None) -> QueryResult:
        self.queries.append(promql)
        if callable(self.answers):
            return self.answers(promql)
        for substring, answer in self.answers.items():
            if substring in promql:
                if isinstance(answer, QueryResult):
                    return answer
                return QueryResult(QueryOutcome.OK, float(answer))
        return self.default

    def query_series(self, promql: str, at: datetime.datetime | None = None) -> SeriesResult:
        """Answers from ``series``; without one, every series query has no data."""
        self.queries.append(promql)
        if self.series is None:
            return SeriesResult(QueryOutcome.EMPTY, detail="no scripted series for this query")
        return self.series(promql)

    def is_online(self) -> bool:
        return self.online
