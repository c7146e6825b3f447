"""The RBAC model the integration test enforces: requests mapped to (group, resource, verb) and
rules matched as the API server does. If this were wrong, test_rbac_matches_usage.py would
prove nothing."""

from __future__ import annotations

import pytest

from conftest import Access, Grant, access_of


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        (
            "GET",
            "/apis/modelrollout.io/v1alpha1/namespaces/ml/modelexperiments",
            {},
            Access("modelrollout.io", "modelexperiments", "list", "ml", None),
        ),
        (
            "GET",
            "/apis/modelrollout.io/v1alpha1/namespaces/ml/modelexperiments",
            {"watch": "true"},
            Access("modelrollout.io", "modelexperiments", "watch", "ml", None),
        ),
        (
            "GET",
            "/apis/modelrollout.io/v1alpha1/modelexperiments",
            {"watch": "1"},
            Access("modelrollout.io", "modelexperiments", "watch", None, None),
        ),
        (
            "GET",
            "/apis/modelrollout.io/v1alpha1/namespaces/ml/modelexperiments/churn-v2",
            {},
            Access("modelrollout.io", "modelexperiments", "get", "ml", "churn-v2"),
        ),
        (
            "PATCH",
            "/apis/modelrollout.io/v1alpha1/namespaces/ml/modelexperiments/churn-v2/status",
            {},
            Access("modelrollout.io", "modelexperiments/status", "patch", "ml", "churn-v2"),
        ),
        (
            "PATCH",
            "/apis/networking.istio.io/v1/namespaces/ml/virtualservices/churn",
            {},
            Access("networking.istio.io", "virtualservices", "patch", "ml", "churn"),
        ),
        ("POST", "/api/v1/namespaces/ml/events", {}, Access("", "events", "create", "ml", None)),
        ("GET", "/api/v1/namespaces/ml/secrets/hooks", {}, Access("", "secrets", "get", "ml", "hooks")),
        ("GET", "/api/v1/namespaces", {"watch": "true"}, Access("", "namespaces", "watch", None, None)),
        ("GET", "/api/v1/namespaces/ml", {}, Access("", "namespaces", "get", None, "ml")),
        (
            "PUT",
            "/api/v1/namespaces/ml/finalize",
            {},
            Access("", "namespaces/finalize", "update", None, "ml"),
        ),
        ("PUT", "/api/v1/namespaces/ml/status", {}, Access("", "namespaces/status", "update", None, "ml")),
        (
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            {},
            Access("apiextensions.k8s.io", "customresourcedefinitions", "list", None, None),
        ),
        (
            "PATCH",
            "/apis/kopf.dev/v1/clusterkopfpeerings/modelrollout",
            {},
            Access("kopf.dev", "clusterkopfpeerings", "patch", None, "modelrollout"),
        ),
        ("DELETE", "/api/v1/namespaces/ml/pods", {}, Access("", "pods", "deletecollection", "ml", None)),
        ("DELETE", "/api/v1/namespaces/ml/pods/p", {}, Access("", "pods", "delete", "ml", "p")),
        # Discovery and /version are not resource requests.
        ("GET", "/api", {}, None),
        ("GET", "/api/v1", {}, None),
        ("GET", "/apis", {}, None),
        ("GET", "/apis/modelrollout.io", {}, None),
        ("GET", "/apis/modelrollout.io/v1alpha1", {}, None),
        ("GET", "/version", {}, None),
    ],
)
def test_requests_map_to_what_rbac_checks(
    method: str, path: str, query: dict, expected: Access | None
) -> None:
    assert access_of(method, path, query) == expected


RULE = {"apiGroups": ["networking.istio.io"], "resources": ["virtualservices"], "verbs": ["get", "patch"]}


def test_a_role_grants_only_in_its_namespace() -> None:
    role = Grant("ml", "Role", (RULE,))
    assert role.allows(Access("networking.istio.io", "virtualservices", "patch", "ml", "churn"))
    assert not role.allows(Access("networking.istio.io", "virtualservices", "patch", "other", "churn"))
    assert not role.allows(
        Access("networking.istio.io", "virtualservices", "list", None, None)
    )  # all namespaces
    assert not role.allows(Access("networking.istio.io", "virtualservices", "delete", "ml", "churn"))
    assert not role.allows(Access("networking.istio.io", "virtualservices/status", "patch", "ml", "churn"))
    assert not role.allows(Access("", "virtualservices", "patch", "ml", "churn"))


def test_a_cluster_role_grants_everywhere_and_wildcards_and_names_work() -> None:
    cluster = Grant(None, "ClusterRole", (RULE,))
    assert cluster.allows(Access("networking.istio.io", "virtualservices", "get", "any", "x"))
    wildcard = Grant(None, "ClusterRole", ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},))
    assert wildcard.allows(Access("", "secrets", "list", None, None))
    named = Grant(None, "ClusterRole", ({**RULE, "resourceNames": ["churn"]},))
    assert named.allows(Access("networking.istio.io", "virtualservices", "get", "ml", "churn"))
    assert not named.allows(Access("networking.istio.io", "virtualservices", "get", "ml", "other"))
