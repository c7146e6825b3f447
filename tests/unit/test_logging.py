"""The operator's log names the experiment of every line about one: each Event is logged through kopf's
formatters (``[namespace/name]`` in text, an ``object`` field in JSON), and `modelrollout run` picks the
format.  End to end: tests/integration/test_canary_e2e.py reads a real operator's log."""

from __future__ import annotations

import argparse
import json
import logging

import pytest
from kopf._core.actions import loggers  # the formatters `kopf.configure` installs

from modelrollout import cli, reconciler


class Kept:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def emit(self, type: str, reason: str, message: str) -> None:
        self.events.append((type, reason, message))


def logged_event(caplog: pytest.LogCaptureFixture, type_: str) -> tuple[Kept, logging.LogRecord]:
    kept = Kept()
    with caplog.at_level(logging.INFO, logger="modelrollout.reconciler"):
        reconciler.LoggedSink(kept, "ml", "churn-v2").emit(type_, "StepAdvanced", "step 2/4: 25%")  # type: ignore[arg-type]
    (record,) = [r for r in caplog.records if r.name == "modelrollout.reconciler"]
    return kept, record


def test_every_event_is_posted_and_logged_naming_the_experiment(caplog: pytest.LogCaptureFixture) -> None:
    kept, record = logged_event(caplog, "Normal")
    assert kept.events == [("Normal", "StepAdvanced", "step 2/4: 25%")]
    assert record.levelno == logging.INFO
    text = loggers.make_formatter(loggers.LogFormat.FULL, log_prefix=True).format(record)
    assert text.endswith("[INFO    ] [ml/churn-v2] StepAdvanced: step 2/4: 25%")
    line = json.loads(loggers.make_formatter(loggers.LogFormat.JSON, log_prefix=False).format(record))
    assert line["message"] == "StepAdvanced: step 2/4: 25%" and line["severity"] == "info"
    assert line["object"]["namespace"] == "ml" and line["object"]["name"] == "churn-v2"
    assert line["object"]["kind"] == "ModelExperiment"


def test_warning_events_are_logged_as_warnings(caplog: pytest.LogCaptureFixture) -> None:
    _, record = logged_event(caplog, "Warning")
    assert record.levelno == logging.WARNING


def parsed(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(cli, "_run", seen.append)
    cli.main(argv)
    return seen[0]


def test_the_log_format_flag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert parsed(["run"], monkeypatch).log_format == "full"
    assert parsed(["run", "--log-format", "json"], monkeypatch).log_format == "json"
    with pytest.raises(SystemExit):
        cli.main(["run", "--log-format", "yaml"])
    assert "argument --log-format: invalid choice: 'yaml'" in capsys.readouterr().err


def test_kopfs_line_per_watch_event_is_debug_only() -> None:
    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)

    assert not cli._quiet_event_handler(record(logging.INFO, "Handler 'noticed' succeeded."))
    assert cli._quiet_event_handler(record(logging.INFO, "Handler 'deleted' succeeded."))
    assert cli._quiet_event_handler(record(logging.ERROR, "Handler 'noticed' failed with an exception."))
