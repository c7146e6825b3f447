"""Gates, notifications and the operator's /metrics with the real operator process.

Local HTTP servers stand in for a QA sign-off service, a generic webhook
receiver and Slack; the operator reaches them over loopback exactly as it
would reach them in a cluster.  One URL lives in a Secret, with a token in
its query string, and the test checks it never leaks.
"""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import FINAL

SECRET_TOKEN = "xoxb-never-show-me"


class Receiver:
    """An HTTP endpoint that records JSON posts and answers ``status`` (changeable while running)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver.received.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"QA has not signed off" if receiver.status >= 400 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> list[str]:
        return [str(m.get("kind")) for m in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text: str = answer.read().decode()
        return text


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions", [])}


def test_confirm_promotion_gate_notifications_and_metrics(make_app: Any, receivers: list[Receiver]) -> None:
    gate, generic, slack = Receiver(status=403), Receiver(), Receiver()
    receivers.extend([gate, generic, slack])
    app = make_app()
    app.local.core.create_namespaced_secret(
        app.namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "team-hooks"},
            "data": {"url": base64.b64encode(f"{generic.url}?token={SECRET_TOKEN}".encode()).decode()},
        },
    )
    port = free_port()
    app.operator = app.local.start_operator(
        "--namespace", app.namespace, "--metrics-port", str(port), name=app.namespace
    )
    app.apply_experiment(
        canary={"steps": [20, 50, 100], "interval": "2s", "minStepDuration": "4s", "minSamples": 50},
        webhooks=[{"name": "qa-signoff", "type": "confirm-promotion", "url": gate.url, "timeout": "2s"}],
        notifications=[
            {"name": "team", "urlFrom": {"secretKeyRef": {"name": "team-hooks", "key": "url"}}},
            {"name": "chat", "type": "slack", "url": slack.url, "events": ["Promoted", "RolledBack"]},
        ],
    )

    # The last step before 100 % waits for QA; the guardrails keep running meanwhile.
    waiting = app.wait_for(
        lambda s: s.get("reason") == "ApprovalRefused" or "refused" in s.get("message", "")
    )[-1]
    assert waiting["phase"] == "Progressing" and waiting["candidateWeight"] == 50
    assert waiting["approval"]["type"] == "confirm-promotion"
    assert "qa-signoff: HTTP 403: QA has not signed off" in waiting["message"]
    assert conditions(waiting)["AwaitingApproval"]["status"] == "True"
    app.wait_weights({"v1": 50, "v2": 50})
    assert gate.received and gate.received[-1]["type"] == "confirm-promotion"
    assert gate.received[-1]["experiment"]["name"] == "churn-v2"
    assert {m["name"] for m in gate.received[-1]["analysis"]["metrics"]} == {"error-rate", "latency-p95"}

    # /metrics serves where the experiment is while it runs.
    text = scrape(port)
    where = f'name="churn-v2",namespace="{app.namespace}"'
    assert f'modelrollout_experiment_phase{{{where},phase="Progressing"}} 1.0' in text
    assert f"modelrollout_experiment_candidate_weight{{{where}}} 50.0" in text
    assert f"modelrollout_experiment_step{{{where}}} 2.0" in text
    assert f'modelrollout_metric_value{{metric="error-rate",{where},variant="candidate"}}' in text
    assert f'modelrollout_metric_evidence{{metric="error-rate",{where}}}' in text
    assert f'modelrollout_decisions_total{{decision="Continue",{where}}}' in text
    assert 'modelrollout_webhook_calls_total{result="refused",type="confirm-promotion"}' in text
    assert "modelrollout_reconcile_duration_seconds_count" in text

    gate.status = 200
    final = app.wait_for(lambda s: s.get("phase") in FINAL)[-1]
    assert final["phase"] == "Succeeded", final.get("message")
    assert "approval" not in final
    app.wait_weights({"v1": 0, "v2": 100})
    app.wait_event("Promoted")  # Events follow the status write
    reasons = app.event_reasons()
    for reason in ("AwaitingApproval", "ApprovalRefused", "ApprovalGranted", "Promoted"):
        assert reason in reasons
    assert reasons.index("ApprovalGranted") < reasons.index("Promoted")

    deadline = time.monotonic() + 10
    while "Promoted" not in generic.kinds() or not slack.received:
        assert time.monotonic() < deadline, f"notifications: {generic.kinds()} / {slack.received}"
        time.sleep(0.1)
    assert generic.kinds()[:2] == ["Started", "StepAdvanced"] and generic.kinds()[-1] == "Promoted"
    assert slack.received[0]["text"].endswith(f"*{app.namespace}/churn-v2* promoted")
    assert f'modelrollout_experiment_phase{{{where},phase="Succeeded"}} 1.0' in scrape(port)

    # The Secret's URL (and its token) are nowhere the user or a log reader can see.
    body = app.local.experiment(app.namespace, "churn-v2")
    shown = json.dumps(body) + json.dumps([e.message for e in app.local.events(app.namespace)])
    shown += app.operator.log_text()
    assert SECRET_TOKEN not in shown


def test_a_gate_that_never_answers_stops_at_its_deadline_and_a_human_can_abort(
    make_app: Any, receivers: list[Receiver]
) -> None:
    generic = Receiver()
    receivers.append(generic)
    app = make_app()
    app.start_operator()
    app.apply_experiment(
        webhooks=[
            {
                "name": "load-test",
                "type": "pre-rollout",
                "url": f"http://127.0.0.1:{free_port()}/nobody-listens",
                "timeout": "1s",
                "retries": 0,
                "deadline": "4s",
            }
        ],
        notifications=[{"name": "team", "url": generic.url}],
    )
    held = app.wait_for(lambda s: s.get("reason") == "GateDeadlineExceeded", timeout=60)[-1]
    assert held["phase"] == "Pending"
    assert held["approval"]["deadlineExceeded"] is True
    assert conditions(held)["AwaitingApproval"]["reason"] == "GateDeadlineExceeded"
    assert "load-test: unreachable" in held["message"] and "nobody-listens" not in held["message"]
    assert app.weights() == {"v1": 100}, "no traffic moved"
    app.wait_event("GateDeadlineExceeded")
    deadline = time.monotonic() + 10
    while "GateDeadlineExceeded" not in generic.kinds():
        assert time.monotonic() < deadline, generic.kinds()
        time.sleep(0.1)

    app.local.patch_experiment(
        app.namespace, "churn-v2", {"metadata": {"annotations": {"modelrollout.io/abort": "1"}}}
    )
    final = app.wait_for(lambda s: s.get("phase") in FINAL)[-1]
    assert final["phase"] == "RolledBack" and final["reason"] == "Aborted"
