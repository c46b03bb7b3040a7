"""EMIM as a solo-learn method: registry, argparse pipeline, training, gradient routing."""

from __future__ import annotations

import math
import sys

import pytest
import pytorch_lightning as pl
import torch
from solo.methods import METHODS
from torch.utils.data import DataLoader, TensorDataset

from emim_bench.losses import mi_ceiling_nats
from emim_bench.methods import EMIM, build_method, register
from emim_bench.run.trainer import fit, pretrain_loader


def test_importing_emim_bench_registers_emim_in_solo():
    assert METHODS["emim"] is EMIM
    register()
    assert METHODS["emim"] is EMIM


def test_solo_argparse_pipeline_builds_emim(monkeypatch, tmp_path):
    from solo.args.setup import parse_args_pretrain

    argv = [
        "main_pretrain.py",
        "--method",
        "emim",
        "--dataset",
        "cifar10",
        "--data_dir",
        str(tmp_path),
        "--encoder",
        "resnet18",
        "--optimizer",
        "sgd",
        "--lars",
        "--max_epochs",
        "1",
        "--brightness",
        "0.8",
        "--contrast",
        "0.8",
        "--saturation",
        "0.8",
        "--hue",
        "0.2",
        "--crop_size",
        "32",
        "--proj_hidden_dim",
        "64",
        "--proj_output_dim",
        "16",
        "--eps",
        "0.05",
        "--no-standardize",
        "--gpus",
        "0",  # solo 1.0.2 scales lr by len(gpus) and fails without it
    ]
    monkeypatch.setattr(sys, "argv", argv)
    args = parse_args_pretrain()
    assert (args.method, args.eps, args.standardize, args.proj_output_dim) == (
        "emim",
        0.05,
        False,
        16,
    )

    method = METHODS[args.method](**args.__dict__)  # exactly as solo-learn's main_pretrain does
    assert isinstance(method, EMIM) and method.eps == 0.05 and method.standardize is False
    assert method.projector[-1].out_features == 16
    assert any(group.get("name") == "projector" for group in method.learnable_params)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"eps": -1.0}, "eps must be >= 0"),
        ({"proj_output_dim": 0}, "proj_output_dim must be a positive"),
    ],
)
def test_bad_hyperparameters_name_the_key(bad, message, tiny_kwargs):
    with pytest.raises(ValueError, match=message):
        build_method("emim", **tiny_kwargs("emim", **bad))


def test_emim_trains_through_lightning_on_real_cifar10_views(cifar10_views, tiny_kwargs, tmp_path):
    torch.manual_seed(0)
    method = build_method("emim", **tiny_kwargs("emim"))
    before = {k: p.detach().clone() for k, p in method.named_parameters()}

    trainer = fit(method, pretrain_loader(cifar10_views, batch_size=16), tmp_path, max_steps=3)

    logged = trainer.callback_metrics
    assert trainer.global_step == 3
    assert math.isfinite(logged["train_emim_loss"].item())
    assert logged["train_mi_nats"].item() == pytest.approx(-logged["train_emim_loss"].item())
    assert 1.0 <= logged["train_effective_rank"].item() <= 32.0
    # batch 16, D = 32, eps = 1e-2 (the config's default)
    ceiling = mi_ceiling_nats(16, 32, 32, 1e-2)
    assert logged["train_mi_ceiling_nats"].item() == pytest.approx(ceiling)
    assert logged["train_mi_ceiling_ratio"].item() == pytest.approx(
        logged["train_mi_nats"].item() / logged["train_mi_ceiling_nats"].item()
    )
    assert 0 < logged["train_mi_ceiling_ratio"].item() <= 1
    assert not torch.equal(before["encoder.conv1.weight"], method.encoder.conv1.weight)
    assert not torch.equal(before["projector.0.weight"], method.projector[0].weight)


class _RecordLoss(pl.Callback):
    def __init__(self):
        self.emim_loss, self.mi = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.emim_loss.append(trainer.callback_metrics["train_emim_loss_step"].item())
        self.mi.append(trainer.callback_metrics["train_mi_nats_step"].item())


def test_thirty_steps_on_one_fixed_batch_lower_loss_and_raise_mi(
    cifar10_views, tiny_kwargs, tmp_path
):
    torch.manual_seed(0)
    _, (x1, x2), y = next(iter(pretrain_loader(cifar10_views, batch_size=16)))
    fixed = TensorDataset(torch.arange(16), x1, x2, y)
    loader = DataLoader(fixed, batch_size=16, collate_fn=lambda rows: _as_solo_batch(rows))
    method = build_method(
        "emim",
        **tiny_kwargs("emim", optimizer="adam", lars=False, lr=1e-3, extra_optimizer_args={}),
    )
    record = _RecordLoss()

    fit(method, loader, tmp_path, max_steps=30, callbacks=[record])

    assert len(record.emim_loss) == 30
    assert sum(record.emim_loss[-5:]) / 5 < record.emim_loss[0] - 0.5
    assert sum(record.mi[-5:]) / 5 > record.mi[0] + 0.5


def _as_solo_batch(rows):
    index, x1, x2, y = (torch.stack(column) for column in zip(*rows))
    return index, [x1, x2], y


def test_online_classifier_does_not_reach_the_backbone(cifar10_views, tiny_kwargs):
    """Backbone gradients come from the EMIM loss alone: they do not depend on the classifier."""
    batch = next(iter(pretrain_loader(cifar10_views, batch_size=16)))
    method = build_method("emim", **tiny_kwargs("emim"))
    method.log_dict = lambda *args, **kwargs: None  # no trainer attached in this test

    def backbone_and_head_grads():
        method.zero_grad()
        method.training_step(batch, 0).backward()
        return method.encoder.conv1.weight.grad.clone(), method.classifier.weight.grad.clone()

    backbone_a, head_a = backbone_and_head_grads()
    with torch.no_grad():
        method.classifier.weight.normal_()
    backbone_b, head_b = backbone_and_head_grads()

    assert head_a.abs().sum() > 0 and not torch.allclose(head_a, head_b)
    torch.testing.assert_close(backbone_a, backbone_b, rtol=0, atol=0)


def test_host_checks_run_every_n_steps(cifar10_views, tiny_kwargs, tmp_path, monkeypatch):
    from emim_bench import methods

    checks, real_loss = [], methods.emim.emim_loss_func

    def recording_loss(*args, **kwargs):
        checks.append(kwargs["check"])
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(methods.emim, "emim_loss_func", recording_loss)
    torch.manual_seed(0)
    method = build_method("emim", **tiny_kwargs("emim", check_every_n_steps=2))
    trainer = fit(method, pretrain_loader(cifar10_views, batch_size=16), tmp_path, max_steps=4)
    assert checks == [True, False, True, False]
    # The effective rank is computed on checked steps only (steps 0 and 2).
    assert "train_effective_rank" in trainer.callback_metrics


def test_check_every_n_steps_must_be_positive(tiny_kwargs):
    with pytest.raises(ValueError, match="check_every_n_steps must be a positive"):
        build_method("emim", **tiny_kwargs("emim", check_every_n_steps=0))
