"""What ``results.json`` holds besides the metrics: training cost, peak memory, versions."""

from __future__ import annotations

import functools
import gc
import resource
import subprocess
import sys
from pathlib import Path

import emim_bench.compat  # noqa: F401  (adapts solo-learn and Lightning before they load)

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from emim_bench.run.device import resolve_precision
from emim_bench.run.directory import CURVE_FILE, last_curve_row
from emim_bench.run.identity import run_id


def reset_peak_memory() -> None:
    """Start a new peak-memory window for this process (one run of a sweep).

    Runs of a sweep share one process under Hydra's basic launcher, so the lifetime
    peak (``getrusage``'s ``ru_maxrss``) would carry over from run to run. Resets
    Linux's peak resident set size (``VmHWM``, by writing 5 to ``/proc/self/clear_refs``)
    and torch's CUDA peak-allocation counters; a no-op where neither exists.

    Collects garbage first: a finished run's Trainer and LightningModule refer to each
    other, so only Python's cycle collector frees them, and it runs by object count, not
    by bytes. Without it, each run of a 5-run sweep started with the earlier runs' models
    and batches still resident (peak RSS 1.8, 2.3, 2.8, 3.3, 3.3 GiB; with it 1.8-1.9).
    """
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since :func:`reset_peak_memory`, in bytes.

    The window starts at the resident size of that moment, so memory an earlier run
    of the same process still holds (allocator caches) is counted: an upper bound.

    ``VmHWM`` from ``/proc/self/status`` on Linux; elsewhere the lifetime peak
    (``ru_maxrss``, KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def results_record(cfg: DictConfig, trainer: pl.Trainer, metrics: dict, out: Path) -> dict:
    """The ``results.json`` of a finished run, without its start and end timestamps.

    Training cost is read from the run's ``curve.csv``, so it covers every start of a
    resumed run: ``wall_time_s`` is the training time of the epochs that reached a
    checkpoint (seconds, kNN monitoring excluded; an epoch cut by a kill and repeated counts
    once), ``steps`` the optimizer steps of the whole run, ``images_per_s`` source images
    (two views each, all ranks) per second of that time. ``precision`` is the one the run
    trained in (its last start): ``trainer.precision`` resolved on this machine
    (:func:`~emim_bench.run.device.resolve_precision`: ``auto`` becomes "bf16" or "16").
    """
    last = last_curve_row(out / CURVE_FILE)
    train_s = float(last.get("wall_s") or 0.0)
    steps = int(last.get("step") or 0)
    images = steps * cfg.batch_size * trainer.world_size
    return {
        "status": "done",
        "run_id": run_id(cfg),
        "method": cfg.method.name,
        "dataset": cfg.data.name,
        "backbone": cfg.backbone.name,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "precision": str(resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)),
        "metrics": metrics,
        # The images the metrics are scored on: "val" (data.val_size held out of the
        # training split, for choosing settings) or "test" (for reporting).
        "eval_split": "val" if cfg.data.get("val_size") else "test",
        "knn": {"k": list(cfg.eval.knn_k), "temperature": cfg.eval.knn_temperature},
        "train": {
            "wall_time_s": train_s,
            "steps": steps,
            "images_per_s": images / train_s if train_s > 0 else None,
            "peak_rss_bytes": peak_rss_bytes(),  # of this start: see reset_peak_memory
            "peak_gpu_memory_bytes": (
                torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
            ),
        },
        "curve_file": CURVE_FILE if (out / CURVE_FILE).is_file() else None,
        "versions": versions(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    """Versions of the stack and the git commit of this checkout ("unknown" outside git).

    Read once per process, at the first run it starts: the runs of a sweep share
    one process, and a commit made while they train must not be credited with them.
    """
    import platform

    import solo
    import torchvision

    import emim_bench

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pytorch_lightning": pl.__version__,
        "solo_learn": getattr(solo, "__version__", "1.0.2"),
        "emim_bench": emim_bench.__version__,
        "git_commit": commit,
    }


def headline(metrics: dict) -> str:
    """E.g. "kNN acc@1 41.2%, linear acc@1 44.0%, online acc@1 38.5%"."""
    names = {
        "knn_acc1_k20": "kNN acc@1",
        "linear_acc1": "linear acc@1",
        "online_acc1": "online acc@1",
    }
    return ", ".join(
        f"{name} {metrics[key]:.1f}%" for key, name in names.items() if metrics.get(key) is not None
    )
