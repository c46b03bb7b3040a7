"""Which images a run trains on, keeps as its kNN bank and probe set, and is scored on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from emim_bench import config, data
from emim_bench.run.evaluation import EvalSets

SIZES = ["data.train_size=200", "data.test_size=100", "trainer.num_workers=0"]


def _base(dataset) -> tuple[np.ndarray, object]:
    """Indices into the underlying dataset of a (nested) Subset, and that dataset."""
    if not isinstance(dataset, Subset):
        return np.arange(len(dataset)), dataset
    inner, base = _base(dataset.dataset)
    return inner[np.asarray(dataset.indices)], base


@pytest.fixture
def root(cifar10_npz_path):
    return cifar10_npz_path.parents[1]


def test_the_scored_images_are_test_images_and_none_is_in_the_bank(root, cifar10_npz_path):
    sets = EvalSets(config.load([*SIZES, "seed=3"]), root)
    test_images, test_labels = data.load_cifar10_npz(cifar10_npz_path, train=False)
    train_images, _ = data.load_cifar10_npz(cifar10_npz_path, train=True)
    scored, scored_base = _base(sets.test)
    bank, bank_base = _base(sets.train)
    assert sets.split == "test" and sets.val_indices is None
    assert np.array_equal(scored_base.images, test_images)
    assert np.array_equal(bank_base.images, train_images)
    assert np.array_equal(scored, data.balanced_subset(test_labels, 100, seed=3))
    # No scored image is in the bank (compared by pixels, not by index).
    bank_pixels = {train_images[i].tobytes() for i in bank}
    assert not any(test_images[i].tobytes() in bank_pixels for i in scored)
    # Scored through the evaluation transform (normalised, no augmentation).
    image, label = sets.test[0]
    expected = data.eval_transform("cifar10", 32)(data.Image.fromarray(test_images[scored[0]]))
    assert torch.equal(image, expected) and label == test_labels[scored[0]]


def test_a_validation_split_is_held_out_of_training_and_scored_instead(root, cifar10_npz_path):
    cfg = config.load([*SIZES, "data.val_size=500", "seed=3"])
    sets = EvalSets(cfg, root)
    val, val_base = _base(sets.test)
    bank, bank_base = _base(sets.train)
    assert sets.split == "val"
    train_images, _ = data.load_cifar10_npz(cifar10_npz_path, train=True)
    assert np.array_equal(val_base.images, train_images)  # held out of the training split
    assert np.array_equal(bank_base.images, train_images)
    assert np.array_equal(val, sets.val_indices) and len(val) == 500
    assert np.bincount(data.labels_of(sets.test)).tolist() == [50] * 10
    assert not set(val) & set(bank) and len(bank) == 200
    pretrain = data.training_subset(
        data.open_split(cfg.data, root, "pretrain", lambda image: image),
        sets.val_indices,
        cfg.data.train_size,
        cfg.seed,
    )
    assert not set(val) & set(_base(pretrain)[0])
    # The same images whatever the run's seed: every run of a selection sweep scores them.
    other = EvalSets(config.load([*SIZES, "data.val_size=500", "seed=4"]), root)
    assert np.array_equal(other.val_indices, sets.val_indices)
    assert not np.array_equal(_base(other.train)[0], bank)


def test_a_validation_split_leaving_no_training_image_is_refused():
    with pytest.raises(ValueError, match="leaves no training image"):
        data.validation_indices(np.repeat(np.arange(10), 5), 50)
    assert data.validation_indices(np.repeat(np.arange(10), 5), None) is None
