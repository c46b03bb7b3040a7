"""Which images a run trains on, keeps as its kNN bank and probe set, and is scored on; the
metrics computed on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from emim_bench import config, data
from emim_bench.evaluate import knn_accuracy, linear_probe_accuracy
from emim_bench.metrics import alignment, effective_rank, uniformity
from emim_bench.run.evaluation import EvalSets, offline_metrics, representation_diagnostics

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
    image, label = sets.test[0]  # through the evaluation transform
    expected = data.eval_transform("cifar10", 32)(data.Image.fromarray(train_images[val[0]]))
    assert torch.equal(image, expected) and label == data.labels_of(sets.test)[0]
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


class _Sets:
    """The one attribute offline_metrics reads of an EvalSets."""

    num_classes = 10


def test_offline_metrics_extract_the_features_when_not_given():
    feats = (torch.eye(10), torch.arange(10), torch.eye(10)[:4], torch.arange(4))

    class Sets(_Sets):
        def features(self, backbone):
            self.seen = backbone
            return feats

    sets, backbone = Sets(), object()
    cfg = config.load(["eval.knn_k=[1]", "eval.linear_epochs=2"])
    metrics = offline_metrics(cfg, backbone, sets)
    assert sets.seen is backbone and metrics == offline_metrics(cfg, None, _Sets(), feats)
    assert metrics["knn_acc1_k1"] == 100.0


def test_offline_metrics_are_the_evaluators_at_the_configured_k_temperature_and_seed():
    gen = torch.Generator().manual_seed(0)
    feats = (
        torch.randn(120, 8, generator=gen),
        torch.arange(120) % 10,
        torch.randn(40, 8, generator=gen),
        torch.arange(40) % 10,
    )
    cfg = config.load(["seed=7", "eval.knn_k=[3,50]", "eval.knn_temperature=0.5"])
    cfg.eval.linear_epochs = 4
    metrics = offline_metrics(cfg, None, _Sets(), feats)
    for k in (3, 50):
        expected = knn_accuracy(*feats, k=k, temperature=0.5, num_classes=10)
        assert (metrics[f"knn_acc1_k{k}"], metrics[f"knn_acc5_k{k}"]) == expected
    probe = linear_probe_accuracy(*feats, num_classes=10, epochs=4, seed=7)
    assert (metrics["linear_acc1"], metrics["linear_acc5"]) == probe
    assert set(metrics) == {
        "knn_acc1_k3",
        "knn_acc5_k3",
        "knn_acc1_k50",
        "knn_acc5_k50",
        "linear_acc1",
        "linear_acc5",
    }


class _Method(torch.nn.Module):
    """encoder and projector with BatchNorm, whose running statistics differ from any batch's."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6))
        self.projector = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5))
        self.projector[1].running_mean.fill_(3.0)


def test_diagnostics_are_the_metrics_of_the_eval_mode_outputs_and_restore_the_mode():
    method = _Method().train()
    gen = torch.Generator().manual_seed(1)
    view1, view2 = torch.randn(16, 3, 2, 2, generator=gen), torch.randn(16, 3, 2, 2, generator=gen)
    got = representation_diagnostics(method, view1, view2)
    assert method.training
    method.eval()
    with torch.no_grad():
        f1 = method.encoder(view1)
        z1, z2 = method.projector(f1), method.projector(method.encoder(view2))
    assert got == {
        "rankme_backbone": float(effective_rank(f1)),
        "rankme_projector": float(effective_rank(z1)),
        "alignment": alignment(z1, z2),
        "uniformity": uniformity(z1),
    }
    assert float(method.projector[1].running_mean[0]) == 3.0  # statistics untouched


def test_held_out_views_are_fixed_by_the_seed_and_leave_the_generators_alone(root):
    sets = EvalSets(config.load([*SIZES, "seed=3"]), root)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = sets.held_out_views(4)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = sets.held_out_views(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert first[0].shape == (4, 3, 32, 32) and not torch.equal(first[0], first[1])
    other = EvalSets(config.load([*SIZES, "seed=4"]), root).held_out_views(4)
    assert not torch.equal(other[0], first[0])


def test_features_are_those_of_the_bank_and_the_scored_images_in_eval_transform(root):
    cfg = config.load([*SIZES, "data.num_classes=12", "eval.batch_size=7"])
    sets = EvalSets(cfg, root)
    assert sets.num_classes == 12  # the declared count, whatever labels the subsets hold
    image, _ = sets.train[0]
    base_index, base = _base(sets.train)
    expected = data.eval_transform("cifar10", 32)(data.Image.fromarray(base.images[base_index[0]]))
    assert torch.equal(image, expected)
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    train_x, train_y, test_x, test_y = sets.features(backbone)
    assert torch.equal(train_x, backbone(torch.stack([x for x, _ in sets.train])).detach())
    assert torch.equal(test_x, backbone(torch.stack([x for x, _ in sets.test])).detach())
    assert torch.equal(train_y, torch.as_tensor(data.labels_of(sets.train)))
    assert torch.equal(test_y, torch.as_tensor(data.labels_of(sets.test)))
    again = EvalSets(cfg, root)  # the same seed draws the same bank
    assert np.array_equal(_base(again.train)[0], base_index)
    inferred = EvalSets(config.load([*SIZES, "data.num_classes=null"]), root)
    assert inferred.num_classes == 10  # largest training label + 1


def test_evaluation_loaders_are_built_once_and_their_workers_persist(root):
    sets = EvalSets(config.load([*SIZES, "trainer.num_workers=1"]), root)
    loader = sets.loader("test")
    assert loader is sets.loader("test") and loader.dataset is sets.test
    assert (loader.num_workers, loader.persistent_workers, loader.pin_memory) == (1, True, False)
    assert sets.loader("train").dataset is sets.train
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    first = sets.features(backbone)
    again = sets.features(backbone)  # the same workers, the same images in the same order
    inline = EvalSets(config.load(SIZES), root).features(backbone)  # no workers
    for a, b, c in zip(first, again, inline):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_diagnostic_views_come_from_the_scored_images(root):
    on_test = EvalSets(config.load([*SIZES, "seed=3"]), root).held_out_views(4)
    on_val = EvalSets(config.load([*SIZES, "seed=3", "data.val_size=500"]), root)
    views = on_val.held_out_views(4)
    assert not torch.equal(views[0], on_test[0])
    # Drawn from the validation images: the same as augmenting them by hand with the seed.
    transform = data.pretrain_transform("cifar10", on_val._cfg.method.augmentation, 32)
    torch.manual_seed(3)
    first = data.open_split(on_val._cfg.data, root, "train", transform)[on_val.val_indices[0]]
    assert torch.equal(views[0][0], first[0][0]) and torch.equal(views[1][0], first[0][1])


def test_held_out_views_repeat_where_augmentations_draw_from_python_random(root):
    """ImageNet-style presets blur with a sigma from ``random``: it is seeded too."""
    cfg = config.load(
        [
            *SIZES,
            "data=imagefolder",
            "data.path=imagenette-mini",
            "data.crop_size=48",
            "data.train_size=null",
            "data.test_size=20",
            "method.augmentation=symmetric",
        ]
    )
    sets = EvalSets(cfg, root)
    first, again = sets.held_out_views(8), sets.held_out_views(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert first[0].shape == (8, 3, 48, 48)  # at the configured crop size
