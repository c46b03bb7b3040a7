"""EMIM: explicit mutual-information maximisation from second-order statistics.

Pure torch (no solo-learn, no Lightning): tensors in, scalar out.

Reference: L. Chang, P. Liu, Q. Guo, F. Wen, "Explicit Mutual Information
Maximization for Self-Supervised Learning", arXiv:2409.04747 (2024), Theorem 1:

    I(Z; Z') = 1/2 * [ log det C11 + log det C22 - log det C ]      (nats)

with C11, C22 the covariances of each view's embedding over the batch and C the
covariance of the concatenation [Z, Z'].
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

__all__ = ["emim_loss_func", "gaussian_mutual_information", "mi_ceiling_nats"]

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


def _cholesky(m: torch.Tensor, check: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Cholesky factor of SPD ``m`` (..., k, k) and whether any factorisation failed (bool tensor).

    With ``check`` a failure raises at once, which reads the status on the host (on a GPU, a
    synchronisation); without it the caller turns the estimate into NaN instead.
    """
    chol, info = torch.linalg.cholesky_ex(m)
    failed = (info != 0).any()
    if check and bool(failed):
        raise torch.linalg.LinAlgError(
            "EMIM: covariance is not positive definite in float64 (Cholesky failed); "
            "use eps > 0 (e.g. 1e-2) and standardize=True."
        )
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
