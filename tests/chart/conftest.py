"""The Helm chart under test: rendering it with Helm's own Go SDK, reading its RBAC, and (for the
integration test) running the operator behind an API proxy that enforces exactly that RBAC.

Rendering needs no cluster: ``helm_python`` embeds Helm's SDK, so what is checked here is what
``helm template`` / ``helm install`` would produce.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import helm_python as helm
import pytest
import yaml

from modelrollout.localstack import stack

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelrollout"
RELEASE = "modelrollout"
RELEASE_NAMESPACE = "modelrollout-system"
DASHBOARD = CHART / "dashboards" / "modelrollout.json"
KUBE_VERSION = "1.30.0"  # the oldest Kubernetes the objects are validated against

# --------------------------------------------------------------------------------------- rendering


@functools.cache
def chart() -> helm.Chart:
    """The chart, loaded once (a native handle, kept for the session)."""
    return helm.Chart.load(CHART)


def render(
    values: Mapping[str, Any] | None = None, *, name: str = RELEASE, namespace: str = RELEASE_NAMESPACE
) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values``, as ``helm template`` would output them."""
    rendered = chart().render(dict(values or {}), name=name, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith((".yaml", ".yml")):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def only(objects: Sequence[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return dict(found[0])


def of_kind(objects: Sequence[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [dict(o) for o in objects if o["kind"] == kind]


def container(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    containers = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


# --------------------------------------------------------------------------------------------- RBAC

Triple = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


@dataclasses.dataclass(frozen=True)
class Grant:
    """The rules of one role bound to the operator's ServiceAccount, and where they apply."""

    namespace: str | None  # None: everywhere (a ClusterRole bound by a ClusterRoleBinding)
    kind: str  # Role | ClusterRole
    rules: tuple[Mapping[str, Any], ...]

    def allows(self, access: Access) -> bool:
        if self.namespace is not None and access.namespace != self.namespace:
            return False
        return any(rule_allows(rule, access) for rule in self.rules)


def rule_allows(rule: Mapping[str, Any], access: Access) -> bool:
    """RBAC's own matching: '*' matches anything; resourceNames, if set, restrict by name."""

    def has(key: str, value: str) -> bool:
        values = rule.get(key) or []
        return value in values or "*" in values

    if not (
        has("apiGroups", access.group) and has("resources", access.resource) and has("verbs", access.verb)
    ):
        return False
    names = rule.get("resourceNames")
    return not names or access.name in names


def rule_triples(rule: Mapping[str, Any]) -> set[Triple]:
    return {
        (group, resource, verb)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def grants(objects: Sequence[Mapping[str, Any]], service_account: tuple[str, str]) -> list[Grant]:
    """What the chart's bindings grant ``(namespace, name)``, resolved as the API server would."""
    roles = {("Role", o["metadata"]["namespace"], o["metadata"]["name"]): o for o in of_kind(objects, "Role")}
    roles |= {("ClusterRole", None, o["metadata"]["name"]): o for o in of_kind(objects, "ClusterRole")}
    found: list[Grant] = []
    for binding in [*of_kind(objects, "RoleBinding"), *of_kind(objects, "ClusterRoleBinding")]:
        subjects = {(s["kind"], s.get("namespace"), s["name"]) for s in binding["subjects"]}
        if ("ServiceAccount", *service_account) not in subjects:
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        role = roles[(ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"])]
        found.append(Grant(scope, ref["kind"], tuple(role.get("rules") or ())))
    return found


@dataclasses.dataclass(frozen=True)
class Access:
    """A resource request as RBAC sees it."""

    group: str
    resource: str  # plural, or plural/subresource
    verb: str
    namespace: str | None
    name: str | None

    @property
    def triple(self) -> Triple:
        return (self.group, self.resource, self.verb)


_NAMESPACE_SUBRESOURCES = ("status", "finalize")


def access_of(method: str, path: str, query: Mapping[str, str]) -> Access | None:
    """The resource, verb and namespace of an API request; None for non-resource URLs (discovery,
    /version), which every authenticated client may read (the system:discovery role)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace: str | None = None
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and not (group == "" and len(rest) == 3 and rest[2] in _NAMESPACE_SUBRESOURCES)
    ):
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{'/'.join(rest[2:])}"
    if method == "GET" and name is None:
        verb = "watch" if query.get("watch", "").lower() in ("true", "1") else "list"
    elif method == "DELETE" and name is None:
        verb = "deletecollection"
    else:
        verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return Access(group, resource, verb, namespace, name)


# -------------------------------------------------------------------------------------- the proxy


@dataclasses.dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str
    query: str
    access: Access | None
    allowed: bool


class RbacProxy:
    """An HTTP proxy in front of the API emulator that authorizes like the API server.

    The operator gets a kubeconfig pointing here; every request is logged with its RBAC
    triple, and one the ``grants`` do not allow is answered 403 Forbidden and never reaches
    the emulator. So the operator runs with exactly the chart's permissions, and the log
    holds only the operator's own requests (the emulator's log also has the test's and the
    mesh simulator's).
    """

    def __init__(self, upstream: str, grants: Sequence[Grant]) -> None:
        self._upstream = upstream.rstrip("/")
        self._grants = list(grants)
        self._log: list[ProxiedRequest] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.url = ""

    def allows(self, access: Access) -> bool:
        return any(grant.allows(access) for grant in self._grants)

    def log(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self._log)

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "proxy",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "operator", "user": {"token": "operator"}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "operator"}}],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # ------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> RbacProxy:
        self._thread = threading.Thread(target=self._run, name="rbac-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError("the RBAC proxy did not start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            self._session = session
            server = aiohttp.web.Server(self._handle, handler_cancellation=True)
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
            await runner.setup()
            try:
                site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
                self._ready.set()
                await self._stopping.wait()
            finally:
                await runner.cleanup()

    async def _handle(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        access = access_of(request.method, request.path, request.query)
        allowed = access is None or self.allows(access)
        with self._lock:
            self._log.append(
                ProxiedRequest(request.method, request.path, request.query_string, access, allowed)
            )
        if not allowed:
            assert access is not None
            where = f' in the namespace "{access.namespace}"' if access.namespace else " at the cluster scope"
            message = (
                f'{access.resource} is forbidden: User "system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}" '
                f'cannot {access.verb} resource "{access.resource}" in API group "{access.group}"{where}'
            )
            body = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "Forbidden",
                "code": 403,
            }
            return aiohttp.web.json_response(body, status=403)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        body_bytes = await request.read()
        async with self._session.request(
            request.method,
            self._upstream + request.path_qs,
            headers=headers,
            data=body_bytes or None,
        ) as upstream:
            response = aiohttp.web.StreamResponse(status=upstream.status)
            for header in ("Content-Type", "Content-Encoding"):
                if header in upstream.headers:
                    response.headers[header] = upstream.headers[header]
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionError, aiohttp.ClientError):
                pass  # the operator went away in the middle of a watch
            return response


# ----------------------------------------------------------------------------------- the stack


@pytest.fixture(scope="package")
def local() -> Iterator[stack.LocalStack]:
    """A local stack of the chart tests' own: a cluster-wide operator sees every namespace of its
    emulator, so it must not share one with the integration tests' experiments."""
    with stack.LocalStack(seed=11) as running:
        yield running


# ------------------------------------------------------------------------------------ dashboard


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those folded into rows."""
    found: list[dict[str, Any]] = []
    for panel in board.get("panels") or []:
        found.append(panel)
        found.extend(panel.get("panels") or [])
    return found


def dashboard_queries(board: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query target of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in panels(board)
        for target in panel.get("targets") or []
        if "expr" in target
    ]


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def fill_variables(expr: str, values: Mapping[str, str]) -> str:
    """Grafana's substitution of $var, ${var} and [[var]]; an unknown variable is an error."""

    def one(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"the dashboard uses ${name}, which the test does not fill in: {expr}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def query_prometheus(url: str, expr: str) -> dict[str, Any]:
    """The raw answer of Prometheus' instant-query API (including errors, which are data here)."""
    data = urllib.parse.urlencode({"query": expr}).encode()
    request = urllib.request.Request(f"{url}/api/v1/query", data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            loaded: dict[str, Any] = json.load(answer)
    except urllib.error.HTTPError as e:
        loaded = json.load(e)
    return loaded
