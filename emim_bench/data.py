"""Datasets and solo-learn augmentation pipelines for pretraining.

Every dataset goes through solo-learn's own augmentation classes
(``solo.utils.pretrain_dataloader``); this module only chooses their
parameters (the presets of solo-learn's CIFAR recipes) and reads data that
torchvision cannot read itself, such as the ``cifar10.npz`` array file.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import emim_bench.compat  # noqa: F401  (adapts solo-learn and Lightning before they load)

import numpy as np
import torchvision
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image
from solo.utils.pretrain_dataloader import (
    FullTransformPipeline,
    prepare_n_crop_transform,
    prepare_transform,
)
from torch.utils.data import Dataset, Subset
from torchvision import transforms as T

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
AUGMENTATION_KEYS = tuple(_BYOL_VIEW)
AUGMENTATION_PRESETS: dict[str, list[dict]] = {
    "symmetric": [_SYMMETRIC_VIEW, _SYMMETRIC_VIEW],  # SimCLR, Barlow Twins, EMIM
    "asymmetric": [_BYOL_VIEW, {**_BYOL_VIEW, "solarization_prob": 0.2}],  # BYOL
    "vicreg": [{**_BYOL_VIEW, "solarization_prob": 0.1, "min_scale": 0.2}] * 2,  # VICReg
}


# Per dataset kind: solo-learn's transform family and the normalisation it applies.
_CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225))
_NORMALIZATION = {
    "cifar10": ("cifar10", _CIFAR_STATS),
    "cifar100": ("cifar100", _CIFAR_STATS),
    "stl10": ("stl10", ((0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261))),
    "fashion_mnist": ("custom", ((0.2860,) * 3, (0.3530,) * 3)),
    "imagefolder": ("custom", _IMAGENET_STATS),
}
DATASET_KINDS = tuple(_NORMALIZATION)


def augmentation_views(augmentation: str | Sequence[Mapping]) -> list[dict]:
    """The two views' solo-learn augmentation arguments (keys of ``_BYOL_VIEW``).

    Args:
        augmentation: a key of :data:`AUGMENTATION_PRESETS`, or the two views' arguments
            themselves (a recipe's, see :mod:`emim_bench.recipes`).

    Raises:
        ValueError: an unknown preset, not two views, or a view whose keys differ from
            :data:`AUGMENTATION_KEYS`.
    """
    if isinstance(augmentation, str):
        if augmentation not in AUGMENTATION_PRESETS:
            raise ValueError(
                f"unknown augmentation preset {augmentation!r}; "
                f"choose one of {sorted(AUGMENTATION_PRESETS)}"
            )
        return [dict(view) for view in AUGMENTATION_PRESETS[augmentation]]
    if isinstance(augmentation, (DictConfig, ListConfig)):
        augmentation = OmegaConf.to_container(augmentation)
    views = [dict(view) for view in augmentation]
    if len(views) != 2 or any(sorted(view) != sorted(AUGMENTATION_KEYS) for view in views):
        raise ValueError(
            "an augmentation is a preset name or two views with the keys "
            f"{list(AUGMENTATION_KEYS)}; got {views!r}"
        )
    return views


def pretrain_transform(
    kind: str, preset: str | Sequence[Mapping], crop_size: int = 32
) -> FullTransformPipeline:
    """Two-view augmentation pipeline built from solo-learn's transform classes.

    Args:
        kind: dataset kind, one of :data:`DATASET_KINDS`; selects solo-learn's
            transform family and the normalisation statistics.
        preset: key of :data:`AUGMENTATION_PRESETS`, or the two views' arguments
            (:func:`augmentation_views`).
        crop_size: side of the square crops, in pixels.

    Returns:
        A callable mapping one PIL image to a list of two float32 tensors (3, crop_size, crop_size).

    Raises:
        ValueError: unknown kind or preset, malformed views.
    """
    if kind not in _NORMALIZATION:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {list(DATASET_KINDS)}")
    solo_name, (mean, std) = _NORMALIZATION[kind]
    extra = {"mean": mean, "std": std} if solo_name == "custom" else {}
    views = [{**view, **extra} for view in augmentation_views(preset)]
    if views[0] == views[1]:
        transforms, crops = [prepare_transform(solo_name, crop_size=crop_size, **views[0])], [2]
    else:
        transforms = [prepare_transform(solo_name, crop_size=crop_size, **view) for view in views]
        crops = [1, 1]
    return prepare_n_crop_transform(transforms, num_crops_per_aug=crops)


def eval_transform(kind: str, crop_size: int) -> T.Compose:
    """Deterministic transform for feature extraction: resize/centre-crop, tensor, normalise.

    32 px datasets are used as they are (Fashion-MNIST's 28 px resized to
    ``crop_size``); image folders are resized to ``crop_size * 256 / 224`` and
    centre-cropped, as in ImageNet evaluation. Normalisation matches
    :func:`pretrain_transform`.
    """
    _, (mean, std) = _NORMALIZATION[kind]
    resize = []
    if kind == "imagefolder":
        resize = [T.Resize(int(round(crop_size * 256 / 224))), T.CenterCrop(crop_size)]
    elif kind in ("fashion_mnist", "stl10"):
        resize = [T.Resize(crop_size)]
    return T.Compose([*resize, T.ToTensor(), T.Normalize(mean, std)])


class ArrayImageDataset(Dataset):
    """Images held in a uint8 array, returned as ``(transform(image), label)``.

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
        return self.transform(image), int(self.labels[index])


class IndexedDataset(Dataset):
    """``(index, *dataset[index])``: the ``(index, views, label)`` batch format of solo-learn's
    pretraining ``training_step``, for any dataset returning ``(views, label)``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return (index, *self.dataset[index])


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


# ---------------------------------------------------------------------------------------
# Dataset registry: config -> torch Dataset of (image or views, label)
# ---------------------------------------------------------------------------------------

DATA_ROOT_ENV = "EMIM_BENCH_DATA"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
SPLITS = ("pretrain", "train", "test")

_HOW_TO_GET = {
    "cifar10": "put cifar10.npz (x_train, y_train, x_test, y_test uint8 arrays) there, or "
    "torchvision's cifar-10-batches-py/, or rerun with data.download=true while online",
    "cifar100": "put torchvision's cifar-100-python/ there, or rerun with data.download=true "
    "while online",
    "stl10": "put torchvision's stl10_binary/ there, or rerun with data.download=true while online",
    "fashion_mnist": "put the four idx files (train-images-idx3-ubyte[.gz], ...) there, or "
    "install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
    "imagefolder": "arrange images as <path>/train/<class>/*.jpg and <path>/val/<class>/*.jpg "
    "(ImageNet-100: `emim-bench prepare imagenet100 --source PATH` builds it from an ImageNet "
    "copy)",
}


class DatasetNotFoundError(FileNotFoundError):
    """A configured dataset is not on disk; the message names the path and how to obtain it."""


def data_root(configured: str | Path) -> Path:
    """The configured data root, absolute (a relative path is taken from the current folder).

    The config's default is ``$EMIM_BENCH_DATA`` when set, else ``../shared/data``; a
    ``data_root=`` override wins over both.
    """
    return Path(configured).expanduser().resolve()


def dataset_dir(data_cfg: Mapping, root: Path) -> Path:
    """Folder of one dataset under the data root (``data.path``, default the dataset name)."""
    return root / str(data_cfg.get("path") or data_cfg["name"])


def check_available(data_cfg: Mapping, root: Path) -> None:
    """Fail before any model is built when the configured dataset is not on disk.

    Raises:
        DatasetNotFoundError: with the path looked at and how to obtain the data.
        ValueError: unknown ``data.kind``.
    """
    kind, folder = data_cfg["kind"], dataset_dir(data_cfg, root)
    if kind not in _HOW_TO_GET:
        raise ValueError(f"unknown data.kind {kind!r}; choose one of {list(DATASET_KINDS)}")
    if data_cfg.get("download") and kind in ("cifar10", "cifar100", "stl10"):
        return
    found = {
        "cifar10": (folder / "cifar10.npz").is_file() or (folder / "cifar-10-batches-py").is_dir(),
        "cifar100": (folder / "cifar-100-python").is_dir(),
        "stl10": (folder / "stl10_binary").is_dir(),
        "fashion_mnist": _fashion_mnist_dir(folder) is not None,
        "imagefolder": (folder / "train").is_dir() and (folder / "val").is_dir(),
    }[kind]
    if not found:
        looked = folder if kind != "fashion_mnist" else f"{folder} and {FASHION_MNIST_SYSTEM_DIR}"
        raise DatasetNotFoundError(
            f"dataset {data_cfg['name']!r} not found in {looked}: {_HOW_TO_GET[kind]} "
            f"(the data root comes from data_root= or ${DATA_ROOT_ENV})"
        )


def open_split(data_cfg: Mapping, root: Path, split: str, transform: Callable) -> Dataset:
    """One split of the configured dataset, each item ``(transform(image), label)``.

    Args:
        data_cfg: the ``data`` config node (``name``, ``kind``, ``path``, ``download``).
        root: data root (see :func:`data_root`).
        split: "pretrain" (images used for self-supervised training; STL-10 adds
            its unlabeled split, label -1), "train" (labelled training images,
            for the kNN bank and the linear probe) or "test" (evaluation).
        transform: applied to each RGB PIL image.

    Raises:
        DatasetNotFoundError: see :func:`check_available`.
        ValueError: unknown split or kind.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    check_available(data_cfg, root)
    kind, folder, train = data_cfg["kind"], dataset_dir(data_cfg, root), split != "test"
    download = bool(data_cfg.get("download"))
    if kind == "cifar10" and (folder / "cifar10.npz").is_file():
        return ArrayImageDataset(*load_cifar10_npz(folder / "cifar10.npz", train), transform)
    if kind in ("cifar10", "cifar100"):
        cls = torchvision.datasets.CIFAR10 if kind == "cifar10" else torchvision.datasets.CIFAR100
        return cls(folder, train=train, transform=transform, download=download)
    if kind == "stl10":
        stl_split = {"pretrain": "train+unlabeled", "train": "train", "test": "test"}[split]
        return torchvision.datasets.STL10(folder, stl_split, transform=transform, download=download)
    if kind == "fashion_mnist":
        return ArrayImageDataset(*load_fashion_mnist(_fashion_mnist_dir(folder), train), transform)
    return torchvision.datasets.ImageFolder(folder / ("train" if train else "val"), transform)


def labels_of(dataset: Dataset) -> np.ndarray:
    """Class labels (N,) int64 of a dataset from :func:`open_split` (or a Subset of one),
    without loading images."""
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[np.asarray(dataset.indices)]
    for attribute in ("labels", "targets"):
        if hasattr(dataset, attribute):
            return np.asarray(getattr(dataset, attribute), dtype=np.int64)
    raise TypeError(f"cannot read labels of {type(dataset).__name__}")


# Every run, whatever its seed, holds out the same validation images.
VALIDATION_SEED = 0


def validation_indices(train_labels: np.ndarray, val_size: int | None) -> np.ndarray | None:
    """The images of the training split held out for choosing settings, or None.

    A class-balanced subset of ``val_size`` images drawn with :data:`VALIDATION_SEED`, so
    every run of a selection sweep scores the same images, none of which it trained on.

    Args:
        train_labels: (N,) int64 labels of the training split (:func:`labels_of`).
        val_size: number of images held out; None (or 0) for none.

    Returns:
        Sorted int64 array (val_size,) of indices into the training split, or None.

    Raises:
        ValueError: ``val_size`` leaves no training image, or a class has too few.
    """
    if not val_size:
        return None
    if val_size >= len(train_labels):
        raise ValueError(
            f"data.val_size={val_size} leaves no training image (the split has "
            f"{len(train_labels)}); use a smaller data.val_size"
        )
    return balanced_subset(train_labels, int(val_size), VALIDATION_SEED)


def training_subset(
    dataset: Dataset, held_out: np.ndarray | None, size: int | None, seed: int
) -> Dataset:
    """The images a run trains on (and its kNN bank and probe use): ``dataset`` without the
    ``held_out`` validation indices, then a class-balanced subset of ``size`` (``seed``).

    ``dataset`` is the training split, or the pretraining split whose first images are the
    training split's (STL-10 appends its unlabeled images).
    """
    if held_out is None:
        return balanced_subset_of(dataset, size, seed)
    kept = np.setdiff1d(np.arange(len(dataset)), held_out)
    return balanced_subset_of(Subset(dataset, kept.tolist()), size, seed)


def balanced_subset_of(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """``dataset`` itself when ``size`` is None or covers it, else a class-balanced Subset."""
    if size is None or size >= len(dataset):
        return dataset
    return Subset(dataset, balanced_subset(labels_of(dataset), int(size), seed).tolist())


def _fashion_mnist_dir(folder: Path) -> Path | None:
    for candidate in (folder, FASHION_MNIST_SYSTEM_DIR):
        if any((candidate / f"train-images-idx3-ubyte{gz}").is_file() for gz in ("", ".gz")):
            return candidate
    return None


def _read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST file format), gzipped or not: big-endian header, then uint8 data."""
    if not path.is_file():
        path = path.with_name(path.name + ".gz")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(folder: Path, train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from its idx files: uint8 (N, 28, 28) greyscale images, int64 (N,) labels."""
    prefix = "train" if train else "t10k"
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte")
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte").astype(np.int64)
    return images, labels
