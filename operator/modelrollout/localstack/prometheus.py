"""A real Prometheus server on loopback, for the demo and the tests.

The operator's verdicts are only as good as its queries, and a fake
Prometheus would agree with whatever the queries assume.  This starts the
real binary instead: 1 s scrape and evaluation intervals, static targets
(``host:port`` exporters), a throw-away data directory and a log file in
it.  Targets can be added while it runs (config rewrite + ``/-/reload``), so
one server per test session can scrape exporters started later.

Startup is quick but the first sample takes ~5 s and absolute rates ~15 s
(see ENVIRONMENT.md): start one per session and use :meth:`wait_for`
instead of sleeping.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO

from modelrollout.ports import QueryResult
from modelrollout.providers.prometheus import PrometheusProvider

_DEBIAN_BINARY = "/usr/bin/prometheus"
# Flags that keep a test server small: short retention, few concurrent queries
# and connections, and a per-query sample cap far below the default 50M.
_SMALL_FLAGS = (
    "--storage.tsdb.retention.time=2h",
    "--query.max-concurrency=4",
    "--query.max-samples=5000000",
    "--web.max-connections=64",
)


class PrometheusNotFound(RuntimeError):
    """The ``prometheus`` binary is not installed."""


def find_binary() -> str:
    """The path of the ``prometheus`` binary: on PATH, or where Debian installs it."""
    found = shutil.which("prometheus")
    if found:
        return found
    if os.access(_DEBIAN_BINARY, os.X_OK):
        return _DEBIAN_BINARY
    raise PrometheusNotFound(
        "the prometheus binary is neither on PATH nor at /usr/bin/prometheus; "
        "install it (e.g. `apt-get install prometheus`) or put it on PATH"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrometheusServer:
    """One Prometheus process scraping ``targets`` every second; see the module docstring."""

    def __init__(self, targets: Iterable[str] = (), binary: str | None = None) -> None:
        self.targets: list[str] = list(targets)
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._workdir: Path | None = None
        self._port: int | None = None
        self._provider: PrometheusProvider | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> PrometheusServer:
        """Start the process (returns at once; see :meth:`wait_ready`)."""
        if self._process is not None:
            raise RuntimeError("this Prometheus server is already started")
        binary = self._binary or find_binary()
        self._workdir = Path(tempfile.mkdtemp(prefix="modelrollout-prometheus-"))
        self._write_config()
        self._port = free_port()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - kept open while the process runs
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={self._config_path}",
                f"--storage.tsdb.path={self._workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self._port}",
                "--web.enable-lifecycle",
                *_SMALL_FLAGS,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until Prometheus answers ``/-/ready``; raise with its log if it does not."""
        deadline = time.monotonic() + timeout
        while True:
            if self._running_process().poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with code {self._running_process().returncode}:\n{self.log_text()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass  # not listening yet (urllib.error.URLError is an OSError)
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus was not ready after {timeout} s:\n{self.log_text()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the process (kill it after ``timeout``) and remove its data directory."""
        if self._provider is not None:
            self._provider.close()
            self._provider = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> PrometheusServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ use

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the Prometheus server is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def log_path(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("the Prometheus server is not started")
        return self._workdir / "prometheus.log"

    def log_text(self) -> str:
        """What Prometheus logged so far (for a failing test to print)."""
        return self.log_path.read_text(errors="replace")

    def add_target(self, host_port: str) -> None:
        """Scrape one more ``host:port`` from now on (rewrites the config and reloads)."""
        self.targets.append(host_port)
        self._write_config()
        if self._process is not None:
            request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
            try:
                with urllib.request.urlopen(request, timeout=10.0):
                    pass
            except urllib.error.HTTPError as e:
                said = e.read().decode(errors="replace")
                raise RuntimeError(f"prometheus refused the new config: {said}") from e

    def provider(self) -> PrometheusProvider:
        """A metric provider for this server (shared; closed by :meth:`stop`)."""
        if self._provider is None:
            self._provider = PrometheusProvider(self.url)
        return self._provider

    def wait_for(
        self, query: str, predicate: Callable[[QueryResult], bool], timeout: float = 20.0
    ) -> QueryResult:
        """Poll ``query`` until its result satisfies ``predicate``; return that result.

        Raises :class:`TimeoutError` with the last result when it never does.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = self.provider().query(query)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {timeout} s, {query!r} still answers {result}")
            time.sleep(0.2)

    # ------------------------------------------------------------------ internals

    @property
    def _config_path(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("the Prometheus server is not started")
        return self._workdir / "prometheus.yml"

    def _running_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the Prometheus server is not started")
        return self._process

    def _write_config(self) -> None:
        if self._workdir is None:  # not started: start() writes the config
            return
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "localstack", "static_configs": [{"targets": self.targets}]}],
        }
        # JSON is YAML; write atomically so a reload never reads half a file.
        staging = self._config_path.with_suffix(".tmp")
        staging.write_text(json.dumps(config, indent=2))
        staging.replace(self._config_path)
