"""Specification of the representation metrics (emim_bench.metrics)."""

import pytest
import torch

from emim_bench.metrics import effective_rank

F64 = torch.float64


def _orthonormal(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    return q


@pytest.mark.parametrize("k", [1, 3, 8, 32])
def test_effective_rank_of_k_equal_orthogonal_directions_is_k(k):
    n, d = 64, 32
    u, v = _orthonormal(n, seed=k)[:, :k], _orthonormal(d, seed=100 + k)[:, :k]
    z = 5.0 * u @ v.T  # (N, D): k singular values 5, the rest 0
    assert abs(effective_rank(z).item() - k) < 1e-3


def test_effective_rank_of_collapsed_embeddings_is_one():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(128, 1, generator=gen) @ torch.randn(1, 16, generator=gen)  # rank 1
    assert effective_rank(z).item() == pytest.approx(1.0, abs=1e-3)


def test_effective_rank_invariant_to_scaling():
    z = torch.randn(100, 20, generator=torch.Generator().manual_seed(1), dtype=F64)
    r = effective_rank(z)
    for c in (1e-3, 7.0, 1e4):
        assert abs(effective_rank(c * z) - r) < 1e-9


def test_effective_rank_of_isotropic_gaussian_is_near_full():
    z = torch.randn(5000, 16, generator=torch.Generator().manual_seed(2))
    assert 15.5 < effective_rank(z).item() <= 16.0


def test_effective_rank_is_a_detached_float64_scalar():
    z = torch.randn(50, 8, requires_grad=True)
    r = effective_rank(z)
    assert r.ndim == 0 and r.dtype == F64 and not r.requires_grad
    with torch.no_grad():
        assert effective_rank(z) == r


def test_effective_rank_rejects_non_matrix_input():
    with pytest.raises(ValueError, match="2-D"):
        effective_rank(torch.randn(3, 4, 5))


def test_alignment_of_identical_orthogonal_and_opposite_views():
    from emim_bench.metrics import alignment

    z = torch.randn(32, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert alignment(z, 3.0 * z) == pytest.approx(0.0, abs=1e-12)  # scale-free, views agree
    assert alignment(z, -z) == pytest.approx(4.0)  # ||a - (-a)||^2 = 4 on the unit sphere
    e = torch.eye(8, dtype=F64)
    assert alignment(e, e.roll(1, dims=0)) == pytest.approx(2.0)  # orthogonal: ||a - b||^2 = 2


def test_uniformity_of_a_collapsed_set_antipodes_and_an_orthonormal_basis():
    from emim_bench.metrics import uniformity

    point = torch.ones(16, 4, dtype=F64)
    assert uniformity(point) == pytest.approx(0.0, abs=1e-12)  # collapse: log E exp(0)
    antipodes = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    assert uniformity(antipodes) == pytest.approx(-8.0)  # log exp(-2 * 4)
    assert uniformity(5.0 * torch.eye(6, dtype=F64)) == pytest.approx(-4.0)  # distance^2 = 2
    assert uniformity(torch.eye(6, dtype=F64), t=1.0) == pytest.approx(-2.0)
