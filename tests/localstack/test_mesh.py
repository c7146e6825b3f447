"""The mesh simulator: it routes by the live VirtualService and exports what Istio would."""

from __future__ import annotations

import copy
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from scipy import stats

from modelrollout.localstack import mesh, traffic
from modelrollout.localstack.mesh import MeshApp, MeshSimulator

HEALTHY = traffic.VariantProfile(error_rate=0.0, latency_median_ms=40.0, latency_sigma=0.4)
NS = "ml"


def virtual_service(*http: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "spec": {"hosts": ["churn"], "http": list(http)},
    }


def http_route(*destinations: tuple[str, str | None, int], **extra: Any) -> dict[str, Any]:
    entries = [
        {"destination": {"host": host} | ({"subset": subset} if subset else {}), "weight": weight}
        for host, subset, weight in destinations
    ]
    return {**extra, "route": entries}


def weighted(v1: int, v2: int, **extra: Any) -> dict[str, Any]:
    return http_route(("churn", "v1", v1), ("churn", "v2", v2), **extra)


def churn_app(rps: float = 2000.0, **fields: Any) -> MeshApp:
    variants = {"v1": ("churn-v1", HEALTHY), "v2": ("churn-v2", HEALTHY)}
    return MeshApp(namespace=NS, virtual_service="churn", host="churn", variants=variants, rps=rps, **fields)


class FakeApi:
    """VirtualServices by (namespace, name), mutated by the test; ``down`` makes reads fail."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.down = False

    def fetch(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        if self.down:
            raise ConnectionError("API server unreachable")
        obj = self.objects.get((namespace, name))
        return copy.deepcopy(obj)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def sim(api: FakeApi) -> Iterator[MeshSimulator]:
    with MeshSimulator(api.fetch, tick_seconds=0.05, seed=1) as simulator:
        yield simulator


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def scrape(sim: MeshSimulator) -> list[Sample]:
    with urllib.request.urlopen(sim.url, timeout=5) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def requests_of(samples: list[Sample], workload: str, code: str | None = None) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == "istio_requests_total"
        and s.labels["destination_workload"] == workload
        and (code is None or s.labels["response_code"] == code)
    )


def wait_for_requests(
    sim: MeshSimulator, workloads: tuple[str, ...], more_than: int
) -> dict[str, mesh.Observed]:
    """Wait until the workloads together served ``more_than`` requests more; return the increase."""
    before = {w: sim.observed(NS, w) for w in workloads}
    eventually(lambda: sum(sim.observed(NS, w).requests - before[w].requests for w in workloads) > more_than)
    after = {w: sim.observed(NS, w) for w in workloads}
    return {
        w: mesh.Observed(after[w].requests - before[w].requests, after[w].errors - before[w].errors)
        for w in workloads
    }


def assert_binomial(count: int, n: int, p: float) -> None:
    low, high = stats.binom.interval(1 - 1e-6, n, p)
    assert low <= count <= high, f"{count} of {n} is implausible for p={p}"


def test_exports_istio_metric_and_label_names(api: FakeApi, sim: MeshSimulator) -> None:
    api.objects[NS, "churn"] = virtual_service(weighted(100, 0))
    sim.add_app(churn_app(rps=500))
    eventually(lambda: requests_of(scrape(sim), "churn-v1") > 0)

    with urllib.request.urlopen(sim.url, timeout=5) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    assert families["istio_requests"].type == "counter"
    assert families["istio_request_duration_milliseconds"].type == "histogram"
    (request,) = families["istio_requests"].samples  # no traffic, no series: the candidate has none
    assert request.name == "istio_requests_total"
    assert request.labels == {
        "reporter": "destination",
        "source_workload": "istio-ingressgateway",
        "source_workload_namespace": "istio-system",
        "destination_workload": "churn-v1",
        "destination_workload_namespace": NS,
        "destination_service": "churn.ml.svc.cluster.local",
        "destination_service_name": "churn",
        "destination_service_namespace": NS,
        "destination_version": "v1",
        "request_protocol": "http",
        "response_code": "200",
        "response_flags": "-",
        "connection_security_policy": "mutual_tls",
    }
    histogram = families["istio_request_duration_milliseconds"].samples
    buckets = [s for s in histogram if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets] == [
        "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
        "30000", "60000", "300000", "600000", "1.8e+06", "3.6e+06", "+Inf",
    ]  # fmt: skip
    assert {k: v for k, v in buckets[0].labels.items() if k != "le"} == request.labels
    assert {s.name for s in histogram} == {
        "istio_request_duration_milliseconds_bucket",
        "istio_request_duration_milliseconds_count",
        "istio_request_duration_milliseconds_sum",
    }
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and counts[-1] > 0


def test_traffic_follows_the_weights_in_the_virtual_service(api: FakeApi, sim: MeshSimulator) -> None:
    api.objects[NS, "churn"] = virtual_service(weighted(100, 0))
    sim.add_app(churn_app())
    eventually(lambda: sim.last_weights(NS, "churn") == {"churn-v1": 100, "churn-v2": 0})
    share = wait_for_requests(sim, ("churn-v1", "churn-v2"), 300)
    assert share["churn-v2"].requests == 0

    api.objects[NS, "churn"] = virtual_service(weighted(75, 25))
    eventually(lambda: sim.last_weights(NS, "churn") == {"churn-v1": 75, "churn-v2": 25})
    share = wait_for_requests(sim, ("churn-v1", "churn-v2"), 1000)
    total = share["churn-v1"].requests + share["churn-v2"].requests
    assert_binomial(share["churn-v2"].requests, total, 0.25)
    samples = scrape(sim)
    assert requests_of(samples, "churn-v2") == sim.observed(NS, "churn-v2").requests > 0


def test_set_profile_changes_the_error_share(api: FakeApi, sim: MeshSimulator) -> None:
    api.objects[NS, "churn"] = virtual_service(weighted(50, 50))
    sim.add_app(churn_app())
    wait_for_requests(sim, ("churn-v1", "churn-v2"), 100)
    assert sim.observed(NS, "churn-v2").errors == 0

    sim.set_profile(NS, "churn-v2", traffic.VariantProfile(0.3, 40.0, 0.4))
    time.sleep(0.1)  # let a tick that began with the old profile finish
    share = wait_for_requests(sim, ("churn-v1", "churn-v2"), 2000)
    assert share["churn-v1"].errors == 0
    assert_binomial(share["churn-v2"].errors, share["churn-v2"].requests, 0.3)
    assert requests_of(scrape(sim), "churn-v2", "500") == sim.observed(NS, "churn-v2").errors
    with pytest.raises(KeyError):
        sim.set_profile(NS, "churn-v9", HEALTHY)


def test_each_app_takes_its_matching_route(api: FakeApi, sim: MeshSimulator) -> None:
    beta = weighted(0, 100, name="beta", match=[{"headers": {"x-tier": {"exact": "beta"}}}])
    api.objects[NS, "churn"] = virtual_service(beta, weighted(100, 0, name="primary"))
    sim.add_app(churn_app(name="beta-users", headers={"X-Tier": "beta"}))
    eventually(lambda: sim.last_weights(NS, "beta-users") == {"churn-v1": 0, "churn-v2": 100})
    share = wait_for_requests(sim, ("churn-v1", "churn-v2"), 300)
    assert share["churn-v1"].requests == 0

    sim.add_app(churn_app(name="everyone"))
    eventually(lambda: sim.last_weights(NS, "everyone") == {"churn-v1": 100, "churn-v2": 0})
    share = wait_for_requests(sim, ("churn-v1", "churn-v2"), 1000)
    assert_binomial(share["churn-v1"].requests, share["churn-v1"].requests + share["churn-v2"].requests, 0.5)


def test_fetch_failures_keep_the_last_known_routing(api: FakeApi) -> None:
    simulator = MeshSimulator(api.fetch, seed=3)  # driven by step(): no thread, no port
    simulator.add_app(churn_app(rps=1000))
    simulator.step(1.0)  # no VirtualService yet: the first variant takes everything
    assert simulator.status(NS, "churn") == mesh.AppStatus(None, fetch_failures=1, unrouted=0)
    assert simulator.observed(NS, "churn-v1").requests > 0

    api.objects[NS, "churn"] = virtual_service(weighted(0, 100))
    simulator.step(1.0)
    before = simulator.observed(NS, "churn-v2").requests
    api.objects[NS, "churn"] = virtual_service(weighted(100, 0))
    api.down = True
    simulator.step(1.0)
    del api.objects[NS, "churn"]
    api.down = False
    simulator.step(1.0)
    assert simulator.status(NS, "churn") == mesh.AppStatus({"churn-v1": 0, "churn-v2": 100}, 3, 0)
    assert simulator.observed(NS, "churn-v2").requests > before + 1000


def test_unclaimed_destinations_and_unmatched_requests(api: FakeApi) -> None:
    simulator = MeshSimulator(api.fetch, seed=5)
    api.objects[NS, "churn"] = virtual_service(http_route(("churn", "v1", 50), ("churn", "v0", 50)))
    simulator.add_app(churn_app(rps=1000))
    simulator.step(1.0)
    unknown = simulator.observed(NS, mesh.UNKNOWN_WORKLOAD)
    assert unknown.requests == unknown.errors > 0  # Envoy answers 503: nothing serves v0
    assert simulator.last_weights(NS, "churn") == {"churn-v1": 50, mesh.UNKNOWN_WORKLOAD: 50}

    api.objects[NS, "churn"] = virtual_service({"match": [{"uri": {"prefix": "/admin"}}], **weighted(0, 100)})
    simulator.step(1.0)
    assert simulator.status(NS, "churn").unrouted > 0
    assert simulator.last_weights(NS, "churn") == {}


def test_variants_by_host(api: FakeApi) -> None:
    simulator = MeshSimulator(api.fetch, seed=9)
    api.objects[NS, "churn"] = virtual_service(
        http_route(("churn-v1", None, 10), ("churn-v2.ml.svc.cluster.local", None, 90))
    )
    variants = {"churn-v1": ("churn-v1", HEALTHY), "churn-v2": ("churn-v2", HEALTHY)}
    simulator.add_app(MeshApp(NS, "churn", "churn-v1", variants, rps=1000))
    simulator.step(1.0)
    assert simulator.last_weights(NS, "churn") == {"churn-v1": 10, "churn-v2": 90}
    assert simulator.observed(NS, "churn-v2").requests > simulator.observed(NS, "churn-v1").requests > 0


def test_apps_come_and_go(api: FakeApi) -> None:
    simulator = MeshSimulator(api.fetch, seed=11)
    simulator.add_app(churn_app())
    with pytest.raises(ValueError, match="already exists"):
        simulator.add_app(churn_app())
    simulator.step(0.5)
    served = simulator.observed(NS, "churn-v1")
    simulator.remove_app(NS, "churn")
    simulator.step(0.5)
    assert simulator.observed(NS, "churn-v1") == served


def test_stop_frees_the_port(api: FakeApi) -> None:
    simulator = MeshSimulator(api.fetch, tick_seconds=0.05).start()
    port = simulator.port
    assert scrape(simulator) == []
    simulator.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    with socket.socket() as s:  # nothing listens any more (TIME_WAIT is fine for a server)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
    with MeshSimulator(api.fetch, port=port) as again:
        assert again.port == port
    with pytest.raises(RuntimeError):
        _ = simulator.port


def test_fetch_from_kubernetes_reads_the_virtual_service() -> None:
    class CustomObjects:
        def get_namespaced_custom_object(self, *args: str, **kwargs: Any) -> dict[str, Any]:
            group, version, _namespace, plural, name = args
            assert (group, version, plural) == ("networking.istio.io", "v1", "virtualservices")
            if name == "gone":
                raise ApiException(status=404, reason="Not Found")
            if name == "broken":
                raise ApiException(status=500, reason="Internal Server Error")
            return virtual_service(weighted(90, 10))

    fetch = mesh.fetch_from_kubernetes(CustomObjects())
    assert fetch(NS, "churn") == virtual_service(weighted(90, 10))
    assert fetch(NS, "gone") is None
    with pytest.raises(ApiException):
        fetch(NS, "broken")
