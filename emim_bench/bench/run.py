"""One benchmark run: its options, the machine it ran on, and the result it produced."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import emim_bench
from emim_bench.bench.logs import paper_cifar_log_volume
from emim_bench.bench.loss import FULL_GRID, QUICK_GRID, run_loss_grid
from emim_bench.bench.options import BenchOptions
from emim_bench.bench.render import ratio_tables
from emim_bench.bench.step import (
    STEP_METHODS,
    bench_steps,
    step_device_settings,
    step_method_kwargs,
    trainer_config,
)
from emim_bench.bench.timing import FULL_LOSS_POLICY, QUICK_LOSS_POLICY, OtherCpuLoad, Patience


def _git(*args: str) -> str | None:
    """Output of a read-only git command in the repository, or None when it fails."""
    try:
        out = subprocess.run(
            ["git", "--no-optional-locks", *args],  # never writes the index
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.rstrip()


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info(device: torch.device) -> dict[str, Any]:
    """Device, versions, git commit and source hashes of the benchmarked code."""
    info = {
        "kind": device.type,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    status = _git("status", "--porcelain")
    package = Path(emim_bench.__file__).parent
    return {
        "device": info,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "solo-learn": importlib.metadata.version("solo-learn"),
            "emim-bench": emim_bench.__version__,
        },
        "git": {
            "commit": _git("rev-parse", "HEAD"),  # None before the first commit
            "dirty": None if status is None else bool(status),
            "changed_paths": None if status is None else status.splitlines(),
        },
        "source_sha256": {
            f"emim_bench/{f}": hashlib.sha256((package / f).read_bytes()).hexdigest()
            for f in _TIMED_SOURCES
        },
        "platform": platform.platform(),
    }


# The sources whose code the benchmark times (their hashes identify what was measured).
_TIMED_SOURCES = (
    "bench/loss.py",
    "bench/step.py",
    "bench/timing.py",
    "losses.py",
    "methods/emim.py",
    "run/device.py",
    "run/trainer.py",
)


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the OS does not say."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def make_result(
    options: BenchOptions,
    loss_rows: list[dict[str, Any]],
    step_rows: list[dict[str, Any]],
    duration_s: float,
    load_average_start: list[float] | None = None,
    other_cpus: float | None = None,
) -> dict[str, Any]:
    """The JSON-able result of a run: command, environment, settings, timings, ratios, targets."""
    device = torch.device(options.device)
    return {
        "schema": "emim-bench/bench/1",
        "command": options.command,
        "argv": list(sys.argv),
        "via_make": "MAKELEVEL" in os.environ,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": duration_s,
        "load_average_start": load_average_start,
        "load_average_end": _load_average(),
        "other_cpus": other_cpus,
        "environment": environment_info(device),
        "settings": {
            **asdict(options),
            "loss_grid": {
                k: list(v) for k, v in (QUICK_GRID if options.quick else FULL_GRID).items()
            },
            "loss_policy": asdict(QUICK_LOSS_POLICY if options.quick else FULL_LOSS_POLICY),
            # The trainer's settings on this device, in which the training step ran.
            "step_device": step_device_settings(device).describe(),
            "method_kwargs": {
                name: {
                    k: v
                    for k, v in step_method_kwargs(
                        name, options.batch_size, options.cifar_stem, trainer_config(device)
                    ).items()
                    if k.startswith(("proj_", "pred_", "lr", "weight_decay", "check_every"))
                }
                for name in STEP_METHODS
            },
        },
        "loss": loss_rows,
        "step": step_rows,
        "ratios": ratio_tables(loss_rows, step_rows),
        "log_volume": paper_cifar_log_volume(),
    }


def run_benchmark(options: BenchOptions) -> dict[str, Any]:
    """Run the benchmarks ``options`` select and return :func:`make_result`'s dict (no files).

    ``options.threads``, if set, is torch's CPU thread count for the run only.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads or threads)
    try:
        device = torch.device(options.device)
        load_start, start = _load_average(), time.perf_counter()
        policy = QUICK_LOSS_POLICY if options.quick else FULL_LOSS_POLICY
        grid = QUICK_GRID if options.quick else FULL_GRID
        patience = Patience(options.patience_s)
        with OtherCpuLoad() as other:
            run_loss, run_step = options.only in (None, "loss"), options.only in (None, "step")
            loss_rows = run_loss_grid(device, grid, policy, patience) if run_loss else []
            step_rows = bench_steps(options, device, patience) if run_step else []
        duration = time.perf_counter() - start
        return make_result(options, loss_rows, step_rows, duration, load_start, other.cpus)
    finally:
        torch.set_num_threads(threads)
