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
    "random": "random init",
}


def method_label(method) -> str:
    return METHOD_NAMES.get(method, str(method))


def method_order(methods: Iterable[str]) -> list[str]:
    """``emim`` first, then the baselines alphabetically, then ``random`` (the floor)."""
    unique = set(methods)
    middle = sorted(m for m in unique if m not in ("emim", "random"))
    return [m for m in ("emim",) if m in unique] + middle + [m for m in ("random",) if m in unique]
