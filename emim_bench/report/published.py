"""Published numbers: solo-learn's online linear acc@1 for its recipes, and ours beside them."""

from __future__ import annotations

import math

import pandas as pd

from emim_bench.report.collect import present

# Published online linear acc@1 (percent) of solo-learn's recipes, from the solo-learn
# README at tag 1.0.2, the release we install: every method it published, by solo-learn's
# method names; ResNet-18, CIFAR-10/100 for 1000 epochs, ImageNet-100 for 400 epochs.
# Keyed by (dataset, backbone, epochs).
# EMIM has no entry: the EMIM paper's numbers are not available here, so its column stays empty.
PUBLISHED_ONLINE_ACC1: dict[tuple[str, str, int], dict[str, float]] = {
    ("cifar10", "resnet18", 1000): {
        "barlow_twins": 92.10,
        "byol": 92.58,
        "deepclusterv2": 88.85,
        "dino": 89.52,
        "mocov2plus": 92.94,
        "nnclr": 91.88,
        "ressl": 90.63,
        "simclr": 90.74,
        "simsiam": 90.51,
        "swav": 89.17,
        "vicreg": 92.07,
        "wmse": 88.67,
    },
    ("cifar100", "resnet18", 1000): {
        "barlow_twins": 70.90,
        "byol": 70.46,
        "deepclusterv2": 63.61,
        "dino": 66.76,
        "mocov2plus": 69.89,
        "nnclr": 69.62,
        "ressl": 65.92,
        "simclr": 65.78,
        "simsiam": 66.04,
        "swav": 64.88,
        "vicreg": 68.54,
        "wmse": 61.33,
    },
    ("imagenet100", "resnet18", 400): {
        "barlow_twins": 80.38,
        "byol": 80.16,
        "deepclusterv2": 75.36,
        "dino": 74.84,
        "mocov2plus": 78.20,
        "nnclr": 79.80,
        "ressl": 76.92,
        "simclr": 77.04,  # 77.64 in later READMEs
        "simsiam": 74.54,
        "swav": 74.04,
        "vicreg": 79.22,
        "wmse": 67.60,
    },
}
PUBLISHED_SOURCE = "solo-learn README (online linear acc@1)"


def published_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """Our online acc@1 beside solo-learn's published one, for settings that match one.

    A setting matches when ``(dataset, backbone, epochs)`` is a key of
    :data:`PUBLISHED_ONLINE_ACC1` (CIFAR-10/100, ResNet-18, 1000 epochs;
    ImageNet-100, ResNet-18, 400 epochs).

    Args:
        summary: a :func:`method_summary` frame.

    Returns:
        One row per matching (setting, method), the random floor left out, with
        ``ours_mean``, ``ours_sd``, ``n`` and ``published`` (percent; NaN for EMIM) and
        ``difference`` (ours minus published, percentage points). Empty when no
        setting matches.
    """
    rows = []
    for r in summary.itertuples():
        key = (r.dataset, r.backbone, int(r.epochs) if present(r.epochs) else None)
        if key not in PUBLISHED_ONLINE_ACC1 or r.method == "random":
            continue
        published = PUBLISHED_ONLINE_ACC1[key].get(r.method, math.nan)
        ours = getattr(r, "online_acc1_mean", math.nan)
        rows.append(
            {
                "setting": r.setting,
                "method": r.method,
                "ours_mean": ours,
                "ours_sd": getattr(r, "online_acc1_sd", math.nan),
                "n": getattr(r, "online_acc1_n", 0),
                "published": published,
                "difference": ours - published,
            }
        )
    return pd.DataFrame(
        rows, columns=["setting", "method", "ours_mean", "ours_sd", "n", "published", "difference"]
    )
