"""Pretraining: a solo-learn method, a loader of augmented views, a Lightning fit."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from solo.methods import METHODS
from solo.methods.base import BaseMethod
from torch.utils.data import DataLoader, Dataset


def build_method(name: str, **kwargs) -> BaseMethod:
    """Instantiate a method of solo-learn's registry (``solo.methods.METHODS``) by name.

    Args:
        name: registry key, e.g. "simclr", "byol", "barlow_twins", "vicreg", "emim".
        **kwargs: the method's constructor arguments (solo-learn's BaseMethod
            arguments plus the method's own, e.g. ``proj_hidden_dim``).

    Raises:
        ValueError: ``name`` is not registered; the message lists the valid names.
    """
    if name not in METHODS or name in ("base", "linear"):
        valid = sorted(k for k in METHODS if k not in ("base", "linear"))
        raise ValueError(f"unknown method {name!r}; choose one of {valid}")
    return METHODS[name](**kwargs)


def pretrain_loader(
    dataset: Dataset, batch_size: int, num_workers: int = 0, seed: int = 0
) -> DataLoader:
    """Shuffled loader of ``(index, [view1, view2], label)`` batches, dropping the last partial one.

    Shuffling uses its own generator seeded with ``seed``, so the batch order is
    reproducible. ``drop_last`` keeps every batch at ``batch_size``, which the
    batch statistics of Barlow Twins, VICReg and EMIM assume.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
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
