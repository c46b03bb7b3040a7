"""Our solo-learn methods, registered in ``solo.methods.METHODS`` on import: EMIM and its
log-determinant relatives CorInfoMax and MEC."""

from __future__ import annotations

import emim_bench.compat  # noqa: F401  (adapts solo-learn and Lightning before they load)

from solo.methods import METHODS
from solo.methods.base import BaseMethod

from emim_bench.backbones import enable_timm_backbones
from emim_bench.methods.corinfomax import CorInfoMax
from emim_bench.methods.emim import EMIM
from emim_bench.methods.mec import MEC

__all__ = ["EMIM", "CorInfoMax", "MEC", "build_method", "register"]

OUR_METHODS = {"emim": EMIM, "corinfomax": CorInfoMax, "mec": MEC}


def register() -> None:
    """Add our methods to solo-learn's registry (``METHODS["emim"]``, ``["corinfomax"]``,
    ``["mec"]``) and let every method take a timm backbone
    (:func:`emim_bench.backbones.enable_timm_backbones`); idempotent.

    After this, solo-learn's own argparse pipeline
    (``solo.args.setup.parse_args_pretrain`` with ``--method emim``) builds them.
    """
    METHODS.update(OUR_METHODS)
    enable_timm_backbones()


def build_method(name: str, **kwargs) -> BaseMethod:
    """Instantiate a method of solo-learn's registry (``solo.methods.METHODS``) by name.

    Args:
        name: registry key, e.g. "simclr", "byol", "barlow_twins", "vicreg", "emim".
        **kwargs: the method's constructor arguments (solo-learn's BaseMethod
            arguments plus the method's own, e.g. ``proj_hidden_dim``).

    Raises:
        ValueError: ``name`` is not registered; the message lists the valid names.
    """
    if name not in METHODS or name in ("base", "linear"):
        valid = sorted(k for k in METHODS if k not in ("base", "linear"))
        raise ValueError(f"unknown method {name!r}; choose one of {valid}")
    return METHODS[name](**kwargs)


register()
