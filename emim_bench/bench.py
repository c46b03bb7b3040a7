"""Speed benchmarks: the SSL losses alone and full training steps, EMIM against the baselines.

Two measurements, on one device (cuda when available, else cpu):

1. **Loss** -- forward plus backward of each loss alone on random float32
   embeddings ``z1, z2`` of shape (N, D) with ``requires_grad``: EMIM in its
   primal and dual forms (:func:`emim_bench.losses.emim_loss_func`) and
   solo-learn's own Barlow Twins, VICReg, SimCLR and BYOL loss functions with
   their CIFAR-recipe hyperparameters. Reported as the median seconds per call
   after warm-up, over adaptive repeats.
2. **Training step** -- one full step of each solo-learn method (ResNet-18
   backbone, two views, the recipe's projector, ``training_step`` +
   backward + optimiser step (``budget=cpu``'s Adam), and BYOL's EMA update), built by
   :func:`emim_bench.pretrain.build_method` and run outside a Trainer.
   Reported as source images per second: a step on a batch of B images (2B
   views) counts B images. EMIM and Barlow Twins share the backbone and the
   2048-2048-2048 projector, so their ratio compares the losses in situ.

The results (timings, ratio tables, the two targets with PASS/MISS, device,
versions and the exact command) go to ``<out>/<device kind>.json`` and ``.md``.
Run it with ``make bench`` or ``emim-bench bench`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from solo.losses.barlow import barlow_loss_func
from solo.losses.byol import byol_loss_func
from solo.losses.simclr import simclr_loss_func
from solo.losses.vicreg import vicreg_loss_func
from tqdm import tqdm

import emim_bench
from emim_bench import config, pretrain
from emim_bench.losses import emim_loss_func
from emim_bench.pretrain import build_method

__all__ = [
    "LOSS_METHODS",
    "STEP_METHODS",
    "TimingPolicy",
    "BenchOptions",
    "OtherCpuLoad",
    "time_call",
    "loss_function",
    "bench_loss",
    "step_method_kwargs",
    "two_view_batch",
    "bench_steps",
    "ratio_tables",
    "environment_info",
    "render_tables",
    "render_markdown",
    "report_stem",
    "write_report",
    "make_result",
    "run_benchmark",
    "register",
    "options_from_args",
]

LOSS_METHODS = ("emim_primal", "emim_dual", "barlow_twins", "vicreg", "simclr", "byol")
STEP_METHODS = ("emim", "barlow_twins", "vicreg", "simclr", "byol")
LABELS = {
    "emim": "EMIM",
    "emim_primal": "EMIM primal",
    "emim_dual": "EMIM dual",
    "barlow_twins": "Barlow Twins",
    "vicreg": "VICReg",
    "simclr": "SimCLR",
    "byol": "BYOL",
}

FULL_GRID = {"n": (256, 512), "d": (128, 256, 512, 1024, 2048)}
QUICK_GRID = {"n": (64,), "d": (32, 64)}
EMIM_EPS = 1e-2  # EMIM's default ridge (emim_bench.methods.EMIM)

# Targets of the performance issue, as speed ratios EMIM / Barlow Twins (higher = EMIM faster).
LOSS_TARGET_CELL = (256, 2048)  # (N, D)
LOSS_TARGET = 1.0  # EMIM's loss no slower than Barlow Twins' loss
STEP_TARGET = 0.95  # EMIM's training step at least 0.95x Barlow Twins' images/s


@dataclass(frozen=True)
class TimingPolicy:
    """How often to call a timed function.

    Warm-up: at least ``warmup`` calls, more (up to ``warmup_max``) while the
    warm-up has taken under ``warmup_budget_s`` seconds. Timed: at least
    ``min_repeats`` calls, more (up to ``max_repeats``) while the timed calls
    have taken under ``budget_s`` seconds in total.
    """

    warmup: int = 1
    warmup_max: int = 5
    warmup_budget_s: float = 0.25
    min_repeats: int = 3
    max_repeats: int = 1000
    budget_s: float = 1.0


FULL_LOSS_POLICY = TimingPolicy()
QUICK_LOSS_POLICY = TimingPolicy(warmup_max=1, max_repeats=3, budget_s=0.0)


@dataclass(frozen=True)
class BenchOptions:
    """Resolved options of one benchmark run (see ``emim-bench bench --help``)."""

    device: str = "cpu"
    only: str | None = None  # None (both), "loss" or "step"
    quick: bool = False
    batch_size: int = 64  # source images per training step (2 views each)
    steps: int = 20  # timed training steps per method
    warmup_steps: int = 2
    cifar_stem: bool = False
    image_size: int = 32
    threads: int | None = None  # torch CPU threads; None: torch's default
    patience_s: float = 300.0  # most seconds spent re-timing work disturbed by other processes
    out: str = "reports/benchmarks"
    command: str = "emim-bench bench"


# ----------------------------------------------------------------------------- timing


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued work on ``device`` (a no-op on cpu)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_call(
    fn: Callable[[], Any],
    policy: TimingPolicy = FULL_LOSS_POLICY,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Wall-clock seconds of each timed call of ``fn()``, after warm-up, per ``policy``.

    On cuda the device is synchronised before and after every call, so a time
    covers the kernels the call launched. Take the median of the result.

    Returns:
        A list of at least ``policy.min_repeats`` durations in seconds.
    """
    sync = _synchronizer(torch.device(device))
    sync()
    warm_start, warm_calls = time.perf_counter(), 0
    while warm_calls < policy.warmup or (
        warm_calls < policy.warmup_max and time.perf_counter() - warm_start < policy.warmup_budget_s
    ):
        fn()
        warm_calls += 1
    sync()
    times: list[float] = []
    while len(times) < policy.min_repeats or (
        len(times) < policy.max_repeats and sum(times) < policy.budget_s
    ):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _cpu_seconds() -> tuple[float, float] | None:
    """(Busy CPU seconds of the whole machine, CPU seconds of this process) so far.

    The machine's count comes from /proc/stat (user, nice, system, irq, softirq
    and steal time); None where there is no /proc/stat.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields)
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return busy, own.user + own.system


class OtherCpuLoad:
    """Context manager: how many CPUs, on average, other processes kept busy meanwhile.

    Timings on a shared machine are only meaningful when this is about 0; the
    report records it per loss cell, for the training steps and for the run.
    After the block, ``cpus`` holds the average (CPUs; None off Linux or when
    the block took under ``MIN_WALL_S`` seconds).
    """

    MIN_WALL_S = 0.5

    def __enter__(self) -> OtherCpuLoad:
        self.cpus: float | None = None
        self._start, self._t0 = _cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        end, wall = _cpu_seconds(), time.perf_counter() - self._t0
        # /proc/stat counts in ticks of 10 ms: a block under MIN_WALL_S is too short to say.
        if self._start is not None and end is not None and wall >= self.MIN_WALL_S:
            other = (end[0] - self._start[0]) - (end[1] - self._start[1])
            self.cpus = round(max(0.0, other / wall), 3)


BUSY_CPUS = 0.1  # other processes' average CPU use above which a timing counts as disturbed


def _busy(other_cpus: float | None) -> bool:
    """Whether other processes used more than ``BUSY_CPUS`` CPUs (None: unknown, not busy)."""
    return other_cpus is not None and other_cpus > BUSY_CPUS


@dataclass
class Patience:
    """Seconds a run may still spend re-timing disturbed work and waiting for quiet CPUs."""

    left_s: float

    def wait_for_quiet(self, max_wait_s: float = 20.0) -> None:
        """Sleep in 1 s windows until other processes are quiet, ``max_wait_s`` at most.

        The time slept, and the time since the disturbed work started (``spent_s``
        of :meth:`spend`), come out of ``left_s``.
        """
        start = time.perf_counter()
        while self.left_s > 0 and time.perf_counter() - start < max_wait_s:
            with OtherCpuLoad() as other:
                time.sleep(1.0)
            self.left_s -= 1.0
            if not _busy(other.cpus):
                return

    def retry(self, other_cpus: float | None, spent_s: float) -> bool:
        """After work that took ``spent_s`` seconds: redo it? (It was disturbed, patience left.)"""
        if not _busy(other_cpus) or self.left_s <= 0:
            return False
        self.left_s -= spent_s
        self.wait_for_quiet()
        return True


# ----------------------------------------------------------------------------- losses


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


# ----------------------------------------------------------------------------- training step


def step_method_kwargs(name: str, batch_size: int, cifar_stem: bool = False) -> dict[str, Any]:
    """solo-learn constructor kwargs of ``name`` from its config (``method_configs/method/``).

    The recipe's projector (EMIM and Barlow Twins both get Barlow Twins' recipe
    2048-2048-2048, so the training-step comparison isolates the loss), on ResNet-18
    with ``budget=cpu``'s optimiser (Adam at its lr, 4e-3 scaled by batch / 256) and
    no learning-rate schedule.

    Args:
        cifar_stem: ResNet-18 with the CIFAR stem (3x3 conv, no max-pool) instead
            of the ImageNet stem (7x7 stride-2 conv + max-pool).
    """
    overrides = [f"method={name}", f"batch_size={batch_size}", "optim.scheduler=none"]
    if name in ("emim", "barlow_twins"):  # budget=cpu narrows Barlow Twins' projector: undo it
        recipe = config.load(["method=barlow_twins", "budget=cifar_paper"]).method.kwargs
        overrides += [
            f"method.kwargs.{k}={recipe[k]}" for k in ("proj_hidden_dim", "proj_output_dim")
        ]
    cfg = config.load([*overrides, f"backbone.cifar={str(cifar_stem).lower()}"])
    return pretrain.method_kwargs(cfg, num_classes=10)


def two_view_batch(batch_size: int, image_size: int, device: torch.device | str, seed: int = 0):
    """A solo-learn training batch ``(indexes, [view1, view2], targets)`` of random images.

    Views are float32 (batch_size, 3, image_size, image_size); targets are in [0, 10).
    The speed of a step does not depend on the pixel values.
    """
    gen = torch.Generator().manual_seed(seed)
    views = [torch.randn(batch_size, 3, image_size, image_size, generator=gen) for _ in range(2)]
    targets = torch.randint(0, 10, (batch_size,), generator=gen)
    indexes = torch.arange(batch_size)
    return indexes.to(device), [v.to(device) for v in views], targets.to(device)


def _no_log(*args, **kwargs) -> None:
    """Stands in for ``LightningModule.log``/``log_dict`` outside a Trainer."""


def _step_closure(name: str, options: BenchOptions, device: torch.device):
    """Build method ``name`` and its optimizer; return a closure doing one training step.

    The closure runs ``training_step`` (the method's own), backward, the LARS
    step and, for momentum methods (BYOL), the EMA update Lightning would run in
    ``on_train_batch_end``. It returns the step's loss, detached (0-dim tensor).
    """
    torch.manual_seed(0)
    method = build_method(name, **step_method_kwargs(name, options.batch_size, options.cifar_stem))
    method = method.to(device).train()
    method.log, method.log_dict = _no_log, _no_log  # no Trainer to log to
    optimizer = method.configure_optimizers()
    batch = two_view_batch(options.batch_size, options.image_size, device)
    momentum_pairs = getattr(method, "momentum_pairs", [])

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = method.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        for online, target in momentum_pairs:
            method.momentum_updater.update(online, target)
        return loss.detach()

    return step


def _step_round(steps: dict[str, Callable[[], torch.Tensor]], sync, bar) -> dict[str, Any]:
    """One training step of each method in turn.

    Returns:
        ``{"times": {name: seconds}, "losses": {name: float}, "other_cpus"}``.
    """
    times, losses = {}, {}
    with OtherCpuLoad() as other:
        for name, step in steps.items():
            bar.set_postfix_str(name)
            sync()
            start = time.perf_counter()
            losses[name] = float(step())  # float() waits for the step's kernels
            sync()
            times[name] = time.perf_counter() - start
            bar.update()
    return {"times": times, "losses": losses, "other_cpus": other.cpus}


def bench_steps(
    options: BenchOptions, device: torch.device, patience: Patience | None = None
) -> list[dict[str, Any]]:
    """Time full training steps of every method in :data:`STEP_METHODS`.

    Warm-up rounds first, then timed rounds; a round is one step of each
    method in turn (round-robin), so a slow-down of the machine hits every
    method alike. A round during which other processes were busy is discarded
    and run again once they are quiet, while ``patience`` lasts.

    Returns:
        One row per method: ``{"method", "median_s"`` (seconds per step),
        ``"images_per_s"`` (source images; a step holds ``batch_size`` images,
        2 views each), ``"views_per_s", "steps"`` (timed steps kept),
        ``"discarded_rounds", "final_loss", "other_cpus"}`` (the most any kept
        round saw, as in :class:`OtherCpuLoad`).
    """
    patience = patience or Patience(0.0)
    sync = _synchronizer(device)
    steps = {name: _step_closure(name, options, device) for name in STEP_METHODS}
    kept: list[dict[str, Any]] = []
    discarded = 0
    total = len(STEP_METHODS) * (options.warmup_steps + options.steps)
    with tqdm(total=total, desc="training steps", unit="step", file=sys.stderr) as bar:
        for _ in range(options.warmup_steps):
            last = _step_round(steps, sync, bar)
        while len(kept) < options.steps:
            start = time.perf_counter()
            last = _step_round(steps, sync, bar)
            if patience.retry(last["other_cpus"], time.perf_counter() - start):
                discarded += 1
                bar.total += len(STEP_METHODS)
            else:
                kept.append(last)
    others = [r["other_cpus"] for r in kept if r["other_cpus"] is not None]
    return [
        _step_row(name, [r["times"][name] for r in kept], last["losses"][name], options.batch_size)
        | {"discarded_rounds": discarded, "other_cpus": max(others) if others else None}
        for name in STEP_METHODS
    ]


def _step_row(name: str, times: list[float], loss: float, batch_size: int) -> dict[str, Any]:
    """A row of :func:`bench_steps` from one method's step times (seconds) and last loss."""
    if not math.isfinite(loss):
        raise RuntimeError(f"{name}: the training step's loss is not finite ({loss})")
    median = statistics.median(times)
    return {
        "method": name,
        "median_s": median,
        "min_s": min(times),
        "images_per_s": batch_size / median,
        "views_per_s": 2 * batch_size / median,
        "steps": len(times),
        "final_loss": loss,
    }


# ----------------------------------------------------------------------------- ratios and targets


def emim_auto_form(n: int, d: int) -> str:
    """The form ``emim_loss_func(form="auto")`` picks for N = ``n``, D1 = D2 = ``d``, eps > 0."""
    return "dual" if n < 2 * d else "primal"


def _target(name: str, ratio: float | None, threshold: float, detail: str) -> dict[str, Any]:
    """One target row: PASS when ``ratio >= threshold``, MISS (with by how much) otherwise."""
    if ratio is None:
        status = "NOT MEASURED"
    elif ratio >= threshold:
        status = "PASS"
    else:
        status = f"MISS by {100 * (1 - ratio / threshold):.1f}%"
    return {
        "target": name,
        "ratio": ratio,
        "threshold": threshold,
        "status": status,
        "detail": detail,
    }


def ratio_tables(
    loss_rows: list[dict[str, Any]], step_rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Ratio tables and targets from measured timings (a pure function).

    Args:
        loss_rows: rows of :func:`bench_loss` (``method``, ``n``, ``d``, ``median_s``).
        step_rows: rows of :func:`bench_steps` (``method``, ``images_per_s``).

    Returns:
        ``loss_vs_fastest``: per (N, D) cell, each method's time / the cell's
        fastest time (1.0 = fastest); ``loss_emim_vs_barlow``: per cell, the
        speed ratio ``t_barlow / t_emim`` of each EMIM form and of the form
        ``auto`` picks (> 1: EMIM faster); ``step_vs_fastest``: each method's
        images/s / the fastest's; ``step_emim_vs_barlow``: EMIM's images/s /
        Barlow Twins'; ``targets``: the two targets with ratio and PASS/MISS.
    """
    cells: dict[tuple[int, int], dict[str, float]] = {}
    for row in loss_rows:
        cells.setdefault((row["n"], row["d"]), {})[row["method"]] = row["median_s"]
    loss_vs_fastest, loss_emim_vs_barlow = [], []
    for (n, d), t in sorted(cells.items()):
        fastest = min(t.values())
        loss_vs_fastest.append({"n": n, "d": d, **{m: s / fastest for m, s in t.items()}})
        if "barlow_twins" in t:
            entry = {"n": n, "d": d, "auto_form": emim_auto_form(n, d)}
            for form in ("primal", "dual"):
                if f"emim_{form}" in t:
                    entry[form] = t["barlow_twins"] / t[f"emim_{form}"]
            entry["auto"] = entry.get(entry["auto_form"])
            loss_emim_vs_barlow.append(entry)

    ips = {row["method"]: row["images_per_s"] for row in step_rows}
    step_vs_fastest = {m: v / max(ips.values()) for m, v in ips.items()} if ips else {}
    step_ratio = (
        ips["emim"] / ips["barlow_twins"] if {"emim", "barlow_twins"} <= ips.keys() else None
    )

    n, d = LOSS_TARGET_CELL
    loss_ratio = next((e["auto"] for e in loss_emim_vs_barlow if (e["n"], e["d"]) == (n, d)), None)
    targets = [
        _target(
            f"loss speed EMIM / Barlow Twins at N={n}, D={d}",
            loss_ratio,
            LOSS_TARGET,
            f"t_barlow / t_emim, EMIM in the form auto picks ({emim_auto_form(n, d)})",
        ),
        _target(
            "training step images/s EMIM / Barlow Twins",
            step_ratio,
            STEP_TARGET,
            "same ResNet-18 backbone and 2048-2048-2048 projector",
        ),
    ]
    return {
        "loss_vs_fastest": loss_vs_fastest,
        "loss_emim_vs_barlow": loss_emim_vs_barlow,
        "step_vs_fastest": step_vs_fastest,
        "step_emim_vs_barlow": step_ratio,
        "targets": targets,
    }


# ----------------------------------------------------------------------------- environment


def _git(*args: str) -> str | None:
    """Output of a read-only git command in the repository, or None when it fails."""
    try:
        out = subprocess.run(
            ["git", "--no-optional-locks", *args],  # never writes the index
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.rstrip()


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info(device: torch.device) -> dict[str, Any]:
    """Device, versions, git commit and source hashes of the benchmarked code."""
    info = {
        "kind": device.type,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    status = _git("status", "--porcelain")
    package = Path(emim_bench.__file__).parent
    return {
        "device": info,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "solo-learn": importlib.metadata.version("solo-learn"),
            "emim-bench": emim_bench.__version__,
        },
        "git": {
            "commit": _git("rev-parse", "HEAD"),  # None before the first commit
            "dirty": None if status is None else bool(status),
            "changed_paths": None if status is None else status.splitlines(),
        },
        "source_sha256": {
            f"emim_bench/{f}": hashlib.sha256((package / f).read_bytes()).hexdigest()
            for f in ("bench.py", "losses.py", "methods.py")
        },
        "platform": platform.platform(),
    }


# ----------------------------------------------------------------------------- report


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def render_tables(result: dict[str, Any]) -> str:
    """The targets and the ratio tables of ``result`` as Markdown (also printed by the CLI)."""
    ratios = result["ratios"]
    lines = ["## Targets (speed ratios, higher = EMIM faster)", ""]
    lines += _table(
        ["target", "ratio", "threshold", "result", "how"],
        [
            (
                t["target"],
                _fmt(t["ratio"], ".3f"),
                f">= {t['threshold']:.2f}",
                t["status"],
                t["detail"],
            )
            for t in ratios["targets"]
        ],
    )
    if ratios["loss_emim_vs_barlow"]:
        lines += [
            "",
            "## Loss: EMIM / Barlow Twins speed (t_barlow / t_emim; > 1 = EMIM faster)",
            "",
        ]
        lines += _table(
            ["N", "D", "EMIM primal", "EMIM dual", "auto form", "EMIM auto"],
            [
                (
                    e["n"],
                    e["d"],
                    _fmt(e.get("primal")),
                    _fmt(e.get("dual")),
                    e["auto_form"],
                    _fmt(e["auto"]),
                )
                for e in ratios["loss_emim_vs_barlow"]
            ],
        )
    if ratios["loss_vs_fastest"]:
        methods = [m for m in LOSS_METHODS if m in ratios["loss_vs_fastest"][0]]
        lines += ["", "## Loss: time / fastest time in the cell (1.00 = fastest)", ""]
        lines += _table(
            ["N", "D", *(LABELS[m] for m in methods)],
            [
                (e["n"], e["d"], *(_fmt(e.get(m)) for m in methods))
                for e in ratios["loss_vs_fastest"]
            ],
        )
    if ratios["step_vs_fastest"]:
        lines += ["", "## Training step: images/s / fastest images/s", ""]
        lines += _table(
            ["method", "ratio to fastest"],
            [(LABELS[m], _fmt(v)) for m, v in ratios["step_vs_fastest"].items()],
        )
        lines += ["", f"EMIM / Barlow Twins images/s: {_fmt(ratios['step_emim_vs_barlow'], '.3f')}"]
    return "\n".join(lines)


def _flag(row: dict[str, Any]) -> str:
    """ "*" when other processes used more than ``BUSY_CPUS`` while ``row`` was timed."""
    return "*" if _busy(row.get("other_cpus")) else ""


def _loss_time_table(rows: list[dict[str, Any]]) -> list[str]:
    """Median milliseconds per forward + backward, one row per (N, D), one column per loss."""
    cells: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["n"], row["d"]), {})[row["method"]] = row
    methods = [m for m in LOSS_METHODS if any(m in c for c in cells.values())]
    body = [
        (
            n,
            d,
            *(
                f"{1e3 * c[m]['median_s']:.2f} ({c[m]['repeats']}){_flag(c[m])}" if m in c else "-"
                for m in methods
            ),
        )
        for (n, d), c in sorted(cells.items())
    ]
    return _table(["N", "D", *(LABELS[m] for m in methods)], body)


def render_markdown(result: dict[str, Any]) -> str:
    """The whole report: command, device, versions, settings, timings, ratio tables, targets."""
    env, settings = result["environment"], result["settings"]
    dev = env["device"]
    device = dev.get("gpu") or dev["cpu"]
    git = env["git"]
    lines = [
        f"# Speed benchmark: {dev['kind']}",
        "",
        f"Command: `{result['command']}`"
        + (" (run by `make bench`)" if result["via_make"] else ""),
        "",
        f"- process argv: `{shlex.join(result['argv'])}`",
        f"- created (UTC): {result['created_utc']}; wall time {result['duration_s']:.0f} s",
        f"- device: {dev['kind']} -- {device}; {dev['cpu_count']} CPUs, "
        f"{dev['torch_threads']} torch threads",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"- git commit: {git['commit'] or 'none (no commit yet)'}"
        + (
            ""
            if git["dirty"] is None
            else f" (working tree {'dirty' if git['dirty'] else 'clean'})"
        ),
        "- source sha256: " + ", ".join(f"{k} {v[:12]}" for k, v in env["source_sha256"].items()),
        "- other processes' CPU use during the run (waits for quiet included): "
        f"{_fmt(result.get('other_cpus'))} CPUs "
        f"on average; load average (1/5/15 min) at start {result['load_average_start']}, "
        f"at end {result['load_average_end']}",
        *_busy_warning(result),
        "",
        render_tables(result),
    ]
    if result["loss"]:
        lines += [
            "",
            "## Loss: median ms per forward + backward (timed repeats)",
            "",
            "Random float32 views z1, z2 of shape (N, D) with requires_grad; median after warm-up "
            f"(at least {settings['loss_policy']['min_repeats']} repeats, more while under "
            f"{settings['loss_policy']['budget_s']} s per cell). EMIM eps 1e-2, standardised; "
            "baselines are solo-learn's loss functions with their CIFAR recipes; BYOL's loss is "
            "symmetrised (two pairs). In brackets: timed repeats. Cells timed again because "
            "other processes used the CPUs meanwhile: "
            f"{sum(r.get('attempts', 1) > 1 for r in result['loss'])}; "
            "* marks a cell still disturbed.",
            "",
            *_loss_time_table(result["loss"]),
        ]
    if result["step"]:
        stem = (
            "CIFAR (3x3 conv, no max-pool)"
            if settings["cifar_stem"]
            else "ImageNet (7x7/2 + max-pool)"
        )
        lines += [
            "",
            "## Training step",
            "",
            f"ResNet-18 with the {stem} stem, {settings['image_size']} px, batch "
            f"{settings['batch_size']} source images x 2 views; images/s counts source images "
            "(views/s = 2x). One step = the method's `training_step` + backward + LARS-SGD step "
            "(+ EMA update for BYOL), outside a Trainer; "
            f"median of {settings['steps']} timed steps "
            f"after {settings['warmup_steps']} warm-up steps, methods interleaved round-robin. "
            "Rounds discarded and run again because other processes used the CPUs meanwhile: "
            f"{result['step'][0].get('discarded_rounds', 0)}; * marks a disturbed row.",
            "",
            *_table(
                ["method", "projector (hidden -> out)", "ms / step", "images/s", "views/s"],
                [
                    (
                        LABELS[r["method"]],
                        _projector_label(r["method"]),
                        f"{1e3 * r['median_s']:.1f}",
                        f"{r['images_per_s']:.1f}{_flag(r)}",
                        f"{r['views_per_s']:.1f}",
                    )
                    for r in result["step"]
                ],
            ),
        ]
    return "\n".join(lines) + "\n"


def _busy_warning(result: dict[str, Any]) -> list[str]:
    """A warning line when timings were disturbed by other processes (marked * in the tables)."""
    disturbed = sum(_busy(r.get("other_cpus")) for r in result["loss"] + result["step"])
    if not disturbed:
        return []
    return [
        "",
        f"**Warning:** timings marked * ({disturbed}) ran while other processes used more "
        f"than {BUSY_CPUS} CPUs on average, even after re-timing; they are not reliable.",
    ]


def _projector_label(name: str) -> str:
    p = step_method_kwargs(name, batch_size=2)
    label = f"{p['proj_hidden_dim']} -> {p['proj_output_dim']}"
    return label + (f", predictor {p['pred_hidden_dim']}" if "pred_hidden_dim" in p else "")


def report_stem(device_kind: str, quick: bool, only: str | None) -> str:
    """File stem of a report: the device kind, plus ``-quick``/``-loss``/``-step`` if partial.

    A full run writes ``cpu.json``; a smoke or partial run never overwrites it.
    """
    return device_kind + ("-quick" if quick else "") + (f"-{only}" if only else "")


def write_report(result: dict[str, Any], out_dir: str | Path, stem: str) -> tuple[Path, Path]:
    """Write ``result`` as ``<out_dir>/<stem>.json`` and ``<stem>.md``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(render_markdown(result))
    return json_path, md_path


# ----------------------------------------------------------------------------- driver


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the OS does not say."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def make_result(
    options: BenchOptions,
    loss_rows: list[dict[str, Any]],
    step_rows: list[dict[str, Any]],
    duration_s: float,
    load_average_start: list[float] | None = None,
    other_cpus: float | None = None,
) -> dict[str, Any]:
    """The JSON-able result of a run: command, environment, settings, timings, ratios, targets."""
    device = torch.device(options.device)
    return {
        "schema": "emim-bench/bench/1",
        "command": options.command,
        "argv": list(sys.argv),
        "via_make": "MAKELEVEL" in os.environ,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": duration_s,
        "load_average_start": load_average_start,
        "load_average_end": _load_average(),
        "other_cpus": other_cpus,
        "environment": environment_info(device),
        "settings": {
            **asdict(options),
            "loss_grid": {
                k: list(v) for k, v in (QUICK_GRID if options.quick else FULL_GRID).items()
            },
            "loss_policy": asdict(QUICK_LOSS_POLICY if options.quick else FULL_LOSS_POLICY),
            "method_kwargs": {
                name: {
                    k: v
                    for k, v in step_method_kwargs(name, options.batch_size).items()
                    if k.startswith(("proj_", "pred_", "lr", "weight_decay"))
                }
                for name in STEP_METHODS
            },
        },
        "loss": loss_rows,
        "step": step_rows,
        "ratios": ratio_tables(loss_rows, step_rows),
    }


def run_benchmark(options: BenchOptions) -> dict[str, Any]:
    """Run the benchmarks ``options`` select and return :func:`make_result`'s dict (no files).

    ``options.threads``, if set, is torch's CPU thread count for the run only.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads or threads)
    try:
        device = torch.device(options.device)
        load_start, start = _load_average(), time.perf_counter()
        policy = QUICK_LOSS_POLICY if options.quick else FULL_LOSS_POLICY
        grid = QUICK_GRID if options.quick else FULL_GRID
        patience = Patience(options.patience_s)
        with OtherCpuLoad() as other:
            run_loss, run_step = options.only in (None, "loss"), options.only in (None, "step")
            loss_rows = run_loss_grid(device, grid, policy, patience) if run_loss else []
            step_rows = bench_steps(options, device, patience) if run_step else []
        duration = time.perf_counter() - start
        return make_result(options, loss_rows, step_rows, duration, load_start, other.cpus)
    finally:
        torch.set_num_threads(threads)


def _device_arg(spec: str) -> str:
    """argparse type of ``--device``: "auto" (cuda if available, else cpu) or a torch device."""
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {spec!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("cuda is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"device must be cpu or cuda[:i]; got {spec!r}")
    return str(device)


def _non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {text}")
    return value


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand and its handler to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "bench",
        help="loss and training-step speed benchmarks (EMIM against the baselines)",
        description="Time each SSL loss (forward + backward) over an (N, D) grid and a full "
        "training step per method; print ratio tables and write <out>/<device>.json and .md. "
        "A full run on 2 CPU cores takes a few minutes, --quick a few seconds.",
    )
    parser.add_argument(
        "--device",
        type=_device_arg,
        default="auto",
        help="cpu, cuda, cuda:i, or auto (cuda if available; default)",
    )
    parser.add_argument(
        "--only",
        choices=("loss", "step"),
        default=None,
        help="run only the loss grid or only the training steps",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny grid, batch and step counts: a smoke test in seconds",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="source images per training step (default: 256 cuda, 64 cpu, 8 --quick)",
    )
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="timed training steps per method (default: 50 cuda, 20 cpu, 2 --quick)",
    )
    parser.add_argument(
        "--cifar-stem",
        action="store_true",
        help="ResNet-18 with the CIFAR stem (default: the ImageNet stem at 32 px)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: torch's, one per core); 1 avoids OpenMP "
        "oversubscription when other processes share the CPUs",
    )
    parser.add_argument(
        "--patience",
        type=_non_negative_float,
        default=None,
        metavar="SECONDS",
        help="most time spent re-timing cells and rounds during which other processes used the "
        "CPUs (default: 300, 0 with --quick; 0 disables re-timing; disturbed timings are "
        "marked * in the report either way)",
    )
    parser.add_argument(
        "--out", default="reports/benchmarks", help="output folder (default: reports/benchmarks)"
    )
    parser.set_defaults(handler=run_cli)


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """Resolve the defaults that depend on the device and on ``--quick``."""
    cuda = args.device.startswith("cuda")
    batch = args.batch_size or (8 if args.quick else 256 if cuda else 64)
    steps = args.steps or (2 if args.quick else 50 if cuda else 20)
    argv = getattr(args, "argv", None) or ["bench"]
    return BenchOptions(
        device=args.device,
        only=args.only,
        quick=args.quick,
        batch_size=batch,
        steps=steps,
        warmup_steps=1 if args.quick else 2,
        cifar_stem=args.cifar_stem,
        threads=args.threads,
        patience_s=(0.0 if args.quick else 300.0) if args.patience is None else args.patience,
        out=args.out,
        command="emim-bench " + shlex.join(argv),
    )


def run_cli(args: argparse.Namespace) -> int:
    """Handler of ``emim-bench bench``: run, print the ratio tables, write the report files."""
    options = options_from_args(args)
    result = run_benchmark(options)
    stem = report_stem(torch.device(options.device).type, options.quick, options.only)
    json_path, md_path = write_report(result, options.out, stem)
    print(render_tables(result))
    print(f"\nwrote {json_path} and {md_path} ({result['duration_s']:.0f} s)")
    return 0
