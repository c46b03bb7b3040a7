"""``emim-bench report RUNS_DIR -o OUT``: argument handling; the report is imported lazily."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``report`` subcommand and its handler to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "report",
        help="the report of a sweep: tables, paired tests, figures (md, html, csv)",
        description="Read every run directory of a sweep folder and write report.md, a "
        "self-contained report.html, results.csv and figures/*.png into the output folder.",
    )
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="sweep folder, e.g. runs/smoke")
    parser.add_argument("-o", "--out", required=True, help="output folder, e.g. reports/smoke")
    parser.add_argument(
        "--command",
        default=None,
        help="the command that reproduces the sweep, shown in the report "
        "(default: this report command)",
    )
    parser.add_argument(
        "--expected",
        default=None,
        metavar="FILE",
        help="text file of the sweep plan's run ids, one a line: those without a directory "
        "are listed as to do",
    )
    parser.add_argument(
        "--sweep",
        default=None,
        metavar="FILE",
        help="the sweep file, for its notes (shown under 'Sweep notes')",
    )
    parser.set_defaults(handler=_report_command)


def _report_command(args: argparse.Namespace) -> int:
    from emim_bench.report.collect import ReportError
    from emim_bench.report.render import headline_table, render_report

    runs_dir = Path(args.runs_dir)
    try:
        expected = None
        if args.expected:
            try:
                lines = Path(args.expected).read_text().splitlines()
            except OSError as error:
                raise ReportError(f"cannot read --expected {args.expected}: {error}") from None
            expected = [s.strip() for s in lines if s.strip() and not s.startswith("#")]
        notes = _sweep_notes(args.sweep) if args.sweep else ""
        html_path, summary = render_report(runs_dir, args.out, args.command, expected, notes)
    except ReportError as error:
        print(f"emim-bench report: error: {error}", file=sys.stderr)
        return 2
    if not summary.empty:
        print(headline_table(summary))
    print(f"\nwrote {html_path} (and report.md, results.csv, figures/)")
    return 0


def _sweep_notes(path: str) -> str:
    """The ``notes`` of a sweep file (its structure checked, its configs not composed)."""
    from emim_bench.report.collect import ReportError
    from emim_bench.sweep.file import SweepError, read_sweep

    try:
        return read_sweep(path).notes
    except SweepError as error:
        raise ReportError(str(error)) from None
