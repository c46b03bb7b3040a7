"""The evaluation of one run: its frozen-feature sets and the offline kNN and linear probe."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset

from emim_bench import data, evaluate
from emim_bench.metrics import alignment, effective_rank, uniformity
from emim_bench.run.device import loader_kwargs, release_workers


class EvalSets:
    """The frozen-feature evaluation sets of a run: labelled train (kNN bank, probe) and the
    scored images.

    ``test`` holds the scored images: the test split (``data.test_size`` of it), or, when
    ``data.val_size`` is set, the validation images held out of the training split
    (:func:`~emim_bench.data.validation_indices`), which neither pretraining nor the bank
    nor the probe sees; ``split`` says which (``"test"`` or ``"val"``), and
    ``val_indices`` are those images' indices in the training split (None without).
    ``num_classes`` is the dataset's class count (``data.num_classes``; for an image folder,
    the training split's largest label + 1), whatever classes a test subset happens to hold.
    Their loaders (:meth:`loader`) are built once, with the run's loader options, so their
    workers persist from one evaluation to the next with ``trainer.persistent_workers``.
    """

    def __init__(self, cfg: DictConfig, root: Path):
        transform = data.eval_transform(cfg.data.kind, cfg.data.crop_size)
        train = data.open_split(cfg.data, root, "train", transform)
        self.val_indices = data.validation_indices(data.labels_of(train), cfg.data.val_size)
        self.train = data.training_subset(train, self.val_indices, cfg.data.train_size, cfg.seed)
        self.split = "test" if self.val_indices is None else "val"
        self.test = scored_images(cfg, root, self.val_indices, transform)
        self.num_classes = cfg.data.num_classes or int(data.labels_of(self.train).max()) + 1
        self.batch_size = cfg.eval.batch_size
        self.loader_options = loader_kwargs(cfg.trainer)
        self._loaders: dict[str, DataLoader] = {}
        self._cfg, self._root = cfg, root

    def loader(self, split: str) -> DataLoader:
        """The loader of ``"train"`` or ``"test"``: ``(images, labels)`` batches of
        ``eval.batch_size`` in order, with :func:`~emim_bench.run.device.loader_kwargs`'s
        workers, pinning and persistence; built at the first call, the same object after."""
        if split not in self._loaders:
            images = {"train": self.train, "test": self.test}[split]
            self._loaders[split] = DataLoader(
                images, batch_size=self.batch_size, **self.loader_options
            )
        return self._loaders[split]

    def release_workers(self) -> None:
        """End the worker processes of the loaders built so far (they persist otherwise)."""
        release_workers(self._loaders.values())

    def held_out_views(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views, (n, 3, H, W) float32 each, of the first ``n`` scored images,
        drawn once with the run's pretraining augmentation and seed (the generators of torch,
        numpy and ``random`` are restored afterwards): the fixed batch of the collapse
        diagnostics.
        """
        cfg = self._cfg
        transform = data.pretrain_transform(
            cfg.data.kind, cfg.method.augmentation, cfg.data.crop_size
        )
        pairs = scored_images(cfg, self._root, self.val_indices, transform)
        state = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
        try:
            torch.manual_seed(cfg.seed), np.random.seed(cfg.seed), random.seed(cfg.seed)
            views = [pairs[i][0] for i in range(min(n, len(pairs)))]
        finally:
            torch.random.set_rng_state(state[0]), np.random.set_state(state[1])
            random.setstate(state[2])
        return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])

    def features(self, backbone: torch.nn.Module):
        """``(train_features, train_labels, test_features, test_labels)`` of ``backbone``."""
        train = evaluate.extract_features(backbone, self.loader("train"))
        test = evaluate.extract_features(backbone, self.loader("test"))
        return (*train, *test)


def scored_images(cfg: DictConfig, root: Path, val_indices, transform) -> Dataset:
    """The images a run is scored on, each through ``transform``: the validation images
    ``val_indices`` of the training split when given, else the class-balanced
    ``data.test_size`` subset of the test split (drawn with the run's seed)."""
    if val_indices is not None:
        return Subset(data.open_split(cfg.data, root, "train", transform), val_indices.tolist())
    test = data.open_split(cfg.data, root, "test", transform)
    return data.balanced_subset_of(test, cfg.data.test_size, cfg.seed)


def projector_of(module: torch.nn.Module) -> torch.nn.Module:
    """A method's projector: its ``projector``, or for DINO its head without the prototype
    layer (``head.mlp``), whose output is the embedding the prototypes score.

    Raises:
        AttributeError: a method with neither.
    """
    if hasattr(module, "projector"):
        return module.projector
    return module.head.mlp


@torch.no_grad()
def representation_diagnostics(
    module: torch.nn.Module, view1: torch.Tensor, view2: torch.Tensor
) -> dict[str, float]:
    """Collapse diagnostics of a method on a fixed batch of two views, in eval mode.

    ``rankme_backbone`` and ``rankme_projector``: effective rank (RankMe, Garrido et al.
    2023) of the backbone features and of the projector output of the first view;
    ``alignment`` (of the two views' projector outputs) and ``uniformity`` (of the first
    view's), Wang and Isola (2020), on L2-normalised outputs. A collapsing run shows a
    falling RankMe, and alignment and uniformity both near 0. BatchNorm statistics are
    left as they are; the module's training mode is restored.

    Args:
        module: a solo-learn method (``encoder`` and a projector, :func:`projector_of`).
        view1, view2: (N, 3, H, W) images on any device (moved to the module's).
    """
    was_training = module.training
    module.eval()
    try:
        device = next(module.parameters()).device
        f1, f2 = module.encoder(view1.to(device)), module.encoder(view2.to(device))
        projector = projector_of(module)
        z1, z2 = projector(f1), projector(f2)
    finally:
        module.train(was_training)
    return {
        "rankme_backbone": float(effective_rank(f1)),
        "rankme_projector": float(effective_rank(z1)),
        "alignment": alignment(z1, z2),
        "uniformity": uniformity(z1),
    }


def offline_metrics(
    cfg: DictConfig, backbone: torch.nn.Module, eval_sets: EvalSets, feats: tuple | None = None
) -> dict:
    """kNN acc@1/acc@5 for every k of ``eval.knn_k`` and the linear probe's, in percent.

    ``feats``: :meth:`EvalSets.features` of this backbone if already extracted (the kNN
    monitor's of the last epoch), else they are extracted here.
    """
    feats = feats if feats is not None else eval_sets.features(backbone)
    metrics = {}
    for k in cfg.eval.knn_k:
        acc1, acc5 = evaluate.knn_accuracy(
            *feats, k=k, temperature=cfg.eval.knn_temperature, num_classes=eval_sets.num_classes
        )
        metrics[f"knn_acc1_k{k}"], metrics[f"knn_acc5_k{k}"] = acc1, acc5
    metrics["linear_acc1"], metrics["linear_acc5"] = evaluate.linear_probe_accuracy(
        *feats, num_classes=eval_sets.num_classes, epochs=cfg.eval.linear_epochs, seed=cfg.seed
    )
    return metrics
