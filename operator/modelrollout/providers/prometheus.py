"""The Prometheus metric provider: one instant query in, one classified number out.

A guardrail must tell "the candidate is bad" apart from "we could not
measure", so every way a query can go wrong becomes its own
:class:`~modelrollout.ports.QueryOutcome` instead of an exception: no
series, NaN, infinity, an ambiguous multi-series answer, a timeout, an
unreachable server, PromQL that Prometheus rejects, anything else.
:meth:`PrometheusProvider.query` never raises, and its ``detail`` carries
what a user needs to fix the query, never the request headers (which may
hold a bearer token).

HTTP is left to ``prometheus_api_client``.  It retries nothing here: the
reconciler evaluates again every interval, and retrying inside a query
would only multiply the time a reconcile waits on a sick Prometheus.
"""

from __future__ import annotations

import ast
import datetime
import json
import math
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from modelrollout.ports import QueryOutcome, QueryResult, SeriesResult

_MAX_DETAIL = 300  # characters of detail: one line in a status message
_STATUS = re.compile(r"^HTTP Status Code (\d+) \((b(['\"]).*\3)\)$", re.DOTALL)


class PrometheusProvider:
    """:class:`~modelrollout.ports.MetricProvider` backed by a Prometheus HTTP API at ``url``."""

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        session = requests.Session()
        session.verify = verify  # False, True, or a CA bundle path
        self._client = PrometheusConnect(
            url=self.url,
            headers=dict(headers) if headers else None,
            session=session,
            retry=Retry(total=0, read=False),  # read=False: a read timeout surfaces as itself
            timeout=timeout,  # seconds, applied to connecting and to reading
        )
        self._shown_url = _without_credentials(self.url)

    def query(self, promql: str, at: datetime.datetime | None = None) -> QueryResult:
        """Run ``promql`` as an instant query at ``at`` (default now); classify the answer (never raises)."""
        data = self._fetch(promql, at)
        return data if isinstance(data, QueryResult) else _classify_data(data)

    def query_series(self, promql: str, at: datetime.datetime | None = None) -> SeriesResult:
        """Run ``promql``; every series with its labels and value (never raises)."""
        data = self._fetch(promql, at)
        if isinstance(data, QueryResult):
            return SeriesResult(data.outcome, detail=data.detail)
        if not isinstance(data, list):
            return SeriesResult(QueryOutcome.ERROR, detail=f"unexpected result from Prometheus: {data!r}")
        if not data:
            return SeriesResult(QueryOutcome.EMPTY, detail="the query returned no series")
        try:
            series = tuple((dict(item.get("metric", {})), float(item["value"][1])) for item in data)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            return SeriesResult(QueryOutcome.ERROR, detail=f"unusable series from Prometheus: {e}")
        return SeriesResult(QueryOutcome.OK, series)

    def _fetch(self, promql: str, at: datetime.datetime | None = None) -> Any:
        """The query's ``result``, or a QueryResult saying why there is none."""
        params = {"time": f"{at.timestamp():.3f}"} if at is not None else None
        try:
            return self._client.custom_query(promql, params=params)
        except requests.exceptions.ConnectTimeout:
            return _failed(QueryOutcome.UNREACHABLE, f"connecting to {self._shown_url} timed out")
        except requests.exceptions.Timeout:
            return self._timed_out()
        except requests.exceptions.ConnectionError as e:
            if _caused_by_read_timeout(e):
                return self._timed_out()
            return _failed(QueryOutcome.UNREACHABLE, f"cannot reach {self._shown_url}: {_root_cause(e)}")
        except PrometheusApiClientException as e:
            return _classify_http_error(str(e))
        except Exception as e:  # a malformed answer (not JSON, no "data"), or anything unforeseen
            return _failed(QueryOutcome.ERROR, f"unusable answer from Prometheus: {_root_cause(e)}")

    def is_online(self) -> bool:
        """Whether Prometheus answers its root page (never raises)."""
        try:
            return bool(self._client.check_prometheus_connection())
        except Exception:
            return False

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def _timed_out(self) -> QueryResult:
        return _failed(QueryOutcome.TIMEOUT, f"no answer from {self._shown_url} within {self.timeout:g} s")


def _classify_data(data: Any) -> QueryResult:
    """Turn the ``result`` of a successful instant query into one outcome."""
    if not isinstance(data, list):
        return _failed(QueryOutcome.ERROR, f"unexpected result from Prometheus: {data!r}")
    if not data:
        return _failed(QueryOutcome.EMPTY, "the query returned no series")
    if not isinstance(data[0], dict):  # a scalar or string: [timestamp, "value"]
        if len(data) != 2:
            return _failed(QueryOutcome.ERROR, f"unexpected result from Prometheus: {data!r}")
        return _classify_value(data[1], "the query returns a string, not a number")
    if len(data) > 1:
        shown = ", ".join(_label_set(item.get("metric", {})) for item in data[:5])
        more = ", ..." if len(data) > 5 else ""
        return _failed(
            QueryOutcome.MULTIPLE_SERIES,
            f"the query returned {len(data)} series, expected 1 (aggregate it): {shown}{more}",
        )
    sample = data[0]
    if "value" not in sample:
        if "values" in sample:
            return _failed(
                QueryOutcome.INVALID_QUERY,
                "the query returns a range vector; wrap it in a function such as rate() or avg_over_time()",
            )
        return _failed(QueryOutcome.ERROR, f"unexpected sample from Prometheus: {sample!r}")
    value = sample["value"]
    if not isinstance(value, list) or len(value) != 2:
        return _failed(QueryOutcome.ERROR, f"unexpected sample from Prometheus: {sample!r}")
    return _classify_value(value[1], "the series has a value that is not a number")


def _classify_value(text: Any, not_a_number: str) -> QueryResult:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return _failed(QueryOutcome.INVALID_QUERY, f"{not_a_number}: {text!r}")
    if math.isnan(value):
        return _failed(QueryOutcome.NAN, "the value is NaN (e.g. 0/0: no traffic in the window)")
    if math.isinf(value):
        return _failed(QueryOutcome.INF, f"the value is {'+' if value > 0 else '-'}Inf")
    return QueryResult(QueryOutcome.OK, value=value)


def _classify_http_error(message: str) -> QueryResult:
    """Classify the client's "HTTP Status Code 400 (b'{...}')" by Prometheus' error body."""
    match = _STATUS.match(message)
    if not match:
        return _failed(QueryOutcome.ERROR, message)
    status = int(match.group(1))
    error_type, error = "", ""
    try:
        body = json.loads(ast.literal_eval(match.group(2)))
        error_type, error = str(body.get("errorType", "")), str(body.get("error", ""))
    except (ValueError, SyntaxError, AttributeError):
        pass  # not Prometheus' JSON (a proxy's error page, say): report the status alone
    said = f": {error}" if error else ""
    if status == 400 and error_type == "bad_data":
        return _failed(QueryOutcome.INVALID_QUERY, f"Prometheus rejected the query{said}")
    if error_type == "timeout":
        return _failed(QueryOutcome.TIMEOUT, f"Prometheus timed out running the query{said}")
    kind = f" {error_type}" if error_type else ""
    return _failed(QueryOutcome.ERROR, f"Prometheus answered HTTP {status}{kind}{said}")


def _label_set(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{name}="{value}"' for name, value in sorted(labels.items())) + "}"


def _caused_by_read_timeout(error: BaseException) -> bool:
    """requests reports a body that stops arriving as a ConnectionError wrapping a read timeout."""
    cause: Any = error.args[0] if error.args else None
    return isinstance(cause, ReadTimeoutError) or isinstance(getattr(cause, "reason", None), ReadTimeoutError)


def _root_cause(error: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, without object reprs and URLs."""
    cause: Any = error
    while True:
        inner = getattr(cause, "reason", None)
        if inner is None and isinstance(cause, requests.exceptions.RequestException) and cause.args:
            inner = cause.args[0]
        if not isinstance(inner, BaseException) or inner is cause:
            break
        cause = inner
    text = str(cause)
    # urllib3 prefixes "<urllib3.connection.HTTPConnection object at 0x...>: ".
    text = re.sub(r"^<[^>]*>: ", "", text)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _without_credentials(url: str) -> str:
    """``url`` with any user:password removed, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _failed(outcome: QueryOutcome, detail: str) -> QueryResult:
    """A result without a value; ``detail`` made one line of at most ``_MAX_DETAIL`` characters."""
    line = " ".join(detail.split())
    return QueryResult(outcome, detail=line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 3] + "...")
