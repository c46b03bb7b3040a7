"""``emim-bench gpu-check``: argument handling; torch and the check are imported lazily."""

from __future__ import annotations

import argparse
import shlex
import sys

from emim_bench.gpu_check.plan import BUDGET_S, METHODS

NO_CUDA = (
    "gpu-check needs a CUDA GPU (torch.cuda.is_available() is False); run it on a GPU "
    "machine, or --cpu for the tiny CPU rehearsal"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``gpu-check`` subcommand and its handler to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "gpu-check",
        help="measure the GPU settings: 2 epochs per method, the speed benchmark, DDP",
        description="On a CUDA GPU (about 8 minutes): a 2-epoch run of the paper recipe "
        "(budget=cifar_paper trainer=gpu) per method on 10,000 CIFAR-10 images, with "
        "throughput, peak GPU memory and the data loader's share of step time; the speed "
        "benchmark in the trainer's precision and memory format; with 2 GPUs or more, EMIM's "
        "step-0 loss on 2 DDP processes against one. Writes OUT/gpu_check/gpu_check.{md,json} "
        "and OUT/benchmarks/cuda.{md,json}. --cpu rehearses the same path at toy sizes on the "
        "CPU (OUT/gpu_check/gpu_check-cpu.*, OUT/benchmarks/cpu-quick.*).",
    )
    parser.add_argument(
        "--cpu", action="store_true", help="the tiny CPU rehearsal (no GPU needed; about a minute)"
    )
    parser.add_argument(
        "--out", default="reports", help="output folder (default: reports)", metavar="DIR"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        metavar="METHOD",
        help=f"methods to train (default: all of {', '.join(METHODS)})",
    )
    parser.add_argument(
        "--keep-runs",
        action="store_true",
        help="keep the scratch run directories (OUT/gpu_check/runs-<mode>/)",
    )
    parser.set_defaults(handler=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Handler of ``emim-bench gpu-check``.

    Returns:
        0 when every check passed; 1 when one failed (the report says which); 2 without a
        CUDA GPU (and without ``--cpu``), without CIFAR-10 or for a rejected config.
    """
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print(f"emim-bench gpu-check: error: {NO_CUDA}", file=sys.stderr)
        return 2
    from emim_bench import config, data
    from emim_bench.gpu_check.plan import plan_for
    from emim_bench.gpu_check.run import run_check

    plan = plan_for(args.cpu)
    command = "emim-bench " + shlex.join(getattr(args, "argv", None) or ["gpu-check"])
    try:
        result = run_check(plan, args.out, tuple(args.methods), args.keep_runs, command)
    except (config.ConfigError, data.DatasetNotFoundError) as error:
        print(f"emim-bench gpu-check: error: {error}", file=sys.stderr)
        return 2
    for row in result["training"]:
        detail = (
            f"{row['images_per_s']:.1f} images/s, loader share {row['loader_share']:.3f}"
            if row["status"] == "done"
            else f"{row['status']}: {row['reason']}"
        )
        print(f"{row['method']}: {detail}")
    ddp = result["ddp"]
    print(f"DDP check: {ddp['status']}" + (f" ({ddp['reason']})" if ddp.get("reason") else ""))
    minutes = f"{result['duration_s']:.0f} s (budget {BUDGET_S:.0f} s)"
    files = result["files"]
    print(
        f"gpu-check {result['status']} in {minutes}; wrote {files['markdown']} and {files['json']}"
    )
    return 0 if result["status"] == "passed" else 1
