"""A fault-injecting HTTP proxy in front of the local stack's Prometheus.

The operator must never mistake "we could not measure" for "the candidate is
fine".  To prove it end to end, an experiment's ``spec.prometheus.address``
points here; by default every request is forwarded to the real Prometheus
unchanged, and a test can switch, at any moment and from any thread, to:

- :meth:`PromProxy.down`: the port is closed (connection refused) until :meth:`PromProxy.up`;
- :attr:`Mode.SLOW`: answer only after ``delay`` seconds (past the provider's timeout);
- :attr:`Mode.EMPTY`, :attr:`Mode.NAN`, :attr:`Mode.INF`, :attr:`Mode.SERIES`: a well-formed
  answer with no series, NaN or +Inf values, or every series twice (an ambiguous answer);
- :attr:`Mode.ERROR`: an HTTP error (503 by default, or 400 ``bad_data``...);
- :meth:`PromProxy.hide`: one label value (e.g. the candidate's workload) measured nothing.

A rule applies to every query, or only to those whose PromQL matches a regex
(e.g. only latency queries, or only the candidate's workload).  Only query
endpoints (``/api/v1/query``, ``/api/v1/query_range``) are subject to rules;
everything else (``/``, ``/-/ready``...) is forwarded.  :meth:`PromProxy.log`
tells which queries were seen and which rule, if any, answered them.
"""

from __future__ import annotations

import dataclasses
import enum
import http.server
import json
import re
import socketserver
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

QUERY_PATHS = ("/api/v1/query", "/api/v1/query_range")
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)


class Mode(str, enum.Enum):
    SLOW = "slow"  # delay, then forward
    EMPTY = "empty"  # success, no series
    NAN = "nan"  # the upstream series (or one) with the value NaN
    INF = "inf"  # ... with +Inf
    SERIES = "series"  # every upstream series twice (told apart by a label), or two made-up ones
    ERROR = "error"  # HTTP ``status`` with Prometheus' error JSON (or ``body`` verbatim)
    HIDE = "hide"  # the series of one label value are gone (see PromProxy.hide)


@dataclasses.dataclass(frozen=True)
class Rule:
    mode: Mode
    match: re.Pattern[str] | None = None  # searched in the PromQL; None: every query
    delay: float = 0.0
    status: int = 503
    error_type: str = "unavailable"
    error: str = "injected fault"
    body: str | None = None  # for ERROR: a verbatim (e.g. non-JSON) body
    label: str = ""  # for HIDE
    value: str = ""  # for HIDE

    def applies(self, query: str) -> bool:
        return self.match is None or self.match.search(query) is not None


@dataclasses.dataclass(frozen=True)
class Seen:
    """One query the proxy answered: its PromQL and the mode of the rule that answered (None: forwarded)."""

    query: str
    mode: Mode | None
    at: float  # time.monotonic()


class PromProxy:
    """The proxy on 127.0.0.1 (a free port unless given); thread-safe setters; see the module docstring."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._log: list[Seen] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._cleared = threading.Event()  # wakes slow answers early when their rule goes away

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        self.up()
        return self

    def stop(self) -> None:
        self.down()
        self._cleared.set()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("the proxy was never started")
        return f"http://{self._host}:{self._port}"

    def down(self) -> None:
        """Close the port: connections are refused until :meth:`up` (answers in flight still finish)."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5)

    def up(self) -> None:
        """Listen again, on the same port as before (a free one the first time)."""
        with self._lock:
            if self._server is not None:
                return
            server = _Server((self._host, self._port), _Handler)
            server.proxy = self
            self._port = server.server_address[1]
            thread = threading.Thread(
                target=server.serve_forever, args=(0.05,), name="promproxy", daemon=True
            )
            self._server, self._thread = server, thread
        thread.start()

    @property
    def is_up(self) -> bool:
        with self._lock:
            return self._server is not None

    # ------------------------------------------------------------------ faults

    def set(self, mode: Mode, match: str | None = None, **options: Any) -> Rule:
        """Add a rule (checked before those added earlier: the newest matching rule answers)."""
        rule = Rule(mode, re.compile(match) if match is not None else None, **options)
        with self._lock:
            self._rules.insert(0, rule)
            self._cleared.clear()
        return rule

    def slow(self, delay: float, match: str | None = None) -> Rule:
        return self.set(Mode.SLOW, match, delay=delay)

    def error(
        self,
        status: int = 503,
        match: str | None = None,
        *,
        error_type: str = "unavailable",
        error: str = "injected fault",
        body: str | None = None,
    ) -> Rule:
        return self.set(Mode.ERROR, match, status=status, error_type=error_type, error=error, body=body)

    def hide(self, label: str, value: str, match: str | None = None) -> Rule:
        """One label value measured nothing: e.g. ``hide("destination_workload", "churn-v2")``.

        A query selecting ``label="value"`` answers no series; any other answer loses the
        series labelled with it -- whether the operator asks per workload or for all at once.
        """
        return self.set(Mode.HIDE, match, label=label, value=value)

    def remove(self, rule: Rule) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]
            self._cleared.set()

    def clear(self) -> None:
        """Forward everything again (the port stays as it is: see :meth:`up`)."""
        with self._lock:
            self._rules.clear()
            self._cleared.set()

    def log(self) -> list[Seen]:
        with self._lock:
            return list(self._log)

    def answered(self, mode: Mode | None, since: float = 0.0) -> list[str]:
        """The queries (since a ``time.monotonic()``) that a rule of ``mode`` answered."""
        return [s.query for s in self.log() if s.mode is mode and s.at >= since]

    # ------------------------------------------------------------------ serving

    def _record(self, query: str, mode: Mode | None) -> None:
        with self._lock:
            self._log.append(Seen(query, mode, time.monotonic()))
            del self._log[:-10_000]

    def _forward(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.upstream + path, data=body, method=method)
        for name in ("Content-Type", "Accept", "Authorization"):
            if name in headers:
                request.add_header(name, headers[name])
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def serve(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """One request: apply the first applicable rule to a query, forward anything else."""
        url = urllib.parse.urlsplit(path)
        if url.path not in QUERY_PATHS:
            return self._forward(method, path, body, headers)
        params = urllib.parse.parse_qs(url.query)
        if body and "form-urlencoded" in headers.get("Content-Type", ""):
            params.update(urllib.parse.parse_qs(body.decode()))
        query = (params.get("query") or [""])[0]
        rule = self._choose(query)
        if rule is not None and rule.mode is not Mode.HIDE:
            self._record(query, rule.mode)  # now: a slow answer may never be read
        status, headers, payload, mode = self._answer(rule, query, method, path, body, headers)
        if rule is None or rule.mode is Mode.HIDE:
            self._record(query, mode)  # whether it hid anything is known only now
        return status, headers, payload

    def _answer(
        self,
        rule: Rule | None,
        query: str,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> tuple[int, dict[str, str], bytes, Mode | None]:
        """The answer to a query, and the mode that shaped it (None: the upstream's, unchanged)."""
        if rule is None:
            return (*self._forward(method, path, body, headers), None)
        if rule.mode is Mode.SLOW:
            self._cleared.wait(rule.delay)
            return (*self._forward(method, path, body, headers), rule.mode)
        if rule.mode is Mode.ERROR:
            if rule.body is not None:
                return rule.status, {"Content-Type": "text/plain"}, rule.body.encode(), rule.mode
            answer = {"status": "error", "errorType": rule.error_type, "error": rule.error}
            return rule.status, _JSON, json.dumps(answer).encode(), rule.mode
        if rule.mode is Mode.EMPTY or (rule.mode is Mode.HIDE and f'{rule.label}="{rule.value}"' in query):
            return 200, _JSON, _vector([]), rule.mode
        status, upstream_headers, raw = self._forward(method, path, body, headers)
        try:
            result = json.loads(raw)["data"]["result"]
        except (ValueError, KeyError, TypeError):
            return status, upstream_headers, raw, None  # not a vector answer: nothing to rewrite
        rewritten = _rewrite(rule, result)
        changed = rule.mode is not Mode.HIDE or rewritten != result
        return 200, _JSON, _vector(rewritten), rule.mode if changed else None

    def _choose(self, query: str) -> Rule | None:
        with self._lock:
            return next((rule for rule in self._rules if rule.applies(query)), None)


_JSON = {"Content-Type": "application/json"}


def _vector(result: list[Any]) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def _rewrite(rule: Rule, result: Any) -> list[Any]:
    series = [s for s in result if isinstance(s, dict)] if isinstance(result, list) else []
    now = time.time()
    if rule.mode is Mode.HIDE:
        return [s for s in series if (s.get("metric") or {}).get(rule.label) != rule.value]
    if rule.mode in (Mode.NAN, Mode.INF):
        text = "NaN" if rule.mode is Mode.NAN else "+Inf"
        series = series or [{"metric": {}, "value": [now, "0"]}]
        return [{**s, "value": [(s.get("value") or [now])[0], text]} for s in series]
    assert rule.mode is Mode.SERIES
    series = series or [{"metric": {}, "value": [now, "1"]}]
    return [
        {**s, "metric": {**(s.get("metric") or {}), "instance": instance}}
        for s in series
        for instance in ("replica-a", "replica-b")
    ]


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # up() again on the same port right after down()
    proxy: PromProxy


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._proxy("GET")

    def do_POST(self) -> None:
        self._proxy("POST")

    def _proxy(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        try:
            status, headers, payload = self.server.proxy.serve(method, self.path, body, dict(self.headers))
        except OSError as e:  # the upstream is gone: as a proxy would say it
            status, headers, payload = 502, {"Content-Type": "text/plain"}, f"bad gateway: {e}".encode()
        try:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up (its timeout): nobody to answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the proxy's own log() says what was asked
