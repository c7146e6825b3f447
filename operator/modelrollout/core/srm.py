"""Sample-ratio mismatch: do the variants get the traffic shares the weights say?

When they do not (a broken sidecar, a second route, clients pinned to pods),
something other than the experiment steers traffic and every comparison is
suspect.  A sequential test (docs/statistics.md) with its own small alpha
watches the observed shares; once it fires, the finding is latched and the
experiment holds with a condition and an Event -- it never passes silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from modelrollout import ports
from modelrollout.core import evidence, model

ALPHA = 0.001


@dataclasses.dataclass(frozen=True)
class Finding:
    detected: bool
    evidence: float
    message: str
    memory: Mapping[str, Any]


def check(
    memory: Mapping[str, Any] | None,
    requests: Mapping[str, ports.QueryResult] | None,
    weights: Mapping[str, int],
    candidate: str,
    previous_weight: float | None,
) -> Finding:
    """Add this interval's shares; ``previous_weight`` when its window straddles a weight change.

    ``weights`` are those of the variants compared (all of them, or the baseline and one of several
    candidates); the candidate's expected share is its weight over their sum, ``previous_weight`` the
    candidate's share (percent) of the same variants before the change.
    """
    memory = dict(memory or {})
    loglik = evidence.from_list(memory.get("loglik"))
    # Counts no mesh can produce (negative, non-finite, beyond 1e12 a window) say nothing about shares.
    counts = {w: r.value for w, r in (requests or {}).items() if r.ok and model.plausible_count(r.value)}
    configured = sum(weights.values())
    weight = weights.get(candidate, 0) / configured if configured > 0 else 0.0
    if candidate in counts and len(counts) == len(weights) and 0 < weight < 1:
        total = sum(counts.values())
        before = None if previous_weight is None else previous_weight / 100
        loglik = loglik + evidence.ratio_loglik(counts[candidate], total, weight, before)
        shares = memory.get("shares", [0.0, 0.0])
        memory["shares"] = [float(shares[0]) + counts[candidate], float(shares[1]) + total]
        memory["loglik"] = evidence.to_list(loglik)
    e_value = evidence.mismatch_evidence(loglik)
    detected = bool(memory.get("detected")) or e_value >= 1 / ALPHA
    memory["detected"] = detected
    seen, total_seen = memory.get("shares", [0.0, 0.0])
    share = f"{seen / total_seen * 100:.1f}%" if total_seen else "n/a"
    message = (
        f"traffic split does not match the weights: {candidate} got {share} of requests "
        f"at {weight * 100:.3g}% configured (evidence {e_value:.3g} >= {1 / ALPHA:.0f})"
    )
    return Finding(detected, e_value, message if detected else "", memory)
