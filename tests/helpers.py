"""Helpers shared by several test files (importable: pytest puts tests/ on the path)."""

from __future__ import annotations

import torch


def random_split(seed, n_bank=60, n_query=40, width=8, num_classes=7):
    """Gaussian bank and queries with uniform random labels: float32 (n_bank, width),
    int64 (n_bank,), float32 (n_query, width), int64 (n_query,). Continuous, so exact ties
    have probability zero."""
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n_bank, width, generator=gen),
        torch.randint(num_classes, (n_bank,), generator=gen),
        torch.randn(n_query, width, generator=gen),
        torch.randint(num_classes, (n_query,), generator=gen),
    )
