"""Datasets and solo-learn augmentation pipelines for pretraining.

Every dataset goes through solo-learn's own augmentation classes
(``solo.utils.pretrain_dataloader``); this module only chooses their
parameters (the presets of solo-learn's CIFAR recipes) and reads data that
torchvision cannot read itself, such as the ``cifar10.npz`` array file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from solo.utils.pretrain_dataloader import (
    FullTransformPipeline,
    prepare_n_crop_transform,
    prepare_transform,
)
from torch.utils.data import Dataset

# Augmentation presets of solo-learn's CIFAR recipes (colour jitter applied with p=0.8,
# grayscale p=0.2 and horizontal flip p=0.5 in all of them). One dict per view.
_SYMMETRIC_VIEW = dict(
    brightness=0.8,
    contrast=0.8,
    saturation=0.8,
    hue=0.2,
    gaussian_prob=0.5,
    solarization_prob=0.0,
    min_scale=0.08,
)
_BYOL_VIEW = dict(
    brightness=0.4,
    contrast=0.4,
    saturation=0.2,
    hue=0.1,
    gaussian_prob=0.0,
    solarization_prob=0.0,
    min_scale=0.08,
)
AUGMENTATION_PRESETS: dict[str, list[dict]] = {
    "symmetric": [_SYMMETRIC_VIEW, _SYMMETRIC_VIEW],  # SimCLR, Barlow Twins, EMIM
    "asymmetric": [_BYOL_VIEW, {**_BYOL_VIEW, "solarization_prob": 0.2}],  # BYOL
    "vicreg": [{**_BYOL_VIEW, "solarization_prob": 0.1, "min_scale": 0.2}] * 2,  # VICReg
}


def pretrain_transform(dataset: str, preset: str, crop_size: int = 32) -> FullTransformPipeline:
    """Two-view augmentation pipeline built from solo-learn's transform classes.

    Args:
        dataset: solo-learn dataset name that selects normalisation statistics
            ("cifar10", "cifar100", "stl10", "imagenet100", "custom").
        preset: key of :data:`AUGMENTATION_PRESETS`.
        crop_size: side of the square crops, in pixels.

    Returns:
        A callable mapping one PIL image to a list of two float32 tensors (3, crop_size, crop_size).

    Raises:
        ValueError: unknown preset.
    """
    if preset not in AUGMENTATION_PRESETS:
        raise ValueError(
            f"unknown augmentation preset {preset!r}; choose one of {sorted(AUGMENTATION_PRESETS)}"
        )
    views = AUGMENTATION_PRESETS[preset]
    if views[0] == views[1]:
        transforms, crops = [prepare_transform(dataset, crop_size=crop_size, **views[0])], [2]
    else:
        transforms = [prepare_transform(dataset, crop_size=crop_size, **view) for view in views]
        crops = [1, 1]
    return prepare_n_crop_transform(transforms, num_crops_per_aug=crops)


class ArrayImageDataset(Dataset):
    """Images held in a uint8 array, returned as ``(index, transform(image), label)``.

    The ``(index, views, label)`` triple is the batch format of solo-learn's
    pretraining ``training_step``.

    Args:
        images: uint8 array (N, H, W, 3) of RGB images, or (N, H, W) greyscale
            (converted to RGB).
        labels: int array (N,) of class indices.
        transform: callable applied to each PIL image (for pretraining, a
            :func:`pretrain_transform` pipeline).

    Raises:
        ValueError: images and labels differ in length, or images are not uint8.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        self.images, self.labels, self.transform = images, labels.astype(np.int64), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index]).convert("RGB")
        return index, self.transform(image), int(self.labels[index])


def load_cifar10_npz(path: str | Path, train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of CIFAR-10 from an array file.

    The file holds ``x_train`` uint8 (50000, 32, 32, 3), ``y_train`` (50000,),
    ``x_test`` uint8 (10000, 32, 32, 3) and ``y_test`` (10000,), HWC RGB in the
    official order (the format of torchvision-free CIFAR-10 copies, loaded
    without pickle).

    Returns:
        ``(images, labels)``: uint8 (N, 32, 32, 3) and int64 (N,).

    Raises:
        FileNotFoundError: no file at ``path``, with how to obtain one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"CIFAR-10 array file not found at {path}. Put cifar10.npz there (x_train, y_train, "
            "x_test, y_test as uint8 arrays) or use torchvision's CIFAR10 download."
        )
    split = "train" if train else "test"
    with np.load(path) as arrays:
        return arrays[f"x_{split}"], arrays[f"y_{split}"].astype(np.int64)


def balanced_subset(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Indices of a class-balanced random subset, deterministic for a given seed.

    Each class gets ``size // n_classes`` samples; the remainder goes to the
    first classes in label order, one each.

    Args:
        labels: int array (N,) of class indices.
        size: number of indices to return, at most N.
        seed: seed of the numpy generator that draws the subset.

    Returns:
        Sorted int64 array (size,) of indices into ``labels``.

    Raises:
        ValueError: ``size`` is not in [1, N] or a class has too few samples.
    """
    classes = np.unique(labels)
    if not 1 <= size <= len(labels):
        raise ValueError(f"subset size must be in [1, {len(labels)}], got {size}")
    per_class = np.full(len(classes), size // len(classes))
    per_class[: size % len(classes)] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    for cls, count in zip(classes, per_class):
        members = np.flatnonzero(labels == cls)
        if count > len(members):
            raise ValueError(f"class {cls} has {len(members)} samples, {count} requested")
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen))
