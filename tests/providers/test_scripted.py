"""ScriptedProvider: scripted answers and a record of what was asked."""

from __future__ import annotations

import pytest

from modelrollout.ports import MetricProvider, QueryOutcome, QueryResult
from modelrollout.providers.scripted import NO_ANSWER, ScriptedProvider

TIMEOUT = QueryResult(QueryOutcome.TIMEOUT, detail="scripted timeout")


def test_substring_table_first_match_wins_and_floats_are_ok_values() -> None:
    answers: dict[str, QueryResult | float] = {"churn-v2": TIMEOUT, "istio_requests_total": 0.01}
    provider: MetricProvider = ScriptedProvider(answers)
    assert provider.query('x{w="churn-v2"} / istio_requests_total') == TIMEOUT
    assert provider.query('istio_requests_total{w="churn-v1"}') == QueryResult(QueryOutcome.OK, 0.01)
    assert provider.query("something else") == NO_ANSWER


def test_table_changes_are_seen_by_later_queries() -> None:
    answers: dict[str, QueryResult | float] = {"q": 1.0}
    provider = ScriptedProvider(answers, default=TIMEOUT)
    assert provider.query("q").value == 1.0
    answers["q"] = 2.0
    assert provider.query("q").value == 2.0
    del answers["q"]
    assert provider.query("q") == TIMEOUT


def test_function_answers_and_queries_are_recorded() -> None:
    provider = ScriptedProvider(lambda promql: QueryResult(QueryOutcome.OK, float(len(promql))))
    assert provider.query("abc").value == 3.0
    assert provider.query("de").value == 2.0
    assert provider.queries == ["abc", "de"]


def test_a_broken_script_fails_loudly() -> None:
    def script(promql: str) -> QueryResult:
        raise KeyError(promql)

    with pytest.raises(KeyError):
        ScriptedProvider(script).query("q")


def test_online_is_settable() -> None:
    provider = ScriptedProvider({}, online=False)
    assert provider.is_online() is False
    provider.online = True
    assert provider.is_online() is True
