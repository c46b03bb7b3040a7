"""EMIM: explicit mutual-information maximisation from second-order statistics.

Pure torch (no solo-learn, no Lightning): tensors in, scalar out.

Reference: L. Chang, P. Liu, Q. Guo, F. Wen, "Explicit Mutual Information
Maximization for Self-Supervised Learning", arXiv:2409.04747 (2024), Theorem 1:

    I(Z; Z') = 1/2 * [ log det C11 + log det C22 - log det C ]      (nats)

with C11, C22 the covariances of each view's embedding over the batch and C the
covariance of the concatenation [Z, Z'].

And EMIM's nearest relatives, which maximise log-determinants of embedding statistics too:
CorInfoMax (each view's running covariance, plus an MSE term) and MEC (the cross-view
similarity matrix, by a truncated Taylor series).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "RunningMoments",
    "corinfomax_loss_func",
    "emim_loss_func",
    "gaussian_mutual_information",
    "initial_moments",
    "mec_lambda",
    "mec_lambda_warmup",
    "mec_loss_func",
    "mi_ceiling_nats",
    "taylor_logdet",
    "update_moments",
]

_FORMS = ("auto", "primal", "dual")

# Floor on a dimension's batch variance before dividing by its std: a constant
# dimension becomes a zero column (finite loss, finite gradient) instead of 0/0.
_VAR_FLOOR = 1e-12


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along the batch dimension whose backward all-reduces the gradient.

    Every rank computes the same loss from the gathered batch, so the gradient of
    that loss with respect to this rank's rows is the sum over ranks of the
    gradient each rank sees for those rows. Backward therefore sums (all-reduces)
    the incoming gradient and returns this rank's slice; DDP's averaging of the
    parameter gradients then yields exactly the single-process gradient of the
    global-batch loss.

    solo-learn 1.0.2's ``GatherLayer`` returns only the local slice without the
    all-reduce, which after DDP's averaging scales the gradient by
    1/world_size; that is why it is not reused here.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.batch = dist.get_rank(), x.shape[0]
        chunks = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(chunks, x.contiguous())
        return torch.cat(chunks, dim=0)  # (world_size * n, p)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def _all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n, p) from all ranks into (world_size * n, p), with gradient.

    Every rank must hold the same number of rows (as DistributedSampler ensures).
    """
    return _AllGatherWithGrad.apply(x)


def _standardize(z: torch.Tensor, scale: bool) -> torch.Tensor:
    """Centre each column of ``z`` (N, p); if ``scale``, also divide by its unbiased std."""
    z = z - z.mean(dim=0, keepdim=True)
    if scale:
        var = z.pow(2).sum(dim=0, keepdim=True) / (z.shape[0] - 1)  # (1, p)
        z = z / var.clamp_min(_VAR_FLOOR).sqrt()
    return z


_EMIM_PD_HINT = (
    "EMIM: covariance is not positive definite in float64 (Cholesky failed); "
    "use eps > 0 (e.g. 1e-2) and standardize=True."
)


def _cholesky(
    m: torch.Tensor, check: bool, hint: str = _EMIM_PD_HINT
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cholesky factor of SPD ``m`` (..., k, k) and whether any factorisation failed (bool tensor).

    With ``check`` a failure raises at once, which reads the status on the host (on a GPU, a
    synchronisation); without it the caller turns the estimate into NaN instead.
    """
    chol, info = torch.linalg.cholesky_ex(m)
    failed = (info != 0).any()
    if check and bool(failed):
        raise torch.linalg.LinAlgError(hint)
    return chol, failed


def _logdet_from_cholesky(chol: torch.Tensor) -> torch.Tensor:
    """log det of L L^T from its Cholesky factor ``chol`` (..., k, k): 2 * sum(log diag L)."""
    return 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(dim=-1)


def _with_ridge(m: torch.Tensor, eps: float) -> torch.Tensor:
    """``m + eps * I`` for square ``m`` (..., k, k), in place (``m`` is a fresh product)."""
    m.diagonal(dim1=-2, dim2=-1).add_(eps)
    return m


class _PrimalMI(torch.autograd.Function):
    """MI of standardised views ``a`` = [a1, a2] (N, D1+D2) by the Schur complement.

    With ``Cij = ai^T aj (+ eps I on the diagonal blocks)`` and the Schur complement
    ``S = C22 - C21 C11^-1 C12`` (D2, D2), ``log det C = log det C11 + log det S``, so
    ``I = 1/2 (log det C22 - log det S)``: three D-sized factorisations instead of one of
    size D1 + D2 (the joint factor's trailing block would be chol(S) anyway).

    Backward, from ``d log det(eps I + A^T A) / dA = 2 A (eps I + A^T A)^-1`` and the
    block inverse of C: with ``E = C11^-1 C12`` (D1, D2) and ``R = a2 - a1 E`` (N, D2), the
    residual of the ridge regression of view 2 on view 1, ``Q = R S^-1`` gives
    ``dI/da1 = Q E^T`` and ``dI/da2 = a2 C22^-1 - Q``.
    """

    @staticmethod
    def forward(ctx, a, d1: int, eps: float, check: bool):
        a1, a2 = a[:, :d1], a[:, d1:]
        chol11, failed11 = _cholesky(_with_ridge(a1.T @ a1, eps), check)  # (D1, D1)
        c22 = _with_ridge(a2.T @ a2, eps)  # (D2, D2)
        chol22, failed22 = _cholesky(c22, check)
        b = torch.linalg.solve_triangular(chol11, a1.T @ a2, upper=False)  # L11^-1 C12 (D1, D2)
        chol_s, failed_s = _cholesky(c22 - b.T @ b, check)  # Schur complement S (D2, D2)
        mi = 0.5 * (_logdet_from_cholesky(chol22) - _logdet_from_cholesky(chol_s))
        ctx.save_for_backward(a, chol11, b, chol22, chol_s)
        ctx.d1 = d1
        return torch.where(failed11 | failed22 | failed_s, torch.nan, mi)

    @staticmethod
    def backward(ctx, grad):
        a, chol11, b, chol22, chol_s = ctx.saved_tensors
        a1, a2 = a[:, : ctx.d1], a[:, ctx.d1 :]
        e = torch.linalg.solve_triangular(chol11.T, b, upper=True)  # C11^-1 C12 (D1, D2)
        q = (a2 - a1 @ e) @ torch.cholesky_inverse(chol_s)  # R S^-1 (N, D2)
        g1 = q @ e.T  # (N, D1)
        g2 = a2 @ torch.cholesky_inverse(chol22) - q  # (N, D2)
        return grad * torch.cat([g1, g2], dim=1), None, None, None


class _DualMI(torch.autograd.Function):
    """MI of standardised views ``a`` = [a1, a2] (N, D1+D2) from the N x N Gram matrices.

    ``log det(eps I_p + A^T A) = (p - N) log eps + log det(eps I_N + A A^T)`` turns the
    three log-determinants into those of ``M1 = eps I + a1 a1^T``, ``M2 = eps I + a2 a2^T``
    and ``M = eps I + a1 a1^T + a2 a2^T`` (N, N); the (p - N) log eps terms sum to
    ``-N log eps``. Backward: ``dI/da_k = (M_k^-1 - M^-1) a_k``.
    """

    @staticmethod
    def forward(ctx, a, d1: int, eps: float, check: bool):
        a1, a2 = a[:, :d1], a[:, d1:]
        g1, g2 = a1 @ a1.T, a2 @ a2.T  # (N, N) each
        chol, failed = _cholesky(_with_ridge(torch.stack([g1, g2, g1 + g2]), eps), check)
        logdets = _logdet_from_cholesky(chol)  # (3,)
        mi = 0.5 * (logdets[0] + logdets[1] - logdets[2] - a.shape[0] * math.log(eps))
        ctx.save_for_backward(a, chol)
        ctx.d1 = d1
        return torch.where(failed, torch.nan, mi)

    @staticmethod
    def backward(ctx, grad):
        a, chol = ctx.saved_tensors
        d1 = ctx.d1
        inverses = torch.cholesky_inverse(chol)  # (3, N, N): M1^-1, M2^-1, M^-1
        g1 = (inverses[0] - inverses[2]) @ a[:, :d1]  # (N, D1)
        g2 = (inverses[1] - inverses[2]) @ a[:, d1:]  # (N, D2)
        return grad * torch.cat([g1, g2], dim=1), None, None, None


def gaussian_mutual_information(
    z1: torch.Tensor,
    z2: torch.Tensor,
    eps: float = 1e-2,
    standardize: bool = True,
    form: str = "auto",
    gather_distributed: bool = True,
    check: bool = True,
) -> torch.Tensor:
    """Gaussian mutual information between two views' embeddings, in nats.

    Chang et al., arXiv:2409.04747, Theorem 1:
    ``I(Z; Z') = 1/2 * [log det C11 + log det C22 - log det C]``, with the
    unbiased (1/(N-1)) batch covariances ``C11`` (D1, D1) and ``C22`` (D2, D2)
    and the joint covariance ``C`` (D1+D2, D1+D2) of ``[z1, z2]``, each with a
    ridge ``eps * I`` added.

    MI is invariant to invertible linear maps of each view, so the embedding
    scale carries no signal; but with a ridge, growing the scale would inflate
    the estimate. With ``standardize=True`` each dimension is therefore
    standardised (zero mean, unit unbiased std over the batch) before the
    covariances are formed, making them correlation matrices and the ridge
    relative. A constant dimension becomes a zero column (its variance is
    floored at 1e-12), so it adds nothing and yields no NaN. With
    ``standardize=False`` the views are only centred.

    Two algebraically equal computations of the log-determinants:

    - ``"primal"``: the D x D covariances, with ``log det C = log det C11 +
      log det S`` for the Schur complement ``S = C22 - C21 C11^-1 C12``;
      cost O(N D^2 + D^3).
    - ``"dual"``: the Gram identity
      ``log det(eps I_p + A^T A) = (p - N) log eps + log det(eps I_N + A A^T)``
      with ``A`` = standardised views / sqrt(N-1), so the three matrices are
      the N x N Grams ``A1 A1^T``, ``A2 A2^T`` and ``A1 A1^T + A2 A2^T``;
      cost O(N^2 D + N^3). Requires ``eps > 0``.

    ``"auto"`` picks dual when ``N < D1 + D2`` and ``eps > 0`` (it is cheaper
    then), primal otherwise. Both forms have closed-form gradients
    (``d log det(eps I + A^T A) / dA = 2 A (eps I + A^T A)^-1``) rather than
    autograd through the factorisations: the same values, fewer operations.

    Under ``torch.distributed`` with world size > 1 and ``gather_distributed``,
    both views are all-gathered with gradient first, so the statistics are over
    the global batch: W ranks holding B rows each give the loss and gradients
    of one process holding W*B rows (after DDP's gradient averaging). Every
    rank must hold the same number of rows.

    Args:
        z1: first view's embeddings, (N, D1), floating point.
        z2: second view's embeddings, (N, D2), same N and device as ``z1``.
        eps: ridge added to the diagonal of every covariance; >= 0.
        standardize: standardise each dimension (True) or only centre (False).
        form: ``"auto"``, ``"primal"`` or ``"dual"``.
        gather_distributed: all-gather the views across ranks when distributed.
        check: read the Cholesky status on the host and raise at once on a failure.
            ``False`` avoids that host synchronisation (a GPU otherwise waits for
            it every step) and returns NaN instead, which the trainer's
            non-finite-loss guard reports.

    Returns:
        Scalar tensor, the mutual information in nats, in ``z1``'s dtype. All
        statistics are computed in float64 with autocast disabled. NaN when a
        factorisation failed and ``check`` is False.

    Raises:
        ValueError: inputs not 2-D or not floating point, different N, global
            N < 2, eps < 0, unknown form, ``form="dual"`` with ``eps == 0``, or
            ``eps == 0`` with ``N <= D1 + D2`` (the joint covariance is then
            singular; use ``eps > 0``).
        torch.linalg.LinAlgError: with ``check``, a ridged covariance is not
            numerically positive definite (only possible with eps == 0 or a tiny
            eps relative to unstandardised scales).
    """
    if z1.ndim != 2 or z2.ndim != 2:
        raise ValueError(
            "z1 and z2 must be 2-D (batch, dim); "
            f"got shapes {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] != z2.shape[0]:
        raise ValueError(
            f"z1 and z2 must have the same batch size; got {z1.shape[0]} and {z2.shape[0]}"
        )
    if not (z1.is_floating_point() and z2.is_floating_point()):
        raise ValueError(f"z1 and z2 must be floating point; got {z1.dtype} and {z2.dtype}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    if form not in _FORMS:
        raise ValueError(f"form must be one of {_FORMS}; got {form!r}")

    out_dtype = z1.dtype
    d1 = z1.shape[1]
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = torch.cat([z1.double(), z2.double()], dim=1)  # (n, D1+D2)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if gather_distributed and distributed:
            z = _all_gather_with_grad(z)  # (N, D1+D2), N = world_size * n
        n, p = z.shape
        if n < 2:
            raise ValueError(f"need at least 2 samples (global batch) for a covariance; got {n}")
        if eps == 0 and n <= p:
            raise ValueError(
                f"eps == 0 with N={n} <= D1+D2={p}: the joint covariance is singular; "
                "use eps > 0 (e.g. 1e-2)"
            )
        if form == "dual" and eps == 0:
            raise ValueError("form='dual' needs eps > 0 (its identity has a log eps term)")
        if form == "auto":
            form = "dual" if (n < p and eps > 0) else "primal"

        a = _standardize(z, scale=standardize) / math.sqrt(n - 1)  # (N, D1+D2)
        estimate = _PrimalMI if form == "primal" else _DualMI
        mi = estimate.apply(a, d1, eps, check)
    return mi.to(out_dtype)


def mi_ceiling_nats(n: int, d1: int, d2: int, eps: float) -> float:
    """The largest value the standardised estimator can return, in nats.

    :func:`gaussian_mutual_information` with ``standardize=True`` and ridge
    ``eps > 0`` is bounded for a batch of N samples, however the views are
    aligned. Derivation (ours, from Theorem 1 of Chang et al., arXiv:2409.04747):

    - Standardisation makes the covariances correlation matrices, so view k's
      eigenvalues are >= 0 and sum to Dk, and at most r = min(D1, D2, N - 1)
      directions can be shared by the two views (the centred batch spans N - 1
      dimensions).
    - A pair of shared directions with eigenvalues a (view 1) and b (view 2)
      has ridged canonical correlation rho^2 = a b / ((a + eps)(b + eps)) and
      adds -1/2 log(1 - rho^2) = 1/2 log((a + eps)(b + eps) / (eps (a + b + eps)))
      to the estimate; unshared variance adds nothing.
    - That term is increasing in a and b and concave where a, b > eps / sqrt(2),
      so with the totals fixed the sum is largest when all variance is spread
      evenly over r shared directions: a = D1 / r, b = D2 / r.

    Hence ``r/2 * log((D1/r + eps)(D2/r + eps) / (eps (D1/r + D2/r + eps)))``,
    reached exactly by identical views whose correlation matrix has r equal
    eigenvalues (tests/test_losses.py builds such views). For N = 64,
    D1 = D2 = 128, eps = 1e-2 it is 145.8 nats; the estimate cannot grow past it
    whatever the encoder learns, so a loss near ``-ceiling`` means the batch is
    saturated, not that the views carry all their information.

    Args:
        n: global batch size N, >= 2.
        d1, d2: embedding widths of the two views, >= 1.
        eps: the ridge, > 0 (without it the estimate of identical views is infinite).

    Returns:
        The ceiling in nats (float).

    Raises:
        ValueError: n < 2, d1 or d2 < 1, or eps <= 0.
    """
    if n < 2 or d1 < 1 or d2 < 1:
        raise ValueError(f"need n >= 2 and d1, d2 >= 1; got n={n}, d1={d1}, d2={d2}")
    if not eps > 0:
        raise ValueError(f"the ceiling is finite only for eps > 0; got eps={eps}")
    r = min(d1, d2, n - 1)
    a, b = d1 / r, d2 / r
    return 0.5 * r * math.log((a + eps) * (b + eps) / (eps * (a + b + eps)))


def emim_loss_func(
    z1: torch.Tensor,
    z2: torch.Tensor,
    eps: float = 1e-2,
    standardize: bool = True,
    form: str = "auto",
    check: bool = True,
) -> torch.Tensor:
    """EMIM loss: the negative Gaussian mutual information between two views (nats).

    Chang et al., arXiv:2409.04747, Theorem 1; see
    :func:`gaussian_mutual_information` for the estimator, its numerics, shapes,
    dtypes and errors. Statistics are over the global batch under DDP.

    Example:
        >>> z1, z2 = projector(backbone(x1)), projector(backbone(x2))  # (N, D) each
        >>> loss = emim_loss_func(z1, z2, eps=1e-2)
        >>> loss.backward()
    """
    return -gaussian_mutual_information(
        z1, z2, eps=eps, standardize=standardize, form=form, check=check
    )


# ---- EMIM's log-determinant relatives ----------------------------------------------------------


class RunningMoments(NamedTuple):
    """One view's running first and second moments (CorInfoMax): ``mean`` (D,) and ``cov``
    (D, D), float64, detached from the graph between steps."""

    mean: torch.Tensor
    cov: torch.Tensor


def initial_moments(dim: int, r_ini: float = 1.0, device=None) -> RunningMoments:
    """CorInfoMax's starting estimates: mean 0 and covariance ``r_ini * I`` (D, D), float64."""
    return RunningMoments(
        torch.zeros(dim, dtype=torch.float64, device=device),
        r_ini * torch.eye(dim, dtype=torch.float64, device=device),
    )


def update_moments(
    z: torch.Tensor, previous: RunningMoments, la_R: float, la_mu: float
) -> RunningMoments:
    """One step of CorInfoMax's exponentially weighted moments (Ozsoy et al., NeurIPS 2022,
    Sec. 3; the recursion of serdarozsoy/corinfomax-ssl ``loss.py``).

    ``mean = la_mu * previous.mean + (1 - la_mu) * mean(z)`` and, with the rows centred by
    that new mean, ``cov = la_R * previous.cov + (1 - la_R) * zc^T zc / N`` (the biased batch
    covariance). ``la_R`` and ``la_mu`` weigh the past: 0 keeps the batch estimate only.
    The batch terms keep their gradient; the previous estimates are used as they are given
    (:func:`corinfomax_loss_func` detaches what it returns, so across steps they carry none).

    Args:
        z: embeddings (N, D), any floating dtype (computed in float64).
        previous: the estimates after the last step.
        la_R, la_mu: forgetting factors in [0, 1).

    Returns:
        The new :class:`RunningMoments`, float64, attached to ``z``'s graph.
    """
    z = z.double()
    mean = la_mu * previous.mean + (1 - la_mu) * z.mean(dim=0)  # (D,)
    centred = z - mean  # (N, D)
    cov = la_R * previous.cov + (1 - la_R) * (centred.T @ centred) / z.shape[0]  # (D, D)
    return RunningMoments(mean, cov)


def _gathered(z: torch.Tensor, gather_distributed: bool) -> torch.Tensor:
    """``z`` (n, p) from every rank as (world_size * n, p) under DDP, with gradient; else ``z``."""
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    return _all_gather_with_grad(z) if gather_distributed and distributed else z


_CORINFOMAX_PD_HINT = (
    "a running covariance plus eps * I is not positive definite (Cholesky failed); "
    "raise method.kwargs.eps (its recipe: 1e-8) or R_ini"
)


def corinfomax_loss_func(
    z1: torch.Tensor,
    z2: torch.Tensor,
    moments1: RunningMoments,
    moments2: RunningMoments,
    la_R: float = 0.01,
    la_mu: float = 0.01,
    eps: float = 1e-8,
    alpha: float = 250.0,
    gather_distributed: bool = True,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[RunningMoments, RunningMoments]]:
    """CorInfoMax loss (Ozsoy, Hamdan, Arik, Yuret, Erdogan, "Self-Supervised Learning with an
    Information Maximization Criterion", NeurIPS 2022; the loss of serdarozsoy/corinfomax-ssl):

        loss = alpha * mean((z1 - z2)^2) - [log det(R1 + eps I) + log det(R2 + eps I)] / D

    with ``R1``, ``R2`` each view's running covariance (:func:`update_moments`). The first
    term pulls the two views' embeddings together; the second spreads each view's
    embeddings over all D directions (at a fixed trace, which the L2-normalised embeddings
    of its recipes give, the log-determinant is largest for equal eigenvalues). Unlike
    EMIM, each view's covariance is estimated on its own, over past batches too, and the
    cross-view dependence enters only through the MSE.

    Under DDP both views are all-gathered with gradient first, as the authors' multi-GPU code
    does, so every rank holds the same estimates. Log-determinants in float64, by Cholesky.

    Args:
        z1, z2: the two views' embeddings (N, D), floating point (CorInfoMax's recipes
            L2-normalise them first).
        moments1, moments2: each view's estimates after the previous step
            (:func:`initial_moments` at the start).
        la_R, la_mu: forgetting factors of the covariance and the mean, in [0, 1).
        eps: ridge added to each covariance before its log-determinant, >= 0.
        alpha: weight of the MSE term (the paper's alpha).
        gather_distributed: all-gather the views across ranks when distributed.
        check: raise at once when a factorisation fails (a host synchronisation); else NaN.

    Returns:
        ``(loss, logdet_term, mse, (moments1, moments2))``: the loss, its log-determinant
        term and its MSE (scalars in ``z1``'s dtype; the log-determinant term is minus the
        two views' log-determinants summed and divided by D, in nats), and the updated
        estimates, detached, for the next step.

    Raises:
        ValueError: shapes differ or are not 2-D, a forgetting factor outside [0, 1), eps < 0.
        torch.linalg.LinAlgError: with ``check``, a ridged covariance is not positive definite.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must be 2-D with equal shapes; got {tuple(z1.shape)}, {tuple(z2.shape)}"
        )
    if not (0 <= la_R < 1 and 0 <= la_mu < 1):
        raise ValueError(f"la_R and la_mu must be in [0, 1); got {la_R}, {la_mu}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    out_dtype, dim = z1.dtype, z1.shape[1]
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1 = _gathered(z1.double(), gather_distributed)  # (N, D)
        z2 = _gathered(z2.double(), gather_distributed)
        new1 = update_moments(z1, moments1, la_R, la_mu)
        new2 = update_moments(z2, moments2, la_R, la_mu)
        ridged = _with_ridge(torch.stack([new1.cov, new2.cov]), eps)  # (2, D, D)
        chol, failed = _cholesky(ridged, check, "CorInfoMax: " + _CORINFOMAX_PD_HINT)
        logdet_term = -_logdet_from_cholesky(chol).sum() / dim
        logdet_term = torch.where(failed, torch.nan, logdet_term)
        mse = (z1 - z2).pow(2).mean()
        loss = alpha * mse + logdet_term
    detached = tuple(RunningMoments(m.mean.detach(), m.cov.detach()) for m in (new1, new2))
    return loss.to(out_dtype), logdet_term.to(out_dtype), mse.to(out_dtype), detached


def mec_lambda(batch_size: int, dim: int, eps: float) -> float:
    """MEC's lambda = d / (m * eps) for a global batch of m embeddings of d dimensions
    (Liu et al., NeurIPS 2022, with ``eps`` the paper's eps^2: xinliu20/MEC
    ``main_pretrain.py`` takes ``--eps 64`` and sets lambda = 1 / (m * eps / d)).

    Raises:
        ValueError: a non-positive argument.
    """
    if batch_size < 1 or dim < 1 or not eps > 0:
        raise ValueError(f"need batch_size, dim >= 1 and eps > 0; got {batch_size}, {dim}, {eps}")
    return dim / (batch_size * eps)


def mec_lambda_warmup(step: int, warmup_steps: int, lamda: float) -> float:
    """MEC's warm-up of lambda: 1/lambda falls linearly from 8/lambda to 1/lambda over
    ``warmup_steps`` steps, then stays (xinliu20/MEC ``lamda_scheduler``, "to ensure the
    convergence of the Taylor expansion"); returns the lambda of ``step`` (0-based)."""
    if step >= warmup_steps:
        return lamda
    start, end = 8 / lamda, 1 / lamda
    inverse = start + (end - start) * step / max(warmup_steps - 1, 1)
    return 1 / inverse


def taylor_logdet(c: torch.Tensor, order: int) -> torch.Tensor:
    """``trace(sum_{k=1..order} (-1)^(k+1) c^k / k)``, the truncated series of
    ``log det(I + c) = trace(log(I + c))`` for square ``c`` (m, m) whose spectral radius is
    below 1 (MEC, Liu et al., NeurIPS 2022). Returns a scalar in ``c``'s dtype.

    Raises:
        ValueError: ``c`` not square, or ``order`` < 1.
    """
    if c.ndim != 2 or c.shape[0] != c.shape[1] or order < 1:
        raise ValueError(f"need a square matrix and order >= 1; got {tuple(c.shape)}, {order}")
    power, total = c, torch.zeros_like(c)
    for k in range(1, order + 1):
        if k > 1:
            power = power @ c  # c^k (m, m)
        total = total + power / k if k % 2 else total - power / k
    return total.diagonal().sum()


def mec_loss_func(
    online1: torch.Tensor,
    online2: torch.Tensor,
    target1: torch.Tensor,
    target2: torch.Tensor,
    lamda: float,
    order: int = 4,
    gather_distributed: bool = True,
) -> torch.Tensor:
    """MEC loss (Liu, Wang, Liu, Wang, Chen, "Self-Supervised Learning via Maximum Entropy
    Coding", NeurIPS 2022; the loss of xinliu20/MEC ``main_pretrain.py``): minus the coding
    length of the cross-view similarities of the global batch, scaled by 1/lambda, in both
    directions,

        loss = -1 / (2 m lambda) * [T(lambda * t1 o2^T) + T(lambda * t2 o1^T)]

    with the rows L2-normalised, ``T`` the truncated series of log det(I + .)
    (:func:`taylor_logdet`), ``o`` the online branch's predictions and ``t`` the momentum
    (target) branch's projections of the other view. Its first-order term is
    ``-1/(2m) sum_i [cos(t1_i, o2_i) + cos(t2_i, o1_i)]``, BYOL's alignment; the higher
    orders penalise similarity between different images, as a log-determinant does.

    Args:
        online1, online2: the predictor's outputs for views 1 and 2 (N, d).
        target1, target2: the momentum projector's outputs for views 1 and 2 (N, d); no
            gradient flows into them.
        lamda: lambda at this step (:func:`mec_lambda`, :func:`mec_lambda_warmup`), > 0.
        order: terms of the series (MEC: 4).
        gather_distributed: all-gather across ranks when distributed (m = global batch).

    Returns:
        Scalar tensor in ``online1``'s dtype (computed in at least float32, autocast off).

    Raises:
        ValueError: shapes differ or are not 2-D, ``lamda`` <= 0, or ``order`` < 1.
    """
    shapes = {tuple(t.shape) for t in (online1, online2, target1, target2)}
    if len(shapes) != 1 or online1.ndim != 2:
        raise ValueError(f"all four inputs must be 2-D with one shape; got {sorted(shapes)}")
    if not lamda > 0:
        raise ValueError(f"lamda must be > 0; got {lamda}")
    out_dtype = online1.dtype
    dtype = torch.promote_types(out_dtype, torch.float32)
    with torch.autocast(device_type=online1.device.type, enabled=False):
        o1, o2, t1, t2 = (
            F.normalize(_gathered(x.to(dtype), gather_distributed), dim=1)
            for x in (online1, online2, target1.detach(), target2.detach())
        )
        m = o1.shape[0]
        coding = taylor_logdet(lamda * t1 @ o2.T, order) + taylor_logdet(lamda * t2 @ o1.T, order)
        loss = -coding / (2 * m * lamda)
    return loss.to(out_dtype)
