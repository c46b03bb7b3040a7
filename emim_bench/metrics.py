"""Representation metrics on embedding matrices (pure torch)."""

from __future__ import annotations

import torch

__all__ = ["effective_rank"]


def effective_rank(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Effective rank (RankMe) of an embedding matrix.

    Garrido, Balestriero, Najman, LeCun, "RankMe: Assessing the downstream
    performance of pretrained self-supervised representations by their rank",
    ICML 2023:

        p_k = s_k / ||s||_1 + eps,    RankMe(z) = exp(-sum_k p_k log p_k)

    with s the singular values of ``z`` (not centred, as in the paper). It lies
    between about 1 (collapsed) and min(N, D); k orthogonal directions of equal
    norm give k. Invariant to scaling ``z`` by a non-zero constant. An all-zero
    ``z`` gives about 1.

    Args:
        z: embeddings, (N, D).
        eps: the paper's small constant added to each p_k.

    Returns:
        0-dim float64 tensor on ``z``'s device, detached (computed in float64
        without gradient).
    """
    if z.ndim != 2:
        raise ValueError(f"z must be 2-D (batch, dim); got shape {tuple(z.shape)}")
    with torch.no_grad():
        s = torch.linalg.svdvals(z.detach().double())  # (min(N, D),)
        p = s / s.sum().clamp_min(torch.finfo(s.dtype).tiny) + eps
        return torch.exp(-(p * p.log()).sum())
