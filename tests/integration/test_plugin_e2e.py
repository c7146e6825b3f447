"""``kubectl-mexp`` against the real operator: a manual promote finishes a rollout early.

The experiment's steps last ten minutes each, so nothing but the promote
annotation the plugin sets can make it succeed within the test's timeout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import FINAL

SCRIPT = Path(sys.executable).parent / "kubectl-mexp"


def test_kubectl_mexp_promote_makes_a_progressing_experiment_succeed(make_app):
    assert SCRIPT.exists(), f"{SCRIPT} is missing: install the package (pip install -e .)"
    app = make_app()
    app.start_operator()
    app.apply_experiment(
        canary={"steps": [5, 25, 50, 100], "interval": "2s", "minStepDuration": "10m", "minSamples": 50}
    )
    app.wait_for(lambda s: s.get("phase") == "Progressing" and s.get("candidateWeight") == 5)
    app.wait_weights({"v1": 95, "v2": 5})

    def mexp(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(SCRIPT), *args, "-n", app.namespace, "--kubeconfig", str(app.local.kubeconfig)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    promoted = mexp("promote", "churn-v2")
    assert promoted.returncode == 0, promoted.stderr
    final = app.wait_for(lambda s: s.get("phase") in FINAL, timeout=30)[-1]
    assert (final["phase"], final["reason"], final["candidateWeight"]) == (
        "Succeeded",
        "PromotedManually",
        100,
    )
    app.wait_weights({"v1": 0, "v2": 100})

    shown = mexp("status", "churn-v2")
    assert shown.returncode == 0, shown.stderr
    assert "Phase:        Succeeded" in shown.stdout
    assert "Weights:      baseline churn-v1 0%  /  candidate churn-v2 100%" in shown.stdout
    assert "promote=" in shown.stdout and "(acted on)" in shown.stdout

    refused = mexp("abort", "churn-v2")
    assert refused.returncode == 1 and "has already finished (phase Succeeded)" in refused.stderr
