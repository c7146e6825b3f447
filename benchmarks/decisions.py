"""The decision benchmark: every scenario of the matrix under every policy, side by side.

Runs each (scenario, policy) cell ``--runs`` times through the simulator
(``modelrollout.sim``: the real decision core, virtual time, seeded runs)
and writes ``benchmarks/RESULTS.md``: false rollbacks where the candidate is
as good as the baseline (A/A cells), detection, time to rollback, failed
candidate requests and the chance a bad candidate reaches 100 % where it is
worse.  Scenario files live in ``benchmarks/scenarios/`` in the public
format of ``modelrollout simulate``, so any cell can be re-run on its own::

    .venv/bin/python benchmarks/decisions.py [--runs 10000] [--scenarios aa,error-x2] [--policies flagger]
    .venv/bin/modelrollout simulate benchmarks/scenarios/error-x2.yaml --policy argo --runs 10000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import shlex
import sys
import time
from pathlib import Path

from modelrollout.sim import engine, policies, scenario

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
CHUNK = 500  # runs per task handed to a worker process


@dataclasses.dataclass(frozen=True)
class Cell:
    name: str
    story: str
    harmful: bool  # the candidate is worse than the baseline: it should be rolled back


MATRIX = (
    Cell("aa", "A/A: candidate identical to the baseline", False),
    Cell("aa-incident", "A/A, shared incident: both 1 % -> 3 % at 90 s", False),
    Cell("aa-drift", "A/A, base rate drifting 1 % -> 2 %", False),
    Cell("bursty", "A/A, bursty errors (Beta, concentration 500)", False),
    Cell("error-x1.2", "error rate x1.2 (1.2 %)", True),
    Cell("error-x2", "error rate x2 (2 %)", True),
    Cell("error-x5", "error rate x5 (5 %)", True),
    Cell("latency-x1.2", "latency x1.2 (median 240 ms)", True),
    Cell("crash-loop", "crash-looping candidate (all 5xx)", True),
)
# Ten times the looks makes every run ten times as long: selectable, not in the default matrix.
EXTRA = (Cell("aa-10x-checks", "A/A with 10x as many checks (1 s interval)", False),)

GOALS = """\
Goals from the issue (reference plan, alpha 0.05):
- A/A false rollback <= 2 %; A/A under a shared incident (1 % -> 3 %) <= 5 %.
- Error rate x2: detected in >= 99.5 % of runs, median <= 35 failed candidate requests before rollback.
- Error rate x5: median rollback <= 20 s.
- Latency x1.2: detected in >= 99 % of runs.
- Better than every peer policy on false rollbacks and on a bad candidate reaching 100 %."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs per cell (default 10000)")
    parser.add_argument("--seed", type=int, default=20261123, help="seed of run 0 of every cell")
    parser.add_argument("--scenarios", default=",".join(c.name for c in MATRIX), help="comma-separated")
    parser.add_argument("--policies", default=",".join(policies.NAMES), help="comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1: run in this one)")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md", help="the Markdown report")
    args = parser.parse_args(argv)

    cells = [c for c in (*MATRIX, *EXTRA) if c.name in args.scenarios.split(",")]
    unknown = set(args.scenarios.split(",")) - {c.name for c in (*MATRIX, *EXTRA)}
    chosen = args.policies.split(",")
    if unknown or not cells or not set(chosen) <= set(policies.NAMES) or args.runs < 1:
        known = [c.name for c in (*MATRIX, *EXTRA)]
        parser.error(f"scenarios from {known}, policies from {list(policies.NAMES)}")

    started = time.perf_counter()
    summaries = simulate_matrix(cells, chosen, runs=args.runs, seed=args.seed, workers=args.workers)
    wall = time.perf_counter() - started
    total = len(cells) * len(chosen) * args.runs
    command = shlex.join(["python", "benchmarks/decisions.py", *(argv if argv is not None else sys.argv[1:])])
    report = render(cells, chosen, summaries, runs=args.runs, seed=args.seed, command=command, wall=wall)
    splice(args.output, report)
    print(report)
    speed = f"{total / wall:.0f} runs/s, {args.workers} workers"
    print(f"{total} runs in {wall:.0f}s ({speed}); wrote {args.output}")
    return 0


def simulate_matrix(
    cells: list[Cell], chosen: list[str], *, runs: int, seed: int, workers: int
) -> dict[tuple[str, str], engine.Summary]:
    """Summaries per (scenario, policy); chunks of runs are spread over ``workers`` processes."""
    scenarios = {c.name: scenario.load(SCENARIOS / f"{c.name}.yaml") for c in cells}
    tasks = [
        (cell.name, name, range(start, min(start + CHUNK, runs)))
        for cell in cells
        for name in chosen
        for start in range(0, runs, CHUNK)
    ]
    results: dict[tuple[str, str], list[engine.RunResult]] = {(c.name, p): [] for c in cells for p in chosen}
    if workers <= 1:
        for cell_name, name, indices in tasks:
            part = engine.replicate(scenarios[cell_name], policies.get(name), seed, indices)
            results[cell_name, name].extend(part)
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {
                pool.submit(engine.replicate, scenarios[cell_name], policies.get(name), seed, indices): (
                    cell_name,
                    name,
                )
                for cell_name, name, indices in tasks
            }
            for future in concurrent.futures.as_completed(futures):
                results[futures[future]].extend(future.result())
    # Chunks finish in any order; order the runs so the summary never depends on scheduling.
    return {key: engine.summarize(sorted(part, key=_run_key)) for key, part in results.items()}


def _run_key(result: engine.RunResult) -> tuple[str, float, int]:
    return (result.outcome, result.seconds, result.candidate_errors)


def splice(path: Path, report: str) -> None:
    """``report`` (a top-level ``# `` section) in place of the same section of ``path``, the other
    benchmarks' sections kept; at the top when the file has none."""
    heading = report.splitlines()[0]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    if start is None:
        before, after = [], lines
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# ")), len(lines))
        before, after = lines[:start], lines[end:]
    section = report if report.endswith("\n") else report + "\n"
    gap = "\n" if after and not section.endswith("\n\n") else ""
    path.write_text("".join(before) + section + gap + "".join(after), encoding="utf-8")


def render(
    cells: list[Cell],
    chosen: list[str],
    summaries: dict[tuple[str, str], engine.Summary],
    *,
    runs: int,
    seed: int,
    command: str,
    wall: float,
) -> str:
    def pct(value: float) -> str:
        return f"{value * 100:.2f} %"

    def num(value: float | None, unit: str = "") -> str:
        return "-" if value is None else f"{value:.0f}{unit}"

    total = len(cells) * len(chosen) * runs
    lines = [
        "# Decision benchmark",
        "",
        "Reference plan: 200 req/s (Poisson), steps 5 / 25 / 50 % then 100 %, 60 s per step, 10 s interval,",
        "alpha 0.05, failureLimit 1, baseline 1 % errors and lognormal latency (median 200 ms, sigma 0.5)",
        "in Istio's buckets. Every policy runs in the operator's own state machine; only the judging differs",
        "(`operator/modelrollout/sim/policies.py` says which rule of which product each one reproduces).",
        "",
        f"Runs per cell: {runs}; seed {seed} (run i uses seed + i); {total} runs in {wall:.0f} s wall time.",
        f"Command: `{command}`",
        "",
        GOALS,
        "",
        "Policies:",
        *(f"- `{name}`: {policies.get(name).description}" for name in chosen),
        "",
    ]
    good = [c for c in cells if not c.harmful]
    if good:
        lines += [
            "## Good candidates (A/A): every rollback is a false rollback",
            "",
            "| scenario | policy | false rollback | promoted | first-try promotion | unfinished |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for cell in good:
            for name in chosen:
                s = summaries[cell.name, name]
                lines.append(
                    f"| {cell.story} | {name} | {pct(s.rolled_back_rate)} | {pct(s.promoted_rate)} "
                    f"| {pct(s.first_try_promotion_rate)} | {pct(s.unfinished_rate)} |"
                )
        lines.append("")
    bad = [c for c in cells if c.harmful]
    if bad:
        lines += [
            "## Bad candidates: every rollback is a detection",
            "",
            "| scenario | policy | detected | time to rollback (median / p90) "
            "| failed candidate requests before rollback (median) | reaches 100 % | mean failed requests |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for cell in bad:
            for name in chosen:
                s = summaries[cell.name, name]
                timing = f"{num(s.median_seconds_to_rollback, ' s')} / {num(s.p90_seconds_to_rollback, ' s')}"
                lines.append(
                    f"| {cell.story} | {name} | {pct(s.rolled_back_rate)} | {timing} "
                    f"| {num(s.median_candidate_errors_at_rollback)} | {pct(s.reached_full_rate)} "
                    f"| {s.mean_candidate_errors:.0f} |"
                )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
