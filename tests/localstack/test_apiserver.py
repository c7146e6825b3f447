"""The local API server behaves as a real one where kopf, kubernetes-client and kubectl depend on it.

Everything goes over real HTTP: the ``kubernetes`` client, raw ``urllib``
requests where a header or a status line matters, kubectl in a subprocess,
and a kopf operator in its own thread.
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import kopf.testing
import kubernetes.client
import kubernetes.watch
import pytest
from kubernetes.client.exceptions import ApiException

from modelrollout.localstack.apiserver import ApiServer

GROUP, VERSION, PLURAL = "modelrollout.io", "v1alpha1", "modelexperiments"
ISTIO = "networking.istio.io"
KUBECTL = shutil.which("kubectl")
_names = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


@pytest.fixture
def client(server: ApiServer) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=server.url))
    yield client
    client.close()


@pytest.fixture
def ns(server: ApiServer, client: kubernetes.client.ApiClient) -> str:
    """A fresh namespace per test (kopf serves only namespaces that exist)."""
    server.clear_faults()
    name = f"test-{next(_names)}"
    kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def api(client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client)


def experiment(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelExperiment",
        "metadata": {"name": name},
        "spec": {"virtualService": {"name": "churn"}, "variants": [{"workload": "v1"}, {"workload": "v2"}]},
        **extra,
    }


class Experiments:
    """ModelExperiments of one namespace through the kubernetes client: short calls for short tests."""

    def __init__(self, api: kubernetes.client.CustomObjectsApi, ns: str) -> None:
        self.api, self.ns = api, ns

    def create(self, name: str = "exp", **extra: Any) -> Any:
        return self.api.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, experiment(name, **extra)
        )

    def get(self, name: str = "exp") -> Any:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def listing(self, **kwargs: Any) -> Any:
        return self.api.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, **kwargs)

    def patch(self, body: Any, name: str = "exp", **kwargs: Any) -> Any:
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, body, **kwargs)

    def json_patch(self, ops: list[dict[str, Any]], name: str = "exp") -> Any:
        return self.patch(ops, name, _content_type="application/json-patch+json")

    def patch_status(self, body: Any, name: str = "exp") -> Any:
        return self.api.patch_namespaced_custom_object_status(GROUP, VERSION, self.ns, PLURAL, name, body)

    def replace(self, body: Any, name: str = "exp") -> Any:
        return self.api.replace_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, body)

    def delete(self, name: str = "exp") -> Any:
        return self.api.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)


@pytest.fixture
def exps(api: kubernetes.client.CustomObjectsApi, ns: str) -> Experiments:
    return Experiments(api, ns)


def failure(call: Callable[[], Any]) -> tuple[int, str]:
    """The HTTP status and the Status reason of a call that must fail."""
    with pytest.raises(ApiException) as err:
        call()
    return err.value.status, json.loads(err.value.body)["reason"]


def request(
    server: ApiServer, method: str, path: str, body: Any = None, content_type: str = "application/json"
) -> tuple[int, dict[str, str], Any]:
    """A raw request, for what the client libraries hide: headers, statuses, exact content types."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        server.url + path, data=data, method=method, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def mexp_path(ns: str, name: str = "", sub: str = "") -> str:
    return (
        f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}"
        + (f"/{name}" if name else "")
        + (f"/{sub}" if sub else "")
    )


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return result


# ------------------------------------------------------------------------------------ object metadata
def test_create_answers_201_with_the_object_and_server_fields(
    api: kubernetes.client.CustomObjectsApi, ns: str
) -> None:
    body, status, _ = api.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, ns, PLURAL, experiment("exp", status={"phase": "Succeeded"})
    )
    assert status == 201
    meta = body["metadata"]
    assert meta["name"] == "exp" and meta["namespace"] == ns
    assert len(meta["uid"]) == 36 and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and meta["resourceVersion"].isdigit()
    assert body["apiVersion"] == f"{GROUP}/{VERSION}" and body["kind"] == "ModelExperiment"
    assert "status" not in body  # a create cannot set a status that has its own subresource


def test_duplicate_create_is_409_already_exists(exps: Experiments) -> None:
    exps.create()
    assert failure(exps.create) == (409, "AlreadyExists")


def test_resource_versions_increase_cluster_wide_on_every_write(exps: Experiments) -> None:
    a = exps.create("a")
    vs = exps.api.create_namespaced_custom_object(
        ISTIO, "v1", exps.ns, "virtualservices", {"metadata": {"name": "vs"}, "spec": {"hosts": ["x"]}}
    )
    b = exps.patch({"metadata": {"labels": {"x": "y"}}}, "a")
    versions = [int(o["metadata"]["resourceVersion"]) for o in (a, vs, b)]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert a["metadata"]["uid"] == b["metadata"]["uid"]


def test_generation_counts_spec_changes_only(exps: Experiments) -> None:
    exps.create()
    exps.patch({"metadata": {"annotations": {"a": "b"}}})
    exps.patch_status({"status": {"phase": "Progressing"}})
    assert exps.get()["metadata"]["generation"] == 1
    exps.patch({"spec": {"paused": True}})
    assert exps.get()["metadata"]["generation"] == 2


# ---------------------------------------------------------------------------------- concurrency & patches
def test_a_stale_resource_version_is_409_conflict_for_patches_and_replaces(exps: Experiments) -> None:
    old = exps.create()
    fresh = exps.patch({"spec": {"paused": True}})
    stale = {"metadata": {"resourceVersion": old["metadata"]["resourceVersion"]}, "spec": {"paused": False}}

    assert failure(lambda: exps.patch(stale)) == (409, "Conflict")
    assert failure(lambda: exps.replace(old)) == (409, "Conflict")
    replaced = exps.replace({**fresh, "spec": {"x": 1}})
    assert replaced["spec"] == {"x": 1} and replaced["metadata"]["uid"] == old["metadata"]["uid"]


def test_a_failed_json_patch_test_is_422_and_a_passing_one_applies(exps: Experiments) -> None:
    rv = exps.create()["metadata"]["resourceVersion"]
    add_finalizer = {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]}

    stale_test = {"op": "test", "path": "/metadata/resourceVersion", "value": "999999"}
    assert failure(lambda: exps.json_patch([stale_test, add_finalizer])) == (422, "Invalid")
    fresh_test = {"op": "test", "path": "/metadata/resourceVersion", "value": rv}
    assert exps.json_patch([fresh_test, add_finalizer])["metadata"]["finalizers"] == ["x/y"]


def test_the_patch_type_follows_the_content_type(server: ApiServer, exps: Experiments) -> None:
    exps.create(spec={"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]})
    path = mexp_path(exps.ns, "exp")
    merge = {"spec": {"a": None, "b": {"c": 9}, "l": [3]}}
    status, _, body = request(server, "PATCH", path, merge, "application/merge-patch+json")
    assert status == 200 and json.loads(body)["spec"] == {"b": {"c": 9, "d": 3}, "l": [3]}

    status, _, body = request(server, "PATCH", path, {"spec": {}}, "application/apply-patch+yaml")
    assert status == 415 and json.loads(body)["reason"] == "UnsupportedMediaType"

    # A JSON patch sent as a merge patch is not guessed into a JSON patch: it is a bad merge patch.
    ops = [{"op": "remove", "path": "/spec"}]
    assert request(server, "PATCH", path, ops, "application/merge-patch+json")[0] == 400


# ------------------------------------------------------------------------------------------ status
def test_the_main_endpoint_ignores_status_and_the_status_endpoint_ignores_the_rest(exps: Experiments) -> None:
    exps.create()
    exps.patch_status({"status": {"phase": "Progressing"}})

    via_main = exps.patch({"spec": {"paused": True}, "status": {"phase": "Hacked"}})
    assert via_main["status"] == {"phase": "Progressing"} and via_main["spec"]["paused"] is True

    via_status = exps.patch_status(
        {"spec": {"paused": False}, "metadata": {"labels": {"a": "b"}}, "status": {"phase": "Succeeded"}}
    )
    assert via_status["status"] == {"phase": "Succeeded"}
    assert via_status["spec"]["paused"] is True and "labels" not in via_status["metadata"]
    assert via_status["metadata"]["generation"] == 2


def test_without_a_status_subresource_status_is_part_of_the_object_in_every_version(
    api: kubernetes.client.CustomObjectsApi, ns: str
) -> None:
    body = {"metadata": {"name": "vs"}, "spec": {"hosts": ["x"]}, "status": {"observedGeneration": 1}}
    api.create_namespaced_custom_object(ISTIO, "v1", ns, "virtualservices", body)
    api.patch_namespaced_custom_object(ISTIO, "v1", ns, "virtualservices", "vs", {"status": {"x": 1}})

    beta = api.get_namespaced_custom_object(ISTIO, "v1beta1", ns, "virtualservices", "vs")
    assert beta["apiVersion"] == f"{ISTIO}/v1beta1" and beta["kind"] == "VirtualService"
    assert beta["status"] == {"observedGeneration": 1, "x": 1}
    assert beta["metadata"]["generation"] == 2  # as on a real server: status counts without a subresource
    vs_status = api.patch_namespaced_custom_object_status
    assert failure(lambda: vs_status(ISTIO, "v1", ns, "virtualservices", "vs", {})) == (404, "NotFound")


# ---------------------------------------------------------------------------------------- deletion
def test_finalizers_hold_the_deletion_until_released(server: ApiServer, exps: Experiments) -> None:
    exps.create(metadata={"name": "exp", "finalizers": ["x/y"]})
    assert exps.delete()["metadata"]["deletionTimestamp"]
    held = exps.get()
    assert held["metadata"]["finalizers"] == ["x/y"] and held["metadata"]["deletionTimestamp"]

    # No new finalizers on a dying object.
    assert failure(lambda: exps.patch({"metadata": {"finalizers": ["x/y", "x/z"]}})) == (422, "Invalid")

    exps.patch({"metadata": {"finalizers": None}})
    assert server.get_object(GROUP, VERSION, PLURAL, exps.ns, "exp") is None
    assert failure(exps.get) == (404, "NotFound")

    # A watch resumed from before the release replays what happened since: released, then deleted.
    rv = held["metadata"]["resourceVersion"]
    events = kubernetes.watch.Watch().stream(
        exps.api.list_namespaced_custom_object,
        GROUP,
        VERSION,
        exps.ns,
        PLURAL,
        resource_version=rv,
        timeout_seconds=1,
    )
    assert [(e["type"], e["object"]["metadata"].get("finalizers")) for e in events] == [
        ("MODIFIED", None),
        ("DELETED", None),
    ]


# --------------------------------------------------------------------------------- lists, watches, discovery
def test_lists_are_typed_and_filtered_by_labels(exps: Experiments) -> None:
    exps.create("a", metadata={"name": "a", "labels": {"team": "ml", "tier": "gold"}})
    exps.create("b", metadata={"name": "b", "labels": {"team": "web"}})
    listing = exps.listing()
    assert listing["kind"] == "ModelExperimentList" and listing["apiVersion"] == f"{GROUP}/{VERSION}"
    item_versions = [int(i["metadata"]["resourceVersion"]) for i in listing["items"]]
    assert int(listing["metadata"]["resourceVersion"]) >= max(item_versions)
    assert [(i["kind"], i["metadata"]["name"]) for i in listing["items"]] == [
        ("ModelExperiment", n) for n in "ab"
    ]

    def names(selector: str) -> list[str]:
        return [i["metadata"]["name"] for i in exps.listing(label_selector=selector)["items"]]

    assert names("team=ml") == ["a"]
    assert names("team in (ml,web),!tier") == ["b"]
    assert names("team!=ml") == ["b"]


def test_watches_stream_json_events(server: ApiServer, exps: Experiments) -> None:
    exps.create()
    status, headers, body = request(server, "GET", mexp_path(exps.ns) + "?watch=true&timeoutSeconds=1")
    assert status == 200 and headers["Content-Type"] == "application/json"  # client-go needs this one
    events = [json.loads(line) for line in body.splitlines()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "exp")]


def test_discovery_names_the_resources_once(server: ApiServer) -> None:
    resources = {
        r["name"]: r for r in json.loads(request(server, "GET", f"/apis/{GROUP}/{VERSION}")[2])["resources"]
    }
    assert resources[PLURAL]["shortNames"] == ["mexp"] and resources[PLURAL]["categories"] == ["modelrollout"]
    assert resources[f"{PLURAL}/status"].keys().isdisjoint({"shortNames", "categories"})
    groups = {g["name"]: g for g in json.loads(request(server, "GET", "/apis")[2])["groups"]}
    assert groups[ISTIO]["preferredVersion"]["version"] == "v1"
    core = json.loads(request(server, "GET", "/api/v1")[2])
    assert core["groupVersion"] == "v1" and "namespaces" in {r["name"] for r in core["resources"]}


def test_a_created_crd_declares_its_resource(
    server: ApiServer, api: kubernetes.client.CustomObjectsApi, ns: str
) -> None:
    crds = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    names = {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]}
    versions = [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}}}]
    crd = {
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": names, "versions": versions},
    }
    created = api.create_cluster_custom_object(*crds, crd)
    assert {c["type"] for c in created["status"]["conditions"]} == {"NamesAccepted", "Established"}
    widget = api.create_namespaced_custom_object(
        "example.com", "v1", ns, "widgets", {"metadata": {"name": "w"}}
    )
    assert widget["kind"] == "Widget"

    api.delete_cluster_custom_object(*crds, "widgets.example.com")
    assert request(server, "GET", "/apis/example.com/v1")[0] == 404


# -------------------------------------------------------------------------------- faults & the request log
def test_injected_faults_fail_the_next_matching_requests_only(server: ApiServer, exps: Experiments) -> None:
    exps.create()
    fault = server.inject_fault(f"PATCH {mexp_path(exps.ns, 'exp')}$", status=500, count=2)
    assert failure(lambda: exps.patch({"spec": {"a": 1}})) == (500, "InternalError")
    assert failure(lambda: exps.patch({"spec": {"a": 1}})) == (500, "InternalError")
    exps.patch({"spec": {"a": 1}})
    assert fault.hits == 2 and fault.remaining == 0

    conflict = server.inject_fault(
        lambda r: r.method == "GET" and r.name == "exp", status=409, reason="Conflict"
    )
    assert failure(exps.get) == (409, "Conflict")
    assert conflict.hits == 1

    server.inject_fault("GET", status=None, delay=1.0)  # a stall: the client gives up first
    with pytest.raises(TimeoutError):
        urllib.request.urlopen(server.url + mexp_path(exps.ns, "exp"), timeout=0.2)


def test_the_request_log_records_method_path_and_status(server: ApiServer, exps: Experiments) -> None:
    server.clear_request_log()
    exps.create()
    failure(exps.create)
    exps.get()
    assert [(r.method, r.path, r.status) for r in server.request_log()] == [
        ("POST", mexp_path(exps.ns), 201),
        ("POST", mexp_path(exps.ns), 409),
        ("GET", mexp_path(exps.ns, "exp"), 200),
    ]


# ------------------------------------------------------------------------------------------------ kubectl
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def kubectl(server: ApiServer, tmp_path: Path, ns: str) -> Kubectl:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", namespace=ns)
    base = [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache")]

    def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=timeout, check=False)

    return run


@pytest.fixture
def manifest(tmp_path: Path) -> str:
    path = tmp_path / "experiment.yaml"
    path.write_text(json.dumps(experiment("churn")))  # JSON is YAML
    return str(path)


@pytest.mark.kubectl
def test_kubectl_applies_reads_annotates_patches_and_deletes(
    server: ApiServer, kubectl: Kubectl, manifest: str, ns: str
) -> None:
    assert kubectl("apply", "--validate=false", "-f", manifest).returncode == 0
    again = kubectl("apply", "--validate=false", "-f", manifest)
    assert again.returncode == 0 and "unchanged" in again.stdout

    got = kubectl("get", "mexp", "churn", "-o", "jsonpath={.spec.virtualService.name}/{.metadata.generation}")
    assert got.stdout == "churn/1", got.stderr
    assert "churn" in kubectl("get", "modelrollout").stdout  # by category

    assert kubectl("annotate", "mexp", "churn", "team=ml").returncode == 0
    assert (
        kubectl("patch", "mexp", "churn", "--type", "merge", "-p", '{"spec":{"paused":true}}').returncode == 0
    )
    obj = server.get_object(GROUP, VERSION, PLURAL, ns, "churn")
    assert obj is not None
    assert obj["metadata"]["annotations"]["team"] == "ml" and obj["spec"]["paused"] is True

    deleted = kubectl("delete", "mexp", "churn", "--timeout=10s")  # waits for the DELETED event
    assert deleted.returncode == 0, deleted.stderr
    assert server.get_object(GROUP, VERSION, PLURAL, ns, "churn") is None


@pytest.mark.kubectl
def test_kubectl_waits_for_a_condition_and_a_jsonpath(
    server: ApiServer, kubectl: Kubectl, manifest: str, ns: str
) -> None:
    assert kubectl("apply", "--validate=false", "-f", manifest).returncode == 0

    def succeed() -> None:  # from another thread, with a client of its own, while kubectl waits
        with kubernetes.client.ApiClient(kubernetes.client.Configuration(host=server.url)) as client:
            status = {"phase": "Succeeded", "conditions": [{"type": "Succeeded", "status": "True"}]}
            Experiments(kubernetes.client.CustomObjectsApi(client), ns).patch_status(
                {"status": status}, "churn"
            )

    timer = threading.Timer(1.0, succeed)
    started = time.monotonic()
    timer.start()
    try:
        waited = kubectl("wait", "--for=condition=Succeeded", "mexp/churn", "--timeout=20s", timeout=30)
    finally:
        timer.join()
    assert waited.returncode == 0, waited.stderr
    assert 0.9 < time.monotonic() - started < 15
    waited = kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "mexp/churn", "--timeout=5s")
    assert waited.returncode == 0, waited.stderr


# --------------------------------------------------------------------------------------------------- kopf
def test_a_kopf_operator_runs_its_handlers_against_it(server: ApiServer, exps: Experiments) -> None:
    registry = kopf.OperatorRegistry()
    deleted: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server.url, insecure=True)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def created(spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
        patch.status["seenVariants"] = len(spec["variants"])

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)  # makes kopf add & remove its finalizer
    def deleting(name: str, **_: Any) -> None:
        deleted.append(name)

    def handled() -> dict[str, Any] | None:
        obj = server.get_object(GROUP, VERSION, PLURAL, exps.ns, "exp")
        return obj if obj and obj.get("status", {}).get("seenVariants") == 2 else None

    args = ["run", "--standalone", "--namespace", exps.ns]
    with kopf.testing.KopfRunner(args, registry=registry, timeout=30) as runner:
        exps.create()
        obj = wait_for(handled)
        assert obj["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        exps.delete()
        wait_for(lambda: server.get_object(GROUP, VERSION, PLURAL, exps.ns, "exp") is None)
        assert deleted == ["exp"]
    assert runner.exit_code == 0, runner.output
    patches = [r.status for r in server.request_log() if r.method == "PATCH" and f"/{exps.ns}/" in r.path]
    assert patches and set(patches) == {200}  # incl. the finalizers' JSON patches with resourceVersion tests


# ---------------------------------------------------------------------------------------------------- CLI
def test_the_cli_serves_until_terminated(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    cmd = [
        sys.executable,
        "-m",
        "modelrollout.localstack.apiserver",
        "--port=0",
        f"--kubeconfig={kubeconfig}",
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[-1]
            with urllib.request.urlopen(url + "/api/v1", timeout=5) as resp:
                assert resp.status == 200
            assert f"server: {url}\n" in kubeconfig.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
