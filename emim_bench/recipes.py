"""solo-learn's published recipes as data, and the config values they give.

``method_configs/recipes/<setting>/<method>.yaml`` holds the flags that solo-learn 1.0.2's
pretraining script for that method and setting passes (``cifar``: bash_files/pretrain/cifar/,
``imagenet100``: bash_files/pretrain/imagenet-100/, at tag 1.0.2), with the script named. A
flag a script does not pass takes solo-learn's own argparse default, read here from the
installed package, so the recipe is the script's exactly.

:func:`write_budget_method_files` (``python -m emim_bench.recipes``) writes each recipe as
``method_configs/budget_method/<budget>_<method>.yaml``, which Hydra composes under
``budget=cifar_paper`` and ``budget=imagenet100_paper`` on every path (``pretrain``,
sweeps, DDP ranks); the user's overrides still win. :data:`NAMED_DIFFERENCES` lists the
flags our harness does not take from a script, with the reason.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

RECIPE_DIR = Path(__file__).resolve().parents[1] / "method_configs" / "recipes"
# Our paper budgets and the solo-learn setting whose recipes they run.
PAPER_SETTINGS = {"cifar_paper": "cifar", "imagenet100_paper": "imagenet100"}

# solo-learn's flag -> our config key, for the flags every method shares.
SHARED_FLAGS = {
    "encoder": "backbone.encoder",
    "zero_init_residual": "backbone.zero_init_residual",
    "max_epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "method.lr",
    "weight_decay": "method.weight_decay",
    "optimizer": "optim.optimizer",
    "lars": "optim.lars",
    "grad_clip_lars": "optim.grad_clip_lars",
    "eta_lars": "optim.eta_lars",
    "exclude_bias_n_norm": "optim.exclude_bias_n_norm",
    "scheduler": "optim.scheduler",
    "classifier_lr": "optim.classifier_lr",
    "min_lr": "optim.min_lr",
    "warmup_start_lr": "optim.warmup_start_lr",
    "warmup_epochs": "warmup_epochs",
}
# The augmentation flags, one value per view in ``method.augmentation`` (see emim_bench.data).
AUGMENTATION_FLAGS = (
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "gaussian_prob",
    "solarization_prob",
    "min_scale",
)
# Flags of a script that our harness does not take from it, and why.
NAMED_DIFFERENCES = {
    "precision": "solo-learn trained in fp16; our GPU trainer uses bf16 where the GPU has it "
    "(trainer.precision=16 is the script's setting)",
    "accelerator": "DDP is the trainer's choice at run time (trainer=ddp)",
    "sync_batchnorm": "set by the trainer (trainer=ddp sets it, as the ImageNet-100 scripts do)",
    "encode_indexes_into_labels": "for solo-learn's DALI loader; ours passes image indexes "
    "to the method directly",
}
METHOD_FLAG = "method"  # the script's method name: our method= choice, not a value


def load_flags(setting: str, method: str) -> dict[str, Any] | None:
    """The flags the script of ``method`` passes in ``setting``, or None without a recipe.

    Per-view values are lists of two (first view, second view).
    """
    path = RECIPE_DIR / setting / f"{method}.yaml"
    if not path.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.load(path).flags)


@functools.cache
def solo_defaults(method: str) -> dict[str, Any]:
    """solo-learn 1.0.2's argparse defaults for ``method``: its own flags, the base method's
    and the augmentation flags (single values, as one-item lists there, unwrapped)."""
    import emim_bench.compat  # noqa: F401  (solo-learn imports under today's stack)

    from solo.args.dataset import augmentations_args
    from solo.methods import METHODS

    parser = METHODS[method].add_model_specific_args(argparse.ArgumentParser())
    augmentations_args(parser)
    defaults = {}
    for action in parser._actions:
        value = action.default
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        defaults[action.dest] = value
    return defaults


@functools.cache
def method_own_flags(method: str) -> frozenset[str]:
    """The flags ``method`` adds to solo-learn's base method (its constructor's own kwargs)."""
    import emim_bench.compat  # noqa: F401

    from solo.methods import METHODS

    base = METHODS["base"].add_model_specific_args(argparse.ArgumentParser())
    own = METHODS[method].add_model_specific_args(argparse.ArgumentParser())
    return frozenset(a.dest for a in own._actions) - {a.dest for a in base._actions}


def expected_config(setting: str, method: str) -> dict[str, Any] | None:
    """Our config key -> value that solo-learn's recipe of ``method`` in ``setting`` gives:
    the script's flags over solo-learn's defaults, through :data:`SHARED_FLAGS`,
    ``method.kwargs.<flag>`` for the method's own flags, and the two views of
    ``method.augmentation``. None when there is no recipe."""
    flags = load_flags(setting, method)
    if flags is None:
        return None
    defaults = solo_defaults(method)
    resolved = {**defaults, **flags}
    expected = {key: resolved[flag] for flag, key in SHARED_FLAGS.items()}
    for flag in sorted(method_own_flags(method)):
        expected[f"method.kwargs.{flag}"] = resolved[flag]
    views = [{}, {}]
    for flag in AUGMENTATION_FLAGS:
        value = resolved[flag]
        per_view = value if isinstance(value, list) else [value, value]
        for view, v in zip(views, per_view):
            view[flag] = v
    expected["method.augmentation"] = views
    return expected


BUDGET_METHOD_DIR = RECIPE_DIR.parent / "budget_method"
# Keys a recipe file does not set: the backbone is the backbone group's choice (resnet18 by
# default, the recipes' encoder), so that backbone=... stays the user's.
_LEFT_TO_GROUPS = ("backbone.encoder",)


def budget_method_path(budget: str, method: str) -> Path:
    """``method_configs/budget_method/<budget>_<method>.yaml``, which Hydra composes for
    ``budget=<budget> method=<method>`` (``config.yaml``'s optional ``budget_method``)."""
    return BUDGET_METHOD_DIR / f"{budget}_{method}.yaml"


def budget_method_text(budget: str, method: str) -> str | None:
    """The YAML of the recipe of ``method`` under a paper ``budget`` (None without one): every
    key of :func:`expected_config` but those left to the config groups, nested."""
    setting = PAPER_SETTINGS[budget]
    expected = expected_config(setting, method)
    if expected is None:
        return None
    tree = OmegaConf.create()
    for key, value in expected.items():
        if key not in _LEFT_TO_GROUPS:
            OmegaConf.update(tree, key, value, force_add=True)
    header = (
        "# @package _global_\n"
        f"# solo-learn 1.0.2's {setting} recipe for {method}, written from\n"
        f"# method_configs/recipes/{setting}/{method}.yaml and solo-learn's defaults by\n"
        "# `python -m emim_bench.recipes`; do not edit (tests/test_recipes.py checks it).\n"
    )
    return header + OmegaConf.to_yaml(tree)


def write_budget_method_files() -> list[Path]:
    """(Re)write the budget_method file of every recipe; returns the paths written."""
    written = []
    for budget, setting in PAPER_SETTINGS.items():
        for recipe in sorted((RECIPE_DIR / setting).glob("*.yaml")):
            path = budget_method_path(budget, recipe.stem)
            path.write_text(budget_method_text(budget, recipe.stem))
            written.append(path)
    return written


if __name__ == "__main__":
    for path in write_budget_method_files():
        print(path.relative_to(RECIPE_DIR.parents[1]))
