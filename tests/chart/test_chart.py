"""The Helm chart, rendered and linted by Helm's own Go SDK (helm_python), every object checked
against the Kubernetes 1.30 schemas, and what each value is for asserted on the output."""

from __future__ import annotations

import argparse
import copy
import json
import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from modelrollout import cli

from conftest import (
    CHART,
    DASHBOARD,
    KUBE_VERSION,
    RELEASE,
    RELEASE_NAMESPACE,
    ROOT,
    chart,
    container,
    grants,
    of_kind,
    only,
    render,
)

# Every mode and option of the chart; each is rendered, linted and schema-validated.
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["ml", "ranking"]},
    "replicas-3": {"replicas": 3},
    "replicas-3-namespaced": {"replicas": 3, "watchNamespaces": ["ml", "ranking"]},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "dashboard": {"grafanaDashboard": {"enabled": True, "namespace": "monitoring", "folder": "ML"}},
    "prometheus": {"prometheus": {"address": "https://prometheus.monitoring.svc:9090"}},
    "no-prometheus": {"prometheus": {"address": ""}},
    "log-level": {"logLevel": "debug"},
    "istio-v1beta1": {"istioVersion": "v1beta1"},
    "no-secrets": {"rbac": {"readSecrets": False}},
    "reports": {"reports": {"configMaps": True}},
    "scheduling": {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}
                    ]
                }
            }
        },
        "podAnnotations": {"sidecar.istio.io/inject": "false"},
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccount": {"annotations": {"example.com/role": "modelrollout"}},
    },
    "everything": {
        "replicas": 2,
        "watchNamespaces": ["ml"],
        "serviceMonitor": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
        "logLevel": "warning",
        "image": {"repository": "registry.example.com/modelrollout", "tag": "dev", "pullPolicy": "Always"},
    },
}
# Kinds from CRDs that Kubernetes' own schemas do not know: checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor", "KopfPeering", "ClusterKopfPeering"}


def validate(obj: dict[str, Any], version: str = KUBE_VERSION) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


# ------------------------------------------------------------------------------ lint & schemas


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_lint_is_clean(scenario: str) -> None:
    report = helm.lint(CHART, SCENARIOS[scenario], strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    findings = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert findings == []


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_object_is_valid_for_kubernetes(scenario: str) -> None:
    objects = render(SCENARIOS[scenario])
    assert objects
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        validate(obj)
        validate(obj, kubernetes_validate.latest_version())  # nothing removed since
        assert len(obj["metadata"]["name"]) <= 63
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "modelrollout"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_the_validator_is_strict_enough_to_catch_a_wrong_field() -> None:
    """A control: the strict schemas reject an unknown field and a wrong type."""
    deployment = only(render(), "Deployment")
    validate(deployment)
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(typo)
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong)


def test_crds_are_valid_and_no_others_are_shipped() -> None:
    crds = [
        doc
        for entry in chart().crds
        for doc in yaml.safe_load_all(entry["data"])
        if doc  # the comment-only header of kopf-peering.yaml
    ]
    for crd in crds:
        validate(crd)
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
        "modelexperiments.modelrollout.io",
    ]
    scopes = {c["spec"]["names"]["kind"]: c["spec"]["scope"] for c in crds}
    assert scopes == {
        "ClusterKopfPeering": "Cluster",
        "KopfPeering": "Namespaced",
        "ModelExperiment": "Namespaced",
    }


def test_crd_is_a_byte_identical_copy_of_the_top_level_one() -> None:
    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    for name in top:
        copied = CHART / "crds" / name
        assert copied.exists() and copied.read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"charts/modelrollout/crds/{name} differs from crds/{name}; "
            "refresh the chart's copy with: cp crds/*.yaml charts/modelrollout/crds/"
        )


def test_values_schema_rejects_what_the_operator_would_refuse() -> None:
    bad = [
        {"logLevel": "verbose"},
        {"logFormat": "yaml"},
        {"istioVersion": "v2"},
        {"replicas": 0},
        {"watchNamespaces": ["Not_A_Namespace"]},
        {"prometheus": {"address": "prometheus:9090"}},  # no scheme: --prometheus-url needs a URL
        {"serviceMonitor": {"interval": "often"}},
        {"replica": 2},  # a typo of a top-level key
        {"image": {"repositry": "x"}},
    ]
    for values in bad:
        with pytest.raises(helm.HelmValuesError):
            render(values)


# --------------------------------------------------------------------------------- Deployment


def test_deployment_runs_locked_down() -> None:
    deployment = only(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    main = container(render())
    assert main["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # The read-only root needs a writable /tmp.
    assert main["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert pod["serviceAccountName"] == only(render(), "ServiceAccount")["metadata"]["name"]
    assert main["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "384Mi"},
    }


def test_probes_hit_kopfs_health_endpoint() -> None:
    main = container(render())
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert main[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    # The endpoint the probes call is the one the operator is told to serve.
    assert "--liveness=http://0.0.0.0:8081/healthz" in main["args"]
    assert "--metrics-port=8080" in main["args"]


def test_default_args() -> None:
    main = container(render())
    assert main["command"] == ["modelrollout"]
    assert main["args"] == [
        "run",
        "--liveness=http://0.0.0.0:8081/healthz",
        "--metrics-port=8080",
        "--log-level=info",
        "--log-format=full",
        "--prometheus-url=http://prometheus.istio-system:9090",
        "--istio-version=v1",
        "--standalone",
    ]
    assert main["image"] == f"ghcr.io/modelrollout/modelrollout:{chart().metadata['appVersion']}"
    assert main["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize(
    ("values", "expected", "absent"),
    [
        ({"logLevel": "debug"}, ["--log-level=debug"], ["--log-level=info"]),
        ({"logLevel": "error"}, ["--log-level=error"], ["--log-level=info"]),
        ({"logFormat": "json"}, ["--log-format=json"], ["--log-format=full"]),
        ({"istioVersion": "v1beta1"}, ["--istio-version=v1beta1"], ["--istio-version=v1"]),
        (
            {"prometheus": {"address": "http://prom.monitoring:9090"}},
            ["--prometheus-url=http://prom.monitoring:9090"],
            [],
        ),
        ({"watchNamespaces": ["ml", "ranking"]}, ["--namespace=ml", "--namespace=ranking"], []),
        ({"replicas": 3}, ["--peering=modelrollout"], ["--standalone"]),
    ],
)
def test_args_follow_values(values: dict[str, Any], expected: list[str], absent: list[str]) -> None:
    args = container(render(values))["args"]
    for arg in expected:
        assert arg in args
    for arg in absent:
        assert arg not in args


def test_no_prometheus_means_no_flag() -> None:
    args = container(render({"prometheus": {"address": ""}}))["args"]
    assert not [a for a in args if a.startswith("--prometheus-url")]


def parsed_args(values: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The rendered container's command line, parsed by the operator's real CLI."""
    main = container(render(values))
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(cli, "_run", seen.append)
    cli.main(main["args"])
    assert len(seen) == 1
    return seen[0]


def test_the_operator_cli_accepts_the_default_args(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parsed_args({}, monkeypatch)
    assert args.command == "run"
    assert args.standalone is True and args.peering is None
    assert args.namespace == []  # all namespaces
    assert args.liveness == "http://0.0.0.0:8081/healthz"
    assert args.metrics_port == 8080
    assert args.log_level == "info"
    assert args.prometheus_url == "http://prometheus.istio-system:9090"
    assert args.istio_version == "v1"


def test_the_operator_cli_accepts_the_peering_namespaced_args(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parsed_args(
        {
            "replicas": 3,
            "watchNamespaces": ["ml", "ranking"],
            "logLevel": "warning",
            "istioVersion": "v1beta1",
        },
        monkeypatch,
    )
    assert args.standalone is False and args.peering == "modelrollout"
    assert args.priority is None  # random per pod: exactly one acts
    assert args.namespace == ["ml", "ranking"]
    assert args.log_level == "warning"
    assert args.istio_version == "v1beta1"


def test_one_replica_is_standalone_and_never_overlaps() -> None:
    objects = render()
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--standalone" in container(objects)["args"]
    assert not [a for a in container(objects)["args"] if a.startswith("--peering")]
    assert not of_kind(objects, "KopfPeering") and not of_kind(objects, "ClusterKopfPeering")


def test_more_replicas_use_kopf_peering_cluster_wide() -> None:
    objects = render({"replicas": 3})
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--peering=modelrollout" in container(objects)["args"]
    assert "--standalone" not in container(objects)["args"]
    peering = only(objects, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"]["name"] == "modelrollout"
    assert "namespace" not in peering["metadata"]
    assert not of_kind(objects, "KopfPeering")


def test_more_replicas_use_kopf_peering_in_each_watched_namespace() -> None:
    objects = render({"replicas": 2, "watchNamespaces": ["ml", "ranking"]})
    peerings = of_kind(objects, "KopfPeering")
    assert [(p["apiVersion"], p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings] == [
        ("kopf.dev/v1", "ml", "modelrollout"),
        ("kopf.dev/v1", "ranking", "modelrollout"),
    ]
    assert not of_kind(objects, "ClusterKopfPeering")


def test_image_and_scheduling_values_reach_the_pod() -> None:
    values = SCENARIOS["scheduling"]
    objects = render(values)
    pod = only(objects, "Deployment")["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == values["nodeSelector"]
    assert pod["spec"]["tolerations"] == values["tolerations"]
    assert pod["spec"]["affinity"] == values["affinity"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["annotations"] == values["podAnnotations"]
    assert (
        only(objects, "ServiceAccount")["metadata"]["annotations"] == values["serviceAccount"]["annotations"]
    )
    main = container(render(SCENARIOS["everything"]))
    assert main["image"] == "registry.example.com/modelrollout:dev"
    assert main["imagePullPolicy"] == "Always"
    custom = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}
    assert container(render({"resources": custom}))["resources"] == custom
    # Helm merges maps with the defaults; null removes a default (docs/helm.md says so).
    no_cpu_limit = {"resources": {"limits": {"cpu": None}}}
    assert container(render(no_cpu_limit))["resources"]["limits"] == {"memory": "384Mi"}


def test_names_fit_a_long_release_name() -> None:
    objects = render(name="a-release-name-long-enough-to-need-truncation-x")
    for obj in objects:
        name = obj["metadata"]["name"]
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name


# ----------------------------------------------------------------------------------------- RBAC

EXPERIMENTS = {
    "apiGroups": ["modelrollout.io"],
    "resources": ["modelexperiments"],
    "verbs": ["get", "list", "watch", "patch"],
}
STATUS = {"apiGroups": ["modelrollout.io"], "resources": ["modelexperiments/status"], "verbs": ["patch"]}
VIRTUALSERVICES = {
    "apiGroups": ["networking.istio.io"],
    "resources": ["virtualservices"],
    "verbs": ["get", "patch"],
}
EVENTS = {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}
SECRETS = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
# Only with reports.configMaps (off by default); exercised by tests/integration/test_abtest_e2e.py.
CONFIGMAPS = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch"]}
CRDS = {
    "apiGroups": ["apiextensions.k8s.io"],
    "resources": ["customresourcedefinitions"],
    "verbs": ["list", "watch"],
}
NAMESPACES = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}
PEERINGS = {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["list", "watch", "patch"]}
CLUSTER_PEERINGS = {
    "apiGroups": ["kopf.dev"],
    "resources": ["clusterkopfpeerings"],
    "verbs": ["list", "watch", "patch"],
}
OPERATOR = [EXPERIMENTS, STATUS, VIRTUALSERVICES, EVENTS, SECRETS]


def rbac(values: dict[str, Any]) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    """(kind, namespace) -> rules of every role the operator's ServiceAccount is bound to."""
    objects = render(values)
    assert len(of_kind(objects, "ClusterRole")) == 1 and len(of_kind(objects, "ClusterRoleBinding")) == 1
    bound = grants(objects, (RELEASE_NAMESPACE, RELEASE))
    assert len(bound) == len(of_kind(objects, "Role")) + len(of_kind(objects, "ClusterRole"))
    return {(g.kind, g.namespace): [dict(r) for r in g.rules] for g in bound}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, {("ClusterRole", None): [CRDS, *OPERATOR]}),
        ({"replicas": 3}, {("ClusterRole", None): [CRDS, CLUSTER_PEERINGS, *OPERATOR]}),
        (
            {"watchNamespaces": ["ml", "ranking"]},
            {
                ("ClusterRole", None): [CRDS, NAMESPACES],
                ("Role", "ml"): OPERATOR,
                ("Role", "ranking"): OPERATOR,
            },
        ),
        (
            {"watchNamespaces": ["ml"], "replicas": 2},
            {("ClusterRole", None): [CRDS, NAMESPACES], ("Role", "ml"): [*OPERATOR, PEERINGS]},
        ),
        (
            {"rbac": {"readSecrets": False}},
            {("ClusterRole", None): [CRDS, EXPERIMENTS, STATUS, VIRTUALSERVICES, EVENTS]},
        ),
        (
            {"rbac": {"readSecrets": False}, "watchNamespaces": ["ml"]},
            {
                ("ClusterRole", None): [CRDS, NAMESPACES],
                ("Role", "ml"): [EXPERIMENTS, STATUS, VIRTUALSERVICES, EVENTS],
            },
        ),
        (
            {"reports": {"configMaps": True}},
            {
                ("ClusterRole", None): [
                    CRDS,
                    EXPERIMENTS,
                    STATUS,
                    VIRTUALSERVICES,
                    EVENTS,
                    CONFIGMAPS,
                    SECRETS,
                ]
            },
        ),
    ],
    ids=[
        "cluster-wide",
        "cluster-wide-peering",
        "namespaced",
        "namespaced-peering",
        "no-secrets",
        "namespaced-no-secrets",
        "reports",
    ],
)
def test_rbac_rules_exactly(values: dict[str, Any], expected: dict[Any, Any]) -> None:
    """Literal lists, so that any widening shows in review; test_rbac_matches_usage.py proves each is used."""
    assert rbac(values) == expected


def test_bindings_name_the_operators_service_account() -> None:
    objects = render({"watchNamespaces": ["ml"]})
    account = only(objects, "ServiceAccount")["metadata"]
    assert (account["namespace"], account["name"]) == (RELEASE_NAMESPACE, RELEASE)
    for binding in [*of_kind(objects, "RoleBinding"), *of_kind(objects, "ClusterRoleBinding")]:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": RELEASE, "namespace": RELEASE_NAMESPACE}
        ]
    role_binding = only(objects, "RoleBinding")
    assert role_binding["metadata"]["namespace"] == "ml"
    assert role_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": RELEASE,
    }


# ------------------------------------------------------------------------ metrics & dashboard


def test_metrics_service_selects_the_operator_pods() -> None:
    objects = render()
    service = only(objects, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_service_monitor_is_off_by_default() -> None:
    assert not of_kind(render(), "ServiceMonitor")


def test_service_monitor_scrapes_the_metrics_port() -> None:
    values = {
        "serviceMonitor": {
            "enabled": True,
            "interval": "15s",
            "scrapeTimeout": "5s",
            "labels": {"release": "kps"},
        }
    }
    objects = render(values)
    monitor = only(objects, "ServiceMonitor")
    service = only(objects, "Service")
    # Not in Kubernetes' schemas: the fields prometheus-operator reads, by hand.
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert set(monitor["spec"]) == {"selector", "namespaceSelector", "endpoints"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "honorLabels": True, "interval": "15s", "scrapeTimeout": "5s"}
    ]
    # The experiment's own `namespace` label must survive the scrape: honorLabels (see the template).
    assert service["spec"]["ports"][0]["name"] == monitor["spec"]["endpoints"][0]["port"]


def test_dashboard_is_off_by_default() -> None:
    assert not of_kind(render(), "ConfigMap")


def test_dashboard_config_map_carries_the_dashboard_file_for_the_sidecar() -> None:
    objects = render({"grafanaDashboard": {"enabled": True}})
    config_map = only(objects, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert "annotations" not in config_map["metadata"]
    assert list(config_map["data"]) == ["modelrollout.json"]
    assert config_map["data"]["modelrollout.json"] == DASHBOARD.read_text().rstrip("\n")
    assert json.loads(config_map["data"]["modelrollout.json"])["uid"] == "modelrollout"
    # kubectl/Argo CD client-side apply keep a copy in an annotation limited to 256 KiB.
    assert len(config_map["data"]["modelrollout.json"].encode()) < 200_000


def test_dashboard_namespace_folder_and_labels_follow_values() -> None:
    values = {
        "grafanaDashboard": {
            "enabled": True,
            "namespace": "monitoring",
            "folder": "ML rollouts",
            "labels": {"dashboards": "modelrollout"},
        }
    }
    config_map = only(render(values), "ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "ML rollouts"}
    # Helm merges maps with the defaults: the sidecar's label stays unless set to null.
    assert config_map["metadata"]["labels"]["dashboards"] == "modelrollout"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    values["grafanaDashboard"]["labels"] = {"grafana_dashboard": None, "dashboards": "modelrollout"}
    labels = only(render(values), "ConfigMap")["metadata"]["labels"]
    assert "grafana_dashboard" not in labels and labels["dashboards"] == "modelrollout"


# ------------------------------------------------------------------------------------- values


def leaf_keys(values: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted keys down to scalars, lists and empty maps (maps with content are descended into),
    except maps of free-form entries, which are documented as one key."""
    keys: set[str] = set()
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and dotted not in FREE_FORM:
            keys |= leaf_keys(value, f"{dotted}.")
        else:
            keys.add(dotted)
    return keys


FREE_FORM = {"resources", "grafanaDashboard.labels"}


def documented_keys() -> set[str]:
    """The keys in the values table of docs/helm.md (rows starting with | `key` |)."""
    text = (ROOT / "docs" / "helm.md").read_text()
    section = text.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z][\w.]*)` \|", section, flags=re.MULTILINE))


def test_values_yaml_schema_and_docs_agree() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values == chart().values
    keys = leaf_keys(values)
    assert documented_keys() == keys, "docs/helm.md's values table and values.yaml differ"
    schema = json.loads((CHART / "values.schema.json").read_text())

    def in_schema(dotted: str) -> bool:
        node = schema
        for part in dotted.split("."):
            node = node.get("properties", {}).get(part)
            if node is None:
                return False
        return True

    missing = sorted(k for k in keys if not in_schema(k))
    assert not missing, f"values.yaml keys the schema does not describe: {missing}"
    chart().validate_schema(values)


def test_chart_metadata() -> None:
    meta = chart().metadata
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "modelrollout"
    assert meta["appVersion"] == "0.1.0"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{meta["appVersion"]}"' in pyproject, "appVersion should be the package's version"
