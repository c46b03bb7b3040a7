"""Representation metrics on embedding matrices (pure torch)."""

from __future__ import annotations

import torch

__all__ = ["effective_rank", "alignment", "uniformity"]


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


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> float:
    """Alignment of positive pairs (Wang and Isola, ICML 2020, "Understanding contrastive
    representation learning through alignment and uniformity on the hypersphere", eq. 4).

        L_align = E_i || f(x_i) - f(x'_i) ||_2^alpha,  f L2-normalised

    Args:
        z1, z2: (N, D) embeddings of two views of the same N images (normalised here).

    Returns:
        A Python float in [0, 2^alpha]: 0 when every pair agrees, lower is better aligned.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must be (N, D) of one shape; got {z1.shape}, {z2.shape}")
    with torch.no_grad():
        a = torch.nn.functional.normalize(z1.double(), dim=1)
        b = torch.nn.functional.normalize(z2.double(), dim=1)
        return float((a - b).norm(dim=1).pow(alpha).mean())


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """Uniformity on the hypersphere (Wang and Isola, ICML 2020, eq. 5).

        L_uniform = log E_{i != j} exp(-t || f(x_i) - f(x_j) ||_2^2),  f L2-normalised

    Args:
        z: (N, D) embeddings, N >= 2 (normalised here).

    Returns:
        A Python float <= 0 in nats: 0 when every embedding is the same point (collapse),
        lower is more uniform.
    """
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"z must be (N, D) with N >= 2; got shape {tuple(z.shape)}")
    with torch.no_grad():
        f = torch.nn.functional.normalize(z.double(), dim=1)
        sq = torch.cdist(f, f).pow(2)  # (N, N)
        off = ~torch.eye(len(f), dtype=torch.bool, device=f.device)
        return float(
            torch.logsumexp(-t * sq[off], dim=0)
            - torch.log(torch.tensor(off.sum().item(), dtype=torch.float64))
        )
