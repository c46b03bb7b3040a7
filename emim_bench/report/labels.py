"""The names a report prints: methods, metrics, and which metrics head the tables."""

from __future__ import annotations

from collections.abc import Iterable

# The three accuracies of the tables, the figures and the EMIM-minus-baseline tests.
HEADLINE_METRICS = ("knn_acc1_k20", "linear_acc1", "online_acc1")
METRIC_LABELS = {
    "knn_acc1_k20": "kNN acc@1 (k=20)",
    "linear_acc1": "linear acc@1 (offline)",
    "online_acc1": "online linear acc@1",
}
METHOD_NAMES = {
    "emim": "EMIM",
    "simclr": "SimCLR",
    "byol": "BYOL",
    "barlow_twins": "Barlow Twins",
    "vicreg": "VICReg",
    "deepclusterv2": "DeepCluster V2",
    "dino": "DINO",
    "mocov2plus": "MoCo V2+",
    "nnbyol": "NNBYOL",
    "nnclr": "NNCLR",
    "nnsiam": "NNSiam",
    "ressl": "ReSSL",
    "simsiam": "SimSiam",
    "swav": "SwAV",
    "wmse": "W-MSE",
    "corinfomax": "CorInfoMax",
    "mec": "MEC",
    "random": "random init",
}


def base_method(group: str) -> str:
    """The registry name of a group: ``"emim D=64 eps=1e-2"`` -> ``"emim"``."""
    return str(group).partition(" ")[0]


def method_label(method) -> str:
    """``"emim D=64 eps=1e-2"`` -> ``"EMIM D=64 eps=1e-2"``; unknown names as they are."""
    base, _, variant = str(method).partition(" ")
    name = METHOD_NAMES.get(base, base)
    return f"{name} {variant}" if variant else name


def _variant_key(group: str) -> tuple:
    """Sort key of a group's ``key=value`` parts, numbers by value (D=32 before D=128)."""
    parts = []
    for part in str(group).split()[1:]:
        key, _, value = part.partition("=")
        try:
            parts.append((key, 0, float(value)))
        except ValueError:
            parts.append((key, 1, value))  # after the numbers: never compared with one
    return tuple(parts)


def method_order(methods: Iterable[str]) -> list[str]:
    """``emim`` (and its variants) first, then the baselines alphabetically, then ``random``
    (the floor); a method's variants by the values of their settings."""

    def key(group: str):
        base = base_method(group)
        rank = 0 if base == "emim" else 2 if base == "random" else 1
        return rank, base, _variant_key(group)

    return sorted(set(methods), key=key)
