"""The committed benchmark script runs end to end (few runs, two scenarios) and writes its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_decisions_benchmark_runs(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    # The file also holds the other benchmarks' results: only the decision section is replaced.
    others = "# Scale benchmark\n\nkept as it was\n\n# Bandit benchmark\n\nkept too\n"
    output.write_text("# Decision benchmark\n\nold table\n\n" + others)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "decisions.py"),
            "--runs",
            "20",
            "--scenarios",
            "aa,crash-loop",
            "--workers",
            "1",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = output.read_text()
    assert "Runs per cell: 20" in report
    for policy in ("modelrollout", "flagger", "argo", "kayenta"):
        assert f"| A/A: candidate identical to the baseline | {policy} |" in report
        # A crash-looping candidate is caught by everyone.
        assert f"| crash-looping candidate (all 5xx) | {policy} | 100.00 % |" in report
    assert "runs/s" in done.stdout
    assert report.startswith("# Decision benchmark") and "old table" not in report
    assert report.endswith("\n\n" + others) and report.count("# Decision benchmark") == 1
