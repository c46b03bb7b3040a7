"""Data helpers: class-balanced subsets, solo-learn two-view presets, the CIFAR-10 array file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emim_bench.data import (
    AUGMENTATION_PRESETS,
    ArrayImageDataset,
    balanced_subset,
    load_cifar10_npz,
    pretrain_transform,
)


def test_balanced_subset_is_balanced_deterministic_and_seed_dependent():
    labels = np.repeat(np.arange(10), 50)
    index = balanced_subset(labels, 103, seed=1)
    counts = np.bincount(labels[index], minlength=10)
    assert len(np.unique(index)) == 103
    assert counts.tolist() == [11, 11, 11] + [10] * 7
    assert np.array_equal(index, balanced_subset(labels, 103, seed=1))
    assert not np.array_equal(index, balanced_subset(labels, 103, seed=2))


def test_balanced_subset_rejects_impossible_sizes():
    labels = np.array([0, 0, 1])
    with pytest.raises(ValueError, match="in \\[1, 3\\]"):
        balanced_subset(labels, 4)
    with pytest.raises(ValueError, match="in \\[1, 3\\]"):
        balanced_subset(labels, 0)
    assert balanced_subset(labels, 1, seed=0).tolist() in ([0], [1])  # the smallest subset
    with pytest.raises(ValueError, match="class 1 has 1 samples, 2 requested"):
        balanced_subset(np.array([0, 0, 0, 1]), 4)


@pytest.mark.parametrize("preset", sorted(AUGMENTATION_PRESETS))
def test_presets_give_two_normalised_views(preset, cifar10_train_subset):
    images, labels = cifar10_train_subset
    dataset = ArrayImageDataset(images, labels, pretrain_transform("cifar10", preset))
    views, label = dataset[3]
    assert label == int(labels[3])
    assert len(views) == 2 and all(
        v.shape == (3, 32, 32) and v.dtype == torch.float32 for v in views
    )
    assert not torch.equal(views[0], views[1])  # two independent random augmentations


def test_asymmetric_preset_solarizes_only_the_second_view():
    pipeline = pretrain_transform("cifar10", "asymmetric")
    first, second = (t.transform.transform.transforms for t in pipeline.transforms)
    solarization = [
        [s for s in view if "Solarization" in repr(getattr(s, "transforms", ""))]
        for view in (first, second)
    ]
    assert solarization[0][0].p == 0.0 and solarization[1][0].p == 0.2


def test_greyscale_images_become_rgb_views():
    grey = np.random.default_rng(0).integers(0, 255, size=(4, 28, 28), dtype=np.uint8)
    dataset = ArrayImageDataset(grey, np.zeros(4), pretrain_transform("cifar10", "symmetric"))
    views, _ = dataset[0]
    assert views[0].shape == (3, 32, 32)


def test_cifar10_npz_test_split_matches_the_official_one(cifar10_npz_path):
    images, labels = load_cifar10_npz(cifar10_npz_path, train=False)
    assert images.shape == (10000, 32, 32, 3) and images.dtype == np.uint8
    assert labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert np.bincount(labels).tolist() == [1000] * 10


def test_missing_cifar10_file_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10.npz.*torchvision"):
        load_cifar10_npz(tmp_path / "nope.npz")
