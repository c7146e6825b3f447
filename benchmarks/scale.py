"""How many experiments one operator replica carries: tick lag, API and PromQL load, memory, CPU.

For each size N: the local API emulator (in this process, its own thread), a
Prometheus-compatible endpoint (in this process: it answers the operator's
batched Istio queries for every workload and counts them), N VirtualServices
and N experiments at a 10 s interval, and ONE real operator process
(``modelrollout run``).  Once every experiment is progressing, the run is
measured for ``--duration`` seconds:

- tick lag p50/p99: how late scheduled ticks start (``modelrollout_tick_lag_seconds``
  on the operator's own /metrics, interpolated within its buckets);
- API requests and PromQL queries per experiment per interval, by kind;
- status writes per experiment per interval (1 = one per evaluation: nothing written
  when nothing changed), VirtualService patches (0 in steady state);
- peak RSS (``VmHWM``) and CPU (user+system time / wall time) of the operator.

Run: ``.venv/bin/python benchmarks/scale.py --sizes 100,500,1000 --duration 60``
(about 2-3 minutes per size).  Prints a markdown table; `RESULTS.md` keeps one.
"""

from __future__ import annotations

import argparse
import collections
import http.server
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes

from modelrollout import DEFAULT_WORKERS, GROUP, PLURAL, VERSION
from modelrollout.localstack import apiserver, stack

INTERVAL = 10.0
NAMESPACE = "bench"
BUCKETS = (25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)


# --------------------------------------------------------------------------- a Prometheus-compatible endpoint


class FakePrometheus:
    """Answers the batched Istio queries for ``n`` apps (two workloads each) and counts every query."""

    def __init__(self, n: int) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._answers = self._build(n)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._answer(urllib.parse.urlparse(self.path).query)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self._answer(self.rfile.read(length).decode())

            def _answer(self, query_string: str) -> None:
                query = urllib.parse.parse_qs(query_string).get("query", [""])[0]
                body = owner.answer(query)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def _build(n: int) -> dict[str, bytes]:
        def vector(samples: list[tuple[dict[str, str], float]]) -> bytes:
            result = [{"metric": labels, "value": [time.time(), repr(value)]} for labels, value in samples]
            return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()

        requests, errors, buckets = [], [], []
        for i in range(n):
            for variant, served in (("v1", 950.0), ("v2", 50.0)):
                labels = {"destination_workload": f"m{i}-{variant}", "destination_workload_namespace": NAMESPACE}
                requests.append((labels, served))
                errors.append((labels, served * 0.01))
                for edge, share in zip(BUCKETS, (0.3, 0.6, 0.85, 0.97, 0.995, 1.0), strict=True):
                    buckets.append(({**labels, "le": repr(edge)}, served * share))
                buckets.append(({**labels, "le": "+Inf"}, served))
        return {"errors": vector(errors), "requests": vector(requests), "buckets": vector(buckets),
                "other": vector([])}  # fmt: skip

    def answer(self, query: str) -> bytes:
        if "istio_request_duration_milliseconds_bucket" in query:
            kind = "buckets"
        elif "istio_requests_total" in query and '"5.."' in query:
            kind = "errors"
        elif "istio_requests_total" in query:
            kind = "requests"
        else:
            kind = "other"
        with self._lock:
            self.counts[kind] += 1
        return self._answers[kind]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- the objects


def virtual_service(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": f"m{i}", "namespace": NAMESPACE},
        "spec": {
            "hosts": [f"m{i}"],
            "http": [{"name": "primary", "route": [{"destination": {"host": f"m{i}", "subset": "v1"}}]}],
        },
    }


def experiment(i: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelExperiment",
        "metadata": {"name": f"m{i}", "namespace": NAMESPACE},
        "spec": {
            "virtualService": {"name": f"m{i}", "routes": ["primary"]},
            "baseline": {"subset": "v1", "workload": f"m{i}-v1"},
            "candidate": {"subset": "v2", "workload": f"m{i}-v2"},
            # Steady state for the whole measurement: every tick evaluates, no step ends.
            "canary": {"steps": [5, 25, 50, 100], "interval": "10s", "minStepDuration": "1h", "minSamples": 100},
        },
    }


# --------------------------------------------------------------------------- measuring the operator


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def cpu_seconds(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def histogram(port: int, name: str) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` of one histogram on the operator's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = []
    for match in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.MULTILINE):
        found.append((float(match.group(1)), float(match.group(2))))
    return sorted(found)


def quantile(q: float, before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float:
    """The q-quantile of what was observed between two scrapes (linear within a bucket)."""
    counts = [(edge, a - b) for (edge, a), (_, b) in zip(after, before, strict=True)]
    total = counts[-1][1]
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for edge, count in counts:
        if count >= rank:
            if edge == float("inf"):
                return lower
            return lower + (edge - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = edge, count
    return lower


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run(n: int, duration: float, workdir: Path, workers: int | None = None) -> dict[str, Any]:
    prometheus = FakePrometheus(n)
    server = apiserver.ApiServer().start()
    kubeconfig = server.write_kubeconfig(workdir / f"kubeconfig-{n}", namespace=NAMESPACE)
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for i in range(n):
        custom.create_namespaced_custom_object("networking.istio.io", "v1", NAMESPACE, "virtualservices",
                                               virtual_service(i))  # fmt: skip
    port = free_port()
    operator = stack.OperatorProcess(
        ["--standalone", "--kubeconfig", str(kubeconfig), "--prometheus-url", prometheus.url,
         "--namespace", NAMESPACE, "--metrics-port", str(port), "--log-level", "warning",
         *(["--workers", str(workers)] if workers else [])],
        workdir / f"operator-{n}.log",
        env={k: os.environ[k] for k in ("MALLOC_ARENA_MAX", "OPENBLAS_NUM_THREADS") if k in os.environ},
    )  # fmt: skip
    try:
        started = time.monotonic()
        for i in range(n):
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, experiment(i))
        while True:  # every experiment started and evaluated at least once
            items = server.list_objects(GROUP, VERSION, PLURAL, NAMESPACE)
            ready = sum(1 for o in items if (o.get("status") or {}).get("metrics"))
            if ready == n:
                break
            if time.monotonic() - started > 600:
                raise TimeoutError(f"only {ready}/{n} experiments evaluated after 600 s")
            time.sleep(1)
        ramp = time.monotonic() - started
        time.sleep(INTERVAL)  # let the start-up burst settle

        lag_before = histogram(port, "modelrollout_tick_lag_seconds")
        duration_before = histogram(port, "modelrollout_reconcile_duration_seconds")
        server.clear_request_log()
        with prometheus._lock:
            prometheus.counts.clear()
        cpu_before, wall_before = cpu_seconds(operator.process.pid), time.monotonic()
        time.sleep(duration)
        cpu = cpu_seconds(operator.process.pid) - cpu_before
        wall = time.monotonic() - wall_before
        log = server.request_log()
        lag_after = histogram(port, "modelrollout_tick_lag_seconds")
        duration_after = histogram(port, "modelrollout_reconcile_duration_seconds")
        peak_rss_mb = int(proc_status(operator.process.pid)["VmHWM"].split()[0]) / 1024
        intervals = wall / INTERVAL
        per = n * intervals

        def count(method: str, pattern: str) -> float:
            return sum(1 for r in log if r.method == method and re.search(pattern, r.path)) / per

        with prometheus._lock:
            queries = dict(prometheus.counts)
        return {
            "experiments": n,
            "ramp_s": ramp,
            "lag_p50_ms": quantile(0.5, lag_before, lag_after) * 1000,
            "lag_p99_ms": quantile(0.99, lag_before, lag_after) * 1000,
            "tick_p50_ms": quantile(0.5, duration_before, duration_after) * 1000,
            "tick_p99_ms": quantile(0.99, duration_before, duration_after) * 1000,
            "api_per_exp_interval": len(log) / per,
            "gets": count("GET", rf"/{PLURAL}/") + count("GET", "/virtualservices/"),
            "status_writes": count("PATCH", "/status$"),
            "vs_patches": count("PATCH", "/virtualservices/"),
            "events": count("POST", "/events"),
            "promql_per_exp_interval": sum(queries.values()) / per,
            "promql_per_second": sum(queries.values()) / wall,
            "peak_rss_mb": peak_rss_mb,
            "cpu_percent": 100 * cpu / wall,
        }
    finally:
        operator.stop()
        server.stop()
        prometheus.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500,1000", help="experiment counts (default 100,500,1000)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured per size (default 60)")
    parser.add_argument("--workers", type=int, help="the operator's --workers (default: its own default)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="modelrollout-scale-") as tmp:
        for n in (int(size) for size in args.sizes.split(",")):
            print(f"running {n} experiments ...", file=sys.stderr, flush=True)
            rows.append(run(n, args.duration, Path(tmp), args.workers))
    workers = args.workers or DEFAULT_WORKERS
    print(f"\n{os.cpu_count()} cores; interval {INTERVAL:.0f} s; measured {args.duration:.0f} s per size; "
          f"{workers} workers\n")  # fmt: skip
    print("| experiments | tick lag p50 / p99 | tick p50 / p99 | API requests /exp/interval (GET, status PATCH, "
          "VS PATCH, Events) | PromQL /exp/interval (per s) | peak RSS | CPU |")  # fmt: skip
    print("|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['experiments']} | {r['lag_p50_ms']:.0f} / {r['lag_p99_ms']:.0f} ms "
            f"| {r['tick_p50_ms']:.0f} / {r['tick_p99_ms']:.0f} ms "
            f"| {r['api_per_exp_interval']:.2f} ({r['gets']:.2f}, {r['status_writes']:.2f}, "
            f"{r['vs_patches']:.2f}, {r['events']:.2f}) "
            f"| {r['promql_per_exp_interval']:.3f} ({r['promql_per_second']:.1f}/s) "
            f"| {r['peak_rss_mb']:.0f} MB | {r['cpu_percent']:.0f} % |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
