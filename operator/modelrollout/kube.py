"""Kubernetes API access: one client configuration, the experiment store, Events.

The client is configured once at startup from the standard resolution
(``--kubeconfig``, ``$KUBECONFIG`` read at call time -- kubernetes-client
reads it at import time otherwise -- ``~/.kube/config``, or the in-cluster
service account), and kopf logs in with the very same credentials, so the
operator never talks to two clusters by accident.
"""

from __future__ import annotations

import datetime
import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

import kubernetes
import urllib3

from modelrollout import GROUP, KIND, PLURAL, VERSION, ports, webhooks

logger = logging.getLogger(__name__)

COMPONENT = "modelrollout"


def load_configuration(kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """Resolve the cluster the way kubectl does, or in-cluster inside a pod."""
    configuration = kubernetes.client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        path = path or os.path.expanduser("~/.kube/config")
        kubernetes.config.load_kube_config(
            config_file=path.split(os.pathsep)[0], client_configuration=configuration
        )
    configuration.host = configuration.host.rstrip("/")  # "//apis/..." otherwise
    return configuration


# Seconds to wait for the API server to answer one request.  Without a limit a request on a
# connection that silently died (an API server failing over, a NAT dropping the flow) waits
# forever, and with it the experiment's tick and its deletion (the finalizer needs the same lock).
ENV_API_TIMEOUT = "MODELROLLOUT_API_TIMEOUT"
DEFAULT_API_TIMEOUT = 30.0


class _ApiClient(kubernetes.client.ApiClient):  # type: ignore[misc]  # kubernetes is untyped
    """An ApiClient whose requests time out unless a call asks for another timeout."""

    timeout: float = DEFAULT_API_TIMEOUT

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = self.timeout
        return super().call_api(*args, **kwargs)


def api_timeout() -> float:
    """The API timeout: ``$MODELROLLOUT_API_TIMEOUT`` seconds, or 30."""
    raw = os.environ.get(ENV_API_TIMEOUT, "")
    try:
        value = float(raw) if raw else DEFAULT_API_TIMEOUT
    except ValueError:
        raise ValueError(f"{ENV_API_TIMEOUT} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{ENV_API_TIMEOUT} must be more than 0 seconds, got {raw!r}")
    return value


def api_client(configuration: kubernetes.client.Configuration) -> kubernetes.client.ApiClient:
    client = _ApiClient(configuration)
    client.timeout = api_timeout()
    return client


class ExperimentStore:
    """Reads experiments and writes their status subresource."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._api = kubernetes.client.CustomObjectsApi(client)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body = self._api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return None
            raise
        return body if isinstance(body, dict) else None

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)}
        )


class KubeSecrets:
    """Reads one key of a Secret (a ``webhooks.Secrets``); errors name the Secret, never its value."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._api = kubernetes.client.CoreV1Api(client)

    def read(self, namespace: str, name: str, key: str) -> str:
        try:
            secret = self._api.read_namespaced_secret(name, namespace)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                raise webhooks.SecretError(f"Secret {namespace}/{name} not found") from None
            if e.status == 403:
                raise webhooks.SecretError(f"Secret {namespace}/{name}: not allowed to read it") from None
            raise webhooks.SecretError(f"Secret {namespace}/{name}: API error {e.status}") from None
        except urllib3.exceptions.HTTPError as e:
            raise webhooks.SecretError(f"Secret {namespace}/{name}: {type(e).__name__}") from None
        return webhooks.decode_secret_value(secret.data, f"{namespace}/{name}", key)


class KubeEvents:
    """A ``ports.EventSink`` posting core/v1 Events about one experiment."""

    def __init__(self, client: kubernetes.client.ApiClient, body: Mapping[str, Any]) -> None:
        self._api = kubernetes.client.CoreV1Api(client)
        meta = body.get("metadata", {})
        self._namespace = meta.get("namespace", "default")
        self._involved = kubernetes.client.V1ObjectReference(
            api_version=f"{GROUP}/{VERSION}",
            kind=KIND,
            name=meta.get("name"),
            namespace=self._namespace,
            uid=meta.get("uid"),
            resource_version=meta.get("resourceVersion"),
        )

    def emit(self, type: ports.EventType, reason: str, message: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        event = kubernetes.client.CoreV1Event(
            metadata=kubernetes.client.V1ObjectMeta(
                # kubectl's naming: <object>.<unique hex>; no generateName round trip needed.
                name=f"{self._involved.name}.{secrets.token_hex(8)}",
                namespace=self._namespace,
            ),
            involved_object=self._involved,
            type=type,
            reason=reason,
            message=message[:1024],
            source=kubernetes.client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            reporting_instance=os.environ.get("HOSTNAME", COMPONENT),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self._api.create_namespaced_event(self._namespace, event)
        except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError) as e:
            # An Event is a courtesy: losing one must never stop a rollout.
            logger.warning(
                "could not post Event %s for %s/%s: %s", reason, self._namespace, self._involved.name, e
            )


class KubeReports:
    """Writes an experiment's report into a ConfigMap it owns (deleted with the experiment)."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._api = kubernetes.client.CoreV1Api(client)

    def write(self, body: Mapping[str, Any], name: str, key: str, text: str) -> None:
        meta = body.get("metadata", {})
        namespace = meta["namespace"]
        config_map: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": COMPONENT},
            },
            "data": {key: text},
        }
        if meta.get("uid"):
            config_map["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": meta.get("name"),
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ]
        try:
            self._api.create_namespaced_config_map(namespace, config_map)
        except kubernetes.client.ApiException as e:
            if e.status != 409:
                raise
            self._api.patch_namespaced_config_map(name, namespace, {"data": {key: text}})
