"""Kubernetes API-server semantics on top of kmock's in-memory emulator.

kmock 0.8's ``KubernetesEmulator`` stores objects and streams watch events, but
each of kopf, the ``kubernetes`` client and kubectl breaks on something a real
server does and it does not (measured in /work/shared/ENVIRONMENT.md): no uid,
generation or resourceVersion, no optimistic concurrency, 200/500 where 201,
409 and 422 are due, spec and status merged together, patch types guessed from
the body, untyped lists, octet-stream watches.  :class:`ApiEmulator` serves
resource requests itself with those semantics and keeps kmock for what it does
well: resource declarations, discovery, the object store (``.objects``) and
its history.  ``apiserver.py`` runs it on a port in its own thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import http
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock

logger = logging.getLogger(__name__)

DEFAULT_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
MERGE_PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
JSON_PATCH_TYPE = "application/json-patch+json"
JSON_TYPES = ("application/json", "application/octet-stream")  # aiohttp's default when none is sent
HISTORY_DEPTH = 20  # versions kept per object: kmock keeps all, a long demo would grow without bound
EVENT_BACKLOG = 10_000  # events kept so that watches can resume from a resourceVersion
IMMUTABLE_META = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)

# The Status reasons of a real server (kubectl & clients show them), for statuses raised without one.
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

Object = dict[str, Any]
ObjectKey = tuple[kmock.resource, str | None, str]
Event = tuple[int, kmock.resource, Object]  # (resourceVersion, storage resource, {type, object})


# kmock's actions (for fault predicates & kmock's own views), by (HTTP method, addressing a collection).
_ACTIONS = {
    ("GET", True): kmock.action.LIST,
    ("GET", False): kmock.action.FETCH,
    ("POST", True): kmock.action.CREATE,
    ("DELETE", False): kmock.action.DELETE,
    ("DELETE", True): kmock.action.DELETE,
}


class LoggedRequest(NamedTuple):
    method: str
    path: str
    status: int | None  # None while in flight; a watch is 200 as soon as it streams
    query: str = ""
    user: str = ""  # the bearer token: the emulator authenticates no one, a token just names its client


@attrs.define
class _LogEntry:
    method: str
    path: str
    query: str
    status: int | None = None
    user: str = ""


@attrs.define(eq=False)
class Fault:
    """Fail (``status``) and/or stall (``delay`` seconds) the next ``remaining`` matching requests.

    ``match`` is a predicate on :class:`kmock.Request`, or a string ``"[METHOD] [path-regex]"``
    (e.g. ``"PATCH /modelexperiments/"``, ``"/status$"``, ``"DELETE"``).
    ``remaining=None`` keeps the fault until it is cleared; ``status=None`` only delays.
    """

    match: str | Callable[[kmock.Request], bool]
    status: int | None = 500
    remaining: int | None = 1
    delay: float = 0.0
    reason: str | None = None
    message: str | None = None
    hits: int = 0

    def matches(self, request: kmock.Request) -> bool:
        if not isinstance(self.match, str):
            return bool(self.match(request))
        method, _, pattern = self.match.strip().partition(" ")
        if method.upper() not in {m.value for m in kmock.method} and method != "*":
            method, pattern = "*", self.match.strip()
        method_ok = method == "*" or method.upper() == request.method.value
        return method_ok and re.search(pattern.strip(), request.url.path) is not None


@attrs.frozen
class Target:
    """A resource request resolved against the declarations."""

    resource: kmock.resource  # as addressed: its version shapes the apiVersion of answers
    storage: kmock.resource  # the version every version of this resource is stored under
    info: kmock.ResourceInfo
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def api_version(self) -> str:
        return f"{self.resource.group}/{self.resource.version}" if self.resource.group else "v1"

    @property
    def has_status(self) -> bool:
        return "status" in self.info.subresources

    def key(self, name: str | None = None) -> ObjectKey:
        return self.storage, self.namespace, name or self.name or ""

    def describe(self) -> str:
        return ".".join(filter(None, (self.resource.plural, self.resource.group)))  # as in messages


def api_error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details=details)


def status_response(status: int, reason: str, message: str, details: Any = None) -> aiohttp.web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": status,
    }
    return aiohttp.web.json_response(body, status=status)


def _reason(status: int) -> str:
    try:
        return REASONS.get(status) or http.HTTPStatus(status).phrase.replace(" ", "")
    except ValueError:
        return "Unknown"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ----------------------------------------------------------------------------------------- selectors
LabelRequirement = tuple[str, str, frozenset[str]]  # (key, "in"|"notin"|"exists"|"!exists", values)
FieldRequirement = tuple[str, bool, str]  # (dotted path, negated, value)
_SET_TERM = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(!?)\s*([\w./-]+)\s*$")


def parse_label_selector(selector: str) -> list[LabelRequirement]:
    requirements: list[LabelRequirement] = []
    for term in re.split(r",(?![^()]*\))", selector):
        if not term.strip():
            continue
        if m := _SET_TERM.match(term):
            values = frozenset(v.strip() for v in m[3].split(",") if v.strip())
            requirements.append((m[1], m[2], values))
        elif m := _EQ_TERM.match(term):
            requirements.append((m[1], "notin" if m[2] == "!=" else "in", frozenset([m[3]])))
        elif m := _EXISTS_TERM.match(term):
            requirements.append((m[2], "!exists" if m[1] else "exists", frozenset()))
        else:
            raise api_error(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return requirements


def parse_field_selector(selector: str) -> list[FieldRequirement]:
    requirements: list[FieldRequirement] = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if not (m := re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", term)):
            raise api_error(400, "BadRequest", f"invalid field selector: {term!r}")
        requirements.append((m[1], m[2] == "!=", m[3]))
    return requirements


def selected(obj: Object, labels: Iterable[LabelRequirement], fields: Iterable[FieldRequirement]) -> bool:
    have = _meta(obj).get("labels") or {}
    for key, op, values in labels:
        present = key in have
        if not {
            "exists": present,
            "!exists": not present,
            "in": present and have.get(key) in values,
            "notin": have.get(key) not in values,
        }[op]:
            return False
    for path, negated, value in fields:
        found: Any = obj
        for part in path.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        if (str(found if found is not None else "") == value) == negated:
            return False
    return True


# ----------------------------------------------------------------------------------------- emulator
@attrs.define(kw_only=True)
class ApiEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]  # kmock is Any to mypy here
    """kmock's emulator with the semantics of a real API server for declared resources.

    Loop-bound: all state changes happen in the serving event loop without awaiting
    in between, so they are atomic; only faults and the request log are shared
    with other threads (behind a lock).
    """

    _rv: int = attrs.field(default=0, init=False)
    _storage_versions: dict[tuple[str, str], str] = attrs.field(factory=dict, init=False)
    _backlog: collections.deque[Event] = attrs.field(
        factory=lambda: collections.deque(maxlen=EVENT_BACKLOG), init=False
    )
    _expired_rv: int = attrs.field(default=0, init=False)  # the newest event dropped from the backlog
    _watchers: set[asyncio.Queue[Event | None]] = attrs.field(factory=set, init=False)
    _faults: list[Fault] = attrs.field(factory=list, init=False)
    _log: collections.deque[_LogEntry] = attrs.field(
        factory=lambda: collections.deque(maxlen=100_000), init=False
    )
    _guard: threading.RLock = attrs.field(factory=threading.RLock, init=False)  # predicates may log-read

    # ------------------------------------------------------------------ declarations & test helpers
    def declare(
        self,
        group: str,
        version: str,
        plural: str,
        *,
        kind: str,
        singular: str | None = None,
        namespaced: bool = True,
        shortnames: Iterable[str] = (),
        categories: Iterable[str] = (),
        subresources: Iterable[str] = (),
        verbs: Iterable[str] = DEFAULT_VERBS,
    ) -> None:
        """Declare a resource; all versions of one group/plural share one store (the first declared)."""
        self.resources[kmock.resource(group=group, version=version, plural=plural)] = kmock.ResourceInfo(
            kind=kind,
            singular=singular or kind.lower(),
            namespaced=namespaced,
            verbs=verbs,
            shortnames=shortnames,
            categories=categories,
            subresources=subresources,
        )
        self._storage_versions.setdefault((group, plural), version)

    def undeclare(self, group: str, plural: str) -> None:
        for res in [r for r in self.resources if (r.group, r.plural) == (group, plural)]:
            del self.resources[res]
        self._storage_versions.pop((group, plural), None)

    def get_object(
        self, group: str, version: str, plural: str, namespace: str | None, name: str
    ) -> Object | None:
        target = self._target(
            kmock.resource(group=group, version=version, plural=plural), namespace, name, None
        )
        obj = self._get(target.key())
        return copy.deepcopy(self._present(obj, target)) if obj is not None else None

    def list_objects(
        self, group: str, version: str, plural: str, namespace: str | None = None
    ) -> list[Object]:
        target = self._target(
            kmock.resource(group=group, version=version, plural=plural), namespace, None, None
        )
        return [copy.deepcopy(self._present(obj, target)) for obj in self._select(target, [], [])]

    def inject_fault(self, fault: Fault) -> Fault:
        """Thread-safe. Faults are checked in the order of injection; the first match applies."""
        with self._guard:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._guard:
            self._faults.clear()

    def request_log(self) -> list[LoggedRequest]:
        """Thread-safe snapshot: method, path, status (query and user) of every request so far."""
        with self._guard:
            return [LoggedRequest(e.method, e.path, e.status, e.query, e.user) for e in self._log]

    def clear_request_log(self) -> None:
        with self._guard:
            self._log.clear()

    def close_watches(self) -> None:
        """End all watch streams now: aiohttp would otherwise wait for them at shutdown."""
        for queue in self._watchers:
            queue.put_nowait(None)

    # ------------------------------------------------------------------------------------ serving
    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        scheme, _, token = raw.headers.get("Authorization", "").partition(" ")
        entry = _LogEntry(raw.method, raw.path, raw.query_string, user=token if scheme == "Bearer" else "")
        with self._guard:
            self._log.append(entry)
        response: aiohttp.web.StreamResponse
        try:
            request = await self._parse(raw)
            await self._apply_faults(request)
            if request.resource is not None and request.resource.plural is not None:
                response = await self._serve_resource(request, raw, entry)
            else:  # kmock: discovery, /version, DSL reactions; its views only see logged requests
                self._requests.append(request)
                response = await self._handle(request)
        except kmock.KubernetesError as e:
            response = status_response(
                e.status,
                e.reason or _reason(e.status),
                e.message or "",
                e.details,
            )
        except Exception as e:
            logger.exception("Failed to serve %s %s", raw.method, raw.path)
            response = status_response(500, "InternalError", repr(e))
        entry.status = response.status
        return response

    async def _parse(self, raw: aiohttp.web.BaseRequest) -> kmock.Request:
        # kmock's own parser fails on /api/v1/namespaces and guesses too little for PUT & co.
        body = await raw.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None  # YAML apply-patches are refused with 415 later; other bodies with 400
        parts = [p for p in raw.path.split("/") if p]
        group: str | None = None
        version: str | None = None
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 2 and parts[0] == "apis":
            group, version, rest = parts[1], (parts[2] if len(parts) > 2 else None), parts[3:]
        else:
            rest = []
        namespace: str | None = None
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and group is not None
            and version is not None
            and kmock.resource(group=group, version=version, plural=rest[2]) in self.resources
        ):
            namespace, rest = rest[1], rest[2:]
        plural, name = [*rest, None, None][:2]
        subresource = "/".join(rest[2:]) or None
        action = None if plural is None else _ACTIONS.get((raw.method, name is None), kmock.action.UPDATE)
        if raw.method == "GET" and raw.query.get("watch", "").lower() in ("true", "1"):
            action = kmock.action.WATCH
        resource = None if group is None else kmock.resource(group=group, version=version, plural=plural)
        return kmock.Request(
            method=raw.method,
            url=raw.url,
            params=dict(raw.query),
            headers=dict(raw.headers),
            cookies=dict(raw.cookies),
            body=body,
            text=body.decode("utf-8", "replace"),
            data=data,
            action=action,
            resource=resource,
            namespace=namespace,
            name=name,
            subresource=subresource,
            raw_request=raw,
        )

    async def _apply_faults(self, request: kmock.Request) -> None:
        fault: Fault | None = None
        with self._guard:
            for candidate in self._faults:
                if candidate.matches(request):
                    fault = candidate
                    fault.hits += 1
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    break
            self._faults = [f for f in self._faults if f.remaining is None or f.remaining > 0]
        if fault is None:
            return
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status is not None:
            reason = fault.reason or _reason(fault.status)
            raise api_error(fault.status, reason, fault.message or f"injected fault ({fault.status})")

    async def _serve_resource(
        self, request: kmock.Request, raw: aiohttp.web.BaseRequest, entry: _LogEntry
    ) -> aiohttp.web.StreamResponse:
        assert request.resource is not None
        target = self._target(request.resource, request.namespace, request.name, request.subresource)
        collection = target.name is None and target.subresource is None
        if raw.method in ("POST", "PUT") and raw.body_exists and raw.content_type not in JSON_TYPES:
            # kubectl's typed commands (create namespace, ...) send protobuf; `kubectl apply -f` sends JSON.
            raise api_error(
                415, "UnsupportedMediaType", f"{raw.content_type} is not supported here; send JSON"
            )
        if raw.method == "GET" and request.action == kmock.action.WATCH:
            return await self._watch(request, raw, target, entry)
        if raw.method == "GET" and collection:
            return aiohttp.web.json_response(self._list(target, self._select_from(request, target)))
        if raw.method == "GET":
            return aiohttp.web.json_response(self._present(self._existing(target), target))
        if raw.method == "POST" and collection:
            if target.namespace is None and target.info.namespaced:
                raise api_error(404, "NotFound", "the server could not find the requested resource")
            return aiohttp.web.json_response(self._present(self._create(request, target), target), status=201)
        if raw.method in ("PATCH", "PUT") and target.name is not None:
            return aiohttp.web.json_response(self._present(self._update(request, raw, target), target))
        if raw.method == "DELETE" and target.name is not None:
            return aiohttp.web.json_response(
                self._present(self._delete(request, target, target.name), target)
            )
        if raw.method == "DELETE" and collection:
            gone = [
                self._delete(request, target, _meta(o)["name"]) for o in self._select_from(request, target)
            ]
            return aiohttp.web.json_response(self._list(target, gone))
        raise api_error(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    # ------------------------------------------------------------------------------- resolution
    def _target(
        self, res: kmock.resource, namespace: str | None, name: str | None, subresource: str | None
    ) -> Target:
        # Not .get(): kmock's ResourcesArray creates missing entries on access.
        info = self.resources[res] if res in self.resources else None  # noqa: SIM401
        if (
            info is None
            or (subresource is not None and subresource not in info.subresources)
            or (namespace is not None and not info.namespaced)
            or (namespace is None and info.namespaced and name is not None)
        ):
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        assert res.group is not None and res.plural is not None and res.version is not None
        storage_version = self._storage_versions.get((res.group, res.plural), res.version)
        storage = kmock.resource(group=res.group, version=storage_version, plural=res.plural)
        return Target(res, storage, info, namespace, name, subresource)

    def _get(self, key: ObjectKey) -> Object | None:
        return None if key not in self.objects or self.objects[key].deleted else self.objects[key].raw

    def _existing(self, target: Target, name: str | None = None) -> Object:
        if (obj := self._get(target.key(name))) is None:
            name = name or target.name or ""
            raise api_error(
                404,
                "NotFound",
                f'{target.describe()} "{name}" not found',
                name=name,
                group=target.resource.group,
                kind=target.resource.plural,
            )
        return obj

    def _present(self, obj: Object, target: Target) -> Object:
        return {**obj, "apiVersion": target.api_version}

    def _select(
        self, target: Target, labels: list[LabelRequirement], fields: list[FieldRequirement]
    ) -> list[Object]:
        found = [
            (ns or "", name, obj.raw)
            for (res, ns, name), obj in self.objects.items()
            if res == target.storage
            and not obj.deleted
            and target.namespace in (None, ns)
            and target.name in (None, name)
        ]
        return [raw for _, _, raw in sorted(found, key=lambda t: t[:2]) if selected(raw, labels, fields)]

    def _select_from(self, request: kmock.Request, target: Target) -> list[Object]:
        labels = parse_label_selector(request.params.get("labelSelector", ""))
        return self._select(target, labels, parse_field_selector(request.params.get("fieldSelector", "")))

    def _list(self, target: Target, items: list[Object]) -> Object:
        return {
            "apiVersion": target.api_version,
            "kind": f"{target.info.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": [self._present(obj, target) for obj in items],
        }

    # ----------------------------------------------------------------------------------- writes
    def _commit(self, key: ObjectKey, kind: str, obj: Object) -> Object:
        """Stamp a new resourceVersion, store (or remove), and publish the event; nothing awaits here."""
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        if key in self.objects:
            history = self.objects[key].history
            history.append(obj)
            if kind == "DELETED":
                history.append(None)
            del history[:-HISTORY_DEPTH]
        else:
            self.objects[key] = obj
        if len(self._backlog) == self._backlog.maxlen:
            self._expired_rv = self._backlog[0][0]
        event: Event = (self._rv, key[0], {"type": kind, "object": obj})
        self._backlog.append(event)
        for queue in self._watchers:
            queue.put_nowait(event)
        return obj

    def _create(self, request: kmock.Request, target: Target) -> Object:
        if not isinstance(request.data, dict) or not isinstance(request.data.get("metadata", {}), dict):
            raise api_error(400, "BadRequest", "the body of the request must be a JSON object")
        obj: Object = copy.deepcopy(request.data)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = meta["generateName"] + "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
            )
        if not name:
            raise self._invalid(target, "", "metadata.name", "name or generateName is required")
        if meta.get("namespace") not in (None, "", target.namespace) and target.info.namespaced:
            raise api_error(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if self._get(target.key(name)) is not None:
            raise api_error(
                409,
                "AlreadyExists",
                f'{target.describe()} "{name}" already exists',
                name=name,
                group=target.resource.group,
                kind=target.resource.plural,
            )
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace"):
            meta.pop(field, None)
        meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if target.namespace is not None:
            meta["namespace"] = target.namespace
        obj["apiVersion"] = f"{target.storage.group}/{target.storage.version}".lstrip("/")
        obj["kind"] = target.info.kind
        if target.has_status:
            obj.pop("status", None)  # a create cannot set the status of such resources
        self._on_write(target, obj)
        return self._commit(target.key(name), "ADDED", obj)

    def _update(self, request: kmock.Request, raw: aiohttp.web.BaseRequest, target: Target) -> Object:
        old = self._existing(target)
        candidate: Any
        if raw.method == "PUT":
            candidate = copy.deepcopy(request.data)
        elif raw.content_type == JSON_PATCH_TYPE:
            if not isinstance(request.data, list):
                raise api_error(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                candidate = jsonpatch.apply_patch(copy.deepcopy(old), request.data, in_place=True)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError) as e:
                raise self._invalid(
                    target, target.name or "", "", f"the patch could not be applied: {e}"
                ) from e
        elif raw.content_type in MERGE_PATCH_TYPES:  # strategic merge == merge for custom resources here
            if not isinstance(request.data, dict):
                raise api_error(400, "BadRequest", "a merge patch must be a JSON object")
            candidate = merge_patch(copy.deepcopy(old), request.data)
        else:
            raise api_error(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format; "
                f"accepted media types include: {JSON_PATCH_TYPE}, {', '.join(MERGE_PATCH_TYPES)}",
            )
        if not isinstance(candidate, dict) or not isinstance(candidate.get("metadata", {}), dict):
            raise self._invalid(target, target.name or "", "", "the object must be a JSON object")
        return self._write(target, old, candidate)

    def _write(self, target: Target, old: Object, candidate: Object) -> Object:
        name, old_meta = target.name or "", _meta(old)
        claimed_rv = _meta(candidate).get("resourceVersion")
        if claimed_rv and claimed_rv != old_meta.get("resourceVersion"):
            raise api_error(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {target.describe()} "{name}": '
                "the object has been modified; please apply your changes to the latest version "
                "and try again",
                name=name,
                group=target.resource.group,
                kind=target.resource.plural,
            )
        if target.subresource == "status":
            new, source = copy.deepcopy(old), candidate  # a /status write changes the status only
        else:
            new, source = candidate, old  # a main write changes all but the status (if separate)
            meta = new.setdefault("metadata", {})
            for field in IMMUTABLE_META:
                if field in old_meta:
                    meta[field] = old_meta[field]
                else:
                    meta.pop(field, None)
            new["apiVersion"], new["kind"] = old.get("apiVersion"), old.get("kind")
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if old_meta.get("deletionTimestamp") and added:
                raise self._invalid(
                    target,
                    name,
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                )
        if target.subresource == "status" or target.has_status:
            if "status" in source:
                new["status"] = source["status"]
            else:
                new.pop("status", None)
        if new == old:
            return old  # no-op writes neither bump the resourceVersion nor notify watchers
        ignored = ("metadata", "status") if target.has_status else ("metadata",)
        if {k: v for k, v in new.items() if k not in ignored} != {
            k: v for k, v in old.items() if k not in ignored
        }:
            new["metadata"]["generation"] = int(old_meta.get("generation") or 0) + 1
        self._on_write(target, new)
        result = self._commit(target.key(), "MODIFIED", new)
        if _meta(new).get("deletionTimestamp") and not _meta(new).get("finalizers"):
            self._remove(target, copy.deepcopy(new))
        return result

    def _delete(self, request: kmock.Request, target: Target, name: str) -> Object:
        old = self._existing(target, name)
        options = request.data if isinstance(request.data, dict) else {}
        for field, value in (options.get("preconditions") or {}).items():
            if value and value != _meta(old).get(field):
                raise api_error(
                    409,
                    "Conflict",
                    f"Precondition failed: {field} in precondition: {value}, "
                    f"{field} in object meta: {_meta(old).get(field)}",
                    name=name,
                )
        if not _meta(old).get("finalizers"):
            return self._remove(target, copy.deepcopy(old))
        if _meta(old).get("deletionTimestamp"):
            return old
        new = copy.deepcopy(old)
        new["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
        return self._commit(target.key(name), "MODIFIED", new)

    def _remove(self, target: Target, obj: Object) -> Object:
        name = _meta(obj).get("name", "")
        result = self._commit(target.key(name), "DELETED", obj)
        if target.storage == kmock.resource(
            group="apiextensions.k8s.io", version="v1", plural="customresourcedefinitions"
        ):
            spec = obj.get("spec") or {}
            group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
            for (res, ns, obj_name), stored in list(self.objects.items()):
                if (res.group, res.plural) == (group, plural) and not stored.deleted:
                    self._commit((res, ns, obj_name), "DELETED", copy.deepcopy(stored.raw))
            self.undeclare(group, plural)
        elif target.storage == kmock.resource(group="", version="v1", plural="namespaces"):
            for (res, ns, obj_name), stored in list(self.objects.items()):
                if ns == name and not stored.deleted and res in self.resources:  # content goes along
                    self._delete(kmock.Request(), self._target(res, ns, obj_name, None), obj_name)
        return result

    def _on_write(self, target: Target, obj: Object) -> None:
        """Side effects a real cluster has: namespaces become Active, CRDs declare their resources."""
        if target.storage.plural == "namespaces" and target.storage.group == "":
            obj.setdefault("status", {"phase": "Active"})
        elif target.storage.plural == "customresourcedefinitions" and target.subresource is None:
            self._declare_crd(target, obj)

    def _declare_crd(self, target: Target, crd: Object) -> None:
        spec, name = crd.get("spec") or {}, _meta(crd).get("name", "")
        names = spec.get("names") or {}
        group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
        if not (group and plural and kind and spec.get("versions")):
            raise self._invalid(
                target, name, "spec", "group, names.plural, names.kind and versions are required"
            )
        for version in sorted(spec["versions"], key=lambda v: not v.get("storage")):  # storage first
            if version.get("served", True):
                self.declare(
                    group,
                    version["name"],
                    plural,
                    kind=kind,
                    singular=names.get("singular"),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    shortnames=names.get("shortNames") or (),
                    categories=names.get("categories") or (),
                    subresources=[s for s in ("status", "scale") if s in (version.get("subresources") or {})],
                )
        conditions = [
            {"type": t, "status": "True", "reason": r, "message": "", "lastTransitionTime": _now()}
            for t, r in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))
        ]
        crd["status"] = {
            "acceptedNames": names,
            "conditions": conditions,
            "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
        }

    def _invalid(self, target: Target, name: str, field: str, message: str) -> kmock.KubernetesError:
        kind = (
            f"{target.info.kind}.{target.resource.group}" if target.resource.group else f"{target.info.kind}"
        )
        detail = f"{field}: {message}" if field else message
        return api_error(
            422,
            "Invalid",
            f'{kind} "{name}" is invalid: {detail}',
            name=name,
            group=target.resource.group,
            kind=target.info.kind,
            causes=[{"reason": "FieldValueInvalid", "message": message, "field": field}],
        )

    # ------------------------------------------------------------------------------------ watch
    async def _watch(
        self, request: kmock.Request, raw: aiohttp.web.BaseRequest, target: Target, entry: _LogEntry
    ) -> aiohttp.web.StreamResponse:
        params = request.params
        labels = parse_label_selector(params.get("labelSelector", ""))
        fields = parse_field_selector(params.get("fieldSelector", ""))
        since = params.get("resourceVersion", "")
        initial_events = params.get("sendInitialEvents") == "true"
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        # Snapshot and subscribe without awaiting in between, so that no event falls into the gap.
        backlog: list[Event]
        if since in ("", "0") or initial_events:
            backlog = [
                (int(_meta(o).get("resourceVersion") or 0), target.storage, {"type": "ADDED", "object": o})
                for o in self._select(target, labels, fields)
            ]
        elif since.isdigit() and int(since) >= self._expired_rv:
            backlog = [e for e in self._backlog if e[0] > int(since) and e[1] == target.storage]
        else:
            expired = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "code": 410,
                "reason": "Expired",
                "message": f"too old resource version: {since} ({self._rv})",
            }
            backlog = [(0, target.storage, {"type": "ERROR", "object": expired})]
            queue.put_nowait(None)
        self._watchers.add(queue)
        # client-go has "no stream serializers" for kmock's application/octet-stream.
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await response.prepare(raw)
            entry.status = response.status
            for event in backlog:
                await self._send(response, target, event, labels, fields)
            if initial_events:
                bookmark = {
                    "kind": target.info.kind,
                    "apiVersion": target.api_version,
                    "metadata": {
                        "resourceVersion": str(self._rv),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }
                await self._send(
                    response,
                    target,
                    (self._rv, target.storage, {"type": "BOOKMARK", "object": bookmark}),
                    [],
                    [],
                )
            timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
            async with asyncio.timeout(timeout):
                while (event_or_end := await queue.get()) is not None:
                    if event_or_end[1] == target.storage:
                        await self._send(response, target, event_or_end, labels, fields)
        except (TimeoutError, ConnectionError):
            pass  # the server-side timeout is a normal end; a gone client needs no answer
        finally:
            self._watchers.discard(queue)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _send(
        self,
        response: aiohttp.web.StreamResponse,
        target: Target,
        event: Event,
        labels: list[LabelRequirement],
        fields: list[FieldRequirement],
    ) -> None:
        obj = event[2]["object"]
        if event[2]["type"] not in ("ERROR", "BOOKMARK"):
            if target.namespace not in (None, _meta(obj).get("namespace")):
                return
            if target.name not in (None, _meta(obj).get("name")) or not selected(obj, labels, fields):
                return
            obj = self._present(obj, target)
        await response.write(json.dumps({"type": event[2]["type"], "object": obj}).encode() + b"\n")

    # -------------------------------------------------------------------------------- discovery
    # kmock's discovery repeats shortNames/categories on subresources (kubectl then warns of
    # ambiguity), says "/v1" for the core group version, and picks a random preferred version.
    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        assert request.resource is not None
        group, version = request.resource.group or "", request.resource.version
        entries: list[dict[str, Any]] = []
        for res in [r for r in self.resources if (r.group, r.version) == (group, version)]:
            info = self.resources[res]
            common = {"kind": info.kind, "namespaced": bool(info.namespaced)}
            main = {
                "name": res.plural,
                "singularName": info.singular or "",
                **common,
                "verbs": sorted(info.verbs),
            }
            main |= {"shortNames": sorted(info.shortnames)} if info.shortnames else {}
            main |= {"categories": sorted(info.categories)} if info.categories else {}
            entries.append(main)
            for sub in sorted(info.subresources):
                verbs = ["update"] if sub == "finalize" else ["get", "patch", "update"]
                entries.append({"name": f"{res.plural}/{sub}", "singularName": "", **common, "verbs": verbs})
        if not entries and group:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": entries,
        }

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for res in self.resources:  # declaration order: the first declared version is the preferred one
            if res.group and res.version and res.version not in groups.setdefault(res.group, []):
                groups[res.group].append(res.version)
        return groups

    def _group_doc(self, group: str, versions: list[str]) -> dict[str, Any]:
        docs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": docs, "preferredVersion": docs[0]}

    async def _serve_apis(self, request: kmock.Request) -> kmock.Payload:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self._group_doc(g, vs) for g, vs in self._group_versions().items()],
        }

    async def _serve_group(self, request: kmock.Request) -> kmock.Payload:
        assert request.resource is not None
        versions = self._group_versions().get(request.resource.group or "")
        if not versions:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            **self._group_doc(request.resource.group or "", versions),
        }

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        return {
            "major": "1",
            "minor": "32",
            "gitVersion": "v1.32.0+modelrollout.localstack",
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.23",
            "compiler": "gc",
            "platform": "linux/amd64",
        }
