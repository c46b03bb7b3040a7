"""The plan of a sweep: each run of its grid, its directory and its state (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emim_bench import config
from emim_bench.run.directory import STATES, run_state
from emim_bench.run.identity import run_dir, run_id
from emim_bench.sweep.file import Sweep, grid_keys, grid_points, run_overrides


@dataclass
class PlannedRun:
    """One run of a sweep: its overrides, where it lives, and how far it got."""

    overrides: list[str]
    run_id: str
    run_dir: Path
    state: str
    choices: dict


def plan(sweep: Sweep, extra: list[str] = ()) -> list[PlannedRun]:
    """Every run of the sweep with its state, read from its run directory.

    Args:
        extra: overrides added to every run (e.g. ``runs_root=...``, ``data.download=true``).

    States: those of :func:`emim_bench.run.directory.run_state` ("done", "running",
    "failed", "partial", "to do").
    """
    runs, seen = [], set()
    for point in grid_points(sweep):
        overrides = run_overrides(sweep, point, extra)
        cfg = config.load(overrides)
        if run_id(cfg) in seen:  # two grids reach one config (e.g. an ablation's centre)
            continue
        seen.add(run_id(cfg))
        directory = run_dir(cfg)
        runs.append(PlannedRun(overrides, run_id(cfg), directory, run_state(directory), point))
    return runs


def format_plan(sweep: Sweep, runs: list[PlannedRun]) -> str:
    """The plan as a text table (run id, grid choices, state) and a count per state."""
    keys = grid_keys(sweep)
    header = ["run", *keys, "state"]
    rows = [[r.run_id, *(r.choices.get(k, "") for k in keys), r.state] for r in runs]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in [header, *rows]]
    return "\n".join([f"sweep {sweep.name}: {len(runs)} runs", *lines, summary_line(sweep, runs)])


def summary_line(sweep: Sweep, runs: list[PlannedRun]) -> str:
    """E.g. ``sweep smoke: 4 runs: 3 done, 1 failed, 0 partial, 0 to do``."""
    counts = ", ".join(f"{sum(r.state == s for r in runs)} {s}" for s in STATES)
    return f"sweep {sweep.name}: {len(runs)} runs: {counts}"
