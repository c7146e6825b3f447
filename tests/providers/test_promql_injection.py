"""PromQL injection: hostile values stay inside their string, and unsafe templates are never sent.

A ``query:`` template is filled with values users control: ``subset`` and
``host`` are free strings in the spec, and the names could come from any
API server an operator is pointed at.  Each value lands in one PromQL
context -- a ``"..."``/``'...'``/raw string label matcher, an ``=~``/``!~``
regex matcher, ``label_replace``'s regex or replacement, a bare range
``[{{ interval }}]`` -- and must not change the query's structure there.

The checks use the real thing: Prometheus parses every rendered query (a
parse error comes back as ``InvalidQuery``), decodes every literal back
(``label_replace`` copies it into a label we read), and matches exported
series whose label values are the hostile strings themselves, next to
decoys a broken escaping would match too.  Templates that would let a value
change the query's structure are refused before anything is sent.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from modelrollout import measure, spec
from modelrollout.localstack.prometheus import PrometheusServer
from modelrollout.ports import QueryOutcome, QueryResult
from modelrollout.providers import queries
from modelrollout.providers.scripted import ScriptedProvider
from modelrollout.templates import TemplateError, render

# Values that would break out of a naively filled template, each in its own way.
HOSTILE = [
    'v2"} or vector(42) #',  # close the string and the selector, add a query, comment the rest out
    "v2'} or vector(42) #",
    "v2`} or vector(42) #",
    '\\"} or vector(42) #',  # a backslash that would escape the closing quote's escape
    "v2\\",  # a trailing backslash would escape the closing quote
    "a\"b'c`d",
    "line\nbreak\r\ttab",
    "{{ workload }}",  # values are not re-scanned for placeholders
    "}}{{",
    ".*",  # in a regex matcher this would match everything
    "a|b",
    "v(2)[0-9]+?^$",
    "a.b",
    "$1 ${x} $$",  # label_replace's replacement expands $1
    "x) or vector(42",
    " or on() vector(42)",
    "# not a comment",
    "ünï✓ 日本 \u2028",
    "",
]
# Decoys: series a value would also select if it were not matched literally.
DECOYS = ["v2", "a", "b", "axb", "v2x", "line", "anything", "v22", "a.b.c"]
CONTEXTS = {
    # name: (template, what PromQL reads the literal as)
    "double-quoted matcher": ('sum(t_inj{variant="{{ workload }}"})', "literal"),
    "single-quoted matcher": ("sum(t_inj{variant='{{ workload }}'})", "literal"),
    "raw-string matcher": ("sum(t_inj{variant=`{{ workload }}`})", "literal"),
    "double-quoted regex": ('sum(t_inj{variant=~"{{ workload }}"})', "regex"),
    "single-quoted regex": ("sum(t_inj{variant=~'{{ workload }}'})", "regex"),
    "raw-string regex": ("sum(t_inj{variant=~`{{ workload }}`})", "regex"),
}
WINDOW = datetime.timedelta(seconds=30)


def _values(value: str) -> dict[str, str]:
    return {"workload": value, "host": value, "subset": value, "namespace": value, "experiment": value,
            "interval": "30s"}  # fmt: skip


def _raw_string_can_hold(value: str) -> bool:
    return "`" not in value and "\ufffd" not in value


# --------------------------------------------------------------------------- unsafe templates are refused


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('sum(rate(x{a="1"}[5m])) {{ workload }}', "{{ workload }} must be inside a quoted string"),
        ("sum(x) > {{ subset }}", "{{ subset }} must be inside a quoted string"),
        ("model_{{ workload }}_total", "{{ workload }} must be inside a quoted string"),
        ('x{ {{ host }}="a"}', "{{ host }} must be inside a quoted string"),
        ("x{a={{ namespace }}}", "{{ namespace }} must be inside a quoted string"),
        ("x[{{ workload }}]", "{{ workload }} must be inside a quoted string"),
        ('x{a="{{ interval }}"}', "{{ interval }} is a duration and belongs outside quotes"),
        ('x{a="\\{{ subset }}"}', "{{ subset }} follows a backslash"),
        ('x # {{ host }}\n{a="b"}', "{{ host }} is inside a # comment"),
        ('x{a="{{ workload }}}', "unterminated string"),
        ('x{a="{{ worklaod }}"}', "unknown placeholder {{ worklaod }}"),
    ],
)
def test_templates_a_value_could_restructure_are_refused(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as refused:
        render(template, _values("v2"))
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "interval", ["1m]) or vector(42) #", "5m offset 1h", "1m:10s", "5m] or x[5m", "1m\n", "0s", "", "1 m"]
)
def test_a_range_only_takes_a_duration(interval: str) -> None:
    with pytest.raises(TemplateError, match=r"\{\{ interval \}\}"):
        render("rate(x[{{ interval }}])", {"interval": interval})


@pytest.mark.parametrize("value", ["a`b", "\ufffd"])
def test_a_raw_string_refuses_what_it_cannot_hold(value: str) -> None:
    with pytest.raises(TemplateError, match=r"\{\{ subset \}\}: the value contains a backtick or U\+FFFD"):
        render("x{s=`{{ subset }}`}", {"subset": value})


def _experiment(query: str, subset: str = "v2") -> spec.ExperimentSpec:
    return spec.parse_spec({
        "virtualService": {"name": "churn"},
        "baseline": {"subset": "v1", "workload": "churn-v1"},
        "candidate": {"subset": subset, "workload": "churn-v2"},
        "metrics": [{"name": "error-rate", "builtin": "error-rate"}, {"name": "sneaky", "query": query}],
    })  # fmt: skip


def test_a_refused_template_is_never_sent_and_names_metric_and_placeholder() -> None:
    """parse_spec accepts the template (the names are known); filling it is refused for the metric."""
    experiment = _experiment("sum(rate(x[5m])) > {{ subset }}")
    provider = ScriptedProvider({}, default=QueryResult(QueryOutcome.OK, 1.0))
    samples, _ = measure.measure(experiment, "churn-v2", "ml", provider, WINDOW)
    (sneaky,) = [sample for sample in samples if sample.name == "sneaky"]
    for result in sneaky.results.values():
        assert result.outcome is QueryOutcome.INVALID_QUERY
        assert "refused to send: {{ subset }} must be inside a quoted string" in result.detail
    assert not [query for query in provider.queries if "sum(rate(x[5m]))" in query], "it was sent"
    # The other metrics are measured as usual.
    assert any("istio_requests_total" in query for query in provider.queries)


def test_a_hostile_subset_reaches_prometheus_only_inside_its_string() -> None:
    hostile = 'v2"} or vector(42) #'
    experiment = _experiment('sum(t_inj{variant="{{ subset }}"})', subset=hostile)
    provider = ScriptedProvider({})
    measure.measure(experiment, "churn-v2", "ml", provider, WINDOW)
    sent = [query for query in provider.queries if query.startswith("sum(t_inj")]
    assert sent == ['sum(t_inj{variant="v1"})', 'sum(t_inj{variant="v2\\"} or vector(42) #"})']


# --------------------------------------------------------------------------- Prometheus reads the values back


@pytest.fixture(scope="module")
def hostile_series(prometheus: PrometheusServer) -> Iterator[dict[str, float]]:
    """Gauge ``t_inj`` with one series per hostile value and decoy, each worth a distinct power of 2.

    Served by an exporter of its own: a label value Prometheus could not scrape must not take the
    shared exporter's metrics down with it.
    """
    worth = {value: float(2**n) for n, value in enumerate(dict.fromkeys(HOSTILE + DECOYS))}
    registry = CollectorRegistry()
    gauge = Gauge("t_inj", "label values that look like PromQL", ["variant"], registry=registry)
    for value, number in worth.items():
        gauge.labels(value).set(number)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        prometheus.add_target(f"127.0.0.1:{server.server_port}")
        total = sum(worth.values())
        prometheus.wait_for("sum(t_inj)", lambda result: result.value == total, timeout=30)
        yield worth
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _query(prometheus: PrometheusServer, promql: str) -> QueryResult:
    result = prometheus.provider().query(promql)
    assert result.outcome is not QueryOutcome.INVALID_QUERY, (promql, result.detail)
    return result


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("context", sorted(CONTEXTS))
def test_a_matcher_selects_exactly_the_series_with_the_value(
    prometheus: PrometheusServer, hostile_series: dict[str, float], context: str, value: str
) -> None:
    template, _ = CONTEXTS[context]
    if "raw-string" in context and not _raw_string_can_hold(value):
        pytest.skip("refused (test_a_raw_string_refuses_what_it_cannot_hold)")
    promql = render(template, _values(value))
    # Only this series, whose label is the value itself: not a decoy, not everything, not vector(42).
    assert _query(prometheus, promql) == QueryResult(QueryOutcome.OK, hostile_series[value]), promql


@pytest.mark.parametrize("value", HOSTILE)
def test_a_negative_regex_excludes_exactly_the_value(
    prometheus: PrometheusServer, hostile_series: dict[str, float], value: str
) -> None:
    promql = render('sum(t_inj{variant!~"{{ workload }}"})', _values(value))
    expected = sum(hostile_series.values()) - hostile_series[value]
    assert _query(prometheus, promql) == QueryResult(QueryOutcome.OK, expected), promql


@pytest.mark.parametrize("value", HOSTILE)
def test_an_injection_into_an_absent_metric_finds_nothing(prometheus: PrometheusServer, value: str) -> None:
    """`... or vector(42)` smuggled out of the string would answer 42 where there is no series at all."""
    for template in ('sum(t_absent{a="{{ host }}"})', "sum(t_absent{a=~'{{ host }}'})"):
        result = _query(prometheus, render(template, _values(value)))
        assert result.outcome is QueryOutcome.EMPTY, (template, value, result)


def _decoded(prometheus: PrometheusServer, promql: str, label: str) -> str:
    answer = prometheus.provider().query_series(promql)
    assert answer.outcome is QueryOutcome.OK, (promql, answer.detail)
    ((labels, _),) = answer.series
    return labels.get(label, "")


@pytest.mark.parametrize("value", HOSTILE)
def test_label_replace_arguments_keep_the_value(prometheus: PrometheusServer, value: str) -> None:
    # The replacement argument: `$1` in the value must stay text, not expand a capture group.
    replaced = render('label_replace(vector(1), "got", "{{ subset }}", "", "")', _values(value))
    assert _decoded(prometheus, replaced, "got") == value, replaced
    # The regex argument (fully anchored by label_replace) matches the value, and nothing else:
    # `src` is set to {{ host }}, then matched against {{ subset }}.
    source = 'label_replace(vector(1), "src", "{{ host }}", "", "")'
    nested = f'label_replace({source}, "hit", "yes", "src", "{{{{ subset }}}}")'
    matched = render(nested, _values(value))
    assert _decoded(prometheus, matched, "hit") == "yes", matched
    for decoy in (value + "x", "x" + value, value[:-1]):
        if decoy != value:
            missed = render(nested, {**_values(value), "host": decoy})
            assert _decoded(prometheus, missed, "hit") == "", missed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=12), st.sampled_from(["'", '"']))
def test_any_text_round_trips_through_prometheus(
    prometheus: PrometheusServer, value: str, quote: str
) -> None:
    template = f"label_replace(vector(1), 'got', {quote}{{{{ host }}}}{quote}, '', '')"
    assert _decoded(prometheus, render(template, _values(value)), "got") == value


@pytest.mark.parametrize("value", ['reviews-v1"} or vector(42) #', "a.*", "ns\\"])
def test_builtin_queries_keep_hostile_names_inside_their_strings(
    prometheus: PrometheusServer, value: str
) -> None:
    """Workload and namespace are DNS names in a spec that validates; the builtins escape them anyway."""
    for promql in (
        queries.error_rate(value, value, WINDOW),
        queries.latency_quantile(0.95, value, value, WINDOW),
        queries.request_count(value, value, WINDOW),
        queries.error_count(value, value, WINDOW),
    ):
        result = _query(prometheus, promql)
        if promql.endswith("or vector(0)"):  # error_count: zero errors is a count of 0, on purpose
            assert result == QueryResult(QueryOutcome.OK, 0.0), promql
        else:  # nothing else may answer anything
            assert result.outcome is QueryOutcome.EMPTY, (promql, result)
