"""The ``modelrollout`` command: ``run`` the operator, or ``demo`` the whole loop locally."""

from __future__ import annotations

import argparse
import logging
import os
import sys

ENV_PROMETHEUS_URL = "MODELROLLOUT_PROMETHEUS_URL"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="modelrollout", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator against the cluster your kubeconfig points at")
    run.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)"
    )
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; default: all namespaces)",
    )
    run.add_argument(
        "--prometheus-url",
        default=os.environ.get(ENV_PROMETHEUS_URL),
        help=f"default Prometheus for experiments without spec.prometheus.address (env {ENV_PROMETHEUS_URL})",
    )
    run.add_argument(
        "--istio-version",
        default="v1",
        choices=["v1", "v1beta1"],
        help="networking.istio.io API version to use for VirtualServices",
    )
    run.add_argument(
        "--standalone",
        action="store_true",
        help="do not coordinate with other operator replicas (kopf peering)",
    )
    run.add_argument(
        "--liveness", metavar="URL", help="serve kopf's health endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    run.add_argument("-v", "--verbose", action="store_true")

    demo = commands.add_parser("demo", help="a whole rollout on this machine: emulator, mesh, Prometheus")
    demo.add_argument("--scenario", default="good", help="good | bad-errors | bad-latency")
    demo.add_argument("--rps", type=float, default=200.0, help="simulated requests per second")
    demo.add_argument("--timeout", type=float, default=240.0, help="give up after this many seconds")

    args = parser.parse_args(argv)
    if args.command == "run":
        _run(args)
    elif args.command == "demo":
        from modelrollout.localstack import demo as demo_module

        sys.exit(demo_module.main(args.scenario, rps=args.rps, timeout=args.timeout))


def _run(args: argparse.Namespace) -> None:
    import kopf

    from modelrollout import handlers, kube, runtime

    del handlers  # imported for its decorators
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    if not args.verbose:
        logging.getLogger("kubernetes").setLevel(logging.WARNING)
    options = runtime.Options(
        kubeconfig=args.kubeconfig, prometheus_url=args.prometheus_url, istio_version=args.istio_version
    )
    configuration = kube.load_configuration(options.kubeconfig)
    memo = kopf.Memo(runtime=runtime.Runtime(options, configuration))
    kopf.run(
        standalone=args.standalone,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        memo=memo,
    )
