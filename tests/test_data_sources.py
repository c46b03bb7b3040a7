"""Where each dataset kind is looked for, how it is opened and transformed, without downloads:
small IDX files written here, torchvision's dataset classes replaced by recorders."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
import torchvision
from torchvision import transforms as T

from emim_bench import data


def _write_idx(path, array: np.ndarray, gz: bool) -> None:
    """The IDX format: two zero bytes, type 0x08 (uint8), ndim, big-endian sizes, the data."""
    payload = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


@pytest.fixture
def fashion_root(tmp_path):
    """Fashion-MNIST-shaped idx files: train gzipped, test plain (both layouts are read)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    arrays = {}
    for prefix, n, gz in (("train", 6, True), ("t10k", 4, False)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
        arrays[prefix] = images, labels
    return tmp_path, arrays


def test_fashion_mnist_idx_files_are_read_gzipped_or_plain(fashion_root):
    root, arrays = fashion_root
    for train, prefix in ((True, "train"), (False, "t10k")):
        images, labels = data.load_fashion_mnist(root / "fashion_mnist", train=train)
        assert np.array_equal(images, arrays[prefix][0]) and images.shape[1:] == (28, 28)
        assert np.array_equal(labels, arrays[prefix][1]) and labels.dtype == np.int64
    cfg = {"name": "fashion_mnist", "kind": "fashion_mnist"}
    test = data.open_split(cfg, root, "test", data.eval_transform("fashion_mnist", 32))
    image, label = test[1]
    assert image.shape == (3, 32, 32) and label == arrays["t10k"][1][1]
    for split in ("pretrain", "train"):  # the training images, never the test ones
        opened = data.open_split(cfg, root, split, data.eval_transform("fashion_mnist", 32))
        assert np.array_equal(opened.images, arrays["train"][0])


def test_a_missing_dataset_names_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-debian-package")
    for kind, fix in (
        ("cifar100", "cifar-100-python/"),
        ("stl10", "stl10_binary/"),
        ("imagefolder", "<path>/train/<class>"),
        ("fashion_mnist", "apt-get install dataset-fashion-mnist"),
    ):
        with pytest.raises(data.DatasetNotFoundError, match="not found in") as error:
            data.check_available({"name": kind, "kind": kind}, tmp_path)
        assert fix in str(error.value) and str(tmp_path / kind) in str(error.value)
        system_dir = str(data.FASHION_MNIST_SYSTEM_DIR) in str(error.value)
        assert system_dir == (kind == "fashion_mnist")  # only it is also looked for there
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.check_available({"name": "fashion_mnist", "kind": "fashion_mnist"}, tmp_path)
    assert f"and {data.FASHION_MNIST_SYSTEM_DIR}" in str(error.value)
    # With download=true torchvision fetches the three it can; Fashion-MNIST it cannot.
    for kind in ("cifar10", "cifar100", "stl10"):
        data.check_available({"name": kind, "kind": kind, "download": True}, tmp_path)
    with pytest.raises(data.DatasetNotFoundError):
        data.check_available({"name": "f", "kind": "fashion_mnist", "download": True}, tmp_path)
    (tmp_path / "cifar100" / "cifar-100-python").mkdir(parents=True)
    (tmp_path / "stl10" / "stl10_binary").mkdir(parents=True)
    data.check_available({"name": "cifar100", "kind": "cifar100"}, tmp_path)
    data.check_available({"name": "stl10", "kind": "stl10"}, tmp_path)


class _Recorder:
    """Stands in for a torchvision dataset class and keeps its arguments."""

    calls: list = []

    def __init__(self, *args, **kwargs):
        _Recorder.calls.append((args, kwargs))


@pytest.mark.parametrize("download", [False, True])
def test_torchvision_datasets_get_the_folder_split_transform_and_download_flag(
    tmp_path, monkeypatch, download
):
    for name in ("CIFAR10", "CIFAR100", "STL10"):
        monkeypatch.setattr(torchvision.datasets, name, type(name, (_Recorder,), {}))
    _Recorder.calls = []
    for kind in ("cifar10", "cifar100", "stl10"):
        folder = tmp_path / kind
        (
            folder
            / {
                "cifar10": "cifar-10-batches-py",
                "cifar100": "cifar-100-python",
                "stl10": "stl10_binary",
            }[kind]
        ).mkdir(parents=True)
        cfg = {"name": kind, "kind": kind, "download": download}
        for split in ("pretrain", "train", "test"):
            dataset = data.open_split(cfg, tmp_path, split, transform=str)
            assert (
                type(dataset).__name__
                == {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "stl10": "STL10"}[kind]
            )
    folders = [tmp_path / k for k in ("cifar10", "cifar100", "stl10") for _ in range(3)]
    assert _Recorder.calls[:6] == [
        ((folders[i],), {"train": train, "transform": str, "download": download})
        for i, train in zip(range(6), (True, True, False) * 2)
    ]
    assert _Recorder.calls[6:] == [
        ((tmp_path / "stl10", split), {"transform": str, "download": download})
        for split in ("train+unlabeled", "train", "test")
    ]


def test_eval_transforms_resize_as_each_kind_needs_and_normalise_with_its_statistics():
    folder = data.eval_transform("imagefolder", 224).transforms
    assert isinstance(folder[0], T.Resize) and folder[0].size == 256  # 224 * 256 / 224
    assert isinstance(folder[1], T.CenterCrop) and folder[1].size == (224, 224)
    assert folder[-1].mean == (0.485, 0.456, 0.406)
    for kind in ("fashion_mnist", "stl10"):
        first = data.eval_transform(kind, 32).transforms[0]
        assert isinstance(first, T.Resize) and first.size == 32
    assert isinstance(data.eval_transform("cifar10", 32).transforms[0], T.ToTensor)
    # The pretraining views of a custom kind use the same ImageNet statistics.
    views = data.pretrain_transform("imagefolder", "symmetric", 32)
    image = data.Image.fromarray(np.full((40, 40, 3), 124, dtype=np.uint8))
    torch.manual_seed(0)
    assert all(view.shape == (3, 32, 32) for view in views(image))
    assert "Normalize(mean=(0.485, 0.456, 0.406)" in repr(views)
    fashion = data.pretrain_transform("fashion_mnist", "symmetric", 32)
    assert "Normalize(mean=(0.286, 0.286, 0.286), std=(0.353, 0.353, 0.353))" in repr(fashion)
    with pytest.raises(ValueError, match="unknown dataset kind 'mnist'"):
        data.pretrain_transform("mnist", "symmetric", 32)


def test_a_cifar10_array_file_without_the_arrays_says_how_to_make_one(tmp_path):
    np.savez(tmp_path / "cifar10.npz", x_train=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises((KeyError, ValueError, FileNotFoundError)):
        data.load_cifar10_npz(tmp_path / "cifar10.npz", train=False)
    with pytest.raises(FileNotFoundError, match="x_test, y_test as uint8 arrays"):
        data.load_cifar10_npz(tmp_path / "missing.npz", train=True)
