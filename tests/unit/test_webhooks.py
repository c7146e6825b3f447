"""Webhook calls, notifications and the operator's metrics against real local HTTP servers.

Each server is a ``http.server`` on 127.0.0.1 that records what it received
and answers what the test scripts; nothing is mocked below the socket.
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from modelrollout import metrics, notify, ports, spec, spec_hooks, webhooks
from modelrollout.core import model
from modelrollout.core.model import Phase

Reply = Callable[[int], tuple[int, str, float]]  # attempt -> (status, body, delay seconds)


@dataclasses.dataclass
class Server:
    url: str
    received: list[dict[str, Any]]
    headers: list[dict[str, str]]


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], Server]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(reply: Reply) -> Server:
        received: list[dict[str, Any]] = []
        headers: list[dict[str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                headers.append(dict(self.headers))
                status, body, delay = reply(len(received))
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return Server(f"http://127.0.0.1:{server.server_address[1]}/hook", received, headers)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class Secrets:
    def __init__(self, data: dict[tuple[str, str], dict[str, str]]) -> None:
        self.data = {
            key: {k: base64.b64encode(v.encode()).decode() for k, v in d.items()} for key, d in data.items()
        }

    def read(self, namespace: str, name: str, key: str) -> str:
        if (namespace, name) not in self.data:
            raise webhooks.SecretError(f"Secret {namespace}/{name} not found")
        return webhooks.decode_secret_value(self.data[namespace, name], f"{namespace}/{name}", key)


class Events:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, str, str]] = []

    def emit(self, type: ports.EventType, reason: str, message: str) -> None:
        self.emitted.append((type, reason, message))


BODY = {
    "metadata": {"name": "churn-v2", "namespace": "ml", "uid": "u-1", "generation": 3},
    "spec": {"baseline": {"workload": "churn-v1"}, "candidate": {"workload": "churn-v2"}},
}
STATUS = {
    "phase": "Progressing",
    "step": 3,
    "candidateWeight": 50,
    "message": "step 3/4",
    "metrics": [
        {"name": "error-rate", "baseline": 0.01, "candidate": 0.011, "verdict": "Pass", "evidence": 0.4,
         "bound": 40.0},
    ],
}  # fmt: skip


def hook(url: str | None = None, **fields: Any) -> spec_hooks.WebhookSpec:
    raw: dict[str, Any] = {"name": "qa-signoff", "type": "confirm-promotion", "timeout": "1s", **fields}
    if url is not None:
        raw["url"] = url
    return spec_hooks.WebhookSpec.model_validate(raw)


def caller(secrets: Secrets | None = None) -> webhooks.Caller:
    return webhooks.Caller(secrets or Secrets({}), sleep=lambda seconds: None)


def test_a_2xx_approves_and_the_payload_carries_the_experiment_and_its_analysis(serve: Any) -> None:
    server = serve(lambda attempt: (200, "ok", 0))
    [outcome] = caller().ask([hook(server.url, metadata={"ticket": "OPS-1"})], BODY, STATUS)
    assert outcome == model.WebhookOutcome("qa-signoff", True, "HTTP 200")
    [payload] = server.received
    assert payload["type"] == "confirm-promotion" and payload["webhook"] == "qa-signoff"
    assert payload["metadata"] == {"ticket": "OPS-1"}
    assert payload["experiment"]["name"] == "churn-v2" and payload["experiment"]["namespace"] == "ml"
    assert payload["experiment"]["candidate"] == "churn-v2"
    assert payload["candidateWeight"] == 50
    assert payload["analysis"]["metrics"][0]["evidence"] == 0.4
    assert server.headers[0]["Content-Type"] == "application/json"


def test_a_refusal_is_an_answer_and_is_not_retried(serve: Any) -> None:
    server = serve(lambda attempt: (403, "waiting for QA", 0))
    [outcome] = caller().ask([hook(server.url, retries=3)], BODY, STATUS)
    assert not outcome.approved and outcome.detail == "HTTP 403: waiting for QA"
    assert len(server.received) == 1


def test_server_errors_are_retried_then_reported(serve: Any) -> None:
    server = serve(lambda attempt: (503, "", 0) if attempt < 3 else (200, "", 0))
    [outcome] = caller().ask([hook(server.url, retries=2)], BODY, STATUS)
    assert outcome.approved and len(server.received) == 3
    failing = serve(lambda attempt: (500, "boom", 0))
    [outcome] = caller().ask([hook(failing.url, retries=1)], BODY, STATUS)
    assert not outcome.approved and outcome.detail == "HTTP 500: boom" and len(failing.received) == 2


def test_a_slow_endpoint_times_out_within_its_timeout(serve: Any) -> None:
    server = serve(lambda attempt: (200, "", 1.5))
    started = time.monotonic()
    [outcome] = caller().ask([hook(server.url, timeout="300ms", retries=1)], BODY, STATUS)
    assert not outcome.approved and outcome.detail == "no answer within 0.3s"
    assert time.monotonic() - started < 1.4


def test_an_unreachable_endpoint_says_so_without_its_url() -> None:
    [outcome] = caller().ask([hook("http://127.0.0.1:9/secret-path?token=abc", retries=0)], BODY, STATUS)
    assert not outcome.approved and outcome.detail.startswith("unreachable")
    assert "secret-path" not in outcome.detail and "abc" not in outcome.detail


def test_url_and_token_come_from_a_secret_and_never_show(serve: Any) -> None:
    server = serve(lambda attempt: (200, "", 0))
    secrets = Secrets({("ml", "gate"): {"url": server.url + "?sig=s3cr3t", "token": "t0ken"}})
    secret_hook = hook(
        urlFrom={"secretKeyRef": {"name": "gate", "key": "url"}},
        tokenFrom={"secretKeyRef": {"name": "gate", "key": "token"}},
    )
    [outcome] = caller(secrets).ask([secret_hook], BODY, STATUS)
    assert outcome.approved
    assert server.headers[0]["Authorization"] == "Bearer t0ken"
    assert "s3cr3t" not in json.dumps(server.received) and "t0ken" not in json.dumps(server.received)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, "urlFrom: Secret ml/gate not found"),
        ({("ml", "gate"): {"other": "x"}}, "urlFrom: Secret ml/gate has no key url"),
        (
            {("ml", "gate"): {"url": "not a url"}},
            "Secret gate key url (urlFrom) does not hold an http(s) URL",
        ),
    ],
)
def test_a_missing_or_bad_secret_is_a_refusal_naming_secret_and_key(
    data: dict[tuple[str, str], dict[str, str]], expected: str
) -> None:
    secret_hook = hook(urlFrom={"secretKeyRef": {"name": "gate", "key": "url"}})
    [outcome] = caller(Secrets(data)).ask([secret_hook], BODY, STATUS)
    assert not outcome.approved and outcome.detail == expected


# ----------------------------------------------------------------------------- notifications


def decision(phase: Phase, *reasons: str) -> model.Decision:
    return model.Decision(model.State(phase=phase), None, tuple(model.Event("Normal", r, r) for r in reasons))


@pytest.mark.parametrize(
    ("before", "after", "reasons", "expected"),
    [
        (Phase.PENDING, Phase.PROGRESSING, ("Started",), ["Started"]),
        (Phase.PROGRESSING, Phase.PROGRESSING, ("StepAdvanced",), ["StepAdvanced"]),
        (Phase.PROGRESSING, Phase.SUCCEEDED, ("Promoted",), ["Promoted"]),
        (Phase.PROGRESSING, Phase.ROLLED_BACK, ("RolledBack",), ["RolledBack"]),
        (Phase.PENDING, Phase.FAILED, ("InvalidSpec",), ["Failed"]),
        (Phase.PROGRESSING, Phase.PROGRESSING, ("GateDeadlineExceeded",), ["GateDeadlineExceeded"]),
        (Phase.SUCCEEDED, Phase.SUCCEEDED, (), []),  # told once, on arrival
        (Phase.PROGRESSING, Phase.PROGRESSING, ("NoData",), []),
        (Phase.ROLLED_BACK, Phase.PROGRESSING, ("Restarted", "Started"), ["Started"]),
    ],
)
def test_what_is_worth_telling(
    before: Phase, after: Phase, reasons: tuple[str, ...], expected: list[str]
) -> None:
    assert [kind.value for kind in notify.kinds(before, decision(after, *reasons))] == expected


def target(url: str, **fields: Any) -> spec_hooks.NotificationSpec:
    return spec_hooks.NotificationSpec.model_validate({"name": "team", "url": url, "timeout": "1s", **fields})


def test_generic_and_slack_notifications_are_delivered_in_their_formats(serve: Any) -> None:
    generic, slack = serve(lambda a: (200, "", 0)), serve(lambda a: (200, "ok", 0))
    counted: list[tuple[str, str]] = []
    notifier = notify.Notifier(caller(), counted=lambda kind, result: counted.append((kind, result)))
    targets = [target(generic.url), target(slack.url, name="chat", type="slack", events=["Promoted"])]
    kinds = [spec_hooks.NotificationKind.STEP_ADVANCED, spec_hooks.NotificationKind.PROMOTED]
    for future in notifier.send(targets, kinds, BODY, {**STATUS, "phase": "Succeeded"}, Events()):
        future.result(timeout=5)
    notifier.close()
    assert [m["kind"] for m in generic.received] == ["StepAdvanced", "Promoted"]
    assert generic.received[1]["experiment"] == {"name": "churn-v2", "namespace": "ml", "uid": "u-1"}
    [message] = slack.received
    assert message["text"] == ":white_check_mark: ModelExperiment *ml/churn-v2* promoted"
    attachment = message["attachments"][0]
    assert attachment["color"] == "good" and attachment["text"] == "step 3/4"
    assert {"title": "error-rate", "value": "Pass", "short": True} in attachment["fields"]
    assert sorted(counted) == [("Promoted", "sent"), ("Promoted", "sent"), ("StepAdvanced", "sent")]


def test_an_undeliverable_notification_is_a_warning_event_not_a_failure(serve: Any) -> None:
    down = serve(lambda a: (500, "", 0))
    events = Events()
    notifier = notify.Notifier(caller())
    [future] = notifier.send(
        [target(down.url, retries=1)], [spec_hooks.NotificationKind.STARTED], BODY, STATUS, events
    )
    future.result(timeout=5)
    notifier.close()
    assert len(down.received) == 2
    assert events.emitted == [
        ("Warning", "NotificationFailed", "notification team (Started) not delivered: HTTP 500")
    ]


# ----------------------------------------------------------------------------- operator metrics


def exposition(operator: metrics.OperatorMetrics) -> str:
    return generate_latest(operator.registry).decode()


def test_metrics_mirror_the_status_and_are_dropped_with_the_experiment() -> None:
    operator = metrics.OperatorMetrics()
    operator.record("ml", "churn-v2", STATUS, decided=True)
    operator.record("ml", "churn-v2", {**STATUS, "decision": "Continue"}, decided=True)
    operator.duration.observe(0.02)
    text = exposition(operator)
    ml = 'name="churn-v2",namespace="ml"'
    for line in (
        f'modelrollout_experiment_phase{{{ml},phase="Progressing"}} 1.0',
        f'modelrollout_experiment_phase{{{ml},phase="Succeeded"}} 0.0',
        f"modelrollout_experiment_candidate_weight{{{ml}}} 50.0",
        f"modelrollout_experiment_step{{{ml}}} 3.0",
        f'modelrollout_metric_value{{metric="error-rate",{ml},variant="candidate"}} 0.011',
        f'modelrollout_metric_evidence{{metric="error-rate",{ml}}} 0.4',
        f'modelrollout_metric_evidence_bound{{metric="error-rate",{ml}}} 40.0',
        f'modelrollout_decisions_total{{decision="Continue",{ml}}} 1.0',
    ):
        assert line in text
    assert "modelrollout_reconcile_duration_seconds_count 1.0" in text
    operator.forget("ml", "churn-v2")
    assert 'name="churn-v2"' not in exposition(operator)


def test_the_webhooks_example_parses_with_every_gate_and_both_notifiers() -> None:
    root = Path(__file__).resolve().parents[2] / "examples" / "06-webhooks"
    experiment = spec.parse_spec(yaml.safe_load((root / "experiment.yaml").read_text())["spec"])
    assert {hook.type.value for hook in experiment.webhooks} == {
        "pre-rollout",
        "confirm-promotion",
        "post-rollout",
    }
    assert {n.type.value for n in experiment.notifications} == {"webhook", "slack"}
    secret = yaml.safe_load((root / "secret.yaml").read_text())
    referenced = {
        ref.secret_key_ref.key
        for endpoint in [*experiment.webhooks, *experiment.notifications]
        for ref in (endpoint.url_from, endpoint.token_from)
        if ref is not None
    }
    assert referenced <= set(secret["stringData"])
