"""solo-learn's published recipes as data, and the config values they give.

``method_configs/recipes/<setting>/<method>.yaml`` holds the flags that solo-learn 1.0.2's
pretraining script for that method and setting passes (``cifar``: bash_files/pretrain/cifar/,
``imagenet100``: bash_files/pretrain/imagenet-100/, at tag 1.0.2), with the script named. A
flag a script does not pass takes solo-learn's own argparse default, read here from the
installed package, so the recipe is the script's exactly.

:func:`recipe_overrides` turns a recipe into Hydra overrides; :func:`emim_bench.config.load`
applies them under ``budget=cifar_paper`` and ``budget=imagenet100_paper`` before the
user's own, which win. :data:`NAMED_DIFFERENCES` lists the flags our harness does not take
from a script, with the reason.
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


def _hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    return str(value)


def recipe_overrides(budget: str, method: str, user_keys: set[str]) -> list[str]:
    """Hydra overrides that set every value of the recipe of ``method`` under ``budget``
    (none for other budgets or a method without a recipe), leaving out ``user_keys`` (the
    config keys the user's overrides set) and the keys below them: the user's values win."""
    setting = PAPER_SETTINGS.get(budget)
    expected = expected_config(setting, method) if setting else None
    if not expected:
        return []
    return [
        f"++{key}={_hydra_value(value)}"
        for key, value in expected.items()
        if not any(key == k or key.startswith(k + ".") for k in user_keys)
    ]
