"""The Lightning side of a run: the pretraining loader, the method's kwargs, the Trainer and
its callbacks (per-epoch curve with kNN monitor, non-finite loss guard, channels-last
conversion, atomic checkpoints)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from pathlib import Path

import emim_bench.compat  # noqa: F401  (adapts solo-learn and Lightning before they load)

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins import TorchCheckpointIO
from solo.methods.base import BaseMethod
from torch.utils.data import DataLoader, Dataset, Sampler

from emim_bench import evaluate
from emim_bench.data import IndexedDataset
from emim_bench.run.device import channels_last_batch, device_settings
from emim_bench.run.directory import CURVE_FILE, append_curve_row, rewind_curve
from emim_bench.run.evaluation import EvalSets, representation_diagnostics
from emim_bench.run.identity import run_id


class EpochShuffleSampler(Sampler[int]):
    """A random order of ``range(n)`` that is a pure function of ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` at the start of every epoch (as it does for
    ``DistributedSampler``), so a run resumed at epoch e shuffles as the uninterrupted run
    did at epoch e, instead of replaying epoch 1's order from a freshly seeded generator.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        return iter(torch.randperm(self.n, generator=generator).tolist())


def pretrain_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = True,
) -> DataLoader:
    """Shuffled loader of ``(index, [view1, view2], label)`` batches, dropping the last partial one.

    ``dataset`` returns ``(views, label)``; the index that solo-learn's
    ``training_step`` expects is added here. ``pin_memory`` and ``persistent_workers`` are
    the DataLoader's (see :func:`emim_bench.run.device.loader_kwargs`); workers persist only
    where there are workers.

    The order of each epoch depends on ``seed`` and the epoch only
    (:class:`EpochShuffleSampler`; under DDP Lightning swaps in a ``DistributedSampler``
    seeded by ``seed_everything``). ``drop_last`` keeps every batch at ``batch_size``,
    which the batch statistics of Barlow Twins, VICReg and EMIM assume.
    """
    return DataLoader(
        IndexedDataset(dataset),
        batch_size=batch_size,
        sampler=EpochShuffleSampler(len(dataset), seed),
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
    )


def fit(
    method: BaseMethod,
    loader: DataLoader,
    root_dir: str | Path,
    max_steps: int = -1,
    max_epochs: int | None = None,
    accelerator: str = "cpu",
    devices: int | str = 1,
    ckpt_path: str | Path | None = None,
    **trainer_kwargs,
) -> pl.Trainer:
    """Fit ``method`` on ``loader`` with a Lightning Trainer; checkpoints go under ``root_dir``.

    Args:
        max_steps: optimizer steps to stop after (-1: no limit).
        max_epochs: epochs to stop after (None: Lightning's default, 1000 epochs,
            unless ``max_steps`` stops first).
        ckpt_path: a Lightning checkpoint to resume from (weights, optimizer,
            scheduler and step count), or None to start fresh.
        **trainer_kwargs: passed to :class:`pytorch_lightning.Trainer` (logger,
            callbacks, precision, ...). By default no logger and no progress bar.

    Returns:
        The trainer after ``fit``, e.g. for ``trainer.global_step`` or
        ``trainer.checkpoint_callback.last_model_path``.
    """
    trainer_kwargs.setdefault("logger", False)
    trainer_kwargs.setdefault("enable_progress_bar", False)
    trainer_kwargs.setdefault("enable_model_summary", False)
    trainer = pl.Trainer(
        default_root_dir=str(root_dir),
        max_steps=max_steps,
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        **trainer_kwargs,
    )
    trainer.fit(method, loader, ckpt_path=None if ckpt_path is None else str(ckpt_path))
    return trainer


def method_kwargs(cfg: DictConfig, num_classes: int, world_size: int = 1) -> dict:
    """solo-learn constructor kwargs of the configured method.

    The learning rate of the method config is for a total batch of 256 and is
    scaled linearly by ``batch_size * world_size / 256``, as solo-learn does.
    """
    backbone_args = {
        k: cfg.backbone[k]
        for k in ("cifar", "zero_init_residual", "patch_size", "img_size")
        if k in cfg.backbone
    }
    if not cfg.backbone.encoder.startswith("resnet"):  # a ResNet setting (recipes set it)
        backbone_args.pop("zero_init_residual", None)
    if cfg.backbone.encoder == "timm":  # emim_bench.backbones: the timm model by its name
        backbone_args["model"] = cfg.backbone.name
    return dict(
        encoder=cfg.backbone.encoder,
        num_classes=num_classes,
        backbone_args=backbone_args,
        max_epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        optimizer=cfg.optim.optimizer,
        lars=cfg.optim.lars,
        eta_lars=cfg.optim.eta_lars,
        grad_clip_lars=cfg.optim.grad_clip_lars,
        exclude_bias_n_norm=cfg.optim.exclude_bias_n_norm,
        lr=cfg.method.lr * cfg.batch_size * world_size / 256,
        weight_decay=cfg.method.weight_decay,
        classifier_lr=cfg.optim.classifier_lr,
        accumulate_grad_batches=1,
        extra_optimizer_args={"momentum": cfg.optim.momentum}
        if cfg.optim.optimizer == "sgd"
        else {},
        scheduler=_scheduler(cfg),
        min_lr=cfg.optim.min_lr,
        warmup_start_lr=cfg.optim.warmup_start_lr,
        warmup_epochs=cfg.warmup_epochs,
        num_large_crops=2,
        num_small_crops=0,
        **OmegaConf.to_container(cfg.method.kwargs, resolve=True),
    )


def _scheduler(cfg: DictConfig) -> str:
    """solo-learn's scheduler name; "warmup_cosine" without warm-up epochs becomes "cosine".

    lightning-bolts' LinearWarmupCosineAnnealingLR (solo's "warmup_cosine") sets
    every learning rate to ``warmup_start_lr`` in epoch 0 and then updates it
    multiplicatively; with ``warmup_epochs=0`` and ``warmup_start_lr=0`` the
    learning rate therefore stays 0 for the whole run. torch's cosine schedule
    starts at the base learning rates instead.
    """
    if cfg.optim.scheduler == "warmup_cosine" and cfg.warmup_epochs == 0:
        return "cosine"
    return cfg.optim.scheduler


class EpochCurve(pl.Callback):
    """Writes one row per epoch to ``curve.csv`` (rank 0): losses, online and kNN accuracy,
    collapse diagnostics, steps and training time.

    ``wall_s`` is training time (validation included, this callback's own evaluation
    excluded) in seconds since the run started, summed over its starts. The kNN monitor
    runs every ``knn_every`` epochs and at the last one; the collapse diagnostics
    (:func:`representation_diagnostics`, on a fixed batch of ``diagnostics_batch`` held-out
    images, 0 to turn them off) every epoch; both on rank 0 only, the other ranks waiting
    for it at the epoch's checkpoint barrier.

    Runs before the checkpoint of the epoch is written, so a killed run repeats at most
    the last epoch, whose row is then replaced. The features of the last epoch's kNN
    monitor are kept in :attr:`final_features` for the final evaluation (no optimizer step
    follows them, and extraction leaves BatchNorm statistics alone).
    """

    def __init__(
        self,
        path: Path,
        eval_sets: EvalSets,
        knn_every: int,
        knn_k: int,
        temperature: float,
        diagnostics_batch: int = 0,
    ):
        self.path, self.eval_sets = path, eval_sets
        self.knn_every, self.knn_k, self.temperature = knn_every, knn_k, temperature
        self.diagnostics_batch = diagnostics_batch
        self.final_features: tuple | None = None
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_train_start(self, trainer, module):
        self.offset_s = 0.0
        if trainer.is_global_zero:  # epochs after the checkpoint's are trained again
            self.offset_s = rewind_curve(self.path, trainer.current_epoch)
        self.started, self.knn_s = time.perf_counter(), 0.0

    def on_train_epoch_end(self, trainer, module):
        epoch, tic = trainer.current_epoch + 1, time.perf_counter()
        # Read on every rank: reading may all-reduce metrics logged with sync_dist.
        logged = {
            key.removesuffix("_epoch"): float(value)
            for key, value in trainer.callback_metrics.items()
            if key.endswith("_epoch") or key.startswith("val_")
        }
        if not trainer.is_global_zero:
            return
        row = {"epoch": epoch, "step": trainer.global_step}
        row["wall_s"] = self.offset_s + tic - self.started - self.knn_s
        row.update(logged)
        if self.knn_every and (epoch % self.knn_every == 0 or epoch == trainer.max_epochs):
            feats = self.eval_sets.features(module.encoder)
            if epoch == trainer.max_epochs:
                self.final_features = feats
            row["knn_acc1"], row["knn_acc5"] = evaluate.knn_accuracy(
                *feats,
                k=self.knn_k,
                temperature=self.temperature,
                num_classes=self.eval_sets.num_classes,
            )
        if self.diagnostics_batch:
            if self._views is None:
                self._views = self.eval_sets.held_out_views(self.diagnostics_batch)
            if len(self._views[0]) >= 2:  # uniformity needs pairs
                row.update(representation_diagnostics(module, *self._views))
        self.knn_s += time.perf_counter() - tic
        append_curve_row(self.path, row)


class EpochSeed(pl.Callback):
    """Reseeds torch, numpy and Python's ``random`` at the start of every epoch from
    ``(seed, epoch, rank)``.

    Augmentations drawn in the training process then depend on the epoch, not on how many
    epochs this process has run, so a run resumed from a checkpoint draws what the
    uninterrupted run drew (exactly with ``trainer.num_workers=0``; loader workers keep
    generators of their own).
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer, module):
        entropy = [self.seed, trainer.current_epoch, trainer.global_rank]
        state = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        torch.manual_seed(state)
        np.random.seed(state)
        random.seed(state)


class CheckpointError(RuntimeError):
    """``last.ckpt`` cannot be read; the message names the file and the two ways out."""


def check_checkpoint(path: Path) -> None:
    """Fail early, in one line, when the checkpoint a run would resume from is unreadable.

    Raises:
        CheckpointError: ``path`` exists but is truncated or corrupt (disk full, a kill
            during a copy). Nothing in the run directory is removed.
    """
    if not path.is_file():
        return
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        int(checkpoint["global_step"])
    except Exception as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise CheckpointError(
            f"cannot resume from {path} ({reason}); rerun with force=true to start over, "
            f"or delete {path} to retrain from scratch"
        ) from None


class _AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic: a uniquely named temporary file, then a rename.

    Lightning 1.9 writes ``last.ckpt`` in place; a run killed during that write
    would leave a truncated checkpoint that cannot be resumed from.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        tmp = Path(f"{path}.{os.getpid()}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # a write that failed (disk full) leaves nothing


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step."""


class _NonFiniteLossGuard(pl.Callback):
    """Stops training with :class:`NonFiniteLossError` once a training loss was NaN/inf.

    Every step records on the device, without waiting for it, whether the loss is finite
    and the first step at which it was not. The host reads that record (one synchronisation
    with the device) every ``every`` steps and at the end of every epoch, before the epoch's
    checkpoint is written, so a checkpoint never holds weights trained on a non-finite loss.

    With ``every=1`` (the CPU default) the check comes before the backward pass of the bad
    step, so the weights never take it. With ``every=K`` a NaN between two checks is caught
    at the next check (or at the epoch's end): by then the weights have taken the steps in
    between, so every later loss may be non-finite too, and the error names the first
    non-finite step this rank recorded, which may be earlier than the check that found it
    (and the step at which the check ran when another rank's loss was the bad one).

    Under DDP the decision is reduced over the ranks at each check (any rank's non-finite
    loss stops all of them), so every rank raises the same error instead of the others
    waiting in the next collective; the ranks check at the same steps.
    """

    def __init__(self, every: int = 1):
        self.every = every
        self._first_bad: torch.Tensor | None = None  # 0-dim int64: first bad step, 0 if none

    def on_train_start(self, trainer, module):
        self._first_bad = None

    def on_before_backward(self, trainer, module, loss):
        step = trainer.global_step + 1
        bad = ~torch.isfinite(loss.detach()).all()
        if self._first_bad is None:
            self._first_bad = torch.zeros((), dtype=torch.int64, device=loss.device)
        self._first_bad = torch.where(bad & (self._first_bad == 0), step, self._first_bad)
        if step % self.every == 0:
            self._check(trainer, step)

    def on_train_epoch_end(self, trainer, module):
        if self._first_bad is not None:
            self._check(trainer, trainer.global_step)

    def _check(self, trainer, step: int) -> None:
        first = int(self._first_bad) if self._first_bad is not None else 0  # waits for the device
        if trainer.strategy.reduce_boolean_decision(first > 0, all=False):
            seen = "" if self.every == 1 else f"; the loss is checked every {self.every} steps"
            raise NonFiniteLossError(
                f"non-finite training loss at step {first or step} "
                f"(epoch {trainer.current_epoch + 1}{seen}); lower the learning rate or check "
                "the data"
            )


class ChannelsLast(pl.Callback):
    """Model weights and image batches in channels-last (NHWC) memory format.

    The model is converted in ``setup``, before Lightning moves it to the device and wraps it
    for DDP (which keeps the format); each training and validation batch on the device,
    before the step (its lists are changed in place: :func:`channels_last_batch`).
    Convolutions on tensor cores run in NHWC, so on GPUs this saves the layout changes cuDNN
    would make around every convolution.
    """

    def setup(self, trainer, module, stage=None):
        module.to(memory_format=torch.channels_last)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        channels_last_batch(batch)

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        channels_last_batch(batch)


def make_trainer(
    cfg: DictConfig, out: Path, eval_sets: EvalSets, extra_callbacks: Sequence[pl.Callback] = ()
) -> pl.Trainer:
    """The Lightning Trainer of a run writing to ``out``, with its callbacks and loggers.

    Precision, memory format and cuDNN autotuning come from
    :func:`emim_bench.run.device.device_settings` (the benchmark's training step takes them
    from there too); ``extra_callbacks`` (e.g. a step timer) come after the run's own.

    Raises:
        ValueError: an unknown ``trainer.precision``.
    """
    device = device_settings(cfg.trainer)
    callbacks = [
        EpochSeed(cfg.seed),
        _NonFiniteLossGuard(cfg.trainer.get("finite_check_every", 1)),
        EpochCurve(
            out / CURVE_FILE,
            eval_sets,
            cfg.knn_every_n_epochs,
            cfg.eval.knn_k[0],
            cfg.eval.knn_temperature,
            cfg.diagnostics_batch,
        ),
        ModelCheckpoint(
            dirpath=out / "checkpoints", save_last=True, save_top_k=0, save_on_train_epoch_end=True
        ),
        *([ChannelsLast()] if device.channels_last else []),
        *extra_callbacks,
    ]
    loggers = [CSVLogger(str(out), name="logs")]  # logs/version_<n>/metrics.csv, one per (re)start
    if cfg.logger == "tensorboard":
        loggers.append(TensorBoardLogger(str(out), name="tensorboard", version=""))
    elif cfg.logger == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        loggers.append(WandbLogger(save_dir=str(out), offline=True, name=run_id(cfg)))
    return pl.Trainer(
        default_root_dir=str(out),
        max_epochs=cfg.epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        precision=device.precision,
        benchmark=device.cudnn_benchmark,
        strategy=cfg.trainer.strategy,
        logger=loggers,
        callbacks=callbacks,
        plugins=[_AtomicCheckpointIO()],
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        sync_batchnorm=cfg.trainer.sync_batchnorm,
    )
