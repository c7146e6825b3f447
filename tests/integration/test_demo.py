"""`modelrollout demo` as a user runs it: its own stack, printed progress, exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest


def demo(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelrollout", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_rolls_back_a_bad_candidate_end_to_end():
    done = demo("--scenario", "bad-errors", "--timeout", "120", timeout=200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "step 1/4: 5% of traffic to churn-v2" in out
    assert "RolledBack: rolled back at step 1/4 (5%): error-rate" in out
    assert "route primary: v1 100%, v2 0%" in out


def test_demo_refuses_an_unknown_scenario():
    done = demo("--scenario", "nope", timeout=60)
    assert done.returncode == 2
    assert "unknown scenario 'nope'" in done.stdout


@pytest.mark.strategies
def test_demo_of_several_candidates_drops_the_bad_one_and_promotes_the_best():
    done = demo("--scenario", "candidates", "--timeout", "150", timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "step 1/3: 30% of traffic to churn-v2, churn-v3, churn-v4" in out
    assert "dropped churn-v3 (GuardrailFailed); carrying on with churn-v2, churn-v4" in out
    assert "  churn-v3: Dropped: error-rate" in out and "  winner: churn-v4" in out
    assert "route primary: v1 0%, v2 0%, v3 0%, v4 100%" in out
