"""The rest of solo-learn 1.0.2's zoo on today's stack: what emim_bench.compat adapts for it.

Each method also trains a few steps end to end in ``test_pretrain_run.py``.
"""

from __future__ import annotations

import emim_bench.compat  # noqa: F401  (adapts solo-learn before it is imported here)

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from solo.losses import deepclusterv2 as deepcluster_losses
from solo.losses.dino import DINOLoss
from solo.methods import METHODS

from emim_bench import config, recipes

ZOO = (
    "deepclusterv2",
    "dino",
    "mocov2plus",
    "nnbyol",
    "nnclr",
    "nnsiam",
    "ressl",
    "simsiam",
    "swav",
    "wmse",
)


def test_every_method_of_solo_learns_zoo_is_a_choice_with_its_cifar_recipe():
    solo = set(METHODS) - {"base", "linear"}
    assert solo <= set(config.choices("method"))
    for method in ZOO:
        expected = recipes.expected_config("cifar", method)
        ours = OmegaConf.to_container(
            OmegaConf.load(config.CONFIG_DIR / "method" / f"{method}.yaml")
        )
        assert (ours["lr"], ours["weight_decay"]) == (
            expected["method.lr"],
            expected["method.weight_decay"],
        )
        assert ours["augmentation"] == expected["method.augmentation"]
        own = {k.split(".", 2)[2]: v for k, v in expected.items() if k.startswith("method.kwargs")}
        assert ours["kwargs"] == own


def _dino_kwargs(num_epochs: int) -> dict:
    return dict(
        num_prototypes=8,
        warmup_teacher_temp=0.04,
        teacher_temp=0.07,
        warmup_teacher_temp_epochs=50,
        num_epochs=num_epochs,
    )


def test_dino_shorter_than_its_teacher_warm_up_takes_the_warm_ups_first_temperatures():
    with pytest.raises(ValueError, match="negative dimensions"):
        DINOLoss.__init__.__wrapped__(DINOLoss.__new__(DINOLoss), **_dino_kwargs(4))
    short, full = DINOLoss(**_dino_kwargs(4)), DINOLoss(**_dino_kwargs(100))
    np.testing.assert_array_equal(short.teacher_temp_schedule, full.teacher_temp_schedule[:4])
    np.testing.assert_allclose(short.teacher_temp_schedule[[0, 1]], [0.04, 0.04 + 0.03 / 49])
    assert len(full.teacher_temp_schedule) == 100 and full.teacher_temp_schedule[-1] == 0.07


def _deepcluster_batch(assigned: bool):
    gen = torch.Generator().manual_seed(0)
    outputs = torch.randn(2, 2, 6, 5, generator=gen, requires_grad=True)  # P x V x N x C
    assignments = torch.randint(0, 5, (2, 6), generator=gen)
    if not assigned:
        assignments = -torch.ones_like(assignments)
    return outputs, assignments


def test_deepcluster_loss_is_solo_learns_where_images_have_clusters():
    outputs, assignments = _deepcluster_batch(assigned=True)
    assignments[0, :2] = -1  # some images of one layer without a cluster yet
    original = deepcluster_losses.deepclusterv2_loss_func.__wrapped__
    expected = original(outputs, assignments, 0.1)
    got = deepcluster_losses.deepclusterv2_loss_func(outputs, assignments, 0.1)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    (g_expected,) = torch.autograd.grad(expected, outputs)
    (g_got,) = torch.autograd.grad(got, outputs)
    torch.testing.assert_close(g_got, g_expected, rtol=1e-6, atol=1e-9)


def test_deepcluster_loss_before_any_clustering_is_zero_with_zero_gradients():
    outputs, assignments = _deepcluster_batch(assigned=False)
    original = deepcluster_losses.deepclusterv2_loss_func.__wrapped__
    assert torch.isnan(original(outputs, assignments, 0.1))  # solo-learn's value
    got = deepcluster_losses.deepclusterv2_loss_func(outputs, assignments, 0.1)
    assert got.item() == 0.0
    (grad,) = torch.autograd.grad(got, outputs)
    assert torch.count_nonzero(grad) == 0


def _deepcluster(steps: int, epoch: int) -> tuple[dict, dict]:
    """DeepCluster V2 (ResNet-18, budget=cpu's Adam) before and after ``steps`` optimizer
    steps whose gradients are those of epoch ``epoch`` before any clustering: zero for the
    backbone and projector (the loss has no target), ones for the online classifier."""
    from types import SimpleNamespace

    from emim_bench.methods import build_method
    from emim_bench.run import trainer as run_trainer

    cfg = config.load(["method=deepclusterv2", "budget=cpu", "batch_size=8"])
    kwargs = run_trainer.method_kwargs(cfg, num_classes=10)
    torch.manual_seed(0)
    method = build_method("deepclusterv2", **{**kwargs, "num_prototypes": [16]})
    if epoch:
        method._trainer = SimpleNamespace(current_epoch=epoch)
    before = {k: p.detach().clone() for k, p in method.named_parameters()}
    adam = torch.optim.Adam(method.parameters(), lr=cfg.method.lr, weight_decay=1e-6)
    for _ in range(steps):
        for name, param in method.named_parameters():
            fill = 1.0 if name.startswith("classifier.") else 0.0
            param.grad = torch.full_like(param, fill)
        method.on_after_backward()
        adam.step()
    return before, dict(method.named_parameters())


def test_deepcluster_epoch_zero_steps_only_the_online_classifier():
    before, after = _deepcluster(3, epoch=0)
    for name, param in after.items():
        changed = not torch.equal(param, before[name])
        assert changed == name.startswith("classifier."), name


def test_deepcluster_after_epoch_zero_lets_weight_decay_reach_the_backbone_through_adam():
    # What the patch prevents in epoch 0: Adam normalises the L2 term wd * w, so a zero loss
    # gradient still moves each weight by about the learning rate (4e-3), whatever wd is.
    before, after = _deepcluster(1, epoch=1)
    w, w0 = after["encoder.conv1.weight"].detach(), before["encoder.conv1.weight"]
    step = (w - w0).abs()
    assert torch.all(torch.sign(w - w0) == -torch.sign(w0))
    assert step.median() > 0.5 * 4e-3  # budget=cpu: lr 4e-3
