"""Shared fixtures: a small real CIFAR-10 subset and tiny solo-learn method kwargs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import emim_bench  # noqa: F401  (applies the solo-learn compatibility layer)
from emim_bench.data import ArrayImageDataset, balanced_subset, load_cifar10_npz, pretrain_transform

SHARED_DATA = Path(os.environ.get("EMIM_BENCH_DATA", Path(__file__).parents[2] / "shared" / "data"))
CIFAR10_NPZ = SHARED_DATA / "cifar10" / "cifar10.npz"


@pytest.fixture(scope="session")
def cifar10_npz_path() -> Path:
    """The shared CIFAR-10 array file (override the data folder with EMIM_BENCH_DATA)."""
    if not CIFAR10_NPZ.is_file():
        pytest.fail(f"real CIFAR-10 is required for these tests; expected {CIFAR10_NPZ}")
    return CIFAR10_NPZ


@pytest.fixture(scope="session")
def cifar10_train_subset(cifar10_npz_path) -> tuple[np.ndarray, np.ndarray]:
    """64 real CIFAR-10 training images, class-balanced: uint8 (64, 32, 32, 3) and labels (64,)."""
    images, labels = load_cifar10_npz(cifar10_npz_path, train=True)
    index = balanced_subset(labels, 64, seed=0)
    return images[index], labels[index]


@pytest.fixture
def cifar10_views(cifar10_train_subset):
    """The subset behind solo-learn's symmetric two-view augmentation."""
    images, labels = cifar10_train_subset
    return ArrayImageDataset(images, labels, pretrain_transform("cifar10", "symmetric"))


@pytest.fixture(scope="session")
def tiny_kwargs():
    """``tiny_kwargs(method, **overrides)``: solo-learn constructor kwargs for a fast CPU model."""
    return tiny_method_kwargs


def tiny_method_kwargs(method: str, **overrides) -> dict:
    """solo-learn kwargs for a fast CPU model: ResNet-18, ImageNet stem, small projector."""
    base = dict(
        encoder="resnet18",
        num_classes=10,
        backbone_args={"cifar": False, "zero_init_residual": False},
        max_epochs=1,
        batch_size=16,
        optimizer="sgd",
        lars=True,
        eta_lars=0.02,
        grad_clip_lars=True,
        exclude_bias_n_norm=True,
        lr=0.3,
        weight_decay=1e-5,
        classifier_lr=0.1,
        accumulate_grad_batches=1,
        extra_optimizer_args={"momentum": 0.9},
        scheduler="none",
        min_lr=0.0,
        warmup_start_lr=0.0,
        warmup_epochs=0,
        num_large_crops=2,
        num_small_crops=0,
    )
    specific = {
        "simclr": dict(proj_hidden_dim=64, proj_output_dim=32, temperature=0.2),
        "byol": dict(
            proj_hidden_dim=64,
            proj_output_dim=32,
            pred_hidden_dim=64,
            base_tau_momentum=0.99,
            final_tau_momentum=1.0,
            momentum_classifier=False,
        ),
        "barlow_twins": dict(proj_hidden_dim=64, proj_output_dim=32, lamb=0.0051, scale_loss=0.1),
        "vicreg": dict(
            proj_hidden_dim=64,
            proj_output_dim=32,
            sim_loss_weight=25.0,
            var_loss_weight=25.0,
            cov_loss_weight=1.0,
        ),
        "emim": dict(proj_hidden_dim=64, proj_output_dim=32, eps=1e-2, standardize=True),
    }[method]
    return {**base, **specific, **overrides}
