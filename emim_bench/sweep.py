"""Sweeps: a YAML grid of runs, its plan, and its launch through Hydra's multirun launchers.

A sweep file (``sweeps/NAME.yaml``)::

    name: smoke
    overrides: [budget=cpu, data.train_size=64]   # shared by every run
    grid:                                         # cartesian product
      method: [emim, simclr]
      seed: [0, 1]
    launcher: basic        # basic (sequential) | joblib (local parallel) | submitit_slurm
    launcher_options: {}   # {n_jobs: 2} or {partition: gpu, gpus_per_node: 1, timeout_min: 600}
    notes: |               # optional paragraphs, printed in the report under "Sweep notes"
      Why a method sits where it does, what was measured before choosing a setting.

Every run is an ordinary ``emim-bench pretrain`` run, so its directory and its
state (done, failed, partial, to do) follow from its config alone: running a
sweep again skips what is done and resumes what is partial. Only runs that
are not done are handed to the launcher, one Hydra job each.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig

from emim_bench import config, data, pretrain

LAUNCHERS = ("basic", "joblib", "submitit_slurm", "submitit_local")  # Hydra launcher plugins
STATES = ("done", "failed", "partial", "to do")


class SweepError(ValueError):
    """A malformed sweep file; the message names the file, the key and the fix."""


@dataclass
class Sweep:
    """A parsed sweep file."""

    name: str
    overrides: list[str]
    grid: dict[str, list]
    launcher: str = "basic"
    launcher_options: dict = field(default_factory=dict)
    notes: str = ""
    path: Path | None = None


@dataclass
class PlannedRun:
    """One run of a sweep: its overrides, where it lives, and how far it got."""

    overrides: list[str]
    run_id: str
    run_dir: Path
    state: str
    choices: dict


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file.

    Raises:
        SweepError: missing file, malformed YAML, missing or mistyped keys,
            unknown launcher, or a grid/override that does not compose (an
            unknown method, dataset or config key).
    """
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepError(f"{path}: malformed YAML: {' '.join(str(error).split())}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping with keys name, overrides, grid, launcher")
    unknown = set(raw) - {"name", "overrides", "grid", "launcher", "launcher_options", "notes"}
    if unknown:
        raise SweepError(f"{path}: unknown keys {sorted(unknown)}")
    name = raw.get("name") or path.stem
    grid = raw.get("grid") or {}
    overrides = raw.get("overrides") or []
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise SweepError(f"{path}: grid must map config keys to non-empty lists of values")
    if not isinstance(overrides, list):
        raise SweepError(f"{path}: overrides must be a list of KEY=VALUE strings")
    notes = raw.get("notes") or ""
    if not isinstance(notes, str):
        raise SweepError(f"{path}: notes must be text (paragraphs), e.g. notes: |")
    launcher = raw.get("launcher", "basic")
    if launcher not in LAUNCHERS:
        raise SweepError(f"{path}: unknown launcher {launcher!r}; choose one of {list(LAUNCHERS)}")
    sweep = Sweep(
        name=str(name),
        overrides=[str(o) for o in overrides],
        grid={str(k): list(v) for k, v in grid.items()},
        launcher=launcher,
        launcher_options=dict(raw.get("launcher_options") or {}),
        notes=notes.strip(),
        path=path,
    )
    try:
        for point in grid_points(sweep):
            config.load(run_overrides(sweep, point))
    except config.ConfigError as error:
        raise SweepError(f"{path}: {error}") from None
    return sweep


def grid_points(sweep: Sweep) -> list[dict]:
    """The grid's cartesian product, one ``{key: value}`` dict per run, in file order."""
    keys = list(sweep.grid)
    return [dict(zip(keys, values)) for values in itertools.product(*sweep.grid.values())]


def run_overrides(sweep: Sweep, point: dict, extra: list[str] = ()) -> list[str]:
    """The overrides of one run: the file's shared ones, the sweep name, ``extra`` (from the
    command line), then its grid point."""
    return [
        *sweep.overrides,
        f"sweep={sweep.name}",
        *extra,
        *(f"{k}={_value(v)}" for k, v in point.items()),
    ]


def plan(sweep: Sweep, extra: list[str] = ()) -> list[PlannedRun]:
    """Every run of the sweep with its state, read from its run directory.

    Args:
        extra: overrides added to every run (e.g. ``runs_root=...``, ``data.download=true``).

    States: "done" (results.json), "failed" (failed.json), "partial" (a
    checkpoint, no results) and "to do".
    """
    runs = []
    for point in grid_points(sweep):
        overrides = run_overrides(sweep, point, extra)
        cfg = config.load(overrides)
        directory = pretrain.run_dir(cfg)
        runs.append(
            PlannedRun(overrides, pretrain.run_id(cfg), directory, _state(directory), point)
        )
    return runs


def _state(directory: Path) -> str:
    if (directory / pretrain.RESULTS_FILE).is_file():
        return "done"
    if (directory / pretrain.FAILED_FILE).is_file():
        return "failed"
    if (directory / pretrain.LAST_CHECKPOINT).is_file():
        return "partial"
    return "to do"


def format_plan(sweep: Sweep, runs: list[PlannedRun]) -> str:
    """The plan as a text table (run id, grid choices, state) and a count per state."""
    keys = list(sweep.grid)
    header = ["run", *keys, "state"]
    rows = [[r.run_id, *(r.choices.get(k, "") for k in keys), r.state] for r in runs]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in [header, *rows]]
    return "\n".join([f"sweep {sweep.name}: {len(runs)} runs", *lines, summary_line(sweep, runs)])


def summary_line(sweep: Sweep, runs: list[PlannedRun]) -> str:
    """E.g. ``sweep smoke: 4 runs: 3 done, 1 failed, 0 partial, 0 to do``."""
    counts = ", ".join(f"{sum(r.state == s for r in runs)} {s}" for s in STATES)
    return f"sweep {sweep.name}: {len(runs)} runs: {counts}"


def launch(sweep: Sweep, runs: list[PlannedRun], launcher: str | None = None) -> None:
    """Hand the runs to Hydra's multirun with the sweep's launcher plugin, one job per run.

    Each job runs :func:`_job` on its own overrides; a run that fails writes
    its ``failed.json`` and the sweep goes on.
    """
    if not runs:
        return
    launcher = launcher or sweep.launcher
    import hydra

    options = [
        f"hydra.launcher.{k}={_value(v)}"
        for k, v in sweep.launcher_options.items()
        if launcher == sweep.launcher
    ]
    jobs = ",".join(_quote(" ".join(r.overrides)) for r in runs)
    argv = [
        "--multirun",
        f"hydra/launcher={launcher}",
        *options,
        f"+job={jobs}",
        f"hydra.sweep.dir={runs[0].run_dir.parent}/.hydra",
        "hydra.sweep.subdir=${hydra:job.num}",
        "hydra.job.chdir=false",
    ]

    @hydra.main(
        config_path=str(config.CONFIG_DIR), config_name=config.CONFIG_NAME, version_base="1.3"
    )
    def app(cfg: DictConfig) -> int:
        return _job(cfg.job)

    saved, sys.argv = sys.argv, ["emim-bench sweep", *argv]
    try:
        app()
    finally:
        sys.argv = saved


def _job(packed_overrides: str) -> int:
    """One sweep job: compose the run's config from its overrides and run it; never raises."""
    import shlex

    try:
        return pretrain.run_or_report(config.load(shlex.split(packed_overrides)))
    except Exception as error:  # recorded in failed.json by pretrain.run; the sweep goes on
        print(f"emim-bench sweep: run failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


def _value(value) -> str:
    """A Python value as a Hydra override value."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return str(value)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def register(subparsers) -> None:
    """Add the ``sweep`` subcommand to the ``emim-bench`` parser."""
    parser = subparsers.add_parser(
        "sweep",
        help="run a sweep file (skips done runs, resumes partial ones), then report",
        description="Plan and run every run of a sweep file; a report is written at the end.",
    )
    parser.add_argument("file", type=Path, help="sweep YAML, e.g. sweeps/smoke.yaml")
    parser.add_argument(
        "overrides", nargs="*", help="config overrides for every run, e.g. data.download=true"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    parser.add_argument("--launcher", choices=list(LAUNCHERS), help="override the file's launcher")
    parser.add_argument(
        "--report-dir", type=Path, help="where the report goes (default: reports/<sweep name>)"
    )
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    parser.set_defaults(
        handler=_sweep_command,
        accepts_extra=lambda extra: all("=" in x and not x.startswith("-") for x in extra),
    )


def _sweep_command(args) -> int:
    try:
        sweep = load_sweep(args.file)
        runs = plan(sweep, args.overrides)
        first = config.load(runs[0].overrides)
        data.check_available(first.data, data.data_root(first.data_root))
    except (SweepError, config.ConfigError, data.DatasetNotFoundError) as error:
        print(f"emim-bench sweep: error: {error}", file=sys.stderr)
        return 2
    print(format_plan(sweep, runs))
    if args.dry_run:
        return 0
    launch(sweep, [r for r in runs if r.state != "done"], args.launcher)
    runs = plan(sweep, args.overrides)
    for run in runs:
        if run.state == "failed":
            error = (run.run_dir / pretrain.FAILED_FILE).read_text()
            print(f"failed: {run.run_id}: {error.strip()}")
    if not args.no_report:
        _write_report(sweep, runs, args)
    print(summary_line(sweep, runs))
    return 0 if all(r.state == "done" for r in runs) else 1


def _write_report(sweep: Sweep, runs: list[PlannedRun], args) -> None:
    """Write ``reports/<sweep>/`` (or ``--report-dir``) and print its headline table."""
    from emim_bench import report

    out = args.report_dir or Path("reports") / sweep.name
    command = " ".join(["emim-bench sweep", str(args.file), *args.overrides])
    runs_dir, expected = runs[0].run_dir.parent, [r.run_id for r in runs]
    try:
        html = report.write_report(
            runs_dir, out, command=command, expected=expected, notes=sweep.notes
        )
    except report.ReportError as error:
        print(f"emim-bench sweep: no report: {error}", file=sys.stderr)
        return
    print(report.headline_table(report.method_summary(report.collect_runs(runs_dir, expected))))
    print(f"report: {html}")
