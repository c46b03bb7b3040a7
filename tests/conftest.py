"""Shared fixtures: a small real CIFAR-10 subset, the imagenette-mini JPEG folder and tiny
solo-learn method kwargs."""

from __future__ import annotations

import os
from pathlib import Path

import emim_bench.compat  # noqa: F401  (adapts solo-learn before the tests import it)

import numpy as np
import pytest
from hypothesis import settings

from emim_bench import config
from emim_bench.data import ArrayImageDataset, balanced_subset, load_cifar10_npz, pretrain_transform
from emim_bench.run import trainer as run_trainer

# Property tests draw the same examples on every run (a CI failure reproduces locally);
# HYPOTHESIS_PROFILE=thorough draws ten times as many, freshly each time.
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=250, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED_DATA = Path(os.environ.get("EMIM_BENCH_DATA", Path(__file__).parents[2] / "shared" / "data"))
CIFAR10_NPZ = SHARED_DATA / "cifar10" / "cifar10.npz"
IMAGENETTE_MINI = SHARED_DATA / "imagenette-mini"


@pytest.fixture(scope="session")
def cifar10_npz_path() -> Path:
    """The shared CIFAR-10 array file (override the data folder with EMIM_BENCH_DATA)."""
    if not CIFAR10_NPZ.is_file():
        pytest.fail(f"real CIFAR-10 is required for these tests; expected {CIFAR10_NPZ}")
    return CIFAR10_NPZ


@pytest.fixture(scope="session")
def imagenette_mini() -> Path:
    """The shared ImageNet-layout JPEG folder: train/<wnid>/ (100 each) and val/<wnid>/ (30
    each) for 10 Imagenette classes."""
    if not (IMAGENETTE_MINI / "train").is_dir():
        pytest.fail(f"real ImageNet JPEGs are required for these tests; expected {IMAGENETTE_MINI}")
    return IMAGENETTE_MINI


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
    """solo-learn kwargs of ``method`` from its config, shrunk for a fast CPU model.

    ResNet-18 with the ImageNet stem, a 64-64-32 projector (and predictor),
    batch 16, no learning-rate schedule; ``overrides`` replace any kwarg.
    """
    small = ["method.kwargs.proj_hidden_dim=64", "method.kwargs.proj_output_dim=32"]
    if method == "byol":
        small.append("method.kwargs.pred_hidden_dim=64")
    cfg = config.load(
        [
            f"method={method}",
            "batch_size=16",
            "backbone.cifar=false",
            "optim.scheduler=none",
            "epochs=1",
            *small,
        ]
    )
    return {**run_trainer.method_kwargs(cfg, num_classes=10), **overrides}
