"""The fault-injecting Prometheus proxy, seen through the operator's own provider.

The upstream is a tiny fake Prometheus (fast, deterministic); the integration
suites put the proxy in front of the real one.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from modelrollout.localstack.promproxy import Mode, PromProxy
from modelrollout.ports import QueryOutcome
from modelrollout.providers.prometheus import PrometheusProvider

# What the fake upstream answers: one series per workload the query names, value 2.5.
WORKLOADS = ("churn-v1", "churn-v2")


class _Upstream(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = (urllib.parse.parse_qs(url.query).get("query") or [""])[0]
        self._answer(url.path, query)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        self._answer(urllib.parse.urlsplit(self.path).path, (form.get("query") or [""])[0])

    def _answer(self, path: str, query: str) -> None:
        if path != "/api/v1/query":
            body = b"Prometheus Server is Ready.\n"
        else:
            named = [w for w in WORKLOADS if w in query]
            result = [
                {"metric": {"destination_workload": w} if "by" in query else {}, "value": [1.0, "2.5"]}
                for w in (named if "by" in query else named[:1] or ["x"])
            ]
            body = json.dumps(
                {"status": "success", "data": {"resultType": "vector", "result": result}}
            ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[PromProxy]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    with PromProxy(f"http://127.0.0.1:{server.server_address[1]}") as running:
        yield running
    server.shutdown()
    server.server_close()


def provider(proxy: PromProxy, timeout: float = 2.0) -> PrometheusProvider:
    return PrometheusProvider(proxy.url, timeout=timeout)


ALONE = 'sum(rate(x{destination_workload="churn-v2"}[5s]))'
BASE = 'sum(rate(x{destination_workload="churn-v1"}[5s]))'
BOTH = 'sum by (destination_workload) (rate(x{destination_workload=~"churn-v1|churn-v2"}[5s]))'


def test_forwards_unchanged_by_default(proxy: PromProxy) -> None:
    result = provider(proxy).query(ALONE)
    assert result.outcome is QueryOutcome.OK and result.value == 2.5
    assert [(s.query, s.mode) for s in proxy.log()] == [(ALONE, None)]
    assert provider(proxy).is_online()  # other paths are forwarded too


@pytest.mark.parametrize(
    ("mode", "outcome", "detail"),
    [
        (Mode.EMPTY, QueryOutcome.EMPTY, "no series"),
        (Mode.NAN, QueryOutcome.NAN, "NaN"),
        (Mode.INF, QueryOutcome.INF, "+Inf"),
        (Mode.SERIES, QueryOutcome.MULTIPLE_SERIES, "2 series"),
    ],
)
def test_rewritten_answers_are_classified_as_such(
    proxy: PromProxy, mode: Mode, outcome: QueryOutcome, detail: str
) -> None:
    proxy.set(mode)
    result = provider(proxy).query(ALONE)
    assert result.outcome is outcome and detail in result.detail
    assert proxy.answered(mode) == [ALONE]


def test_nan_keeps_the_series_of_a_grouped_answer(proxy: PromProxy) -> None:
    proxy.set(Mode.NAN)
    series = provider(proxy).query_series(BOTH)
    assert series.ok
    assert sorted(labels["destination_workload"] for labels, _ in series.series) == list(WORKLOADS)
    assert all(value != value for _, value in series.series)  # NaN


def test_errors_as_prometheus_and_as_a_broken_proxy_would_answer(proxy: PromProxy) -> None:
    proxy.error(503)
    result = provider(proxy).query(ALONE)
    assert result.outcome is QueryOutcome.ERROR and "HTTP 503" in result.detail
    proxy.error(400, error_type="bad_data", error="parse error at char 3")
    result = provider(proxy).query(ALONE)
    assert result.outcome is QueryOutcome.INVALID_QUERY and "parse error" in result.detail
    proxy.error(502, body="<html>bad gateway</html>")
    assert provider(proxy).query(ALONE).outcome is QueryOutcome.ERROR


def test_slow_answers_time_out_in_the_provider_and_clear_releases_them(proxy: PromProxy) -> None:
    proxy.slow(5.0)
    started = time.monotonic()
    result = provider(proxy, timeout=0.5).query(ALONE)
    assert result.outcome is QueryOutcome.TIMEOUT and "within 0.5 s" in result.detail
    assert time.monotonic() - started < 2
    proxy.clear()
    assert provider(proxy).query(ALONE).ok


def test_rules_apply_to_matching_queries_only_and_the_newest_wins(proxy: PromProxy) -> None:
    proxy.set(Mode.EMPTY, match="churn-v2")
    assert provider(proxy).query(BASE).ok
    assert provider(proxy).query(ALONE).outcome is QueryOutcome.EMPTY
    rule = proxy.set(Mode.NAN, match="churn-v2")
    assert provider(proxy).query(ALONE).outcome is QueryOutcome.NAN
    proxy.remove(rule)
    assert provider(proxy).query(ALONE).outcome is QueryOutcome.EMPTY


def test_hide_removes_one_workload_alone_or_grouped(proxy: PromProxy) -> None:
    proxy.hide("destination_workload", "churn-v2")
    assert provider(proxy).query(ALONE).outcome is QueryOutcome.EMPTY
    assert provider(proxy).query(BASE).value == 2.5
    grouped = provider(proxy).query_series(BOTH)
    assert [labels["destination_workload"] for labels, _ in grouped.series] == ["churn-v1"]
    # The log tells the answers it changed from those it passed on.
    assert proxy.answered(Mode.HIDE) == [ALONE, BOTH]
    assert proxy.answered(None) == [BASE]


def test_down_refuses_connections_and_up_serves_on_the_same_port(proxy: PromProxy) -> None:
    url = proxy.url
    proxy.down()
    assert not proxy.is_up
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), timeout=1):
        pass
    result = provider(proxy).query(ALONE)
    assert result.outcome is QueryOutcome.UNREACHABLE and "Connection refused" in result.detail
    proxy.up()
    assert proxy.url == url
    assert provider(proxy).query(ALONE).ok


def test_setters_are_safe_while_queries_run(proxy: PromProxy) -> None:
    outcomes: list[QueryOutcome] = []
    stop = threading.Event()

    def ask() -> None:
        client = provider(proxy)
        while not stop.is_set():
            outcomes.append(client.query(ALONE).outcome)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(50):
        proxy.set(Mode.EMPTY)
        proxy.set(Mode.NAN, match="churn")
        proxy.clear()
    stop.set()
    for thread in threads:
        thread.join(5)
    assert outcomes and set(outcomes) <= {QueryOutcome.OK, QueryOutcome.EMPTY, QueryOutcome.NAN}
