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
