"""One timed run per method: ``emim-bench pretrain`` with a step timer, into a scratch folder."""

from __future__ import annotations

import math
import time

import torch

from emim_bench import config
from emim_bench.bench.timing import synchronizer
from emim_bench.gpu_check.plan import CheckPlan
from emim_bench.gpu_check.step_timer import StepTimer, summarise
from emim_bench.run import pretrain
from emim_bench.run.device import device_settings


def timed_run(plan: CheckPlan, method: str, runs_root: str) -> dict:
    """Train ``method`` with ``plan``'s overrides through :func:`emim_bench.run.pretrain.run`
    (run directory under ``runs_root``, evaluation included) and time its steps.

    Returns:
        ``{"method", "status": "done", "images_per_s"`` and ``"loader_share"`` (of the last
        epoch: :func:`~emim_bench.gpu_check.step_timer.summarise`), ``"steps_timed"``,
        ``"wait_s"``, ``"step_s"``, ``"run_images_per_s"`` (results.json's: the whole
        training, validation included), ``"peak_gpu_memory_bytes"`` (torch's peak
        allocation over the run; None on the CPU), ``"peak_rss_bytes"``, ``"wall_s"`` (the
        whole run, evaluation included), ``"precision"``, ``"settings"`` (the resolved
        device settings), ``"knn_acc1"`` (k = 20, percent; after 2 epochs, not a result) and
        ``"run_id"}``.

    Raises:
        ConfigError, DatasetNotFoundError, NonFiniteLossError: as the run raises them.
        RuntimeError: a run whose step times are not positive and finite.
    """
    cfg = config.load(plan.training_overrides(method, runs_root))
    timer = StepTimer(synchronizer(torch.device(plan.device)))
    started = time.perf_counter()
    results = pretrain.run(cfg, callbacks=[timer])
    wall = time.perf_counter() - started
    summary = summarise(timer.steps, cfg.batch_size)  # one process: the DDP check is apart
    if not (math.isfinite(summary["images_per_s"]) and summary["images_per_s"] > 0):
        raise RuntimeError(f"{method}: step times give {summary['images_per_s']} images/s")
    train = results["train"]
    return {
        "method": method,
        "status": "done",
        "run_id": results["run_id"],
        "images_per_s": summary["images_per_s"],
        "loader_share": summary["loader_share"],
        "epoch_timed": summary["epoch"],
        "steps_timed": summary["steps"],
        "wait_s": summary["wait_s"],
        "step_s": summary["step_s"],
        "run_images_per_s": train["images_per_s"],
        "peak_gpu_memory_bytes": train["peak_gpu_memory_bytes"],
        "peak_rss_bytes": train["peak_rss_bytes"],
        "wall_s": wall,
        "precision": results["precision"],
        "settings": device_settings(cfg.trainer).describe()
        | {"finite_check_every": cfg.trainer.finite_check_every},
        "knn_acc1": results["metrics"].get("knn_acc1_k20"),
    }
