"""Prometheus credentials from a Secret with the real operator: they work, and they never leak.

The experiment's Prometheus is an authenticating proxy (``localstack.authproxy``)
in front of the stack's real Prometheus: 401 unless the bearer token is
right.  The operator runs with debug logging.  The Secret is first missing,
then holds a wrong token, then the right one: the first two are reported
(status and Events name the Secret and the 401) while traffic holds, the
third lets the rollout finish.  Then every status, Event and log line is
searched for the token values, plain and base64-encoded.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from modelrollout.localstack import authproxy

from conftest import FINAL, App

TOKEN = "tok-5b8e0f2a-must-never-appear"
WRONG = "tok-c41d9e77-also-never-appear"


def encoded(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def secret_body(token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "prom-auth"},
        "type": "Opaque",
        "data": {"token": encoded(token)},
    }


@pytest.fixture
def proxy(local: Any) -> Iterator[authproxy.AuthProxy]:
    with authproxy.AuthProxy(local.prometheus.url, authproxy.bearer(TOKEN)) as running:
        yield running


def test_bearer_token_from_a_secret_works_and_never_leaks(make_app: Any, proxy: authproxy.AuthProxy) -> None:
    app: App = make_app()
    app.operator = app.local.start_operator(
        "--namespace", app.namespace, "--log-level", "debug", name=app.namespace
    )
    app.apply_experiment(
        prometheus={
            "address": proxy.url,
            "bearerTokenFrom": {"secretKeyRef": {"name": "prom-auth", "key": "token"}},
        },
        canary={"steps": [20, 50, 100], "interval": "2s", "minStepDuration": "4s", "minSamples": 50},
        analysis={"failureLimit": 1, "noData": "Hold", "noDataLimit": 30},
    )

    # No Secret yet: the experiment holds at its first step, saying which Secret is missing.
    missing = f"spec.prometheus.bearerTokenFrom: Secret {app.namespace}/prom-auth not found"
    held = app.wait_for(lambda s: missing in s.get("message", ""), timeout=60)[-1]
    assert (held["phase"], held["decision"], held["reason"], held["candidateWeight"]) == (
        "Progressing", "Hold", "NoData", 20,
    )  # fmt: skip
    assert proxy.accepted == proxy.refused == 0, "nothing is sent without credentials"
    assert missing in app.wait_event("NoData").message

    # A wrong token: Prometheus' proxy refuses it, which is no data either (never a pass).
    app.local.core.create_namespaced_secret(app.namespace, secret_body(WRONG))
    refused = app.wait_for(lambda s: "HTTP 401" in s.get("message", ""), timeout=30)[-1]
    assert refused["decision"] == "Hold" and refused["candidateWeight"] == 20
    assert all(m["verdict"] != "Pass" for m in refused["metrics"]), refused["metrics"]
    assert proxy.refused > 0 and proxy.accepted == 0
    app.wait_weights({"v1": 80, "v2": 20})

    # The Secret gets the right token: the next evaluation uses it, and the rollout completes.
    app.local.core.patch_namespaced_secret("prom-auth", app.namespace, {"data": {"token": encoded(TOKEN)}})
    final = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=90)[-1]
    assert final["phase"] == "Succeeded", final.get("message")
    assert proxy.accepted > 0
    app.wait_weights({"v1": 0, "v2": 100})

    # Nothing anywhere holds a token: status, Events (all of each), the operator's debug log.
    app.operator.stop()
    log = app.operator.log_text()
    # Debug level: urllib3 logs every request to Prometheus (where a careless client would log headers).
    assert '"GET /api/v1/query?' in log and "Handler 'noticed' is invoked." in log
    assert missing in log, "credential problems are logged (by name)"
    body = app.local.experiment(app.namespace, "churn-v2")
    events = [
        app.local.core.api_client.sanitize_for_serialization(e) for e in app.local.events(app.namespace)
    ]
    assert any(missing in e.get("message", "") for e in events)
    places = {"status": json.dumps(body), "events": json.dumps(events), "log": log}
    for value in (TOKEN, WRONG, encoded(TOKEN), encoded(WRONG)):
        for where, text in places.items():
            assert value not in text, f"a token value appears in the {where}"
