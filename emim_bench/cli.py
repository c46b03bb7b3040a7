"""The ``emim-bench`` command line."""

from __future__ import annotations

import argparse
import sys

from emim_bench import __version__


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; each subcommand registers itself here."""
    parser = argparse.ArgumentParser(
        prog="emim-bench",
        description="EMIM against SimCLR, BYOL, Barlow Twins and VICReg on solo-learn.",
    )
    parser.add_argument("--version", action="version", version=f"emim-bench {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
