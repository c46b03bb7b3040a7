"""Offline evaluation of a frozen backbone: kNN accuracy and a linear probe on its features."""

from __future__ import annotations

import emim_bench.compat  # noqa: F401  (adapts solo-learn and Lightning before they load)

import torch
import torch.nn.functional as F
from solo.utils.knn import WeightedKNNClassifier
from torch import nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def extract_features(
    backbone: nn.Module, dataset: Dataset, batch_size: int = 256, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features of every image of ``dataset``, in eval mode, on the backbone's device.

    Args:
        backbone: maps images (B, 3, H, W) to features (B, F).
        dataset: items ``(image tensor (3, H, W), label)``.

    Returns:
        ``(features, labels)``: float32 (N, F) on the CPU, int64 (N,).
    """
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        features.append(backbone(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(targets))
    backbone.train(was_training)
    return torch.cat(features), torch.cat(labels).long()


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> tuple[float, float]:
    """Weighted kNN accuracy (Wu et al. 2018) with solo-learn's ``WeightedKNNClassifier``.

    Features are L2-normalised, neighbours found by cosine similarity, and each
    neighbour votes with weight exp(similarity / temperature).

    Args:
        train_features: (N, F) bank; train_labels: (N,) int64.
        test_features: (M, F) queries; test_labels: (M,) int64.

    Returns:
        ``(acc@1, acc@5)`` in percent.
    """
    knn = WeightedKNNClassifier(k=k, T=temperature, distance_fx="cosine")
    knn.update(
        train_features=F.normalize(train_features, dim=1),
        train_targets=train_labels,
        test_features=F.normalize(test_features, dim=1),
        test_targets=test_labels,
    )
    acc1, acc5 = knn.compute()
    return float(acc1), float(acc5)


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> tuple[float, float]:
    """Linear probe: a softmax classifier trained on cached, standardised frozen features.

    solo-learn's linear evaluation (``solo.methods.linear.LinearModel``)
    trains the classifier on augmented images pushed through the frozen
    backbone for 100 epochs: on 2 CPU cores that costs more than the
    pretraining it evaluates. This probe trains on features extracted once
    (no augmentation), standardised with the training set's mean and std,
    with Adam and a cosine learning-rate schedule -- minutes become seconds,
    at the price of the augmentation's usual 1-2 points.

    Args:
        train_features: (N, F); train_labels: (N,) int64 in [0, num_classes).
        test_features: (M, F); test_labels: (M,) int64.
        epochs: passes over the training features.
        seed: seeds the classifier's initialisation and the batch order.

    Returns:
        ``(acc@1, acc@5)`` on the test features, in percent.
    """
    generator = torch.Generator().manual_seed(seed)
    mean, std = train_features.mean(0), train_features.std(0).clamp_min(1e-6)
    x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
    classifier = nn.Linear(x_train.shape[1], num_classes)
    with torch.no_grad():
        classifier.weight.normal_(0, 0.01, generator=generator)
        classifier.bias.zero_()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=1e-6)
    steps_per_epoch = -(-len(x_train) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(classifier(x_train[batch]), train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        return top_k_accuracy(classifier(x_test), test_labels)


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """``(acc@1, acc@5)`` in percent of logits (M, C) against labels (M,); top-5 capped at C."""
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (M, k)
    hits = top.eq(labels[:, None])
    return 100.0 * hits[:, 0].float().mean().item(), 100.0 * hits.any(1).float().mean().item()
