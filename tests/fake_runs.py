"""Run directories written by hand, as a run leaves them, for the report's tests."""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path

import yaml


def _config(method, seed, dataset, backbone, epochs, train_size, sweep, budget) -> dict:
    return {
        "seed": seed,
        "sweep": sweep,
        "epochs": epochs,
        "batch_size": 64,
        "budget_name": budget,
        "method": {"name": method},
        "data": {"name": dataset, "train_size": train_size},
        "backbone": {"name": backbone},
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": 32},
        "eval": {"knn_k": [20, 200], "knn_temperature": 0.07},
    }


def make_run(
    runs_dir: Path,
    method: str,
    seed: int,
    knn: float | None = None,
    linear: float | None = None,
    online: float | None = None,
    status: str = "done",
    error: str = "NonFiniteLossError: non-finite training loss (nan) at step 7 (epoch 1)",
    dataset: str = "cifar10",
    backbone: str = "resnet18",
    epochs: int = 3,
    train_size: int | None = 2000,
    images_per_s: float = 100.0,
    curve: bool = True,
    sweep: str = "test",
    budget: str = "cpu",
    versions: dict | None = None,
    kwargs: dict | None = None,
) -> Path:
    """A run directory as emim_bench.pretrain.run leaves it (status done, failed or partial);
    ``kwargs`` are the method's hyperparameters (``method.kwargs`` of its config)."""
    digest = zlib.crc32(f"{method} {seed} {epochs} {dataset}{kwargs or ''}".encode())
    run_id = f"{method}-{dataset}-{backbone}-s{seed}-{digest:08x}"
    run = runs_dir / run_id
    run.mkdir(parents=True)
    cfg = _config(method, seed, dataset, backbone, epochs, train_size, sweep, budget)
    if kwargs:
        cfg["method"]["kwargs"] = kwargs
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    if curve and method != "random":
        with open(run / "curve.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "step", "wall_s", "train_loss", "val_acc1", "knn_acc1"])
            final = knn if knn is not None else 30.0
            for epoch in range(1, epochs + 1):
                acc = final - 3 * (epochs - epoch)
                writer.writerow([epoch, 31 * epoch, 20.0 * epoch, 5.0 / epoch, acc - 1, acc])
            writer.writerow([epochs, 31 * epochs, 20.0 * epochs, 1.0, final - 1, final])  # resume
    if status in ("partial", "failed"):
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")
    if status == "failed":
        failed = {"status": "failed", "run_id": run_id, "error": error}
        failed.update(
            started_utc="2025-01-01T00:00:00+00:00", failed_utc="2025-01-01T00:01:00+00:00"
        )
        (run / "failed.json").write_text(json.dumps(failed))
    if status != "done":
        return run
    metrics = {
        "knn_acc1_k20": knn,
        "knn_acc5_k20": 90.0,
        "knn_acc1_k200": knn,
        "knn_acc5_k200": 91.0,
        "linear_acc1": linear if linear is not None else knn,
        "linear_acc5": 92.0,
    }
    if method != "random":
        metrics["online_acc1"] = online if online is not None else knn
        metrics["online_acc5"] = 93.0
    results = {
        "status": "done",
        "run_id": run_id,
        "method": method,
        "dataset": dataset,
        "backbone": backbone,
        "seed": seed,
        "epochs": epochs,
        "batch_size": 64,
        "metrics": metrics,
        "knn": {"k": [20, 200], "temperature": 0.07},
        "train": {
            "wall_time_s": 0.0 if method == "random" else 60.0,
            "steps": 0 if method == "random" else 93,
            "images_per_s": None if method == "random" else images_per_s,
            "peak_rss_bytes": 3 * 2**30,
            "peak_gpu_memory_bytes": None,
        },
        "curve_file": "curve.csv" if curve and method != "random" else None,
        "versions": versions
        or {
            "python": "3.11.9",
            "torch": "2.14.1",
            "torchvision": "0.29.1",
            "pytorch_lightning": "1.9.5",
            "solo_learn": "1.0.2",
            "emim_bench": "0.1.0",
            "git_commit": "abc123",
        },
        "started_utc": "2025-01-01T00:00:00+00:00",
        "finished_utc": "2025-01-01T00:02:00+00:00",
        "config": cfg,
    }
    (run / "results.json").write_text(json.dumps(results))
    return run
