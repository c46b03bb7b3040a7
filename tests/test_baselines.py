"""solo-learn's SimCLR, BYOL, Barlow Twins and VICReg train on CPU on real CIFAR-10 views."""

from __future__ import annotations

import math

import pytest
import torch

from emim_bench.data import ArrayImageDataset, pretrain_transform
from emim_bench.methods import build_method
from emim_bench.run.trainer import fit, pretrain_loader

SSL_LOSS_LOG = {
    "simclr": "train_nce_loss",
    "byol": "train_neg_cos_sim",
    "barlow_twins": "train_barlow_loss",
    "vicreg": "train_vicreg_loss",
}
PRESET = {
    "simclr": "symmetric",
    "byol": "asymmetric",
    "barlow_twins": "symmetric",
    "vicreg": "vicreg",
}


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


@pytest.mark.parametrize("name", sorted(SSL_LOSS_LOG))
def test_baseline_trains_three_steps_with_finite_loss(
    name, cifar10_train_subset, tiny_kwargs, tmp_path
):
    images, labels = cifar10_train_subset
    dataset = ArrayImageDataset(images, labels, pretrain_transform("cifar10", PRESET[name]))
    torch.manual_seed(0)
    method = build_method(name, **tiny_kwargs(name))
    encoder_before = _snapshot(method.encoder)
    projector_before = _snapshot(method.projector)

    trainer = fit(method, pretrain_loader(dataset, batch_size=16), tmp_path, max_steps=3)

    assert trainer.global_step == 3
    loss = trainer.callback_metrics[SSL_LOSS_LOG[name]].item()
    assert math.isfinite(loss)
    for before, module in ((encoder_before, method.encoder), (projector_before, method.projector)):
        moved = [not torch.equal(before[k], p) for k, p in module.named_parameters()]
        assert sum(moved) >= 0.9 * len(moved), (
            f"{name}: only {sum(moved)}/{len(moved)} tensors moved"
        )


def test_byol_momentum_network_follows_ema_of_online_network(
    cifar10_train_subset, tiny_kwargs, tmp_path
):
    """After one step: target = tau * target_0 + (1 - tau) * online_1, tau = base_tau."""
    images, labels = cifar10_train_subset
    dataset = ArrayImageDataset(images, labels, pretrain_transform("cifar10", "asymmetric"))
    tau = 0.99
    method = build_method("byol", **tiny_kwargs("byol", base_tau_momentum=tau))
    target_before = _snapshot(method.momentum_encoder)
    online_before = _snapshot(method.encoder)
    assert all(torch.equal(target_before[k], online_before[k]) for k in online_before)

    fit(method, pretrain_loader(dataset, batch_size=16), tmp_path, max_steps=1)

    online_after = dict(method.encoder.named_parameters())
    worst = 0.0
    for key, target in method.momentum_encoder.named_parameters():
        expected = tau * target_before[key] + (1 - tau) * online_after[key].detach()
        worst = max(worst, (target - expected).abs().max().item())
    assert worst < 1e-6
    # and the target really moved away from its start (the online net took a step)
    assert any(
        not torch.equal(target_before[k], p) for k, p in method.momentum_encoder.named_parameters()
    )


def test_unknown_method_names_the_valid_choices(tiny_kwargs):
    with pytest.raises(ValueError, match=r"unknown method 'simclrr'.*'barlow_twins'.*'vicreg'"):
        build_method("simclrr", **tiny_kwargs("simclr"))
