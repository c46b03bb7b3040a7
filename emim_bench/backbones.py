"""Any timm model as the backbone of every solo-learn method (``backbone=timm``).

solo-learn 1.0.2 builds its encoder from a fixed table of names inside
``BaseMethod.__init__``. :func:`enable_timm_backbones` lets ``encoder="timm"`` through: the
base method is built with a small stand-in encoder, which is then replaced by
``timm.create_model(model, num_classes=0)`` (``img_size`` passed where the model takes
one, as ViTs do), with the feature width read from the model and the online classifier
rebuilt for it. ``base_model`` becomes the timm factory too, so momentum methods (BYOL)
build their momentum encoder the same way. Projectors are built after this by each
method, on the new feature width, so every method trains on it unchanged.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import emim_bench.compat  # noqa: F401  (adapts solo-learn and Lightning before they load)

from solo.methods.base import BaseMethod
from torch import nn

TIMM = "timm"
_STAND_IN = "vit_tiny"  # solo's smallest encoder, built and dropped: solo knows no "timm"
_SOLO_MODULE = "backbones"  # solo.utils.backbones registers its ViTs and Swins in timm


def timm_encoder(model: str, img_size: int | None = None) -> nn.Module:
    """``timm.create_model(model, num_classes=0)``: the backbone without its head, whose
    forward gives (N, num_features) features; ``img_size`` (pixels) is passed to models
    that take it (ViTs build their position embedding for it) and dropped for the others.

    Raises:
        ValueError: ``model`` is not a timm model (:func:`check_model`).
    """
    import timm

    check_model(model)
    if img_size is not None:
        try:
            return timm.create_model(model, pretrained=False, num_classes=0, img_size=img_size)
        except TypeError as error:  # a CNN: no fixed input size
            if "img_size" not in str(error):
                raise
    return timm.create_model(model, pretrained=False, num_classes=0)


def check_model(model: str) -> None:
    """Reject a name that is not a timm model, suggesting close ones.

    Raises:
        ValueError: one line with up to 5 close names, from timm's own pattern search
            (``timm.list_models("*<name>*")``) or, when that finds none, the closest
            spellings; or for solo-learn's own ViTs and Swins, which it registers in timm
            under its backbone names (``vit_tiny``), pointing to ``backbone=<name>``.
    """
    import timm
    from timm.models import is_model_in_modules

    if timm.is_model(model) and is_model_in_modules(model, [_SOLO_MODULE]):
        raise ValueError(
            f"{model!r} is solo-learn's own backbone (registered in timm by solo-learn); "
            f"use backbone={model}, or a timm name such as vit_tiny_patch16_224"
        )
    if timm.is_model(model):
        return
    close = timm.list_models(f"*{model}*")[:5] or difflib.get_close_matches(
        model, timm.list_models(), n=5
    )
    hint = f"close names: {', '.join(close)}" if close else "see timm.list_models()"
    raise ValueError(f"unknown timm model {model!r} for backbone.name; {hint}")


def enable_timm_backbones() -> None:
    """Let solo-learn's methods take ``encoder="timm"`` with ``backbone_args`` holding
    ``model`` (a timm name) and optionally ``img_size`` (pixels). Idempotent."""
    if getattr(BaseMethod.__init__, "_takes_timm", False):
        return
    original = BaseMethod.__init__

    @functools.wraps(original)
    def __init__(self, encoder: str, num_classes: int, backbone_args: dict, **kwargs: Any):
        if encoder != TIMM:
            original(
                self,
                encoder=encoder,
                num_classes=num_classes,
                backbone_args=backbone_args,
                **kwargs,
            )
            return
        original(self, encoder=_STAND_IN, num_classes=num_classes, backbone_args={}, **kwargs)
        self.encoder_name = TIMM
        self.backbone_args = dict(backbone_args)
        self.base_model = timm_encoder
        timm_args = {k: v for k, v in self.backbone_args.items() if k != "cifar"}
        self.encoder = timm_encoder(**timm_args)
        self.features_dim = self.encoder.num_features
        self.classifier = nn.Linear(self.features_dim, num_classes)

    __init__._takes_timm = True
    BaseMethod.__init__ = __init__
