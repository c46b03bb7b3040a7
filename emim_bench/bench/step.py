"""The training-step benchmark: one full solo-learn step per method, outside a Trainer.

The step runs as the trainer runs it on the device: in the precision (autocast dtype, fp16's
gradient scaler), memory format and cuDNN autotuning of :func:`step_device_settings`, which
come from the same function as the Trainer's (:func:`emim_bench.run.device.device_settings`).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from emim_bench import config
from emim_bench.bench.options import BenchOptions
from emim_bench.bench.timing import OtherCpuLoad, Patience, synchronizer
from emim_bench.methods import build_method
from emim_bench.run.device import DeviceSettings, channels_last_batch, device_settings
from emim_bench.run.trainer import method_kwargs

STEP_METHODS = ("emim", "barlow_twins", "vicreg", "simclr", "byol")


def step_method_kwargs(
    name: str, batch_size: int, cifar_stem: bool = False, trainer: str = "cpu"
) -> dict[str, Any]:
    """solo-learn constructor kwargs of ``name`` from its config (``method_configs/method/``).

    The recipe's projector (EMIM and Barlow Twins both get Barlow Twins' recipe
    2048-2048-2048, so the training-step comparison isolates the loss), on ResNet-18
    with ``budget=cpu``'s optimiser (Adam at the budget's lr per 256 images, 4e-3, or
    1e-3 for BYOL, scaled by batch / 256) and no learning-rate schedule.

    Args:
        cifar_stem: ResNet-18 with the CIFAR stem (3x3 conv, no max-pool) instead
            of the ImageNet stem (7x7 stride-2 conv + max-pool).
        trainer: the trainer config (``cpu`` or ``gpu``) whose settings reach the method:
            EMIM's checks (Cholesky status, effective rank) run every
            ``trainer.finite_check_every`` steps, every step on the CPU, every 50th on a GPU.
    """
    overrides = [f"method={name}", f"batch_size={batch_size}", "optim.scheduler=none"]
    overrides.append(f"trainer={trainer}")
    if name in ("emim", "barlow_twins"):  # budget=cpu narrows Barlow Twins' projector: undo it
        recipe = config.load(["method=barlow_twins", "budget=cifar_paper"]).method.kwargs
        overrides += [
            f"method.kwargs.{k}={recipe[k]}" for k in ("proj_hidden_dim", "proj_output_dim")
        ]
    cfg = config.load([*overrides, f"backbone.cifar={str(cifar_stem).lower()}"])
    return method_kwargs(cfg, num_classes=10)


def step_device_settings(device: torch.device | str) -> DeviceSettings:
    """The settings the trainer trains with on ``device``: ``trainer=gpu``'s on cuda,
    ``trainer=cpu``'s on the CPU, resolved by :func:`emim_bench.run.device.device_settings`
    (``auto`` precision: bf16 where the GPU has it, else fp16)."""
    return device_settings(config.load([f"trainer={trainer_config(device)}"]).trainer)


def trainer_config(device: torch.device | str) -> str:
    """The trainer config a run on ``device`` uses: ``gpu`` on cuda, else ``cpu``."""
    return "gpu" if torch.device(device).type == "cuda" else "cpu"


def two_view_batch(batch_size: int, image_size: int, device: torch.device | str, seed: int = 0):
    """A solo-learn training batch ``(indexes, [view1, view2], targets)`` of random images.

    Views are float32 (batch_size, 3, image_size, image_size); targets are in [0, 10).
    The speed of a step does not depend on the pixel values.
    """
    gen = torch.Generator().manual_seed(seed)
    views = [torch.randn(batch_size, 3, image_size, image_size, generator=gen) for _ in range(2)]
    targets = torch.randint(0, 10, (batch_size,), generator=gen)
    indexes = torch.arange(batch_size)
    return indexes.to(device), [v.to(device) for v in views], targets.to(device)


def _no_log(*args, **kwargs) -> None:
    """Stands in for ``LightningModule.log``/``log_dict`` outside a Trainer."""


def _step_closure(name: str, options: BenchOptions, device: torch.device, settings: DeviceSettings):
    """Build method ``name`` and its optimizer; return a closure doing one training step.

    The closure runs ``training_step`` (the method's own) under autocast to
    ``settings.autocast_dtype`` (none at 32-bit), backward, the optimizer step (through a
    gradient scaler for fp16, as Lightning does) and, for momentum methods (BYOL), the EMA
    update Lightning would run in ``on_train_batch_end``. Model and batch are in
    ``settings.memory_format``. It returns the step's loss, detached (0-dim tensor).
    """
    torch.manual_seed(0)
    kwargs = step_method_kwargs(
        name, options.batch_size, options.cifar_stem, trainer_config(device)
    )
    method = build_method(name, **kwargs)
    method = method.to(device).train()
    batch = two_view_batch(options.batch_size, options.image_size, device)
    if settings.channels_last:
        method = method.to(memory_format=torch.channels_last)
        batch = channels_last_batch(batch)
    method.log, method.log_dict = _no_log, _no_log  # no Trainer to log to
    optimizer = method.configure_optimizers()
    scaler = torch.amp.GradScaler(device.type) if settings.grad_scaler else None
    dtype = settings.autocast_dtype
    momentum_pairs = getattr(method, "momentum_pairs", [])

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = method.training_step(batch, 0)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        for online, target in momentum_pairs:
            method.momentum_updater.update(online, target)
        return loss.detach()

    return step


def _step_round(steps: dict[str, Callable[[], torch.Tensor]], sync, bar) -> dict[str, Any]:
    """One training step of each method in turn.

    Returns:
        ``{"times": {name: seconds}, "losses": {name: float}, "other_cpus"}``.
    """
    times, losses = {}, {}
    with OtherCpuLoad() as other:
        for name, step in steps.items():
            bar.set_postfix_str(name)
            sync()
            start = time.perf_counter()
            losses[name] = float(step())  # float() waits for the step's kernels
            sync()
            times[name] = time.perf_counter() - start
            bar.update()
    return {"times": times, "losses": losses, "other_cpus": other.cpus}


def bench_steps(
    options: BenchOptions, device: torch.device, patience: Patience | None = None
) -> list[dict[str, Any]]:
    """Time full training steps of every method in :data:`STEP_METHODS`.

    Warm-up rounds first, then timed rounds; a round is one step of each
    method in turn (round-robin), so a slow-down of the machine hits every
    method alike. A round during which other processes were busy is discarded
    and run again once they are quiet, while ``patience`` lasts. Each step runs in the
    trainer's settings for ``device`` (:func:`step_device_settings`), with
    ``torch.backends.cudnn.benchmark`` set as the trainer sets it (and restored after).

    Returns:
        One row per method: ``{"method", "median_s"`` (seconds per step),
        ``"images_per_s"`` (source images; a step holds ``batch_size`` images,
        2 views each), ``"views_per_s", "steps"`` (timed steps kept),
        ``"discarded_rounds", "final_loss", "other_cpus"}`` (the most any kept
        round saw, as in :class:`OtherCpuLoad`).
    """
    patience = patience or Patience(0.0)
    sync = synchronizer(device)
    settings = step_device_settings(device)
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    try:
        return _timed_rounds(options, device, settings, patience, sync)
    finally:
        torch.backends.cudnn.benchmark = benchmark


def _timed_rounds(
    options: BenchOptions, device: torch.device, settings: DeviceSettings, patience: Patience, sync
) -> list[dict[str, Any]]:
    """The warm-up and timed rounds of :func:`bench_steps`, and its rows."""
    steps = {name: _step_closure(name, options, device, settings) for name in STEP_METHODS}
    kept: list[dict[str, Any]] = []
    discarded = 0
    total = len(STEP_METHODS) * (options.warmup_steps + options.steps)
    with tqdm(total=total, desc="training steps", unit="step", file=sys.stderr) as bar:
        for _ in range(options.warmup_steps):
            last = _step_round(steps, sync, bar)
        while len(kept) < options.steps:
            start = time.perf_counter()
            last = _step_round(steps, sync, bar)
            if patience.retry(last["other_cpus"], time.perf_counter() - start):
                discarded += 1
                bar.total += len(STEP_METHODS)
            else:
                kept.append(last)
    others = [r["other_cpus"] for r in kept if r["other_cpus"] is not None]
    return [
        _step_row(name, [r["times"][name] for r in kept], last["losses"][name], options.batch_size)
        | {"discarded_rounds": discarded, "other_cpus": max(others) if others else None}
        for name in STEP_METHODS
    ]


def _step_row(name: str, times: list[float], loss: float, batch_size: int) -> dict[str, Any]:
    """A row of :func:`bench_steps` from one method's step times (seconds) and last loss."""
    if not math.isfinite(loss):
        raise RuntimeError(f"{name}: the training step's loss is not finite ({loss})")
    median = statistics.median(times)
    return {
        "method": name,
        "median_s": median,
        "min_s": min(times),
        "images_per_s": batch_size / median,
        "views_per_s": 2 * batch_size / median,
        "steps": len(times),
        "final_loss": loss,
    }
