"""The evaluation path pinned to values: top-k, the probe's standardisation, feature
extraction, and the seed and learning-rate scaling that reach a run."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from emim_bench import config
from emim_bench.evaluate import extract_features, linear_probe_accuracy, top_k_accuracy
from emim_bench.run import trainer as run_trainer


@pytest.mark.parametrize("rank, acc1, acc5", [(1, 100.0, 100.0), (5, 0.0, 100.0), (6, 0.0, 0.0)])
def test_top_k_counts_a_label_ranked_exactly_kth(rank, acc1, acc5):
    logits = torch.arange(10, 0, -1, dtype=torch.float32)[None, :]  # class c ranks c + 1
    assert top_k_accuracy(logits, torch.tensor([rank - 1])) == (acc1, acc5)


def test_the_probe_standardises_test_features_with_the_training_statistics():
    """Train on -1 (class 0) and +1 (class 1); every test feature is +1. With the training
    mean and std the test set stays at +1 and is all class 1; standardised with its own
    statistics it would collapse to 0, where the classifier cannot tell."""
    train = torch.tensor([[-1.0], [1.0]]).repeat(50, 1)
    labels = torch.tensor([0, 1]).repeat(50)
    test = torch.ones(20, 1)
    acc1, _ = linear_probe_accuracy(
        train, labels, test, torch.ones(20, dtype=torch.long), num_classes=2, epochs=30
    )
    assert acc1 == 100.0


def test_features_do_not_depend_on_the_batch_and_leave_batchnorm_alone():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten()
    ).train()
    backbone[1].running_mean.fill_(0.25)
    images = torch.randn(7, 3, 6, 6)
    dataset = TensorDataset(images, torch.arange(7))
    one, labels = extract_features(backbone, dataset, batch_size=1)
    seven, _ = extract_features(backbone, dataset, batch_size=7)
    assert torch.allclose(one, seven, atol=1e-6) and labels.tolist() == list(range(7))
    assert backbone.training and backbone[1].running_mean.eq(0.25).all()
    assert one.dtype == torch.float32 and one.shape == (7, 4 * 4 * 4)


@pytest.mark.parametrize("batch, world, expected", [(256, 1, 0.4), (64, 1, 0.1), (64, 4, 0.4)])
def test_the_learning_rate_scales_with_the_total_batch(batch, world, expected):
    cfg = config.load(["method=simclr", "budget=cifar_paper", f"batch_size={batch}"])
    assert cfg.method.lr == 0.4  # solo-learn's CIFAR SimCLR, for a total batch of 256
    kwargs = run_trainer.method_kwargs(cfg, num_classes=10, world_size=world)
    assert kwargs["lr"] == pytest.approx(expected)


def test_runs_differing_only_in_seed_start_from_different_weights():
    import pytorch_lightning as pl

    from emim_bench.methods import build_method

    cfg = config.load(["method=simclr", "method.kwargs.proj_hidden_dim=8"])
    weights = []
    for seed in (0, 1, 0):
        pl.seed_everything(seed)
        method = build_method("simclr", **run_trainer.method_kwargs(cfg, num_classes=10))
        weights.append(method.encoder.conv1.weight.detach().clone())
    assert not torch.equal(weights[0], weights[1]) and torch.equal(weights[0], weights[2])
