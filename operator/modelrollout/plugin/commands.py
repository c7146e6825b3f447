"""``kubectl mexp``: the commands, their flags and their API calls (formatting is in ``render``)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes
import urllib3
import yaml

from modelrollout import GROUP, PLURAL, VERSION, kube
from modelrollout.core.model import Gate
from modelrollout.plugin import render

PROG = "kubectl mexp"
TIMEOUT = 30.0  # seconds per API request
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
GITOPS_WARNING = (
    "warning: spec.paused is part of the spec: under GitOps with self-heal (Argo CD, Flux) the copy "
    "in Git wins and undoes this; change spec.paused in Git too"
)
GATE_EFFECT = {
    Gate.PROMOTE: "the operator promotes the candidate (100%) at its next reconcile",
    Gate.ABORT: "the operator rolls back to the baseline (100%) at its next reconcile",
    Gate.RESTART: "the operator restarts the experiment from its first step with the current spec",
}


class PluginError(Exception):
    """A failure to report in one line, with exit code 1."""


# ---------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and steer ModelExperiments (modelrollout.io/v1alpha1).",
        epilog="Exit codes: 0 ok, 1 API error or refused action, 2 usage error.",
    )
    _connection_flags(parser, default=None)  # before the command (kubectl mexp -n ml get) ...
    connection = argparse.ArgumentParser(add_help=False)
    _connection_flags(connection, default=argparse.SUPPRESS)  # ... or after it, without clobbering
    named = argparse.ArgumentParser(add_help=False, parents=[connection])
    named.add_argument("name", help="the ModelExperiment's name")

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    get = commands.add_parser("get", parents=[connection], help="list experiments as a table")
    get.add_argument("name", nargs="?", help="only this experiment")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="across all namespaces")
    get.add_argument(
        "-o",
        "--output",
        choices=["table", "wide", "json", "yaml"],
        default="table",
        help="table (default); wide adds INTERVAL, FAILED and MESSAGE; json or yaml: the objects",
    )
    get.set_defaults(command_parser=get)

    status = commands.add_parser("status", parents=[named], help="phase, weights, metrics, history of one")
    status.add_argument(
        "--history", type=_count, default=10, metavar="N", help="history entries to show (default 10)"
    )

    for gate, what in (
        (Gate.PROMOTE, "send all traffic to the candidate now"),
        (Gate.ABORT, "roll back to the baseline now"),
        (Gate.RESTART, "run the experiment again from its first step"),
    ):
        commands.add_parser(gate.short, parents=[named], help=f"{what} (annotation {gate.value})")
    commands.add_parser("pause", parents=[named], help="set spec.paused=true: hold at the current weights")
    commands.add_parser("resume", parents=[named], help="set spec.paused=false: carry on")
    return parser


def _connection_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", default=default, help="kubeconfig context (default: the current one)")
    parser.add_argument(
        "-n",
        "--namespace",
        default=default,
        help="namespace (default: the context's namespace, else 'default')",
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


# ----------------------------------------------------------------------------------------- entry
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "get" and args.name and args.all_namespaces:
            args.command_parser.error("a name cannot be combined with -A/--all-namespaces")
    except SystemExit as e:  # usage errors (2) and --help (0), returned rather than raised
        return e.code if isinstance(e.code, int) else 0
    try:
        return run(args)
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    client, default_namespace = connect(args.kubeconfig, args.context)
    with client:
        session = Session(kubernetes.client.CustomObjectsApi(client), client.configuration.host)
        namespace: str = args.namespace or default_namespace
        now = datetime.datetime.now(datetime.UTC)
        if args.command == "get":
            return _get(session, args, namespace, now)
        if args.command == "status":
            print(render.status_report(session.get(namespace, args.name), now, args.history))
            return 0
        if args.command in ("pause", "resume"):
            return _pause(session, namespace, args.name, paused=args.command == "pause")
        gate = next(g for g in Gate if g.short == args.command)
        return _gate(session, namespace, args.name, gate, now)


def _get(session: Session, args: argparse.Namespace, namespace: str, now: datetime.datetime) -> int:
    if args.name:
        items = [session.get(namespace, args.name)]
    else:
        items = session.list(None if args.all_namespaces else namespace)
    if args.output in ("json", "yaml"):
        document: Any = items[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": items}
        if args.output == "json":
            print(json.dumps(document, indent=4))
        else:
            print(yaml.safe_dump(document, sort_keys=False).rstrip("\n"))
        return 0
    if not items:
        where = "" if args.all_namespaces else f" in {namespace} namespace"
        print(f"No resources found{where}.", file=sys.stderr)
        return 0
    print(render.get_table(items, now, namespaces=args.all_namespaces, wide=args.output == "wide"))
    return 0


def _gate(session: Session, namespace: str, name: str, gate: Gate, now: datetime.datetime) -> int:
    body = session.get(namespace, name)
    refused = render.refusal(gate.short, body)
    if refused:
        raise PluginError(refused)
    current = ((body.get("metadata") or {}).get("annotations") or {}).get(gate.value)
    value = render.gate_value(now, current)
    session.patch(namespace, name, {"metadata": {"annotations": {gate.value: value}}})
    print(f"modelexperiment {namespace}/{name} annotated {gate.value}={value}: {GATE_EFFECT[gate]}")
    return 0


def _pause(session: Session, namespace: str, name: str, *, paused: bool) -> int:
    body = session.get(namespace, name)
    refused = render.refusal("pause" if paused else "resume", body)
    if refused:
        raise PluginError(refused)
    verb = "paused" if paused else "resumed"
    if bool((body.get("spec") or {}).get("paused")) is paused:
        print(f"modelexperiment {namespace}/{name} is already {verb} (spec.paused={str(paused).lower()})")
        return 0
    session.patch(namespace, name, {"spec": {"paused": paused}})
    print(f"modelexperiment {namespace}/{name} {verb} (spec.paused={str(paused).lower()})")
    print(GITOPS_WARNING, file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------ API access
class Session:
    """ModelExperiment reads and merge patches, each failure turned into one clear sentence."""

    def __init__(self, api: kubernetes.client.CustomObjectsApi, host: str) -> None:
        self._api, self._host = api, host

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        body = self._call(
            lambda: self._api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT
            ),
            namespace,
            name,
        )
        return dict(body)

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            listing = self._call(
                lambda: self._api.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=TIMEOUT)
            )
        else:
            listing = self._call(
                lambda: self._api.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, _request_timeout=TIMEOUT
                ),
                namespace,
            )
        items = [dict(i) for i in listing.get("items") or []]
        return sorted(items, key=render.identity)

    def patch(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """One JSON merge patch (kubernetes-client sends a dict body as merge-patch+json)."""
        self._call(
            lambda: self._api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, dict(body), _request_timeout=TIMEOUT
            ),
            namespace,
            name,
        )

    def _call(self, fn: Callable[[], Any], namespace: str | None = None, name: str | None = None) -> Any:
        try:
            return fn()
        except kubernetes.client.ApiException as e:
            raise PluginError(self._explain(e, namespace, name)) from None
        except urllib3.exceptions.HTTPError as e:
            reason = getattr(e, "reason", None) or e  # MaxRetryError wraps the connection's error
            raise PluginError(f"cannot reach the Kubernetes API at {self._host}: {reason}") from None

    @staticmethod
    def _explain(e: kubernetes.client.ApiException, namespace: str | None, name: str | None) -> str:
        try:
            status = json.loads(e.body or "{}")
        except ValueError:
            status = {}
        status = status if isinstance(status, dict) else {}
        message = status.get("message") or e.reason or "no message"
        where = f' in namespace "{namespace}"' if namespace else ""
        if e.status == 404:
            details = status.get("details") or {}
            if name is not None and details.get("name") == name:
                return f'modelexperiment "{name}" not found{where}'
            return (
                f"the server does not serve {PLURAL}.{GROUP}/{VERSION} ({message}): "
                "is the modelrollout CRD installed?"
            )
        what = (
            f'modelexperiment "{name}"{where}' if name else f"modelexperiments{where or ' in all namespaces'}"
        )
        reason = status.get("reason") or e.reason
        return f"{what}: the API server answered {e.status} {reason}: {message}"


# ---------------------------------------------------------------------------------------- config
def connect(kubeconfig: str | None, context: str | None) -> tuple[kubernetes.client.ApiClient, str]:
    """A client for the cluster kubectl would talk to, and the namespace it would default to."""
    path = _kubeconfig_path(kubeconfig)
    if path is not None and not os.path.exists(path):
        raise PluginError(f"no kubeconfig at {path} (set --kubeconfig or $KUBECONFIG)")
    try:
        if context is None:
            configuration = kube.load_configuration(kubeconfig)
        else:
            configuration = _load_with_context(kubeconfig, context)
        namespace = _default_namespace(kubeconfig, context)
    except (kubernetes.config.ConfigException, OSError, ValueError, yaml.YAMLError) as e:
        raise PluginError(f"cannot load the Kubernetes configuration: {e}") from None
    configuration.retries = 0  # a CLI reports an unreachable server at once, without retry chatter
    return kubernetes.client.ApiClient(configuration), namespace


def _kubeconfig_path(kubeconfig: str | None) -> str | None:
    """The file kube.load_configuration reads, or None when it would go in-cluster."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    return (path or os.path.expanduser("~/.kube/config")).split(os.pathsep)[0]


def _load_with_context(kubeconfig: str | None, context: str) -> kubernetes.client.Configuration:
    path = _kubeconfig_path(kubeconfig)
    if path is None:
        raise PluginError("--context needs a kubeconfig (--kubeconfig or $KUBECONFIG); none is set")
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    configuration.host = configuration.host.rstrip("/")
    return configuration


def _default_namespace(kubeconfig: str | None, context: str | None) -> str:
    path = _kubeconfig_path(kubeconfig)
    if path is None:
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"
    contexts, current = kubernetes.config.list_kube_config_contexts(config_file=path)
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")
