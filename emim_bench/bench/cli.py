"""``emim-bench bench``: argument handling; torch and the benchmark are imported lazily."""

from __future__ import annotations

import argparse
import shlex

from emim_bench.bench.options import BenchOptions


def _device_arg(spec: str) -> str:
    """argparse type of ``--device``: "auto" (cuda if available, else cpu) or a torch device."""
    import torch  # here, not at the top: `emim-bench --help` does not need torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {spec!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("cuda is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"device must be cpu or cuda[:i]; got {spec!r}")
    return str(device)


def _non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {text}")
    return value


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand and its handler to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "bench",
        help="loss and training-step speed benchmarks (EMIM against the baselines)",
        description="Time each SSL loss (forward + backward) over an (N, D) grid and a full "
        "training step per method; print ratio tables and write <out>/<device>.json and .md. "
        "A full run on 2 CPU cores takes a few minutes, --quick a few seconds.",
    )
    parser.add_argument(
        "--device",
        type=_device_arg,
        default="auto",
        help="cpu, cuda, cuda:i, or auto (cuda if available; default)",
    )
    parser.add_argument(
        "--only",
        choices=("loss", "step"),
        default=None,
        help="run only the loss grid or only the training steps",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny grid, batch and step counts: a smoke test in seconds",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="source images per training step (default: 256 cuda, 64 cpu, 8 --quick)",
    )
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="timed training steps per method (default: 50 cuda, 20 cpu, 2 --quick)",
    )
    parser.add_argument(
        "--cifar-stem",
        action="store_true",
        help="ResNet-18 with the CIFAR stem (default: the ImageNet stem at 32 px)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: torch's, one per core); 1 avoids OpenMP "
        "oversubscription when other processes share the CPUs",
    )
    parser.add_argument(
        "--patience",
        type=_non_negative_float,
        default=None,
        metavar="SECONDS",
        help="most time spent re-timing cells and rounds during which other processes used the "
        "CPUs (default: 300, 0 with --quick; 0 disables re-timing; disturbed timings are "
        "marked * in the report either way)",
    )
    parser.add_argument(
        "--out", default="reports/benchmarks", help="output folder (default: reports/benchmarks)"
    )
    parser.set_defaults(handler=run_cli)


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """Resolve the defaults that depend on the device and on ``--quick``."""
    cuda = args.device.startswith("cuda")
    batch = args.batch_size or (8 if args.quick else 256 if cuda else 64)
    steps = args.steps or (2 if args.quick else 50 if cuda else 20)
    argv = getattr(args, "argv", None) or ["bench"]
    return BenchOptions(
        device=args.device,
        only=args.only,
        quick=args.quick,
        batch_size=batch,
        steps=steps,
        warmup_steps=1 if args.quick else 2,
        cifar_stem=args.cifar_stem,
        threads=args.threads,
        patience_s=(0.0 if args.quick else 300.0) if args.patience is None else args.patience,
        out=args.out,
        command="emim-bench " + shlex.join(argv),
    )


def run_cli(args: argparse.Namespace) -> int:
    """Handler of ``emim-bench bench``: run, print the ratio tables, write the report files."""
    import torch

    from emim_bench.bench.render import render_tables, report_stem, write_report
    from emim_bench.bench.run import run_benchmark

    options = options_from_args(args)
    result = run_benchmark(options)
    stem = report_stem(torch.device(options.device).type, options.quick, options.only)
    json_path, md_path = write_report(result, options.out, stem)
    print(render_tables(result))
    print(f"\nwrote {json_path} and {md_path} ({result['duration_s']:.0f} s)")
    return 0
