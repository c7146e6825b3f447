"""Notifications: tell a webhook or a Slack channel that an experiment started, moved or finished.

What to say follows from the decision (pure: :func:`kinds`); saying it is
I/O, done on a small thread pool so a slow chat server never delays a
rollout.  A notification that cannot be delivered (after its retries) is a
``NotificationFailed`` Warning Event on the experiment -- never a reason to
hold or fail it.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from modelrollout import ports, spec, webhooks
from modelrollout.core import approvals, model
from modelrollout.core.model import Phase
from modelrollout.spec_hooks import NotificationKind, NotificationSpec, NotifierType

logger = logging.getLogger(__name__)

FAILED_REASON = "NotificationFailed"

_FINAL_KINDS = {
    Phase.SUCCEEDED: NotificationKind.PROMOTED,
    Phase.ROLLED_BACK: NotificationKind.ROLLED_BACK,
    Phase.FAILED: NotificationKind.FAILED,
}
_EVENT_KINDS = {
    "Started": NotificationKind.STARTED,
    "StepAdvanced": NotificationKind.STEP_ADVANCED,
    approvals.DEADLINE_EXCEEDED: NotificationKind.GATE_DEADLINE_EXCEEDED,
}
_SLACK = {
    NotificationKind.STARTED: (":rocket:", "started", "#439FE0"),
    NotificationKind.STEP_ADVANCED: (":arrow_up:", "advanced", "#439FE0"),
    NotificationKind.PROMOTED: (":white_check_mark:", "promoted", "good"),
    NotificationKind.ROLLED_BACK: (":rewind:", "rolled back", "danger"),
    NotificationKind.FAILED: (":x:", "failed", "danger"),
    NotificationKind.GATE_DEADLINE_EXCEEDED: (":hourglass:", "is waiting for a human", "warning"),
}


def kinds(previous: Phase, decision: model.Decision) -> list[NotificationKind]:
    """What a decision is worth telling about, in order (a final phase is told once, on arrival)."""
    found: list[NotificationKind] = []
    for event in decision.events:
        kind = _EVENT_KINDS.get(event.reason)
        if kind is not None and kind not in found:
            found.append(kind)
    phase = decision.state.phase
    if phase in _FINAL_KINDS and previous is not phase:
        found.append(_FINAL_KINDS[phase])
    return found


def message(kind: NotificationKind, body: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """The generic JSON notification."""
    meta = body.get("metadata", {})
    return {
        "kind": kind.value,
        "experiment": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "phase": status.get("phase"),
        "step": status.get("step"),
        "candidateWeight": status.get("candidateWeight"),
        "decision": status.get("decision"),
        "reason": status.get("reason"),
        "message": status.get("message"),
        "metrics": status.get("metrics", []),
    }


def slack_message(
    kind: NotificationKind, body: Mapping[str, Any], status: Mapping[str, Any]
) -> dict[str, Any]:
    """Slack's incoming-webhook format: a text line plus an attachment with the details."""
    meta = body.get("metadata", {})
    emoji, verb, color = _SLACK[kind]
    who = f"{meta.get('namespace')}/{meta.get('name')}"
    fields = [
        {"title": "Phase", "value": str(status.get("phase", "")), "short": True},
        {"title": "Candidate weight", "value": f"{status.get('candidateWeight', 0)}%", "short": True},
    ]
    for metric in status.get("metrics", [])[:6]:
        fields.append(
            {"title": str(metric.get("name")), "value": str(metric.get("verdict", "")), "short": True}
        )
    return {
        "text": f"{emoji} ModelExperiment *{who}* {verb}",
        "attachments": [
            {
                "color": color,
                "fallback": f"{who} {verb}: {status.get('message', '')}",
                "text": str(status.get("message", "")),
                "fields": fields,
            }
        ],
    }


class Notifier:
    """Sends an experiment's notifications in the background; failures become Events."""

    def __init__(
        self, caller: webhooks.Caller, counted: Callable[[str, str], None] | None = None, workers: int = 4
    ) -> None:
        self._caller = caller
        self._counted = counted or (lambda kind, result: None)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="notify")

    def send(
        self,
        targets: Sequence[NotificationSpec],
        found: Sequence[NotificationKind],
        body: Mapping[str, Any],
        status: Mapping[str, Any],
        events: ports.EventSink,
    ) -> list[concurrent.futures.Future[None]]:
        """One task per target, delivering its kinds of this tick in order (a receiver hears
        StepAdvanced before Promoted); targets are told concurrently."""
        futures = []
        for target in targets:
            kinds = [kind for kind in found if kind in target.events]
            if kinds:
                futures.append(self._pool.submit(self._deliver_all, target, kinds, body, status, events))
        return futures

    def submit(self, work: Callable[..., None], *args: Any) -> concurrent.futures.Future[None]:
        """Other after-the-fact work (post-rollout webhooks) on the same pool."""
        return self._pool.submit(work, *args)

    def _deliver_all(
        self,
        target: NotificationSpec,
        kinds: Sequence[NotificationKind],
        body: Mapping[str, Any],
        status: Mapping[str, Any],
        events: ports.EventSink,
    ) -> None:
        for kind in kinds:
            self._deliver(target, kind, body, status, events)

    def _deliver(
        self,
        target: NotificationSpec,
        kind: NotificationKind,
        body: Mapping[str, Any],
        status: Mapping[str, Any],
        events: ports.EventSink,
    ) -> None:
        build = slack_message if target.type is NotifierType.SLACK else message
        namespace = body.get("metadata", {}).get("namespace", "default")
        response = self._caller.call(target, namespace, build(kind, body, status))
        self._counted(kind.value, "sent" if response.ok else "failed")
        if not response.ok:
            why = f"notification {target.name} ({kind.value}) not delivered: {response.detail}"
            logger.warning("%s/%s: %s", namespace, body.get("metadata", {}).get("name"), why)
            events.emit("Warning", FAILED_REASON, why)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def targets(experiment: spec.ExperimentSpec | None) -> list[NotificationSpec]:
    return list(experiment.notifications) if experiment is not None else []
