"""``emim-bench sweep FILE [OVERRIDES]``: plan, launch, then the report."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from emim_bench import config
from emim_bench.run.directory import FAILED_FILE, write_text_atomic
from emim_bench.sweep.file import Sweep, SweepError, load_sweep
from emim_bench.sweep.launchers import (
    DETACHABLE,
    LAUNCHERS,
    LauncherOptionError,
    nowait_variant,
)
from emim_bench.sweep.plan import PlannedRun, format_plan, plan, summary_line

RUN_IDS_FILE = "run_ids.txt"  # beside plan.yaml: every run of the plan, for a later report


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
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help=f"submit the runs and return ({', '.join(DETACHABLE)}); report later with "
        "`emim-bench report`",
    )
    parser.set_defaults(
        handler=_sweep_command,
        accepts_extra=lambda extra: all("=" in x and not x.startswith("-") for x in extra),
    )


def _sweep_command(args) -> int:
    from emim_bench import data  # solo-learn's augmentations: not needed for --help
    from emim_bench.sweep.launch import launch

    try:
        sweep = load_sweep(args.file)
        launcher = args.launcher or sweep.launcher
        if args.no_wait:
            nowait_variant(launcher)
        runs = plan(sweep, args.overrides)
        first = config.load(runs[0].overrides)
        data.check_available(first.data, data.data_root(first.data_root))
    except (
        SweepError,
        LauncherOptionError,
        config.ConfigError,
        data.DatasetNotFoundError,
    ) as error:
        print(f"emim-bench sweep: error: {error}", file=sys.stderr)
        return 2
    print(format_plan(sweep, runs))
    if (
        launcher != sweep.launcher
        and not sweep.options_for(launcher)
        and sweep.options_for(sweep.launcher)
    ):
        print(
            f"emim-bench sweep: the file's launcher_options are for {sweep.launcher}; "
            f"{launcher} runs with its defaults (key them by launcher to give it its own)",
            file=sys.stderr,
        )
    if args.dry_run:
        return 0
    to_launch = [r for r in runs if r.state not in ("done", "running")]
    launch(sweep, to_launch, launcher, wait=not args.no_wait)
    if args.no_wait:
        _print_detached(sweep, runs, len(to_launch), args)
        return 0
    runs = plan(sweep, args.overrides)
    for run in runs:
        if run.state == "failed":
            try:
                error = json.loads((run.run_dir / FAILED_FILE).read_text())["error"]
            except (OSError, ValueError, KeyError):
                error = "see its results.json or failed.json"
            print(f"failed: {run.run_id}: {error}")
    if not args.no_report:
        _write_report(sweep, runs, args)
    print(summary_line(sweep, runs))
    return 0 if all(r.state == "done" for r in runs) else 1


def _print_detached(sweep: Sweep, runs: list[PlannedRun], submitted: int, args) -> None:
    """After ``--no-wait``: write the plan's run ids and say how to follow and report."""
    runs_dir = runs[0].run_dir.parent
    ids_file = runs_dir / ".hydra" / RUN_IDS_FILE
    ids_file.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(ids_file, "".join(f"{r.run_id}\n" for r in runs))
    sweep_command = ["emim-bench", "sweep", str(args.file), *args.overrides]
    out = args.report_dir or Path("reports") / sweep.name
    report = ["emim-bench", "report", str(runs_dir), "-o", str(out), "--sweep", str(args.file)]
    report += ["--expected", str(ids_file), "--command", shlex.join(sweep_command)]
    print(f"sweep {sweep.name}: submitted {submitted} runs, not waiting for them")
    print(f"their states: {shlex.join([*sweep_command, '--dry-run'])}")
    print(f"the report, once they are done: {shlex.join(report)}")


def _write_report(sweep: Sweep, runs: list[PlannedRun], args) -> None:
    """Write ``reports/<sweep>/`` (or ``--report-dir``) and print its headline table."""
    from emim_bench.report.collect import ReportError
    from emim_bench.report.render import headline_table, render_report

    out = args.report_dir or Path("reports") / sweep.name
    command = " ".join(["emim-bench sweep", str(args.file), *args.overrides])
    runs_dir, expected = runs[0].run_dir.parent, [r.run_id for r in runs]
    try:
        html, summary = render_report(runs_dir, out, command, expected, sweep.notes)
    except ReportError as error:
        print(f"emim-bench sweep: no report: {error}", file=sys.stderr)
        return
    print(headline_table(summary))
    print(f"report: {html}")
