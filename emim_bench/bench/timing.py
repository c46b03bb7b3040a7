"""Timing a call: warm-up, adaptive repeats, device synchronisation, other processes' CPU load."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


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


def synchronizer(device: torch.device) -> Callable[[], None]:
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
    sync = synchronizer(torch.device(device))
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


def busy(other_cpus: float | None) -> bool:
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
            if not busy(other.cpus):
                return

    def retry(self, other_cpus: float | None, spent_s: float) -> bool:
        """After work that took ``spent_s`` seconds: redo it? (It was disturbed, patience left.)"""
        if not busy(other_cpus) or self.left_s <= 0:
            return False
        self.left_s -= spent_s
        self.wait_for_quiet()
        return True
