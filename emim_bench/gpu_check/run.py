"""The whole gpu-check: the DDP check, the speed benchmark, a timed run per method, the files."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from emim_bench import config, data
from emim_bench.bench.options import BenchOptions
from emim_bench.bench.render import report_stem, write_report
from emim_bench.bench.run import environment_info, run_benchmark
from emim_bench.gpu_check.ddp import ddp_loss_check
from emim_bench.gpu_check.plan import CheckPlan
from emim_bench.gpu_check.render import render_markdown
from emim_bench.gpu_check.training import timed_run


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def bench_options(plan: CheckPlan, out: Path) -> BenchOptions:
    """The speed benchmark's options in ``plan``'s mode, writing to ``<out>/benchmarks``; its
    ``command`` is the ``emim-bench bench`` line that reproduces it alone."""
    b = plan.bench
    flags = ["--device", plan.device, "--patience", f"{b['patience_s']:g}"]
    flags += ["--quick"] if b["quick"] else []
    flags += ["--cifar-stem"] if b["cifar_stem"] else []
    bench_out = out / "benchmarks"
    return BenchOptions(
        device=plan.device,
        quick=b["quick"],
        batch_size=b["batch_size"],
        steps=b["steps"],
        warmup_steps=1 if b["quick"] else 2,
        cifar_stem=b["cifar_stem"],
        patience_s=float(b["patience_s"]),
        out=str(bench_out),
        command="emim-bench bench " + " ".join([*flags, "--out", str(bench_out)]),
    )


def _bench(plan: CheckPlan, out: Path, check_dir: Path) -> dict[str, Any]:
    """Run ``emim-bench bench``'s benchmark, write its report, return its headline."""
    options = bench_options(plan, out)
    try:
        result = run_benchmark(options)
    except Exception as error:  # a failed benchmark is reported; the trainings still run
        return {"status": "failed", "reason": _one_line(error)}
    stem = report_stem(torch.device(plan.device).type, options.quick, None)
    json_path, md_path = write_report(result, options.out, stem)
    return {
        "status": "done",
        "json": os.path.relpath(json_path, check_dir),
        "markdown": os.path.relpath(md_path, check_dir),
        "step_device": result["settings"]["step_device"],
        "step_images_per_s": {r["method"]: r["images_per_s"] for r in result["step"]},
        "targets": result["ratios"]["targets"],
        "duration_s": result["duration_s"],
    }


def run_check(
    plan: CheckPlan, out: str | Path, methods: tuple[str, ...], keep_runs: bool, command: str
) -> dict[str, Any]:
    """Run the check ``plan`` describes and write its files; return its result.

    Writes ``<out>/benchmarks/<device>[-quick].{json,md}`` (the speed benchmark) and
    ``<out>/gpu_check/<plan.stem>.{json,md}``; the runs go to
    ``<out>/gpu_check/runs-<mode>/``, removed at the end unless ``keep_runs``. A method
    whose turn comes after ``plan.budget_s`` seconds is skipped, saying so.

    Returns:
        ``{"status"`` ("passed" when every method trained, the benchmark ran and the DDP
        check passed or was skipped; else "failed"), ``"mode", "command", "created_utc",
        "duration_s", "budget_s", "environment", "training_overrides", "training"`` (a row
        per method: :func:`~emim_bench.gpu_check.training.timed_run`'s, or its status and
        reason), ``"bench", "ddp", "files"}``.

    Raises:
        ConfigError: an override the configs reject.
        DatasetNotFoundError: CIFAR-10 is not under the data root (before anything runs).
    """
    started = time.perf_counter()
    out = Path(out)
    check_dir = out / "gpu_check"
    runs_root = check_dir / f"runs-{plan.mode}"
    cfg = config.load(plan.training_overrides(methods[0], str(runs_root)))
    root = data.data_root(cfg.data_root)
    data.check_available(cfg.data, root)
    check_dir.mkdir(parents=True, exist_ok=True)

    print("gpu-check: DDP check of EMIM's loss", file=sys.stderr)
    ddp = ddp_loss_check(plan, root)
    print("gpu-check: speed benchmark", file=sys.stderr)
    bench = _bench(plan, out, check_dir)
    training = []
    for method in methods:
        elapsed = time.perf_counter() - started
        if elapsed > plan.budget_s:
            reason = f"the {plan.budget_s / 60:.0f}-minute budget was spent ({elapsed:.0f} s)"
            training.append({"method": method, "status": "skipped", "reason": reason})
            continue
        print(f"gpu-check: 2 epochs of {method}", file=sys.stderr)
        try:
            training.append(timed_run(plan, method, str(runs_root)))
        except Exception as error:  # one method failing does not hide the others' numbers
            training.append({"method": method, "status": "failed", "reason": _one_line(error)})
    if not keep_runs:
        shutil.rmtree(runs_root, ignore_errors=True)

    passed = (
        all(r["status"] == "done" for r in training)
        and bench["status"] == "done"
        and ddp["status"] in ("passed", "skipped")
    )
    json_path, md_path = check_dir / f"{plan.stem}.json", check_dir / f"{plan.stem}.md"
    result = {
        "schema": "emim-bench/gpu-check/1",
        "status": "passed" if passed else "failed",
        "mode": plan.mode,
        "command": command,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": time.perf_counter() - started,
        "budget_s": plan.budget_s,
        "environment": environment_info(torch.device(plan.device)),
        "training_overrides": list(plan.training),
        "training": training,
        "bench": bench,
        "ddp": ddp,
        "files": {"json": str(json_path), "markdown": str(md_path)},
    }
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(render_markdown(result))
    return result
