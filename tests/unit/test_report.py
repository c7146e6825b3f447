"""``modelrollout report``: the A/B test report a product owner reads.

Each fixture (tests/unit/fixtures/report/) is one way an A/B test ends or stands:
Ship awaiting promotion, Discard, Iterate, running, an A/A test, a segment
reversal, and an object full of hostile and odd values.  The report must say
the right sentence with the right numbers, keep its tables rectangular, be
well-formed HTML, escape whatever the object holds, and render without
matplotlib (an optional dependency) all the same.
"""

from __future__ import annotations

import copy
import html.parser
import importlib.util
import json
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout import cli, durations, report, spec, spec_ab

FIXTURES = Path(__file__).parent / "fixtures" / "report"
NAMES = ["ship", "discard", "iterate", "running", "aa", "reversal", "hostile"]
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_matplotlib = pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


def md(experiment: Mapping[str, Any]) -> str:
    return report.render(experiment, "md", plots=False)


def flat(text: str) -> str:
    """Markdown without its escapes and emphasis, for asserting sentences."""
    return re.sub(r"\\(.)", r"\1", text).replace("**", "")


# ------------------------------------------------------------------------------------ helpers
def cells(line: str) -> list[str]:
    """A Markdown table row's cells: split at the pipes no backslash escapes."""
    found, current, escaped = [], "", False
    for char in line.strip():
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            current, escaped = current + char, True
        elif char == "|":
            found.append(current)
            current = ""
        else:
            current += char
    found.append(current)
    return found[1:-1]  # the row starts and ends with a pipe


def md_tables(text: str) -> list[list[list[str]]]:
    tables: list[list[list[str]]] = []
    previous = False
    for line in text.splitlines():
        is_row = line.startswith("|")
        if is_row and not previous:
            tables.append([])
        if is_row:
            tables[-1].append(cells(line))
        previous = is_row
    return tables


class Checker(html.parser.HTMLParser):
    """Well-formedness: every element closed in order; table rows as wide as their header."""

    VOID = frozenset({"meta", "br", "img", "hr", "input", "link", "col", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[str] = []
        self.ids: list[str] = []
        self.rows: list[int] = []  # cells per row of the current table
        self.widths: list[list[int]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.ids += [v for k, v in attrs if k == "id" and v]
        if tag == "table":
            self.rows = []
        elif tag == "tr":
            self.rows.append(0)
        elif tag in ("td", "th"):
            self.rows[-1] += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.ids += [v for k, v in attrs if k == "id" and v]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag == "table":
            self.widths.append(self.rows)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_html(text: str) -> Checker:
    checker = Checker()
    checker.feed(text)
    checker.close()
    assert checker.problems == []
    assert checker.stack == []
    assert text.startswith("<!DOCTYPE html>")
    assert checker.tags[:1] == ["html"]
    for widths in checker.widths:
        assert len(set(widths)) == 1, widths
    assert len(checker.ids) == len(set(checker.ids)), "duplicate ids"
    return checker


# -------------------------------------------------------------------------------- the stories
def test_ship_awaiting_promotion() -> None:
    text = md(load("ship"))
    plain = flat(text)
    assert (
        "Ship (awaiting promotion): the candidate raised conversion by 12.0 % (95 % always-valid interval "
        "+3.1 % to +21.4 %), more than the 2 % that matters." in plain
    )
    assert text.startswith("# A/B test report: churn-v2\n")
    assert (
        "The candidate model churn-v2 (subset v2) raises conversion compared with the baseline model "
        in plain
    )
    assert "by at least 2 % (relative)" in plain
    # Design: split, cohort, stickiness, duration against plan and maximum, statistics, sample size.
    assert "50 % of participating users see the candidate churn-v2, 50 % the baseline churn-v1." in plain
    assert 'requests where header x-user-tier is "beta"' in plain
    assert "(cookie `mexp-churn-v2`)" in plain
    assert (
        "ran 3d (2026-11-20 10:00 UTC to 2026-11-23 10:00 UTC); the plan expected about 2h10m; at most 14d"
        in plain
    )
    assert "significance level (alpha) 0.05 (95 % always-valid intervals" in plain
    assert "power 80 % to detect 2 %" in plain
    assert "31,000 observations per arm" in plain
    assert "so far 11,980 in the smaller arm (39 % of the plan)" in plain
    # Results: objective, secondary with its alpha, the guardrail.
    results = md_tables(text)[0]
    assert results[0] == [
        " Metric ",
        " Role ",
        " Baseline ",
        " Candidate ",
        " Lift ",
        " Interval ",
        " Reading ",
    ]
    rows = {row[0].strip(): [c.strip() for c in row] for row in results[2:]}
    assert rows["conversion"][1:] == [
        "Objective",
        "5.00 %",
        "5.60 %",
        "+12.0 %",
        "+3.1 % to +21.4 % (95 %)",
        "better, by more than the minimum effect",
    ]
    assert rows["revenue"][1] == "Secondary (alpha 0.05)"
    assert rows["revenue"][4:] == ["+7.8 %", "-2.0 % to +18.0 % (95 %)", "no clear difference"]
    assert rows["error-rate"][1] == "Guardrail"
    assert rows["error-rate"][6].startswith("Pass: ")
    assert "churn-v1 (baseline) 12,000; churn-v2 (candidate) 11,980" in plain
    # Data quality and what happens next.
    assert "Sample ratio: passed." in plain
    assert "split 50.0 % baseline / 50.0 % candidate (configured 50 / 50)" in plain
    assert "waits for the modelrollout.io/promote annotation" in plain
    assert "`kubectl mexp promote churn-v2 -n shop`" in text


def test_discard_for_harm_uses_status_metrics_as_guardrails() -> None:
    text = md(load("discard"))
    plain = flat(text)
    assert (
        "Discard: the candidate lowered conversion by 8.0 % (95 % always-valid interval -15.0 % to -1.0 %)."
        in plain
    )
    assert "20 % of participating users see the candidate ranker-v3, 80 % the baseline ranker-v2." in plain
    assert "nothing: all traffic is back on the baseline ranker-v2." in plain
    rows = [[c.strip() for c in row] for row in md_tables(text)[0][2:]]
    # The objective's entry in status.metrics is not repeated as a guardrail.
    assert [row[:2] for row in rows] == [["conversion", "Objective"], ["latency-p95", "Guardrail"]]
    assert rows[0][6] == "worse (significant)"
    assert rows[1][2:4] == ["42 ms", "43 ms"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"objective": {"lift": 0.002, "interval": [-0.01, 0.015]}},
            "Discard: the candidate changed conversion by +0.2 % (95 % always-valid interval -1.0 % to "
            "+1.5 %): an improvement as large as the 3 % that matters is ruled out.",
        ),
        (
            {"guardrails": [{"name": "error-rate", "verdict": "Fail", "reason": "errors doubled"}]},
            "Discard: the guardrail error-rate failed (errors doubled).",
        ),
        (
            {
                "reason": "UnfairToSegment",
                "segments": [{"segment": {"region": "eu"}, "lift": -0.3, "unfair": True}],
            },
            "Discard: the candidate harms region=eu (-30.0 %) by more than the fairness margin of 20 %, "
            "even if it helps overall.",
        ),
        (
            {"reason": "SampleRatioMismatch", "srm": {"checked": True, "passed": False, "message": "60/40"}},
            "Discard: the users' split does not match the configured split (sample ratio mismatch)",
        ),
    ],
    ids=["futility", "guardrail", "unfair", "srm"],
)
def test_discard_says_why(change: dict[str, Any], expected: str) -> None:
    experiment = load("discard")
    experiment["spec"]["abTest"]["fairness"] = {"margin": 0.2}
    status = experiment["status"]
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(status.get(key), dict):
            status[key] = {**status[key], **value}
        else:
            status[key] = value
    assert expected in flat(md(experiment))


def test_iterate_explains_what_the_test_could_detect() -> None:
    plain = flat(md(load("iterate")))
    assert (
        "Iterate: no clear answer within the maximum duration (7d): the candidate changed clicks by "
        "+0.8 % (95 % always-valid interval -1.2 % to +2.9 %), which neither shows nor rules out the 2 % "
        "that matters." in plain
    )
    assert "### Why Iterate" in plain
    assert "inconclusive at its maximum duration (7d)" in plain
    assert "the interval -1.2 % to +2.9 % contains both no change and the 2 % that matters" in plain
    # 9,800 of the 39,200 planned per arm: a quarter of the sample, twice the detectable effect.
    assert (
        "With 9,800 observations per arm it could reliably (90 % power) detect an effect of about 4 %"
        in plain
    )
    assert "detecting 2 % needs about 39,200 per arm" in plain
    assert "run longer (raise abTest.maxDuration)" in plain


def test_iterate_without_a_plan_names_what_the_interval_rules_out() -> None:
    experiment = load("iterate")
    del experiment["status"]["abPlan"]
    plain = flat(md(experiment))
    assert "Effects below -1.2 % or above +2.9 % are ruled out" in plain


def test_running_decreasing_objective_started_from_history() -> None:
    text = md(load("running"))
    plain = flat(text)
    assert (
        "Running, no decision yet: so far the candidate changed eta-error by -5.4 % "
        "(95 % always-valid interval -20.0 % to +9.0 %)." in plain
    )
    assert "The candidate model eta-v2 lowers eta-error" in plain
    assert (
        "running for 120m so far (since 2026-12-01 10:00 UTC); at most 14d (maxDuration, the default)"
        in plain
    )
    assert (
        'requests where the path starts with "/api/eta" and header x-country matches the pattern "de|fr"; '
        'or where query parameter beta is "1"' in plain
    )
    assert "Sample ratio: not checked. Set abTest.assignmentQuery to count assigned users." in plain
    assert "Outcome: none yet." in plain
    assert "the test continues, evaluated every 1m until it reaches a decision, at most 14d" in plain
    rows = [[c.strip() for c in row] for row in md_tables(text)[0][2:]]
    assert [row[0] for row in rows] == ["eta-error", "error-rate"]
    assert rows[0][2:4] == ["120.5", "114"]  # a mean, not a rate
    assert rows[1][2:4] == ["1.00 %", "1.10 %"]  # a rate


def test_aa_passed() -> None:
    plain = flat(md(load("aa")))
    assert "A/A test passed: the two identical arms showed no difference in conversion" in plain
    assert "This is an A/A test: both arms run the same model." in plain
    assert "No difference between the identical arms, as it should be." in plain
    assert "Why Iterate" not in plain
    assert "autoPromote" not in plain


def test_aa_failed() -> None:
    experiment = load("aa")
    experiment["status"].update(
        outcome="Discard", reason="AAFailed", message="A/A test found a difference between identical arms"
    )
    plain = flat(md(experiment))
    assert plain.count("A/A test failed: identical arms should not differ, but they did") == 1
    assert "the experiment pipeline is broken" in plain


def test_segment_reversal_is_flagged_and_explained() -> None:
    text = md(load("reversal"))
    plain = flat(text)
    assert "Ship: the candidate raised conversion by 6.0 %" in plain
    assert "nothing: the candidate reco-v7 now receives all traffic." in plain
    segments = md_tables(text)[1]
    assert [c.strip() for c in segments[0]] == [
        "Segment",
        "Baseline",
        "Candidate",
        "Lift",
        "Interval",
        "Observations",
        "Flags",
    ]
    rows = {row[0].strip(): [c.strip() for c in row] for row in segments[2:]}
    assert rows["region=eu"][3:] == ["-10.0 %", "-18.0 % to -2.0 %", "10,000 / 10,000", "reversed"]
    assert rows["region=us"][6] == "none"
    assert (
        "Reversal in region=eu (-10.0 %): the candidate's effect points the other way here than overall "
        "(+6.0 %)." in plain
    )
    assert "Simpson's paradox" in plain
    assert "Unfair" not in plain


def test_several_reversals_and_unfair_segments_share_one_explanation() -> None:
    experiment = load("reversal")
    eu, us = experiment["status"]["segments"]
    experiment["status"]["segments"] = [
        eu,
        {**eu, "segment": {"region": "fr"}, "lift": -0.03, "unfair": True},
        us,
    ]
    plain = flat(md(experiment))
    assert plain.count("Simpson's paradox") == 1
    assert "Reversals in region=eu (-10.0 %), region=fr (-3.0 %): " in plain
    assert "look at these segments on their own" in plain
    assert (
        "Unfair to region=fr (-3.0 %): the candidate is worse than the baseline there by more than the "
        "fairness margin of 20 %" in plain
    )


def test_verdict_function_matches_the_report() -> None:
    for name in NAMES:
        experiment = load(name)
        assert flat(report.verdict(experiment)) in flat(md(experiment))


# ---------------------------------------------------------------------- structure and escaping
@pytest.mark.parametrize("name", NAMES)
def test_markdown_tables_are_rectangular(name: str) -> None:
    tables = md_tables(md(load(name)))
    assert tables
    for table in tables:
        assert len({len(row) for row in table}) == 1, table
        assert all(re.fullmatch(r" -+ ", c) for c in table[1])


@pytest.mark.parametrize("name", NAMES)
def test_html_is_well_formed(name: str) -> None:
    text = report.render(load(name), "html")
    checker = check_html(text)
    assert "<?xml" not in text
    assert "<!DOCTYPE svg" not in text
    assert "A/B test report" in "".join(checker.text)


@needs_matplotlib
def test_html_inlines_both_plots_as_svg() -> None:
    text = report.render(load("ship"), "html")
    checker = check_html(text)
    assert checker.tags.count("svg") == 2
    assert {"plot-lift", "plot-traffic"} <= set(checker.ids)
    assert "Lift of conversion over time" in text
    assert "minimum effect (+2.0 %)" in text  # the legend, as text in the SVG
    assert "<img" not in text  # self-contained


@needs_matplotlib
def test_html_without_a_timeline_says_so() -> None:
    text = report.render(load("iterate"), "html")
    assert "<svg" not in text
    assert "No plots: the status holds no timeline yet" in text


def test_hostile_values_are_escaped_in_html() -> None:
    text = report.render(load("hostile"), "html")
    check_html(text)
    lowered = text.lower()
    for raw in ("<script", "<b>", "<img", "<i>", "onerror=alert(1)>"):
        assert raw not in lowered
    assert "&lt;script&gt;" in text
    assert "base|line" in text


def test_hostile_values_are_escaped_in_markdown() -> None:
    text = md(load("hostile"))
    body = [line[2:] if line.startswith("> ") else line for line in text.splitlines()]
    for line in body:
        assert not re.search(r"(?<!\\)[<>]", line), line  # no raw HTML
        assert not re.search(r"(?<!\\)\$", line), line  # no math
    headings = [line for line in body if line.startswith("#")]
    assert headings == [
        "# A/B test report: x\\<script\\>alert(1)\\</script\\>",
        "## Hypothesis",
        "## Design",
        "## Results",
        "## Segments",
        "## Data quality",
        "## Decision",
    ]
    assert not any(line.startswith("- not a list") for line in body)
    # A value with pipes and newlines stays in its cell.
    segments = md_tables(text)[1]
    assert segments[2][0].strip() == "reg\\|ion=e\\|u \\| x \\|"
    assert "`kubectl mexp promote" not in text  # a hostile name is no code span


@pytest.mark.parametrize(
    "experiment",
    [
        {},
        {"status": "broken"},
        {"spec": [], "status": {"objective": [], "timeline": {}, "segments": [None], "phase": 3}},
        {"metadata": {"name": 5}, "status": {"outcome": "Ship", "objective": {"interval": ["a", "b"]}}},
        {
            "status": {
                "outcome": "Iterate",
                "abPlan": {"samplesPerArm": 0},
                "objective": {"samples": {"a": -1}},
            }
        },
        {
            "status": {
                "timeline": [
                    {"time": "2026-01-01T00:00:00Z"},
                    {"time": "2026-01-01T00:01:00Z", "lift": 1e308},
                ]
            }
        },
    ],
    ids=["empty", "status-not-object", "wrong-types", "odd-numbers", "zero-plan", "timeline-extremes"],
)
def test_odd_objects_render(experiment: dict[str, Any], tmp_path: Path) -> None:
    text = report.render(experiment, "md", assets_dir=tmp_path)
    assert text.startswith("# A/B test report: ")
    check_html(report.render(experiment, "html"))
    assert report.markdown_summary(experiment)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown report format"):
        report.render({}, "pdf")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- plots
@needs_matplotlib
def test_markdown_writes_pngs_linked_relative_to_the_output(tmp_path: Path) -> None:
    output = tmp_path / "reports" / "churn.md"
    assets = tmp_path / "reports" / "img"
    result = report.build(load("ship"), "md", output=output, assets_dir=assets)
    assert [p.name for p in result.assets] == ["churn-lift.png", "churn-traffic.png"]
    for path in result.assets:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![Lift of conversion over time, with its interval](img/churn-lift.png)" in result.text
    assert "(img/churn-traffic.png)" in result.text


def test_markdown_without_an_assets_dir_leaves_the_plots_out() -> None:
    text = report.render(load("ship"), "md")
    assert "## Over time" in text
    assert "Plots are left out" in text
    assert ".png" not in text


def test_no_plots_means_no_plot_section(tmp_path: Path) -> None:
    result = report.build(load("ship"), "md", plots=False, assets_dir=tmp_path)
    assert "Over time" not in result.text
    assert result.assets == ()
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_everything_else_renders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    experiment = load("ship")
    result = report.build(experiment, "md", assets_dir=tmp_path)
    assert "Plots need matplotlib: pip install modelrollout\\[report\\]" in result.text
    assert result.assets == ()
    assert list(tmp_path.iterdir()) == []
    assert flat(report.verdict(experiment)) in flat(result.text)
    page = report.render(experiment, "html")
    check_html(page)
    assert "Plots need matplotlib: pip install modelrollout[report]" in page
    assert "<svg" not in page
    assert "Ship (awaiting promotion)" in page


# ------------------------------------------------------------------------------------- summary
def test_summary_is_markdown_without_plots() -> None:
    summary = report.markdown_summary(load("ship"))
    assert summary == md(load("ship"))
    assert "Over time" not in summary
    assert ".png" not in summary


def test_summary_stays_below_the_configmap_budget() -> None:
    experiment = load("ship")
    status = experiment["status"]
    status["message"] = "m|" * 200_000
    status["segments"] = [
        {
            "segment": {"region": f"r{i}-" + "x|" * 2000},
            "lift": 0.01,
            "interval": [-0.1, 0.1],
            "reversed": i % 2 == 0,
        }
        for i in range(256)
    ]
    assert len(report.render(experiment, "md", plots=False).encode()) > report.SUMMARY_LIMIT
    summary = report.markdown_summary(experiment)
    assert len(summary.encode()) < report.SUMMARY_LIMIT
    assert "more rows not shown" in summary
    assert "Ship (awaiting promotion)" in summary
    for table in md_tables(summary):
        assert len({len(row) for row in table}) == 1


def test_summary_of_many_segments_fits() -> None:
    experiment = load("ship")
    experiment["status"]["segments"] = [{"segment": {"r": str(i)}, "reversed": True} for i in range(8000)]
    summary = report.markdown_summary(experiment)
    assert len(summary.encode()) < report.SUMMARY_LIMIT
    assert "more rows not shown" in summary
    assert summary.count("Simpson's paradox") == 1


def test_summary_is_cut_as_a_last_resort(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "SUMMARY_LIMIT", 1000)
    summary = report.markdown_summary(load("ship"))
    assert len(summary.encode()) < 1000
    assert summary.startswith("# A/B test report: churn-v2\n")
    assert summary.rstrip().endswith("The full report: `modelrollout report`.)*")


# ---------------------------------------------------------------------------------------- CLI
@needs_matplotlib
def test_cli_file_round_trip_writes_markdown_and_pngs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(load("ship")))  # JSON, as kubectl get -o json writes it
    output = tmp_path / "out" / "churn-report.md"
    output.parent.mkdir()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", "--file", str(saved), "-o", str(output)])
    assert exit_.value.code == 0
    text = output.read_text()
    assert "](churn-report-lift.png)" in text
    assert "](churn-report-traffic.png)" in text
    for name in ("churn-report-lift.png", "churn-report-traffic.png"):
        assert (output.parent / name).read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {output}" in capsys.readouterr().err
    assert md_tables(text)


def test_cli_html_by_suffix_and_md_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixture = str(FIXTURES / "discard.yaml")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", "--file", fixture, "-o", str(tmp_path / "r.html"), "--no-plots"])
    assert exit_.value.code == 0
    check_html((tmp_path / "r.html").read_text())
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", "--file", fixture])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("# A/B test report: ranker-v3")
    assert "Over time" not in out and ".png" not in out  # md on stdout: no plots, no note
    assert list(tmp_path.iterdir()) == [tmp_path / "r.html"]


def test_cli_picks_a_name_from_a_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": [load("ship"), load("discard")]}
    saved = tmp_path / "all.yaml"
    saved.write_text(yaml.safe_dump(listing))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", "ranker-v3", "--file", str(saved), "--format", "md"])
    assert exit_.value.code == 0
    assert "# A/B test report: ranker-v3" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", "--file", str(saved)])
    assert exit_.value.code == 1
    assert "is a list with 2 items (name one)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["report"], 2, "give the experiment's NAME"),
        (["report", "--file", "/nonexistent/x.yaml"], 1, "cannot read /nonexistent/x.yaml"),
        (["report", "--file", str(FIXTURES / "ship.yaml"), "other"], 1, 'holds "churn-v2", not "other"'),
    ],
)
def test_cli_errors(argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == code
    assert message in capsys.readouterr().err


def test_cli_reads_the_cluster_with_the_plugins_client(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelrollout.plugin import commands

    asked: list[tuple[str, str]] = []

    class Client:
        configuration = type("Configuration", (), {"host": "https://cluster"})()

        def __enter__(self) -> Client:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    class Session:
        def __init__(self, api: object, host: str) -> None:
            assert host == "https://cluster"

        def get(self, namespace: str, name: str) -> dict[str, Any]:
            asked.append((namespace, name))
            return load("ship")

    monkeypatch.setattr(commands, "connect", lambda kubeconfig, context: (Client(), "default-ns"))
    monkeypatch.setattr(commands, "Session", Session)
    monkeypatch.setattr("kubernetes.client.CustomObjectsApi", lambda client: object())
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", "churn-v2", "-n", "shop"])
    assert exit_.value.code == 0
    assert asked == [("shop", "churn-v2")]
    assert "Ship (awaiting promotion)" in capsys.readouterr().out
    assert report.fetch("churn-v2") and asked[-1] == ("default-ns", "churn-v2")

    def refuse(kubeconfig: str | None, context: str | None) -> Any:
        raise commands.PluginError("no kubeconfig at /nowhere")

    monkeypatch.setattr(commands, "connect", refuse)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", "churn-v2"])
    assert exit_.value.code == 1
    assert "no kubeconfig at /nowhere" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ defaults
def test_shown_defaults_are_the_specs() -> None:
    ab = spec_ab.ABTestSpec()
    assert ab.split == report.DEFAULT_SPLIT
    assert ab.max_duration == durations.parse_duration(report.DEFAULT_MAX_DURATION)
    assert ab.interval == durations.parse_duration(report.DEFAULT_INTERVAL)
    assert spec_ab.ObjectiveSpec(metric="m", minimum_effect=0.1).power == report.DEFAULT_POWER
    assert spec.AnalysisSpec().alpha == report.DEFAULT_ALPHA


def test_fixtures_are_not_modified_by_rendering() -> None:
    experiment = load("hostile")
    before = copy.deepcopy(experiment)
    report.render(experiment, "html")
    report.markdown_summary(experiment)
    assert experiment == before


@needs_matplotlib
def test_a_change_of_leader_draws_a_lift_line_per_leader() -> None:
    """With several candidates each timeline point is the leader's lift: a line per leader, never one
    line joining two candidates' lifts."""
    experiment = copy.deepcopy(load("ship"))
    lifted = [p for p in experiment["status"]["timeline"] if "lift" in p]
    leaders = ["churn-v2", "churn-v2", "churn-v3", "churn-v3"]
    for point, leader in zip(lifted, leaders, strict=False):
        point["variant"] = leader
    ((_, _, figure), *_) = report._figures(report._View(experiment))
    (ax,) = figure.axes
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert "the leading candidate over baseline" in ax.get_title()
    v2, v3 = lines["churn-v2: lift"], lines["churn-v3: lift"]
    assert [round(v, 6) for v in v2[:2]] == [20.0, 15.0] and all(math.isnan(v) for v in v2[2:])
    assert all(math.isnan(v) for v in v3[:2]) and not any(math.isnan(v) for v in v3[2:])
    # One candidate: one line, as before.
    ((_, _, single), *_) = report._figures(report._View(load("ship")))
    labels = [line.get_label() for line in single.axes[0].get_lines()]
    assert labels.count("lift") == 1 and not any(": lift" in label for label in labels)
    assert "Lift of conversion, candidate over baseline" in single.axes[0].get_title()
