"""Offline evaluation of a frozen backbone: kNN accuracy and a linear probe on its features."""

from __future__ import annotations

from collections.abc import Callable

import emim_bench.compat  # noqa: F401  (adapts solo-learn and Lightning before they load)

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: Dataset | DataLoader,
    batch_size: int = 256,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features of every image of ``dataset``, in eval mode, on the backbone's device.

    Args:
        backbone: maps images (B, 3, H, W) to features (B, F).
        dataset: items ``(image tensor (3, H, W), label)``; or a DataLoader of
            ``(images, labels)`` batches over such items in order, used as it is (its own
            batch size, workers, pinning and persistence; the three arguments below are then
            ignored), so that its workers can persist from one call to the next.
        batch_size, num_workers, pin_memory: of the DataLoader built over a dataset.

    Returns:
        ``(features, labels)``: float32 (N, F) on the CPU, int64 (N,).
    """
    device = next(backbone.parameters()).device
    if isinstance(dataset, DataLoader):
        loader = dataset
    else:
        loader = DataLoader(
            dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory
        )
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    for images, targets in loader:
        # Pinned batches copy asynchronously; .cpu() below waits for the features.
        features.append(backbone(images.to(device, non_blocking=loader.pin_memory)).float().cpu())
        labels.append(torch.as_tensor(targets))
    backbone.train(was_training)
    return torch.cat(features), torch.cat(labels).long()


@torch.no_grad()
def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    max_chunk_bytes: int = 256 * 2**20,
) -> tuple[float, float]:
    """Weighted kNN accuracy of queries against a labelled feature bank.

    The classifier of Wu et al. 2018 ("Unsupervised feature learning via
    non-parametric instance discrimination", CVPR 2018), as solo-learn and DINO
    evaluate with it: features are L2-normalised, each query takes the ``k``
    bank entries of highest cosine similarity s, and each of them votes for its
    label with weight exp(s / temperature). A class's score is the sum of its
    votes. Unlike solo-learn's ``WeightedKNNClassifier``, this one takes the
    class count from both splits (or ``num_classes``), never counts a class
    without votes as a top-5 hit, and makes no torch.distributed calls.

    Ties are broken by index: among equal similarities the lower bank index is
    the nearer neighbour, among equal scores the lower class ranks first. The
    result does not depend on the order of the bank (up to exact ties), on the
    scale of any feature row, or on ``max_chunk_bytes``.

    Runs on the device of ``train_features``, over chunks of queries.

    Args:
        train_features: (N, F) float bank, raw (normalised here).
        train_labels: (N,) int64 in [0, num_classes).
        test_features: (M, F) float queries, raw; M >= 1.
        test_labels: (M,) int64 in [0, num_classes).
        k: neighbours per query, >= 1; capped at N.
        temperature: > 0. The weights are computed in float64, so they stay
            finite for temperature >= 1/709.
        num_classes: class count; None means the largest label of either split + 1.
        max_chunk_bytes: memory bound of one chunk's (chunk, N) similarity matrices
            (12 bytes an entry: float64 and its float32 rounding); at least one
            query per chunk.

    Returns:
        ``(acc@1, acc@5)`` in percent. acc@5 counts a query when its label has a
        positive score and ranks among the top min(5, num_classes) classes.

    Raises:
        ValueError: features that are not 2-D or differ in width, label vectors
            that are not 1-D integers or differ in length from their features,
            an empty bank or query set, k < 1, temperature <= 0, or a label
            outside [0, num_classes).
    """
    for name, features in (("train_features", train_features), ("test_features", test_features)):
        if features.ndim != 2:
            raise ValueError(f"{name} must be 2-D (samples, F), got shape {tuple(features.shape)}")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"feature widths differ: train_features has {train_features.shape[1]}, "
            f"test_features has {test_features.shape[1]}"
        )
    for name, labels, features in (
        ("train_labels", train_labels, train_features),
        ("test_labels", test_labels, test_features),
    ):
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(
                f"{name} must be a 1-D integer tensor, got {labels.dtype} of shape "
                f"{tuple(labels.shape)}"
            )
        if len(labels) != len(features):
            raise ValueError(f"{name} has {len(labels)} entries for {len(features)} feature rows")
    n_bank, n_query = len(train_features), len(test_features)
    if n_bank == 0:
        raise ValueError("the bank is empty: train_features has no rows")
    if n_query == 0:
        raise ValueError("the query set is empty: test_features has no rows")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if num_classes is None:
        num_classes = max(int(train_labels.max()), int(test_labels.max())) + 1
    for name, labels in (("train_labels", train_labels), ("test_labels", test_labels)):
        low, high = int(labels.min()), int(labels.max())
        if high >= num_classes:
            raise ValueError(f"{name} holds label {high}, not below num_classes={num_classes}")
        if low < 0:
            raise ValueError(f"{name} holds the negative label {low}")

    device = train_features.device
    # float32 matrix products round differently with the shape of the operands (so with
    # the chunk size and the bank order). In float64 that noise is ~1e-16, and rounding the
    # similarities to float32 afterwards almost always removes it: equal similarities stay
    # exactly equal and the tie rule below decides them.
    bank = F.normalize(train_features.to(torch.float64), dim=1)
    bank_labels = train_labels.to(device=device, dtype=torch.int64)
    k = min(k, n_bank)
    top = min(5, num_classes)
    classes = torch.arange(num_classes, device=device)
    chunk = max(1, max_chunk_bytes // (12 * n_bank))
    hits1 = hits5 = 0
    for start in range(0, n_query, chunk):
        queries = test_features[start : start + chunk].to(device=device, dtype=torch.float64)
        labels = test_labels[start : start + chunk].to(device=device, dtype=torch.int64)
        similarity = (F.normalize(queries, dim=1) @ bank.T).float()  # (B, N)

        sims, index = similarity.topk(k, dim=1)
        # topk picks any of the entries tied with the k-th similarity; rows with such a tie
        # are redone with a stable sort, which keeps the lowest bank indices.
        tied = (similarity >= sims[:, -1:]).sum(1) > k
        if tied.any():
            rows = tied.nonzero().squeeze(1)
            index[rows] = similarity[rows].sort(dim=1, descending=True, stable=True).indices[:, :k]
            sims[rows] = similarity[rows].gather(1, index[rows])
        # Neighbours in a fixed order (similarity down, bank index up), so the class sums
        # below add their terms in an order that neither topk nor the bank order decides.
        index, order = index.sort(dim=1)
        sims, order = sims.gather(1, order).sort(dim=1, descending=True, stable=True)
        index = index.gather(1, order)

        weights = (sims.to(torch.float64) / temperature).exp()
        votes = bank_labels[index]  # (B, k)
        scores = torch.zeros(len(labels), num_classes, dtype=torch.float64, device=device)
        # One neighbour rank at a time: a single scatter_add_ over all k may add in any
        # order on CUDA, and two classes with the same votes must get the same score.
        for j in range(k):
            scores.scatter_add_(1, votes[:, j : j + 1], weights[:, j : j + 1])

        own = scores.gather(1, labels[:, None])  # (B, 1)
        ahead = (scores > own) | ((scores == own) & (classes < labels[:, None]))
        rank = ahead.sum(1)
        hits1 += int((rank == 0).sum())
        hits5 += int(((rank < top) & (own[:, 0] > 0)).sum())
    return 100.0 * hits1 / n_query, 100.0 * hits5 / n_query


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    **fit_options,
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
        **fit_options: ``epochs``, ``batch_size``, ``lr`` and ``seed`` of
            :func:`fit_linear_probe` (the seed draws the initial weights and the
            batch order).

    Returns:
        ``(acc@1, acc@5)`` on the test features, in percent.
    """
    classifier, standardise = fit_linear_probe(
        train_features, train_labels, num_classes, **fit_options
    )
    with torch.no_grad():
        return top_k_accuracy(classifier(standardise(test_features)), test_labels)


def fit_linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> tuple[nn.Linear, Callable[[torch.Tensor], torch.Tensor]]:
    """The classifier of :func:`linear_probe_accuracy`, trained, and its standardisation.

    Features are standardised with the training set's mean and std (floored at 1e-6); the
    classifier's weights start from N(0, 0.01^2) drawn with ``seed`` and its bias at 0;
    Adam (weight decay 1e-6) runs ``epochs`` passes over batches in a ``seed``-drawn order,
    with the learning rate annealed by a cosine over all steps.

    Returns:
        ``(classifier, standardise)``: an ``nn.Linear(F, num_classes)`` and the function
        that maps raw features (M, F) to the classifier's standardised inputs.
    """
    generator = torch.Generator().manual_seed(seed)
    mean, std = train_features.mean(0), train_features.std(0).clamp_min(1e-6)

    def standardise(features: torch.Tensor) -> torch.Tensor:
        return (features - mean) / std

    x_train = standardise(train_features)
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
    return classifier, standardise


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """``(acc@1, acc@5)`` in percent of logits (M, C) against labels (M,); top-5 capped at C."""
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (M, k)
    hits = top.eq(labels[:, None])
    return 100.0 * hits[:, 0].float().mean().item(), 100.0 * hits.any(1).float().mean().item()
