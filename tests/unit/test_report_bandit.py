"""``modelrollout report`` of a bandit (``strategy: Bandit``).

The experiments are examples/03-demo/bandit.yaml driven through the real core
(``core.banditrun``), their status rendered as the operator writes it and read
back as the API server hands it out (test_banditrun's ``drive`` and
``through_status``): the report is tested against what the operator really
writes.  The expected numbers are read from that status, so each test checks the
report shows them, whichever exact counts the simulation produced; each scenario
first checks that its story happened (who won, who was dropped).
"""

from __future__ import annotations

import copy
import functools
import html
import importlib.util
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import test_banditrun as tb
import test_report as tr
import yaml

from modelrollout import durations, report, spec, spec_bandit

from core_helpers import T0

EXAMPLE = Path(__file__).parents[2] / "examples" / "03-demo" / "bandit.yaml"
V1, V2, V3 = tb.V1, tb.V2, tb.V3
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_matplotlib = pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")

# name: (changes to spec.bandit, true conversion rates, error rates, evaluations at most)
SCENARIOS: dict[str, tuple[dict[str, Any], dict[str, float], dict[str, float], int]] = {
    "ship": ({}, {V1: 0.04, V2: 0.04, V3: 0.08}, {}, 200),
    "awaiting": ({"autoPromote": False}, {V1: 0.04, V2: 0.04, V3: 0.08}, {}, 40),
    "baseline-best": ({}, {V1: 0.08, V2: 0.04, V3: 0.04}, {}, 200),
    "harmful": ({}, {V1: 0.04, V2: 0.04, V3: 0.08}, {V2: 0.30}, 200),
    "all-dropped": ({}, {V1: 0.04, V2: 0.08, V3: 0.08}, {V2: 0.30, V3: 0.30}, 200),
    "iterate": ({"maxDuration": "2m"}, {V1: 0.05, V2: 0.05, V3: 0.05}, {}, 200),
    "exploring": ({}, {V1: 0.04, V2: 0.05, V3: 0.06}, {}, 3),
    "confirming": ({"minimumEffect": 0.01}, {V1: 0.04, V2: 0.04, V3: 0.08}, {}, 6),
    # Long enough for the operator to thin its allocation history.
    "long": (
        {"maxDuration": "40m", "confidence": 0.999999, "intervalsRequired": 100},
        {V1: 0.05, V2: 0.05, V3: 0.05},
        {},
        300,
    ),
}


@functools.cache
def _driven(name: str) -> dict[str, Any]:
    settings, rates, errors, ticks = SCENARIOS[name]
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["bandit"].update({"interval": "10s", **settings})  # the interval of tb.drive's ticks
    experiment = spec.parse_spec(body["spec"])
    observe = tb.at_rates(rates, errors=errors or None)
    _, decisions = tb.drive(experiment, observe, ticks=ticks, restart_every_tick=True)
    status: dict[str, Any] | None = None
    for i, decision in enumerate(decisions):
        status = tb.through_status(decision, status, T0 + tb.TICK * i, experiment)
    return {**body, "status": status}


def load(name: str) -> dict[str, Any]:
    return copy.deepcopy(_driven(name))


def md(experiment: Mapping[str, Any]) -> str:
    return report.render(experiment, "md", plots=False)


def plain_html(text: str) -> str:
    """An HTML page's text, white space joined, for asserting sentences."""
    return " ".join("".join(tr.check_html(text).text).split())


def rendered(experiment: Mapping[str, Any], fmt: str) -> str:
    """The report's text in either format: Markdown unescaped, HTML checked and stripped of its tags."""
    if fmt == "md":
        return tr.flat(md(experiment))
    return plain_html(report.render(experiment, "html", plots=False))


def rows(text: str, first: str) -> dict[str, list[str]]:
    """The Markdown table whose first header is ``first``: its rows by their first cell."""
    for table in tr.md_tables(text):
        if table[0][0].strip() == first:
            return {tr.flat(r[0]).strip(): [tr.flat(c).strip() for c in r] for r in table[2:]}
    raise AssertionError(f"no table starting with {first!r}")


def html_rows(text: str) -> list[list[str]]:
    """Every table row of an HTML page, as its cells' text."""
    found = []
    for row in re.findall(r"<tr>(.*?)</tr>", text, re.S):
        found.append([re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", row, re.S)])
    return found


# What the report must show, written out here from the status (not with the report's helpers).
def pct(value: float) -> str:
    return f"{value * 100:+.1f} %"


def rate(value: float) -> str:
    percent = value * 100
    return f"{percent:.2f} %" if percent >= 1 else f"{percent:.3g} %"


def count(value: float) -> str:
    return f"{value:,.0f}"


def reading(interval: list[float]) -> str:
    low, high = interval
    return "better (significant)" if low > 0 else "worse (significant)" if high < 0 else "no clear difference"


def comparison(experiment: Mapping[str, Any], workload: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        c for c in experiment["status"]["bandit"]["comparison"] if c["workload"] == workload
    )
    return found


def arm(experiment: Mapping[str, Any], workload: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        a for a in experiment["status"]["bandit"]["arms"] if a["workload"] == workload
    )
    return found


def arm_cells(entry: Mapping[str, Any]) -> list[str]:
    """Weight, trials, successes, pooled and stratified rate, P(best) as the table shows them."""
    return [
        f"{entry['weight']} %",
        count(entry["trials"]),
        count(entry["successes"]),
        rate(entry["pooledRate"]) if "pooledRate" in entry else "-",
        rate(entry["stratifiedRate"]) if "stratifiedRate" in entry else "-",
        f"{entry['probabilityBest']:.3f}",
    ]


# ------------------------------------------------------------------------------------ Ship
@pytest.mark.parametrize("fmt", ["md", "html"])
def test_ship_says_which_model_was_promoted_and_by_how_much(fmt: str) -> None:
    experiment = load("ship")
    status = experiment["status"]
    assert (status["phase"], status["outcome"], status["winner"]) == ("Succeeded", "Ship", V3)
    won = comparison(experiment, V3)
    low, high = won["interval"]
    text = rendered(experiment, fmt)
    assert (
        f"Ship: {V3} was promoted and now receives all traffic: it raised conversion by "
        f"{pct(won['lift'])[1:]} over the baseline {V1} (97.5 % always-valid interval {pct(low)} to "
        f"{pct(high)})." in text
    )
    assert "Bandit report: churn-bandit" in text
    assert "A/B test" not in text
    assert f"Outcome: Ship: {V3} is significantly better than {V1} on conversion; it was promoted." in text
    assert f"Next: nothing: {V3} now receives all traffic." in text
    assert f"Traffic now: {V1} (baseline) 0 %, {V2} 0 %, {V3} (winner) 100 %." in text


def test_ship_tables_hold_the_status_numbers() -> None:
    experiment = load("ship")
    text = md(experiment)
    models = rows(text, "Model")
    assert list(models) == [f"{V1} (baseline)", V2, f"{V3} (winner)"]
    for workload, label in ((V1, f"{V1} (baseline)"), (V2, V2), (V3, f"{V3} (winner)")):
        assert models[label][1:7] == arm_cells(arm(experiment, workload)), workload
    assert models[f"{V1} (baseline)"][7] == "baseline"
    assert models[f"{V3} (winner)"][7] == "active"
    compared = rows(text, "Candidate")
    assert list(compared) == [V2, f"{V3} (winner)"]
    for workload, label in ((V2, V2), (V3, f"{V3} (winner)")):
        entry = comparison(experiment, workload)
        low, high = entry["interval"]
        assert compared[label][1:] == [
            rate(entry["baseline"]),
            rate(entry["candidate"]),
            pct(entry["lift"]),
            f"{pct(low)} to {pct(high)}",
            "yes" if entry["better"] else "no",
            reading(entry["interval"]),
        ]
    assert compared[f"{V3} (winner)"][5:] == ["yes", "better (significant)"]


def test_ship_design_names_the_settings_and_the_statistics() -> None:
    plain = tr.flat(md(load("ship")))
    assert f"the baseline {V1} (subset v1); the candidates {V2} (subset v2), {V3} (subset v3)." in plain
    assert "Reward: conversion, a ratio of successes to trials" in plain
    assert "every 10s (interval)" in plain
    assert (
        "at least 10 % (minWeight) and no weight moves more than 20 points at a time (maxStepChange)" in plain
    )
    assert (
        "best with probability at least 0.95 (confidence) for 3 intervals in a row (intervalsRequired), or "
        "after 3m at the latest (maxDuration)" in plain
    )
    assert "Guardrails: error-rate: each candidate is judged against the baseline" in plain
    assert "97.5 % always-valid intervals at alpha 0.025 (0.05 over 2 candidates)" in plain
    assert "tuned for lifts of about 20 % (minimumEffect)" in plain
    assert "the winner is promoted automatically on Ship (autoPromote)." in plain


def test_defaults_are_marked_and_are_the_specs() -> None:
    experiment = load("ship")
    experiment["spec"]["bandit"] = {"reward": "conversion"}
    plain = tr.flat(md(experiment))
    assert "every 1m (interval, the default)" in plain
    assert "at least 10 % (minWeight, the default)" in plain
    assert "20 points at a time (maxStepChange, the default)" in plain
    assert "0.95 (confidence, the default) for 3 intervals in a row (intervalsRequired, the default)" in plain
    assert "after 7d at the latest (maxDuration, the default)" in plain
    assert "about 5 % (minimumEffect, the default)" in plain
    assert "(autoPromote, the default)" in plain
    settings = spec_bandit.BanditSpec(reward="conversion")
    assert settings.interval == durations.parse_duration(report.DEFAULT_BANDIT_INTERVAL)
    assert settings.max_duration == durations.parse_duration(report.DEFAULT_BANDIT_MAX_DURATION)
    assert settings.min_weight == report.DEFAULT_MIN_WEIGHT
    assert settings.max_step_change == report.DEFAULT_MAX_STEP_CHANGE
    assert settings.confidence == report.DEFAULT_CONFIDENCE
    assert settings.intervals_required == report.DEFAULT_INTERVALS_REQUIRED
    assert settings.minimum_effect == report.DEFAULT_BANDIT_MINIMUM_EFFECT
    assert settings.auto_promote is True


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_ship_awaiting_promotion_says_how_to_promote(fmt: str) -> None:
    experiment = load("awaiting")
    status = experiment["status"]
    assert (status["phase"], status["reason"], status["winner"]) == ("Paused", "AwaitingPromotion", V3)
    won = comparison(experiment, V3)
    text = rendered(experiment, fmt)
    assert (
        f"Ship (awaiting promotion): {V3} raised conversion by {pct(won['lift'])[1:]} over the baseline {V1} "
        in text
    )
    assert "; it waits for a person to promote it." in text
    assert "on Ship the winner waits for a person to promote it (autoPromote is off)." in text
    assert "kubectl mexp promote churn-bandit -n ml" in text
    assert "kubectl mexp abort churn-bandit -n ml" in text
    weights = status["weights"]
    assert (
        f"Traffic now: {V1} (baseline) {weights[V1]} %, {V2} {weights[V2]} %, {V3} (winner) {weights[V3]} %"
        in text
    )


# ----------------------------------------------------------------------------- Discard, Iterate
@pytest.mark.parametrize("fmt", ["md", "html"])
def test_discard_when_the_baseline_is_best(fmt: str) -> None:
    experiment = load("baseline-best")
    status = experiment["status"]
    assert (status["phase"], status["outcome"], status["reason"]) == ("RolledBack", "Discard", "BaselineBest")
    chance = status["bandit"]["probabilityBest"][V1]
    text = rendered(experiment, fmt)
    assert (
        f"Discard: the bandit found the baseline {V1} the best model (probability {chance:.3f} of being the "
        "best) and no candidate significantly better, so the baseline keeps all traffic." in text
    )
    assert "(winner)" not in text
    assert "Ship" not in text.split("Decision")[-1]
    assert f"Traffic now: {V1} (baseline) 100 %, {V2} 0 %, {V3} 0 %." in text
    assert f"Next: nothing: all traffic is back on {V1}." in text
    if fmt == "md":
        compared = rows(md(experiment), "Candidate")
        for workload in (V2, V3):
            assert compared[workload][5:] == ["no", "worse (significant)"]  # both significantly worse here
            assert compared[workload][3] == pct(comparison(experiment, workload)["lift"])


def test_discard_names_the_candidates_that_are_worse() -> None:
    """The confirmed pick turned out significantly worse (reason Discarded): the verdict names it."""
    experiment = load("baseline-best")
    experiment["status"].update(reason="Discarded", message="Discard: churn-v3, the bandit's pick, is worse")
    entries = [comparison(experiment, w) for w in (V2, V3)]
    plain = tr.flat(md(experiment))
    details = "; ".join(
        f"{e['workload']} {pct(e['lift'])}, {pct(e['interval'][0])} to {pct(e['interval'][1])}"
        for e in entries
    )
    assert (
        f"Discard: no candidate beat the baseline {V1}, and {V2}, {V3} are significantly worse (lift of "
        f"conversion, 97.5 % always-valid interval: {details}), so the baseline keeps all traffic." in plain
    )


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_a_harmful_arm_is_shown_dropped_with_its_reason(fmt: str) -> None:
    experiment = load("harmful")
    status = experiment["status"]
    record = next(r for r in status["candidates"] if r["workload"] == V2)
    assert (record["state"], record["reason"]) == ("Dropped", "GuardrailFailed")
    assert (status["phase"], status["winner"]) == ("Succeeded", V3)
    text = rendered(experiment, fmt)
    state = f"dropped (GuardrailFailed: {record['message']})"
    assert state in text
    assert f"Ship: {V3} was promoted" in text
    if fmt == "md":
        source = md(experiment)
        models = rows(source, "Model")
        assert models[V2][1] == f"{arm(experiment, V2)['weight']} %" == "0 %"
        assert models[V2][7] == state
        assert models[f"{V3} (winner)"][7] == "active"
        compared = rows(source, "Candidate")
        why = comparison(experiment, V2)["reason"]
        assert compared[V2][1:] == ["-", "-", "-", "-", "no", why]  # no interval: nothing made up
    else:
        page = report.render(experiment, "html", plots=False)
        first = next(r for r in html_rows(page) if r[0] == V2)  # the table per model comes first
        assert html.unescape(first[-1]) == state


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_every_candidate_dropped_is_a_discard_naming_why(fmt: str) -> None:
    experiment = load("all-dropped")
    status = experiment["status"]
    assert (status["phase"], status["outcome"]) == ("RolledBack", "Discard")
    why = {r["workload"]: f"{r['reason']}: {r['message']}" for r in status["candidates"]}
    text = rendered(experiment, fmt)
    assert (
        f"Discard: every candidate was dropped ({V2}: {why[V2]}; {V3}: {why[V3]}), so the baseline {V1} "
        "keeps all traffic." in text
    )
    assert "No comparison yet: the bandit has measured no interval." in text


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_iterate_gives_each_candidates_lift(fmt: str) -> None:
    experiment = load("iterate")
    status = experiment["status"]
    assert (status["phase"], status["outcome"]) == ("RolledBack", "Iterate")
    details = "; ".join(
        f"{w} {pct(e['lift'])}, {pct(e['interval'][0])} to {pct(e['interval'][1])}"
        for w in (V2, V3)
        for e in [comparison(experiment, w)]
    )
    text = rendered(experiment, fmt)
    assert (
        f"Iterate: no clear answer within the maximum duration (2m), so the baseline {V1} keeps all traffic: "
        f"no candidate is significantly better and not every one is worse (lift of conversion, 97.5 % "
        f"always-valid interval: {details})." in text
    )
    assert "raise bandit.maxDuration" in text
    assert f"decided after {status['bandit']['intervals']} intervals" in text


# ----------------------------------------------------------------------------------- running
@pytest.mark.parametrize("fmt", ["md", "html"])
def test_a_running_bandit_is_reported_as_running(fmt: str) -> None:
    experiment = load("exploring")
    status = experiment["status"]
    bandit = status["bandit"]
    assert (status["phase"], bandit["stage"], "outcome" in status) == ("Progressing", "Exploring", False)
    leader, intervals = bandit["leader"], bandit["intervals"]
    text = rendered(experiment, fmt)
    assert (
        f"Running, no decision yet: exploring, {intervals} intervals so far; the most likely best model is "
        f"{leader} (probability {bandit['probabilityBest'][leader]:.3f})." in text
    )
    assert "Outcome: none yet." in text
    assert f"Stage: exploring, {intervals} intervals so far." in text
    assert "running for 20s so far (since 2026-11-23 10:00 UTC)" in text
    assert "the bandit re-allocates every 10s until it decides, at most 3m after it started." in text
    assert "(winner)" not in text
    assert f"{leader} (leader)" in text


def test_a_confirming_bandit_says_what_it_confirms() -> None:
    experiment = load("confirming")
    bandit = experiment["status"]["bandit"]
    assert (bandit["stage"], bandit["leader"]) == ("Confirming", V3)
    entry = comparison(experiment, V3)
    text = md(experiment)
    plain = tr.flat(text)
    assert (
        f"Running, no decision yet: after {bandit['intervals']} intervals the bandit is confirming {V3} "
        f"against the baseline {V1} at an even split; so far {V3} changed conversion by {pct(entry['lift'])} "
        f"(97.5 % always-valid interval {pct(entry['interval'][0])} to {pct(entry['interval'][1])})." in plain
    )
    assert rows(text, "Model")[V2][7] == f"set aside while {V3} is confirmed"


def test_a_bandit_without_a_status_renders_its_design() -> None:
    experiment = yaml.safe_load(EXAMPLE.read_text())
    text = md(experiment)
    plain = tr.flat(text)
    assert "Running, no decision yet: the bandit has measured no interval so far." in plain
    assert "status not yet observed" in plain
    assert "No results yet: the bandit has measured no interval." in plain
    assert "every 3s (interval)" in plain
    assert "Allocation over time" not in plain
    tr.check_html(report.render(experiment, "html"))


def test_verdict_function_matches_the_bandit_report() -> None:
    for name in ("ship", "awaiting", "baseline-best", "harmful", "all-dropped", "iterate", "exploring"):
        experiment = load(name)
        assert tr.flat(report.verdict(experiment)) in tr.flat(md(experiment)), name


# ------------------------------------------------------------------------------ allocation
def test_without_plots_the_allocation_is_a_table_of_the_status_points() -> None:
    experiment = load("iterate")
    points = experiment["status"]["bandit"]["allocation"]
    assert 2 < len(points) <= report.ALLOCATION_ROWS
    table = rows(md(experiment), "Time")
    assert len(table) == len(points)
    for row, point in zip(table.values(), points, strict=True):
        assert row[1:4] == [f"{point['weights'][w]} %" for w in (V1, V2, V3)]
        chances = point.get("probabilityBest")
        if chances:
            best = max(chances, key=lambda w: chances[w])
            assert row[4] == f"{best} ({chances[best]:.3f})"
        else:
            assert row[4] == "-"


def test_a_long_allocation_table_keeps_the_first_and_the_last_point() -> None:
    experiment = load("long")
    points = experiment["status"]["bandit"]["allocation"]
    assert len(points) > report.ALLOCATION_ROWS  # the operator thinned it, it is still long
    text = md(experiment)
    table = list(rows(text, "Time").values())
    assert len(table) == report.ALLOCATION_ROWS
    assert f"{report.ALLOCATION_ROWS} of the {len(points)} points recorded" in tr.flat(text)
    for row, point in ((table[0], points[0]), (table[-1], points[-1])):
        assert row[0] == point["time"].replace("T", " ").replace("Z", " UTC")
        assert row[1:4] == [f"{point['weights'][w]} %" for w in (V1, V2, V3)]


@needs_matplotlib
def test_the_plot_draws_the_allocation_per_model() -> None:
    experiment = load("harmful")
    points = experiment["status"]["bandit"]["allocation"]
    ((suffix, caption, figure),) = report._figures(report._View(experiment))
    assert suffix == "allocation"
    assert caption == (
        "Traffic per model over time, as the bandit allocated it, and each model's probability of being "
        "the best"
    )
    weights, chances = figure.axes
    lines = {line.get_label(): line for line in weights.get_lines()}
    assert list(lines) == [f"{V1} (baseline)", V2, f"{V3} (winner)"]
    for workload, label in ((V1, f"{V1} (baseline)"), (V2, V2), (V3, f"{V3} (winner)")):
        assert list(lines[label].get_ydata()) == [p["weights"][workload] for p in points]
    best = {line.get_label(): list(line.get_ydata()) for line in chances.get_lines()}
    expected = [p.get("probabilityBest", {}).get(V3, math.nan) for p in points]
    assert [round(v, 4) for v in best[f"{V3} (winner)"] if not math.isnan(v)] == [
        v for v in expected if not math.isnan(v)
    ]


@needs_matplotlib
def test_html_inlines_the_allocation_plot_and_markdown_writes_it(tmp_path: Path) -> None:
    experiment = load("ship")
    page = report.render(experiment, "html")
    checker = tr.check_html(page)
    assert checker.tags.count("svg") == 1
    assert "plot-allocation" in checker.ids
    assert f"{V3} (winner)" in page and "P(best)" in page  # the legend and the axis, as text in the SVG
    result = report.build(experiment, "md", output=tmp_path / "bandit.md")
    assert [p.name for p in result.assets] == ["bandit-allocation.png"]
    assert result.assets[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(bandit-allocation.png)" in result.text
    assert "## Allocation over time" not in result.text  # the plot shows it


@needs_matplotlib
def test_without_an_allocation_there_is_no_plot() -> None:
    experiment = load("ship")
    del experiment["status"]["bandit"]["allocation"]
    page = report.render(experiment, "html")
    assert "<svg" not in page
    assert "No plots: the status holds no allocation yet" in page


# ------------------------------------------------------------------------------------ summary
def test_summary_of_a_long_bandit_is_its_report() -> None:
    experiment = load("long")
    summary = report.markdown_summary(experiment)
    assert summary == md(experiment)
    assert len(summary.encode()) < report.SUMMARY_LIMIT


def test_summary_of_an_inflated_bandit_stays_below_the_configmap_budget() -> None:
    experiment = load("long")
    status = experiment["status"]
    bandit = status["bandit"]
    point = bandit["allocation"][-1]
    bandit["allocation"] = [point] * 100_000
    bandit["arms"] = [{**bandit["arms"][0], "workload": f"model-{i}-" + "x|" * 200} for i in range(3000)]
    status["message"] = "m|" * 200_000
    assert len(md(experiment).encode()) > report.SUMMARY_LIMIT
    summary = report.markdown_summary(experiment)
    assert len(summary.encode()) < report.SUMMARY_LIMIT
    assert "more rows not shown" in summary
    assert tr.flat(report.verdict(experiment))[:60] in tr.flat(summary)
    for table in tr.md_tables(summary):
        assert len({len(row) for row in table}) == 1


# ----------------------------------------------------------------------------------- garbage
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_tables_are_rectangular_and_html_well_formed(name: str) -> None:
    experiment = load(name)
    for table in tr.md_tables(md(experiment)):
        assert len({len(row) for row in table}) == 1, table
    tr.check_html(report.render(experiment, "html"))


@pytest.mark.parametrize(
    "bandit",
    [
        "broken",
        [],
        {
            "arms": {},
            "comparison": "x",
            "allocation": {},
            "probabilityBest": [1],
            "stage": 5,
            "intervals": "3",
        },
        {"arms": [None, 5, {"workload": 7}], "comparison": [None, {"lift": 0.5}], "allocation": [None, {}]},
        {"allocation": [{"time": "yesterday", "weights": {V1: 50}}, {"time": 5}, {"time": None}]},
        {"allocation": [{"time": "2026-11-23T10:00:00Z", "weights": "all", "probabilityBest": {V1: "x"}}]},
        {"allocation": [{"time": "0001-01-01T00:00:00Z", "weights": {V1: 1e308, V2: -5, V3: True}}]},
    ],
    ids=["string", "list", "wrong-types", "odd-entries", "odd-times", "odd-weights", "extremes"],
)
def test_garbage_in_the_bandit_status_renders(bandit: Any, tmp_path: Path) -> None:
    experiment = load("ship")
    experiment["status"]["bandit"] = bandit
    text = report.render(experiment, "md", assets_dir=tmp_path)
    assert text.startswith("# Bandit report: churn-bandit")
    page = report.render(experiment, "html")
    tr.check_html(page)
    assert report.markdown_summary(experiment)
    assert "Ship: churn-v3 was promoted and now receives all traffic: it is significantly better" in tr.flat(
        text
    )
    assert "No results yet" not in text  # the records remain
    models = rows(md(experiment), "Model")
    assert [cells[1:7] for cells in models.values()] == [["-"] * 6] * 3  # no number made up


def test_odd_values_in_the_bandit_status_are_not_shown() -> None:
    experiment = load("ship")
    status = experiment["status"]
    bandit = status["bandit"]
    first = bandit["arms"][0]
    first.update(
        weight=150, trials=-3, successes=True, pooledRate=2.5, stratifiedRate=None, probabilityBest=7
    )
    bandit["allocation"][0]["weights"] = {V1: -5, V2: 1e308, V3: "33"}
    entry = next(c for c in bandit["comparison"] if c["workload"] == V3)
    entry.update(lift="big", interval=["a", 1], better="yes", baseline=-1, candidate=float("nan"))
    bandit.update(stage="Bogus", alpha=3, probabilityBest={V1: 2}, leader=5)
    status["winner"] = {"name": V3}
    text = md(experiment)
    plain = tr.flat(text)
    models = rows(text, "Model")
    assert models[f"{V1} (baseline)"][1:7] == ["-"] * 6  # P(best) from status.bandit.probabilityBest: odd too
    assert models[V3][1:7] == arm_cells(arm(experiment, V3))  # untouched, still shown; no longer the winner
    compared = rows(text, "Candidate")
    assert compared[V3][1:] == ["-", "-", "-", "-", "-", entry["reason"]]
    assert next(iter(rows(text, "Time").values()))[1:4] == ["-", "-", "-"]
    assert "Stage:" not in plain  # an unknown stage is not shown
    assert "alpha 0.025 (0.05 over 2 candidates)" in plain  # the odd alpha: the spec's over the candidates
    assert "Ship: the winning candidate (the status does not name it) was promoted" in plain
    tr.check_html(report.render(experiment, "html"))


def test_hostile_names_are_escaped() -> None:
    experiment = load("harmful")
    hostile = "<script>x</script>|y"
    for entry in experiment["status"]["candidates"]:
        entry["message"] = hostile
    experiment["status"]["bandit"]["arms"][1]["workload"] = "a|b\n# c"
    page = report.render(experiment, "html")
    tr.check_html(page)
    assert "<script>" not in page and "&lt;script&gt;" in page
    text = md(experiment)
    for table in tr.md_tables(text):
        assert len({len(row) for row in table}) == 1
    assert not any(line.startswith("# c") for line in text.splitlines())


def test_fixtures_are_not_modified_by_rendering() -> None:
    experiment = load("harmful")
    before = copy.deepcopy(experiment)
    report.render(experiment, "html")
    report.markdown_summary(experiment)
    assert experiment == before
