"""The resolved options of one benchmark run (no torch: the CLI builds them)."""

from __future__ import annotations

from dataclasses import dataclass


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
