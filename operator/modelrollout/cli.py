"""The ``modelrollout`` command: ``run`` the operator, ``demo`` the loop locally, ``simulate`` decisions."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from typing import Any

from modelrollout import DEFAULT_WORKERS

ENV_PROMETHEUS_URL = "MODELROLLOUT_PROMETHEUS_URL"
# Credentials for the default Prometheus: files (a mounted Secret), never values on a command line.
ENV_PROMETHEUS_BEARER_TOKEN_FILE = "MODELROLLOUT_PROMETHEUS_BEARER_TOKEN_FILE"
ENV_PROMETHEUS_USERNAME = "MODELROLLOUT_PROMETHEUS_USERNAME"
ENV_PROMETHEUS_PASSWORD_FILE = "MODELROLLOUT_PROMETHEUS_PASSWORD_FILE"
ENV_PROMETHEUS_CA_FILE = "MODELROLLOUT_PROMETHEUS_CA_FILE"
ENV_PROMETHEUS_INSECURE_SKIP_VERIFY = "MODELROLLOUT_PROMETHEUS_INSECURE_SKIP_VERIFY"


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
    _add_prometheus_credentials(run)
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
        "--peering",
        metavar="NAME",
        help="coordinate replicas through kopf's peering object NAME: only the highest priority acts",
    )
    run.add_argument(
        "--priority",
        type=int,
        help="this replica's peering priority (default: random, so exactly one replica acts)",
    )
    run.add_argument(
        "--peering-lifetime",
        type=_flag(_lifetime),
        metavar="SECONDS",
        help="how long a silent replica counts as alive: a standby takes over at most this long "
        "after the active replica dies (default 60)",
    )
    run.add_argument(
        "--liveness", metavar="URL", help="serve kopf's health endpoint, e.g. http://0.0.0.0:8081/healthz"
    )
    run.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve the operator's metrics on :PORT/metrics"
    )
    run.add_argument(
        "--workers",
        type=_flag(_count),
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"threads that run experiments' ticks (default {DEFAULT_WORKERS}: a tick mostly waits on the "
        "API or Prometheus)",
    )
    run.add_argument(
        "--report-configmaps",
        action="store_true",
        help="write each A/B test's and bandit's report into a ConfigMap <experiment>-report once it has "
        "an outcome (needs create and patch on configmaps)",
    )
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default info)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="same as --log-level=debug")
    run.add_argument(
        "--log-format",
        default="full",
        choices=["full", "plain", "json"],
        help="full: time, logger, level, [namespace/name] and message (default); plain: [namespace/name] "
        "and message; json: one object per line, the experiment under 'object'",
    )

    demo = commands.add_parser("demo", help="a whole rollout on this machine: emulator, mesh, Prometheus")
    demo.add_argument(
        "--scenario",
        default="good",
        help="good | bad-errors | bad-latency | shadow | shadow-bad | ab-win | ab-lose | aa | bandit",
    )
    demo.add_argument("--rps", type=float, default=200.0, help="simulated requests per second")
    demo.add_argument("--timeout", type=float, default=240.0, help="give up after this many seconds")

    _add_simulate(commands)
    _add_plan(commands)
    _add_report(commands)

    args = parser.parse_args(argv)
    if args.command == "simulate":
        sys.exit(_simulate(args))
    if args.command == "plan":
        sys.exit(_plan(args))
    if args.command == "report":
        sys.exit(_report(args))
    if args.command == "run":
        args.prometheus_credentials = _prometheus_credentials(run, args)
        _run(args)
    elif args.command == "demo":
        from modelrollout.localstack import demo as demo_module

        sys.exit(demo_module.main(args.scenario, rps=args.rps, timeout=args.timeout))


def _add_prometheus_credentials(run: argparse.ArgumentParser) -> None:
    env = os.environ.get
    note = "read at every evaluation, so a rotated Secret takes effect; sent to --prometheus-url only"
    run.add_argument(
        "--prometheus-bearer-token-file",
        metavar="PATH",
        default=env(ENV_PROMETHEUS_BEARER_TOKEN_FILE),
        help=f"send this file's token as a bearer token ({note}; env {ENV_PROMETHEUS_BEARER_TOKEN_FILE})",
    )
    run.add_argument(
        "--prometheus-username",
        default=env(ENV_PROMETHEUS_USERNAME),
        help=f"basic-auth username, with --prometheus-password-file (env {ENV_PROMETHEUS_USERNAME})",
    )
    run.add_argument(
        "--prometheus-password-file",
        metavar="PATH",
        default=env(ENV_PROMETHEUS_PASSWORD_FILE),
        help=f"basic-auth password in this file ({note}; env {ENV_PROMETHEUS_PASSWORD_FILE})",
    )
    run.add_argument(
        "--prometheus-ca-file",
        metavar="PATH",
        default=env(ENV_PROMETHEUS_CA_FILE),
        help=f"trust this CA bundle (PEM) for --prometheus-url (env {ENV_PROMETHEUS_CA_FILE})",
    )
    run.add_argument(
        "--prometheus-insecure-skip-verify",
        action="store_true",
        default=env(ENV_PROMETHEUS_INSECURE_SKIP_VERIFY, "").lower() in ("1", "true", "yes"),
        help=f"do not verify --prometheus-url's certificate (env {ENV_PROMETHEUS_INSECURE_SKIP_VERIFY})",
    )


def _prometheus_credentials(run: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """The checked credential flags, or exit 2 naming the problem (files must exist; their content is
    read at use, so an unreadable one later is reported per experiment, not fatal)."""
    from modelrollout import prometheus_auth

    credentials = prometheus_auth.OperatorCredentials(
        bearer_token_file=args.prometheus_bearer_token_file or None,
        username=args.prometheus_username or None,
        password_file=args.prometheus_password_file or None,
        ca_file=args.prometheus_ca_file or None,
        insecure_skip_verify=args.prometheus_insecure_skip_verify,
    )
    problems = credentials.problems()
    for flag, path in (
        ("--prometheus-bearer-token-file", credentials.bearer_token_file),
        ("--prometheus-password-file", credentials.password_file),
        ("--prometheus-ca-file", credentials.ca_file),
    ):
        if path and not os.path.isfile(path):
            problems.append(f"{flag} {path}: no such file")
    if problems:
        run.error("; ".join(problems))
    return credentials


def _add_simulate(commands: Any) -> None:
    simulate = commands.add_parser(
        "simulate", help="replay a scenario many times through the decision core, in virtual time"
    )
    simulate.add_argument("scenario", metavar="SCENARIO.yaml", help="scenario file (docs/simulate.md)")
    simulate.add_argument("--runs", type=int, default=1000, help="seeded replications (default 1000)")
    simulate.add_argument("--seed", type=int, default=0, help="seed of run 0; run i uses seed + i")
    simulate.add_argument(
        "--policy", default="modelrollout", help="modelrollout (default) | flagger | argo | kayenta"
    )
    simulate.add_argument("--workers", type=int, default=1, help="processes to run replications in")
    simulate.add_argument("--json", action="store_true", help="print the summary as JSON")


def _simulate(args: argparse.Namespace) -> int:
    import json
    import time

    from modelrollout.sim import engine, policies, scenario

    if args.policy not in policies.NAMES:
        print(f"unknown policy {args.policy!r}; choose one of: {', '.join(policies.NAMES)}", file=sys.stderr)
        return 2
    if args.runs < 1:
        print("--runs must be at least 1", file=sys.stderr)
        return 2
    try:
        chosen = scenario.load(args.scenario)
    except (OSError, scenario.ScenarioError) as e:
        print(f"{args.scenario}: {e}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    summary = engine.run(chosen, runs=args.runs, seed=args.seed, policy=args.policy, workers=args.workers)
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    else:
        print(f"{args.scenario}: policy {args.policy}, seed {args.seed}")
        print(summary.describe())
        print(f"({args.runs} runs in {elapsed:.1f}s: {args.runs / elapsed:.0f} runs/s)")
    return 0


def _add_plan(commands: Any) -> None:
    plan = commands.add_parser(
        "plan", help="the smallest regression a rollout plan catches, and the step length a given one needs"
    )
    plan.add_argument("--rate", required=True, type=_flag(_positive), help="requests/s, both variants")
    plan.add_argument(
        "--steps", default="5,25,50,100", type=_flag(_steps), help="weights in %% (default 5,25,50,100)"
    )
    plan.add_argument("--interval", default="1m", type=_flag(_duration), help="default 1m")
    plan.add_argument("--step-duration", type=_flag(_duration), help="minStepDuration (default: --interval)")
    plan.add_argument("--baseline-error-rate", required=True, type=_flag(_share), help="e.g. 0.01")
    plan.add_argument(
        "--baseline-slow-share",
        default=0.05,
        type=_flag(_share),
        help="baseline share of requests above the latency edge (default 0.05: the edge sits near the p95)",
    )
    plan.add_argument("--min-samples", default=100, type=_flag(_samples), help="minSamples (default 100)")
    plan.add_argument("--alpha", default=0.05, type=_flag(_share), help="default 0.05")
    plan.add_argument("--guardrails", default=2, type=_flag(_count), help="sequential guardrails (default 2)")
    plan.add_argument("--effect", type=_flag(_ratio), help="a rate ratio to plan for, e.g. 2")
    plan.add_argument("--power", default=0.8, type=_flag(_share), help="default 0.8")
    plan.add_argument("--runs", default=2000, type=_flag(_count), help="Monte Carlo runs (default 2000)")
    plan.add_argument("--seed", default=0, type=int, help="default 0")
    plan.add_argument("--json", action="store_true", help="print the result as JSON")


def _plan(args: argparse.Namespace) -> int:
    import json

    from modelrollout.core import planning

    try:
        chosen = planning.Plan(
            rate=args.rate,
            steps=args.steps,
            step_duration=args.step_duration or args.interval,
            interval=args.interval,
            baseline_rate=args.baseline_error_rate,
            alpha=args.alpha,
            guardrails=args.guardrails,
            min_samples=args.min_samples,
        )
        document = planning.report(
            chosen,
            slow_share=args.baseline_slow_share,
            effect=args.effect,
            power=args.power,
            runs=args.runs,
            seed=args.seed,
        )
    except planning.PlanError as e:  # the flags were checked; this names the flag all the same
        special = {"baseline_rate": "baseline-error-rate", "slow_share": "baseline-slow-share"}
        flag = "--" + special.get(e.field, e.field.replace("_", "-"))
        print(f"modelrollout plan: argument {flag}: {e.reason}", file=sys.stderr)
        return 2
    print(json.dumps(document, indent=2) if args.json else planning.format_report(document))
    return 0


def _add_report(commands: Any) -> None:
    report = commands.add_parser(
        "report", help="an A/B test's or a bandit's report for people: verdict, design, results, plots"
    )
    report.add_argument("name", nargs="?", metavar="NAME", help="the ModelExperiment (or give --file)")
    report.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    report.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    report.add_argument("--context", help="kubeconfig context (default: the current one)")
    report.add_argument(
        "--file",
        metavar="PATH",
        help="render a saved object instead: YAML or JSON as kubectl get mexp NAME -o yaml writes it "
        "(- reads stdin)",
    )
    report.add_argument(
        "--format", choices=["md", "html"], help="md or html (default: html for an -o FILE.html, else md)"
    )
    report.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write here (default: stdout); Markdown's plots are PNG files written beside FILE",
    )
    report.add_argument("--no-plots", action="store_true", help="leave the plots out")


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from modelrollout import report

    prog = "modelrollout report"
    if args.name is None and args.file is None:
        print(f"{prog}: give the experiment's NAME (read from the cluster) or --file PATH", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output and args.output != "-" else None
    by_suffix = output is not None and output.suffix.lower() in (".html", ".htm")
    fmt: report.Format = "html" if (args.format or ("html" if by_suffix else "md")) == "html" else "md"
    try:
        if args.file is not None:
            experiment = report.load_file(args.file, args.name)
        else:
            experiment = report.fetch(args.name, args.namespace, args.kubeconfig, args.context)
    except report.ReportError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    # Markdown on stdout has nowhere to put its PNG files: no plots (and no note about them) there.
    plots = not args.no_plots and (fmt == "html" or output is not None)
    result = report.build(experiment, fmt, plots=plots, output=output)
    if output is None:
        sys.stdout.write(result.text)
        return 0
    try:
        output.write_text(result.text, encoding="utf-8")
    except OSError as e:
        print(f"{prog}: cannot write {output}: {e.strerror or e}", file=sys.stderr)
        return 1
    written = "".join(f", {path}" for path in result.assets)
    print(f"wrote {output}{written}", file=sys.stderr)
    return 0


def _flag(convert: Any) -> Any:
    """An argparse ``type``: argparse names the flag, the message says why and shows the value."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{e} (got {text!r})") from None

    return parse


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("must be a number") from None


def _positive(text: str) -> float:
    value = _number(text)
    if not 0 < value < float("inf"):
        raise ValueError("must be a positive number")
    return value


def _share(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise ValueError("must be a number between 0 and 1 (exclusive)")
    return value


def _ratio(text: str) -> float:
    value = _number(text)
    if not 1 < value < float("inf"):
        raise ValueError("must be a rate ratio above 1, e.g. 2 for twice the baseline's rate")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if value < 1:
        raise ValueError("must be a whole number >= 1")
    return value


def _samples(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if value < 0:
        raise ValueError("must be a whole number >= 0")
    return value


def _steps(text: str) -> list[int]:
    try:
        steps = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError("must be comma-separated whole percentages, e.g. 5,25,50,100") from None
    if any(not 1 <= w <= 100 for w in steps) or any(steps[i] <= steps[i - 1] for i in range(1, len(steps))):
        raise ValueError("must be increasing percentages in 1..100, e.g. 5,25,50,100")
    return steps


def _duration(text: str) -> Any:
    from modelrollout import durations

    return durations.parse_duration(text)


def _lifetime(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("must be a whole number of seconds") from None
    if value < 3:  # kopf's keep-alives come every second at best: leave them room to arrive
        raise ValueError("must be at least 3 seconds")
    return value


class _PeeringNotFound(logging.Filter):
    """kopf says only in debug that the peering object is missing, while the replica waits paused."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            return True
        message = record.getMessage()
        if not (message.startswith("Keep-alive in ") and message.endswith(": not found.")):
            return logging.getLogger().isEnabledFor(record.levelno)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args = (
            f"{message} This replica stays paused until the peering object exists "
            "(kopf.dev/v1 KopfPeering in each watched namespace, ClusterKopfPeering without --namespace).",
            None,
        )
        return True


def _quiet_event_handler(record: logging.LogRecord) -> bool:
    """kopf logs "Handler 'noticed' succeeded." for every watch event (every status write): debug only."""
    return not (record.levelno == logging.INFO and record.getMessage() == "Handler 'noticed' succeeded.")


def _warn_when_peering_is_missing() -> None:
    peering_logger = logging.getLogger("kopf._core.engines.peering")
    if not peering_logger.isEnabledFor(logging.DEBUG):
        peering_logger.setLevel(logging.DEBUG)
        peering_logger.addFilter(_PeeringNotFound())


def _run(args: argparse.Namespace) -> None:
    import kopf

    from modelrollout import handlers, kube, runtime

    level = "debug" if args.verbose else args.log_level
    log_format = kopf.LogFormat[args.log_format.upper()]
    # Lines about one experiment name it: kopf's own ([namespace/name]) and ours (Events, errors).
    kopf.configure(
        verbose=level == "debug", log_format=log_format, log_prefix=log_format is not kopf.LogFormat.JSON
    )
    logging.getLogger().setLevel(level.upper())
    if level != "debug":
        logging.getLogger("kopf.objects").addFilter(_quiet_event_handler)
    if level != "debug":
        logging.getLogger("kubernetes").setLevel(logging.WARNING)
    options = runtime.Options(
        kubeconfig=args.kubeconfig,
        prometheus_url=args.prometheus_url,
        istio_version=args.istio_version,
        metrics_port=args.metrics_port,
        report_configmaps=args.report_configmaps,
        workers=args.workers,
        prometheus_credentials=args.prometheus_credentials,
    )
    configuration = kube.load_configuration(options.kubeconfig)
    memo = kopf.Memo(runtime=runtime.Runtime(options, configuration))
    settings = kopf.OperatorSettings()
    peering = {} if args.standalone or not args.peering else {"peering_name": args.peering}
    if peering:
        # Equal priorities would let every replica act; a random one lets exactly one.
        peering["priority"] = args.priority if args.priority is not None else secrets.randbelow(2**31)
        settings.peering.lifetime = args.peering_lifetime or settings.peering.lifetime
        memo.settle = handlers.PEERING_SETTLE
        _warn_when_peering_is_missing()
    kopf.run(
        settings=settings,
        standalone=args.standalone or not args.peering,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        memo=memo,
        **peering,
    )
