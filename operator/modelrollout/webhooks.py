"""HTTP calls the operator makes of its own accord: gate webhooks and post-rollout webhooks.

A call is one JSON POST with a per-call timeout, retried (with a short
backoff) on what may pass -- connection errors, timeouts, 5xx -- and never on
an answer: a 403 from a gate is a "no", not a fault.  URLs and tokens may live
in Secrets; they are read at call time, and no URL or token ever reaches a
log line, an Event or the status: outcomes name the webhook, not where it is.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from modelrollout import GROUP, KIND, VERSION, spec_hooks
from modelrollout.core import model

logger = logging.getLogger(__name__)

# Seconds between attempts: 0.5, 1, 2, ... capped (calls run in a tick's worker thread).
BACKOFF = 0.5
MAX_BACKOFF = 5.0
USER_AGENT = "modelrollout-operator"


class SecretError(Exception):
    """A Secret or one of its keys a spec refers to cannot be read (the message never holds its value)."""


class Secrets(Protocol):
    def read(self, namespace: str, name: str, key: str) -> str: ...


@dataclasses.dataclass(frozen=True)
class Response:
    ok: bool  # a 2xx answer
    status: int | None  # the HTTP status; None when no answer came
    detail: str  # in words, safe to show: never the URL


Post = Callable[[str, Mapping[str, Any], float, Mapping[str, str]], Response]


def post_json(url: str, payload: Mapping[str, Any], timeout: float, headers: Mapping[str, str]) -> Response:
    """One POST; any failure becomes a Response (this never raises for network trouble)."""
    data = json.dumps(payload, default=str).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("User-Agent", USER_AGENT)
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Response(True, answer.status, f"HTTP {answer.status}")
    except urllib.error.HTTPError as e:
        body = e.read(200).decode("utf-8", "replace").strip().replace("\n", " ")
        return Response(False, e.code, f"HTTP {e.code}" + (f": {body}" if body else ""))
    except TimeoutError:
        return Response(False, None, f"no answer within {timeout:g}s")
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            return Response(False, None, f"no answer within {timeout:g}s")
        return Response(False, None, f"unreachable: {_reason(reason)}")
    except (OSError, http.client.HTTPException) as e:
        return Response(False, None, f"failed: {type(e).__name__}")


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return type(reason).__name__ if isinstance(reason, BaseException) else str(reason)


def _retryable(response: Response) -> bool:
    return response.status is None or response.status >= 500


class Caller:
    """Calls endpoints of a spec (webhooks, notification targets) with their retries and secrets."""

    def __init__(self, secrets: Secrets, post: Post = post_json, sleep: Callable[[float], None] = time.sleep):
        self._secrets = secrets
        self._post = post
        self._sleep = sleep

    def call(self, endpoint: spec_hooks.Endpoint, namespace: str, payload: Mapping[str, Any]) -> Response:
        try:
            url, headers = self._resolve(endpoint, namespace)
        except SecretError as e:
            return Response(False, None, str(e))
        timeout = endpoint.timeout.total_seconds()
        response = self._post(url, payload, timeout, headers)
        for attempt in range(endpoint.retries):
            if not _retryable(response):
                break
            self._sleep(min(BACKOFF * 2**attempt, MAX_BACKOFF))
            response = self._post(url, payload, timeout, headers)
        return response

    def _resolve(self, endpoint: spec_hooks.Endpoint, namespace: str) -> tuple[str, dict[str, str]]:
        if endpoint.url is not None:
            url = endpoint.url
        else:
            assert endpoint.url_from is not None  # exactly one of them (spec validation)
            url = self._secret(endpoint.url_from, namespace, "urlFrom").strip()
            if not spec_hooks.is_url(url):
                ref = endpoint.url_from.secret_key_ref
                raise SecretError(f"Secret {ref.name} key {ref.key} (urlFrom) does not hold an http(s) URL")
        headers: dict[str, str] = {}
        if endpoint.token_from is not None:
            token = self._secret(endpoint.token_from, namespace, "tokenFrom").strip()
            headers["Authorization"] = f"Bearer {token}"
        return url, headers

    def _secret(self, source: spec_hooks.ValueFrom, namespace: str, field: str) -> str:
        ref = source.secret_key_ref
        try:
            return self._secrets.read(namespace, ref.name, ref.key)
        except SecretError as e:
            raise SecretError(f"{field}: {e}") from None

    # ------------------------------------------------------------------- gates

    def ask(
        self, hooks: Sequence[spec_hooks.WebhookSpec], body: Mapping[str, Any], status: Mapping[str, Any]
    ) -> tuple[model.WebhookOutcome, ...]:
        """Every webhook of one gate, in order; each answers for itself."""
        namespace = body.get("metadata", {}).get("namespace", "default")
        outcomes = []
        for hook in hooks:
            response = self.call(hook, namespace, gate_payload(hook, body, status))
            outcomes.append(model.WebhookOutcome(hook.name, response.ok, response.detail))
            logger.info(
                "%s/%s: %s webhook %s: %s",
                namespace,
                body.get("metadata", {}).get("name"),
                hook.type.value,
                hook.name,
                response.detail,
            )
        return tuple(outcomes)


def gate_payload(
    hook: spec_hooks.WebhookSpec, body: Mapping[str, Any], status: Mapping[str, Any]
) -> dict[str, Any]:
    """What a webhook receives: which gate, which experiment, where it is, and its analysis."""
    meta = body.get("metadata", {})
    experiment_spec = body.get("spec") or {}
    return {
        "type": hook.type.value,
        "webhook": hook.name,
        "metadata": dict(hook.metadata),
        "experiment": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "generation": meta.get("generation"),
            "baseline": (experiment_spec.get("baseline") or {}).get("workload"),
            "candidate": (experiment_spec.get("candidate") or {}).get("workload"),
        },
        "phase": status.get("phase"),
        "step": status.get("step"),
        "candidateWeight": status.get("candidateWeight"),
        "weights": status.get("weights"),
        "decision": status.get("decision"),
        "message": status.get("message"),
        "analysis": {
            "metrics": status.get("metrics", []),
            "samples": status.get("samples", {}),
            "plan": status.get("plan"),
        },
        "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def decode_secret_value(data: Mapping[str, Any] | None, name: str, key: str) -> str:
    """A key of a Secret's ``data`` (base64), or a SecretError naming the Secret and key."""
    if not data or key not in data:
        raise SecretError(f"Secret {name} has no key {key}")
    try:
        return base64.b64decode(data[key], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise SecretError(f"Secret {name} key {key} is not base64-encoded UTF-8") from None
