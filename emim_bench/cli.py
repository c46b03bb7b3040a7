"""The ``emim-bench`` command line.

Each subcommand has a ``cli`` module of its own, which provides ``register(subparsers)``:
it adds its parser and sets ``handler`` (a function of the parsed arguments returning the
exit code). Those modules import only argparse-level code; a handler imports torch,
Lightning or solo-learn when it runs, so ``emim-bench --help`` and ``emim-bench report``
never load them. A new subcommand is one more entry in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import sys

from emim_bench import __version__
from emim_bench.bench import cli as bench_cli
from emim_bench.gpu_check import cli as gpu_check_cli
from emim_bench.prepare import cli as prepare_cli
from emim_bench.report import cli as report_cli
from emim_bench.run import cli as run_cli
from emim_bench.sweep import cli as sweep_cli

# register(subparsers) of each subcommand, in the order `--help` lists them.
SUBCOMMANDS = (
    run_cli.register,
    run_cli.register_evaluate,
    sweep_cli.register,
    report_cli.register,
    bench_cli.register,
    gpu_check_cli.register,
    prepare_cli.register,
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand of ``SUBCOMMANDS`` registered."""
    parser = argparse.ArgumentParser(
        prog="emim-bench",
        description="EMIM against SimCLR, BYOL, Barlow Twins and VICReg on solo-learn.",
    )
    parser.add_argument("--version", action="version", version=f"emim-bench {__version__}")
    # "subcommand", not "command": a subcommand may have a --command option of its own.
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code.

    Bad arguments exit with code 2 and a one-line error (argparse). Subcommands
    that take config overrides (``pretrain``, ``sweep``) accept them before,
    between or after their options.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.subcommand is None:
        parser.print_help()
        return 0
    if extra:
        if not hasattr(args, "accepts_extra") or not args.accepts_extra(extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    args.argv = argv  # the exact command line, for handlers that record or re-read it
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
