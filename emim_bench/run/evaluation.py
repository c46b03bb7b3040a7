"""The evaluation of one run: its frozen-feature sets and the offline kNN and linear probe."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from emim_bench import data, evaluate


class EvalSets:
    """The frozen-feature evaluation sets of a run: labelled train (kNN bank, probe) and test.

    ``num_classes`` is the dataset's class count (``data.num_classes``; for an image folder,
    the training split's largest label + 1), whatever classes a test subset happens to hold.
    """

    def __init__(self, cfg: DictConfig, root: Path):
        transform = data.eval_transform(cfg.data.kind, cfg.data.crop_size)
        train = data.open_split(cfg.data, root, "train", transform)
        test = data.open_split(cfg.data, root, "test", transform)
        self.train = data.balanced_subset_of(train, cfg.data.train_size, cfg.seed)
        self.test = data.balanced_subset_of(test, cfg.data.test_size, cfg.seed)
        self.num_classes = cfg.data.num_classes or int(data.labels_of(self.train).max()) + 1
        self.batch_size, self.num_workers = cfg.eval.batch_size, cfg.trainer.num_workers

    def features(self, backbone: torch.nn.Module):
        """``(train_features, train_labels, test_features, test_labels)`` of ``backbone``."""
        train = evaluate.extract_features(backbone, self.train, self.batch_size, self.num_workers)
        test = evaluate.extract_features(backbone, self.test, self.batch_size, self.num_workers)
        return (*train, *test)


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
