"""What the operator's process imports: scipy.stats stays out (it adds ~45 MB to every replica)."""

from __future__ import annotations

import subprocess
import sys


def test_the_operator_does_not_import_scipy_stats() -> None:
    code = (
        "import sys\n"
        "import modelrollout.cli, modelrollout.handlers, modelrollout.runtime, modelrollout.planner\n"
        "import modelrollout.core.planning, modelrollout.core.evidence, modelrollout.core.srm\n"
        "import modelrollout.core.bandit, modelrollout.core.banditrun, modelrollout.core.abtest\n"
        "print(sorted(m for m in sys.modules if m.startswith('scipy.stats')))\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", found.stdout
