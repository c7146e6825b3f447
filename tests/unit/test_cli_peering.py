"""`modelrollout run --peering`: the lifetime flag, and the warning when the peering object is missing.

The replicas themselves are exercised end to end in tests/integration/test_ha.py.
"""

from __future__ import annotations

import argparse
import logging

import kopf
import pytest

from modelrollout import cli, handlers


def parsed(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(cli, "_run", seen.append)
    cli.main(argv)
    return seen[0]


def test_peering_lifetime_defaults_to_kopfs_and_takes_whole_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parsed(["run", "--peering", "modelrollout"], monkeypatch).peering_lifetime is None
    args = parsed(["run", "--peering", "modelrollout", "--peering-lifetime", "15"], monkeypatch)
    assert args.peering_lifetime == 15


@pytest.mark.parametrize(
    ("value", "why"), [("2", "must be at least 3 seconds"), ("1.5", "must be a whole number of seconds")]
)
def test_peering_lifetime_refuses_what_keepalives_cannot_keep_up_with(
    value: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--peering", "modelrollout", "--peering-lifetime", value])
    assert exited.value.code == 2
    assert f"argument --peering-lifetime: {why} (got '{value}')" in capsys.readouterr().err


def record(level: int, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("kopf._core.engines.peering", level, __file__, 1, message, args, None)


def test_a_missing_peering_object_is_a_warning_other_keepalives_stay_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # as `modelrollout run` without --verbose
    quiet = cli._PeeringNotFound()
    missing = record(logging.DEBUG, "Keep-alive in %r %s: %s.", "modelrollout", "in 'ml'", "not found")
    assert quiet.filter(missing)
    assert missing.levelno == logging.WARNING and missing.levelname == "WARNING"
    assert missing.getMessage().startswith("Keep-alive in 'modelrollout' in 'ml': not found. This replica")
    assert "KopfPeering" in missing.getMessage()

    assert not quiet.filter(record(logging.DEBUG, "Keep-alive in 'modelrollout' in 'ml': ok."))
    pausing = record(logging.INFO, "Pausing operations in favour of [...].")
    assert quiet.filter(pausing) and pausing.levelno == logging.INFO


def test_only_peered_replicas_wait_before_their_first_tick() -> None:
    assert handlers._settle(memo=kopf.Memo()) == 0.0
    assert handlers._settle(memo=kopf.Memo(settle=handlers.PEERING_SETTLE)) == handlers.PEERING_SETTLE > 0


def test_workers_default_and_bad_values_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelrollout import DEFAULT_WORKERS

    assert parsed(["run"], monkeypatch).workers == DEFAULT_WORKERS
    assert parsed(["run", "--workers", "4"], monkeypatch).workers == 4
    for value in ("0", "2.5"):
        with pytest.raises(SystemExit):
            cli.main(["run", "--workers", value])
        assert "argument --workers: must be a whole number" in capsys.readouterr().err
