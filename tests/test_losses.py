"""Specification of the EMIM estimator (emim_bench.losses).

Theorem 1 of Chang et al., arXiv:2409.04747:
I(Z; Z') = 1/2 [log det C11 + log det C22 - log det C], in nats.
"""

import math
from functools import partial

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import assert_two_ranks_match_one_process
from hypothesis import given
from hypothesis import strategies as st

from emim_bench.losses import emim_loss_func, gaussian_mutual_information, mi_ceiling_nats

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_spd(dim: int, gen: torch.Generator, low: float = 0.2, high: float = 1.0):
    """Random SPD matrix with eigenvalues uniform in [low, high] (condition <= high/low)."""
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=F64))
    lam = low + (high - low) * torch.rand(dim, generator=gen, dtype=F64)
    return (q * lam) @ q.T


def _random_joint_covariance(d: int, gen: torch.Generator):
    """Joint covariance (2D, 2D) of Z ~ N(0, S1) and Z' = Z M + E, E ~ N(0, S2)."""
    s1, s2 = _random_spd(d, gen), _random_spd(d, gen)
    m = torch.randn(d, d, generator=gen, dtype=F64) / math.sqrt(d)
    return torch.cat(
        [torch.cat([s1, s1 @ m], dim=1), torch.cat([m.T @ s1, m.T @ s1 @ m + s2], dim=1)], dim=0
    )


def _correlated_views(n: int, d: int, noise: float, seed: int, d2: int | None = None):
    """z2 is a random linear map of z1 plus isotropic noise; float64."""
    gen = _gen(seed)
    z1 = torch.randn(n, d, generator=gen, dtype=F64)
    mix = torch.randn(d, d2 or d, generator=gen, dtype=F64)
    z2 = z1 @ mix + noise * torch.randn(n, d2 or d, generator=gen, dtype=F64)
    return z1, z2


# ---- independent references, written from the definitions --------------------------------------


def _ridged_covariances(z1, z2, eps, standardize):
    z = torch.cat([z1, z2], dim=1)
    z = z - z.mean(dim=0)
    if standardize:
        z = z / z.std(dim=0)
    c = z.T @ z / (z.shape[0] - 1) + eps * torch.eye(z.shape[1], dtype=z.dtype)
    d1 = z1.shape[1]
    return c[:d1, :d1], c[:d1, d1:], c[d1:, :d1], c[d1:, d1:], c


def _mi_schur(z1, z2, eps, standardize):
    """log det C = log det C11 + log det(C22 - C21 C11^-1 C12)."""
    c11, c12, c21, c22, _ = _ridged_covariances(z1, z2, eps, standardize)
    schur = c22 - c21 @ torch.linalg.solve(c11, c12)
    return 0.5 * (torch.logdet(c22) - torch.logdet(schur))


def _inv_sqrt(m):
    lam, v = torch.linalg.eigh(m)
    return (v * lam.rsqrt()) @ v.T


def _mi_cca(z1, z2, eps, standardize):
    """-1/2 sum log(1 - rho_i^2), rho = singular values of C11^-1/2 C12 C22^-1/2."""
    c11, c12, _, c22, _ = _ridged_covariances(z1, z2, eps, standardize)
    rho = torch.linalg.svdvals(_inv_sqrt(c11) @ c12 @ _inv_sqrt(c22))
    return -0.5 * torch.log1p(-(rho**2)).sum()


# ---- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [4, 16])
@pytest.mark.parametrize("standardize", [False, True])
def test_mi_matches_closed_form_for_known_gaussian(d, standardize):
    gen = _gen(d)
    sigma = _random_joint_covariance(d, gen)  # (2D, 2D)
    truth = 0.5 * (torch.logdet(sigma[:d, :d]) + torch.logdet(sigma[d:, d:]) - torch.logdet(sigma))
    x = torch.randn(200_000, 2 * d, generator=gen, dtype=F64) @ torch.linalg.cholesky(sigma).T
    est = gaussian_mutual_information(x[:, :d], x[:, d:], eps=0.0, standardize=standardize)
    assert truth > 0.5  # a non-trivial dependence, so a relative tolerance means something
    assert abs(est - truth) / truth < 0.01


def test_mi_invariant_to_invertible_maps():
    gen = _gen(1)
    z1, z2 = _correlated_views(500, 6, noise=1.0, seed=2)
    a = torch.randn(6, 6, generator=gen, dtype=F64) + 3 * torch.eye(6, dtype=F64)
    b = torch.randn(6, 6, generator=gen, dtype=F64) + 3 * torch.eye(6, dtype=F64)
    before = gaussian_mutual_information(z1, z2, eps=0.0, standardize=False)
    after = gaussian_mutual_information(z1 @ a, z2 @ b, eps=0.0, standardize=False)
    assert abs(after - before) < 1e-8


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("n", [20, 100], ids=["N<2D", "N>2D"])
def test_primal_dual_schur_and_cca_forms_agree(n, standardize):
    z1, z2 = _correlated_views(n, 16, noise=0.7, seed=n)
    eps = 1e-2
    primal = gaussian_mutual_information(z1, z2, eps=eps, standardize=standardize, form="primal")
    dual = gaussian_mutual_information(z1, z2, eps=eps, standardize=standardize, form="dual")
    schur = _mi_schur(z1, z2, eps, standardize)
    cca = _mi_cca(z1, z2, eps, standardize)
    for other in (dual, schur, cca):
        assert abs(other - primal) / abs(primal) < 1e-10, (primal, other)


def test_forms_agree_for_different_view_dimensions():
    z1, z2 = _correlated_views(30, 10, noise=0.5, seed=3, d2=24)
    primal = gaussian_mutual_information(z1, z2, form="primal")
    dual = gaussian_mutual_information(z1, z2, form="dual")
    assert abs(dual - primal) / primal < 1e-10
    assert abs(_mi_cca(z1, z2, 1e-2, True) - primal) / primal < 1e-10


@pytest.mark.parametrize("n", [20, 100], ids=["N<2D", "N>2D"])
def test_mi_is_symmetric_in_the_views(n):
    z1, z2 = _correlated_views(n, 16, noise=0.5, seed=4)
    assert abs(gaussian_mutual_information(z1, z2) - gaussian_mutual_information(z2, z1)) < 1e-10


def test_independent_views_give_mi_near_zero():
    gen = _gen(5)
    z1 = torch.randn(20_000, 4, generator=gen, dtype=F64)
    z2 = torch.randn(20_000, 4, generator=gen, dtype=F64)
    mi = gaussian_mutual_information(z1, z2)
    assert 0 <= mi < 0.05


def test_mi_increases_as_view_noise_decreases():
    gen = _gen(6)
    z1 = torch.randn(20_000, 4, generator=gen, dtype=F64)
    noise = torch.randn(20_000, 4, generator=gen, dtype=F64)
    mis = [gaussian_mutual_information(z1, z1 + s * noise).item() for s in (1.0, 0.3, 0.1)]
    assert mis[0] < mis[1] < mis[2]
    # Per dimension, correlation^2 = 1 / (1 + s^2); the ridge eps = 1e-2 on the standardised
    # covariances shrinks it to rho / (1 + eps): 4 * -1/2 log(1 - rho^2 / 1.01^2) = 7.05 nats
    # at s = 0.1 (9.2 without ridge).
    rho2 = 1 / (1 + 0.1**2)
    assert mis[2] == pytest.approx(-2 * math.log(1 - rho2 / 1.01**2), rel=0.02)


def test_loss_is_negative_mi():
    z1, z2 = _correlated_views(50, 8, noise=0.5, seed=7)
    assert emim_loss_func(z1, z2) == -gaussian_mutual_information(z1, z2)


# ---- forms, errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"), [(20, "dual"), (32, "primal"), (100, "primal")], ids=["N<2D", "N=2D", "N>2D"]
)
def test_auto_form_equals_the_explicit_form_it_picks(n, expected):
    z1, z2 = _correlated_views(n, 16, noise=0.5, seed=8)
    auto = gaussian_mutual_information(z1, z2, form="auto")
    assert auto == gaussian_mutual_information(z1, z2, form=expected)


def test_eps_zero_with_too_few_samples_raises():
    z1, z2 = _correlated_views(32, 16, noise=0.5, seed=9)
    for form in ("auto", "primal", "dual"):
        with pytest.raises(ValueError, match="singular.*eps > 0"):
            gaussian_mutual_information(z1, z2, eps=0.0, form=form)


def test_dual_form_with_eps_zero_raises():
    z1, z2 = _correlated_views(100, 4, noise=0.5, seed=10)
    with pytest.raises(ValueError, match="dual.*eps > 0"):
        gaussian_mutual_information(z1, z2, eps=0.0, form="dual")


@pytest.mark.parametrize(
    ("z1", "z2", "kwargs", "match"),
    [
        (torch.randn(10), torch.randn(10), {}, "2-D"),
        (torch.randn(2, 10, 4), torch.randn(2, 10, 4), {}, "2-D"),
        (torch.randn(10, 4), torch.randn(11, 4), {}, "same batch size"),
        (torch.randn(1, 4), torch.randn(1, 4), {}, "at least 2 samples"),
        (torch.randn(10, 4), torch.randn(10, 4), {"eps": -1e-3}, "eps must be >= 0"),
        (torch.randn(10, 4), torch.randn(10, 4), {"form": "svd"}, "form must be one of"),
        (torch.ones(10, 4, dtype=torch.long), torch.ones(10, 4, dtype=torch.long), {}, "floating"),
    ],
    ids=["1-D", "3-D", "batch-mismatch", "N=1", "negative-eps", "unknown-form", "integer"],
)
def test_bad_inputs_raise_value_error(z1, z2, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gaussian_mutual_information(z1, z2, **kwargs)


# ---- gradients, degenerate inputs, dtypes -----------------------------------------------------


@pytest.mark.parametrize("form", ["primal", "dual"])
def test_gradients_match_finite_differences(form):
    z1, z2 = _correlated_views(6, 4, noise=0.5, seed=11)
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: gaussian_mutual_information(a, b, form=form), (z1, z2)
    )


def _mi_by_autograd(z1, z2, eps, standardize):
    """Theorem 1 written out with torch.logdet, differentiated by autograd."""
    c11, _, _, c22, c = _ridged_covariances(z1, z2, eps, standardize)
    return 0.5 * (torch.logdet(c11) + torch.logdet(c22) - torch.logdet(c))


@pytest.mark.parametrize("form", ["primal", "dual"])
@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("n", [20, 100], ids=["N<2D", "N>2D"])
def test_closed_form_gradients_equal_autograd_of_the_definition(n, standardize, form):
    # Each form's backward is written by hand (2 A (eps I + A^T A)^-1 and its Gram twin);
    # it must give autograd's gradient of the definition, not just something close.
    z1, z2 = _correlated_views(n, 16, noise=0.7, seed=30 + n, d2=12)
    grads = []
    for mi_fn in (
        lambda a, b: gaussian_mutual_information(a, b, standardize=standardize, form=form),
        lambda a, b: _mi_by_autograd(a, b, 1e-2, standardize),
    ):
        a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        mi_fn(a, b).backward()
        grads.append(torch.cat([a.grad, b.grad], dim=1))
    scale = grads[1].abs().max()
    assert (grads[0] - grads[1]).abs().max() / scale < 1e-10


def _views_with_a_zero_column():
    z1, z2 = _correlated_views(50, 4, noise=0.5, seed=31)
    z1[:, 0] = 0.0  # centred and unscaled it stays 0: C11 is singular without a ridge
    return z1, z2


def test_failed_factorisation_raises_when_checked():
    with pytest.raises(torch.linalg.LinAlgError, match="not positive definite"):
        gaussian_mutual_information(*_views_with_a_zero_column(), eps=0.0, standardize=False)


def test_failed_factorisation_gives_nan_without_a_host_check():
    mi = gaussian_mutual_information(
        *_views_with_a_zero_column(), eps=0.0, standardize=False, check=False
    )
    assert torch.isnan(mi)
    # The same views with a ridge are fine either way, and checking changes nothing.
    z1, z2 = _views_with_a_zero_column()
    checked = gaussian_mutual_information(z1, z2, standardize=False)
    assert gaussian_mutual_information(z1, z2, standardize=False, check=False) == checked


def _loss_and_grads(z1, z2, **kwargs):
    z1 = z1.clone().requires_grad_(True)
    z2 = z2.clone().requires_grad_(True)
    loss = emim_loss_func(z1, z2, **kwargs)
    loss.backward()
    return loss, z1.grad, z2.grad


def _identical_views():
    z = torch.randn(64, 8, generator=_gen(12))
    return z, z.clone()


def _few_samples():
    return _correlated_views(16, 16, noise=0.5, seed=13)


def _constant_dimension():
    z1, z2 = _correlated_views(64, 8, noise=0.5, seed=14)
    z1[:, 3] = 2.5
    z2[:, 0] = 0.0
    return z1, z2


@pytest.mark.parametrize("form", ["auto", "primal", "dual"])
@pytest.mark.parametrize(
    "make_views",
    [_identical_views, _few_samples, _constant_dimension],
    ids=["z1==z2", "N<=2D", "constant-dim"],
)
def test_loss_and_gradients_finite_on_degenerate_inputs(make_views, form):
    loss, g1, g2 = _loss_and_grads(*make_views(), form=form)
    assert torch.isfinite(loss)
    assert torch.isfinite(g1).all() and torch.isfinite(g2).all()


def test_constant_dimension_adds_no_information():
    z1, z2 = _correlated_views(64, 8, noise=0.5, seed=15)
    with_const = torch.cat([z1, torch.full((64, 1), 3.0, dtype=F64)], dim=1)
    assert (
        abs(gaussian_mutual_information(with_const, z2) - gaussian_mutual_information(z1, z2))
        < 1e-9
    )
    _, g1, _ = _loss_and_grads(with_const, z2)
    assert g1[:, -1].abs().max() < 1e-6


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_autocast_low_precision_inputs_give_finite_loss_in_input_dtype(low):
    gen = _gen(16)
    layer = torch.nn.Linear(12, 8)
    x1 = torch.randn(32, 12, generator=gen)
    x2 = x1 + 0.3 * torch.randn(32, 12, generator=gen)
    with torch.autocast("cpu", dtype=low):
        z1, z2 = layer(x1), layer(x2)
        assert z1.dtype == low
        loss = emim_loss_func(z1, z2)
    assert loss.dtype == low
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    # The value is the float64 estimate of the low-precision embeddings, rounded once.
    reference = emim_loss_func(z1.detach().double(), z2.detach().double())
    assert loss.item() == pytest.approx(reference.item(), rel=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_output_dtype_equals_input_dtype(dtype):
    z1, z2 = _correlated_views(40, 8, noise=0.5, seed=17)
    assert gaussian_mutual_information(z1.to(dtype), z2.to(dtype)).dtype == dtype


# ---- DDP: global-batch statistics -------------------------------------------------------------


@pytest.mark.skipif(
    not dist.is_available() or "fork" not in mp.get_all_start_methods(),
    reason="needs torch.distributed (gloo) and the fork start method",
)
def test_ddp_two_ranks_match_one_process_with_the_whole_batch(tmp_path):
    # global N = 16 > 2D = 12: both forms valid with eps > 0
    losses = {form: partial(emim_loss_func, form=form) for form in ("primal", "dual")}
    assert_two_ranks_match_one_process(losses, tmp_path)


# ---- the ceiling of the standardised estimator ---------------------------------------------------


def _centred_basis(n: int) -> torch.Tensor:
    """Orthonormal basis (n, n - 1) of the zero-mean vectors of R^n."""
    q, _ = torch.linalg.qr(torch.eye(n, dtype=F64) - 1.0 / n)
    return q[:, : n - 1]


def _saturating_view(n: int, d: int) -> torch.Tensor:
    """An (n, d) batch whose correlation matrix has min(d, n - 1) equal eigenvalues.

    d <= n - 1: orthonormal zero-mean columns. d > n - 1 (n odd): a harmonic tight frame,
    column j = the cosines and sines of 2 pi j k / d for k = 1..(n - 1)/2, which has equal
    column norms and d / (n - 1) times the identity as its frame operator.
    """
    basis = _centred_basis(n)
    if d <= n - 1:
        return basis[:, :d]
    assert n % 2 == 1 and d > n - 1
    angles = 2 * math.pi * torch.outer(torch.arange(1, (n - 1) // 2 + 1), torch.arange(d)) / d
    frame = torch.cat([angles.cos(), angles.sin()]).to(F64)  # (n - 1, d)
    return basis @ frame


@pytest.mark.parametrize("eps", [1e-3, 1e-2, 1e-1])
@pytest.mark.parametrize(
    "n, d1, d2", [(65, 16, 16), (65, 64, 64), (9, 12, 12), (17, 128, 128), (9, 12, 40)]
)
def test_the_ceiling_is_reached_by_views_spread_evenly_over_shared_directions(n, d1, d2, eps):
    z1, z2 = _saturating_view(n, d1), _saturating_view(n, d2)
    if d1 <= n - 1 and d1 == d2:
        z2 = z1.clone()
    estimate = gaussian_mutual_information(z1, z2, eps=eps).item()
    assert estimate == pytest.approx(mi_ceiling_nats(n, d1, d2, eps), rel=1e-9)


def test_the_ceiling_of_the_issue_example():
    """N = 64, D = 128, eps = 1e-2: r = 63 shared directions of eigenvalue 128/63."""
    a = 128 / 63
    assert mi_ceiling_nats(64, 128, 128, 1e-2) == pytest.approx(
        31.5 * math.log((a + 1e-2) ** 2 / (1e-2 * (2 * a + 1e-2)))
    )
    assert mi_ceiling_nats(64, 128, 128, 1e-2) == pytest.approx(145.79, abs=0.01)


@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(3, 40),
    d1=st.integers(1, 48),
    d2=st.integers(1, 48),
    noise=st.floats(0.0, 2.0),
    eps=st.sampled_from([1e-3, 1e-2, 1e-1]),
)
def test_no_batch_exceeds_the_ceiling(seed, n, d1, d2, noise, eps):
    gen = _gen(seed)
    z1 = torch.randn(n, d1, generator=gen, dtype=F64)
    z2 = z1 @ torch.randn(d1, d2, generator=gen, dtype=F64)
    z2 = z2 + noise * torch.randn(n, d2, generator=gen, dtype=F64)
    estimate = gaussian_mutual_information(z1, z2, eps=eps).item()
    assert estimate <= mi_ceiling_nats(n, d1, d2, eps) * (1 + 1e-9)


def test_gradient_ascent_on_the_views_stops_at_the_ceiling():
    """Free (16, 32) views trained to maximise the estimate approach the ceiling from below."""
    n, d, eps = 16, 32, 1e-2
    z = torch.randn(n, d, generator=_gen(0), dtype=F64, requires_grad=True)
    optimizer = torch.optim.Adam([z], lr=0.05)
    for _ in range(400):
        loss = emim_loss_func(z, z, eps=eps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ceiling = mi_ceiling_nats(n, d, d, eps)
    assert 0.99 * ceiling < -emim_loss_func(z, z, eps=eps).item() <= ceiling * (1 + 1e-9)


@pytest.mark.parametrize("args", [(1, 4, 4, 0.1), (8, 0, 4, 0.1), (8, 4, 4, 0.0)])
def test_ceiling_rejects_bad_arguments(args):
    with pytest.raises(ValueError, match="n >= 2|eps > 0"):
        mi_ceiling_nats(*args)
