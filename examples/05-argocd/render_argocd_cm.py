"""Write argocd-cm.yaml from the Lua files under resource_customizations/.

The Lua files are the source; argocd-cm.yaml embeds them byte for byte
(tests/unit/test_argocd.py checks it).  After editing a Lua file, run:

    python examples/05-argocd/render_argocd_cm.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "resource_customizations" / "modelrollout.io" / "ModelExperiment"
TARGET = HERE / "argocd-cm.yaml"
KEY = "modelrollout.io_ModelExperiment"  # <group>_<kind>, as argocd-cm spells it
ACTIONS = ("promote", "abort", "pause", "resume", "restart")  # the order the UI lists them in

HEADER = """\
# Teaches Argo CD about ModelExperiment: a health check and resource actions
# (promote, abort, pause, resume, restart).  A patch for the argocd-cm
# ConfigMap; see README.md beside this file for how to apply it.
#
# Generated from resource_customizations/ by render_argocd_cm.py: edit the
# Lua files there and re-run it (a test fails if the two drift apart).
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
"""


def block(text: str, indent: int) -> str:
    """``text`` as the body of a YAML literal block scalar (``|``) indented by ``indent``."""
    if not text.endswith("\n") or text.endswith("\n\n"):
        raise SystemExit("a Lua file must end with exactly one newline (YAML's '|' keeps one)")
    pad = " " * indent
    return "".join(pad + line if line.strip() else "\n" for line in text.splitlines(keepends=True))


def render() -> str:
    out = [HEADER]
    out.append(f"  resource.customizations.health.{KEY}: |\n")
    out.append(block((SCRIPTS / "health.lua").read_text(), 4))
    out.append(f"  resource.customizations.actions.{KEY}: |\n")
    out.append("    discovery.lua: |\n")
    out.append(block((SCRIPTS / "actions" / "discovery.lua").read_text(), 6))
    out.append("    definitions:\n")
    for name in ACTIONS:
        out.append(f"      - name: {name}\n")
        out.append("        action.lua: |\n")
        out.append(block((SCRIPTS / "actions" / name / "action.lua").read_text(), 10))
    return "".join(out)


if __name__ == "__main__":
    TARGET.write_text(render())
    sys.stdout.write(f"wrote {TARGET}\n")
