"""The evaluation path pinned to values: top-k, the probe's standardisation, feature
extraction, and the seed and learning-rate scaling that reach a run."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from emim_bench import config
from emim_bench.evaluate import (
    extract_features,
    fit_linear_probe,
    linear_probe_accuracy,
    top_k_accuracy,
)
from emim_bench.run import trainer as run_trainer


@pytest.mark.parametrize("rank, acc1, acc5", [(1, 100.0, 100.0), (5, 0.0, 100.0), (6, 0.0, 0.0)])
def test_top_k_counts_a_label_ranked_exactly_kth(rank, acc1, acc5):
    logits = torch.arange(10, 0, -1, dtype=torch.float32)[None, :]  # class c ranks c + 1
    assert top_k_accuracy(logits, torch.tensor([rank - 1])) == (acc1, acc5)


def test_top_k_scores_each_query_on_its_own_row():
    """Query 0's label ranks 5th, query 1's 6th, query 2's 1st: 1 and 2 of 3 hits."""
    logits = torch.arange(10, 0, -1, dtype=torch.float32).repeat(3, 1)
    acc1, acc5 = top_k_accuracy(logits, torch.tensor([4, 5, 0]))
    assert acc1 == pytest.approx(100 / 3) and acc5 == pytest.approx(200 / 3)


def _reference_probe(x, y, num_classes, epochs=100, batch_size=256, lr=1e-3, seed=0):
    """The probe's recipe written out: training-set standardisation, N(0, 0.01^2) weights and
    a zero bias, Adam with weight decay 1e-6, the cosine schedule in closed form."""
    gen = torch.Generator().manual_seed(seed)
    z = (x - x.mean(0)) / x.std(0)
    weight = torch.empty(num_classes, x.shape[1]).normal_(0, 0.01, generator=gen)
    bias = torch.zeros(num_classes)
    weight.requires_grad_(), bias.requires_grad_()
    optimizer = torch.optim.Adam([weight, bias], lr=lr, weight_decay=1e-6)
    total, step = epochs * math.ceil(len(x) / batch_size), 0
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=gen).split(batch_size):
            loss = torch.nn.functional.cross_entropy(z[batch] @ weight.T + bias, y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            for group in optimizer.param_groups:
                group["lr"] = lr * (1 + math.cos(math.pi * step / total)) / 2
    return weight.detach(), bias.detach()


@pytest.mark.parametrize("options", [{}, {"epochs": 3, "batch_size": 64, "lr": 0.01, "seed": 5}])
def test_the_probe_follows_its_recipe(options):
    """300 samples: batches of 256 and 44 (a batch of 257 would change every step); two
    features with a std below 1, which standardisation scales up."""
    gen = torch.Generator().manual_seed(0)
    x = 3.0 + torch.tensor([2.0, 0.5, 0.1, 1.0, 3.0]) * torch.randn(300, 5, generator=gen)
    y = torch.randint(3, (300,), generator=gen)
    classifier, standardise = fit_linear_probe(x, y, 3, **options)
    weight, bias = _reference_probe(x, y, 3, **options)
    assert torch.allclose(classifier.weight, weight, atol=1e-5)
    assert torch.allclose(classifier.bias, bias, atol=1e-5)
    assert torch.allclose(standardise(x), (x - x.mean(0)) / x.std(0))


def test_the_probe_is_invariant_to_shifting_a_feature_in_both_splits():
    """Dyadic features, 64 training samples and power-of-two shifts keep every step exact,
    so the standardised inputs, and the accuracies, are bit-identical."""
    gen = torch.Generator().manual_seed(1)
    train = torch.randint(-16, 17, (64, 4), generator=gen) / 8.0
    test = torch.randint(-16, 17, (32, 4), generator=gen) / 8.0
    train_y, test_y = torch.randint(3, (64,), generator=gen), torch.randint(3, (32,), generator=gen)
    shift = torch.tensor([64.0, -32.0, 16.0, 0.0])
    probe = dict(num_classes=3, epochs=5, batch_size=16)
    assert linear_probe_accuracy(train, train_y, test, test_y, **probe) == linear_probe_accuracy(
        train + shift, train_y, test + shift, test_y, **probe
    )


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


def test_the_probe_accuracy_is_that_of_the_classifier_trained_with_the_given_options():
    """Scored on its own training set, where 3 and 100 epochs differ."""
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(200, 20, generator=gen), torch.randint(10, (200,), generator=gen)
    options = {"epochs": 3, "seed": 5, "lr": 0.01, "batch_size": 32}
    classifier, standardise = fit_linear_probe(x, y, 10, **options)
    with torch.no_grad():
        expected = top_k_accuracy(classifier(standardise(x)), y)
    assert linear_probe_accuracy(x, y, x, y, num_classes=10, **options) == expected
    assert linear_probe_accuracy(x, y, x, y, num_classes=10) != expected
