"""The loss benchmark: forward plus backward of each SSL loss alone over an (N, D) grid."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import emim_bench.compat  # noqa: F401  (adapts solo-learn and Lightning before they load)

import torch
from solo.losses.barlow import barlow_loss_func
from solo.losses.byol import byol_loss_func
from solo.losses.simclr import simclr_loss_func
from solo.losses.vicreg import vicreg_loss_func
from tqdm import tqdm

from emim_bench.bench.timing import (
    FULL_LOSS_POLICY,
    OtherCpuLoad,
    Patience,
    TimingPolicy,
    time_call,
)
from emim_bench.losses import emim_loss_func

LOSS_METHODS = ("emim_primal", "emim_dual", "barlow_twins", "vicreg", "simclr", "byol")
FULL_GRID = {"n": (256, 512), "d": (128, 256, 512, 1024, 2048)}
QUICK_GRID = {"n": (64,), "d": (32, 64)}
EMIM_EPS = 1e-2  # EMIM's default ridge (emim_bench.methods.EMIM)


def loss_function(name: str, z1: torch.Tensor, z2: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A closure computing loss ``name`` on views ``z1``, ``z2`` (N, D) with recipe hyperparameters.

    EMIM uses eps = 1e-2 and standardisation (its defaults) in the named form;
    the baselines are solo-learn 1.0.2's own loss functions with the
    hyperparameters of solo-learn's CIFAR recipes. BYOL's is symmetrised as its method uses it,
    ``byol(p1, z2) + byol(p2, z1)``, with ``z1, z2`` as the predictions and
    their detached copies as the momentum targets.
    """
    if name in ("emim_primal", "emim_dual"):
        form = name.split("_")[1]
        return lambda: emim_loss_func(z1, z2, eps=EMIM_EPS, standardize=True, form=form)
    if name == "barlow_twins":
        return lambda: barlow_loss_func(z1, z2, lamb=0.0051, scale_loss=0.1)
    if name == "vicreg":
        return lambda: vicreg_loss_func(
            z1, z2, sim_loss_weight=25.0, var_loss_weight=25.0, cov_loss_weight=1.0
        )
    if name == "simclr":
        return lambda: simclr_loss_func(z1, z2, temperature=0.2)
    if name == "byol":
        return lambda: byol_loss_func(z1, z2.detach()) + byol_loss_func(z2, z1.detach())
    raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSS_METHODS)}")


def _forward_backward(loss_fn: Callable[[], torch.Tensor], inputs: Sequence[torch.Tensor]):
    """A closure: clear the inputs' gradients, compute the loss, backpropagate to the inputs."""

    def call() -> None:
        for x in inputs:
            x.grad = None
        loss_fn().backward()

    return call


def bench_loss(
    method: str, n: int, d: int, device: torch.device | str, policy: TimingPolicy = FULL_LOSS_POLICY
) -> dict[str, Any]:
    """Time forward + backward of one loss on random float32 views of shape (n, d).

    Returns:
        ``{"method", "n", "d", "median_s", "min_s", "repeats", "other_cpus"}`` --
        seconds per forward + backward call; ``other_cpus`` as in :class:`OtherCpuLoad`.
    """
    gen = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(n, d, generator=gen).to(device).requires_grad_() for _ in range(2))
    with OtherCpuLoad() as other:
        times = time_call(
            _forward_backward(loss_function(method, z1, z2), (z1, z2)), policy, device
        )
    return {
        "method": method,
        "n": n,
        "d": d,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "repeats": len(times),
        "other_cpus": other.cpus,
    }


def run_loss_grid(
    device: torch.device,
    grid: dict[str, Sequence[int]],
    policy: TimingPolicy,
    patience: Patience | None = None,
) -> list[dict[str, Any]]:
    """:func:`bench_loss` for every method and (N, D) of ``grid``; a progress bar over cells.

    A cell timed while other processes were busy is timed again once they are
    quiet, while ``patience`` lasts; each row records its ``attempts``.
    """
    patience = patience or Patience(0.0)
    cells = [(n, d, m) for n in grid["n"] for d in grid["d"] for m in LOSS_METHODS]
    rows = []
    with tqdm(cells, desc="loss fwd+bwd", unit="cell", file=sys.stderr) as bar:
        for n, d, method in bar:
            bar.set_postfix_str(f"{method} N={n} D={d}")
            attempts, retry = 0, True
            while retry:
                attempts, start = attempts + 1, time.perf_counter()
                row = bench_loss(method, n, d, device, policy)
                retry = patience.retry(row["other_cpus"], time.perf_counter() - start)
                if retry:
                    bar.set_postfix_str(f"{method} N={n} D={d} (re-timing: CPUs were busy)")
            rows.append({**row, "attempts": attempts})
    return rows


def emim_auto_form(n: int, d: int) -> str:
    """The form ``emim_loss_func(form="auto")`` picks for N = ``n``, D1 = D2 = ``d``, eps > 0."""
    return "dual" if n < 2 * d else "primal"
