"""Timing a Lightning run's training steps: throughput and the data loader's share of step time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import emim_bench.compat  # noqa: F401  (adapts solo-learn and Lightning before they load)

import pytorch_lightning as pl


@dataclass(frozen=True)
class StepTime:
    """One training step: its epoch (0-based), the seconds before it (from the end of the
    previous step of the same epoch; None for an epoch's first step) and its own seconds."""

    epoch: int
    wait_s: float | None
    step_s: float


class StepTimer(pl.Callback):
    """Records a :class:`StepTime` per training step.

    A step's own time runs from ``on_train_batch_start`` to ``on_train_batch_end`` (forward,
    backward, optimizer step); the wait before it from the previous step's
    ``on_train_batch_end``: the loader's next batch, its copy to the device, and Lightning's
    per-step work between the two hooks (logging, a method's own ``on_train_batch_end``
    such as BYOL's momentum update), so the loader share it gives is an upper bound.
    ``sync`` (``torch.cuda.synchronize`` on a GPU) runs at both hooks and nowhere else, so the
    device has finished the step when its end is read and the wait is time the device sat idle.
    """

    def __init__(self, sync: Callable[[], None] = lambda: None):
        self.sync = sync
        self.steps: list[StepTime] = []
        self._start: float | None = None
        self._end: float | None = None

    def on_train_epoch_start(self, trainer, module):
        self._end = None  # the time between epochs (validation, kNN, checkpoint) is no wait

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.sync()
        end = time.perf_counter()
        wait = None if self._end is None else self._start - self._end
        self.steps.append(StepTime(trainer.current_epoch, wait, end - self._start))
        self._end = end


def summarise(steps: Sequence[StepTime], images_per_step: int) -> dict:
    """Throughput and loader share over the last epoch's steps that have a wait before them.

    Args:
        steps: :attr:`StepTimer.steps` of one run.
        images_per_step: source images a step trains on (batch size x processes).

    Returns:
        ``{"epoch"`` (1-based), ``"steps"`` (counted), ``"wait_s"``, ``"step_s"`` (seconds,
        summed), ``"images_per_s"`` (source images per second of wait + step time),
        ``"loader_share"`` (wait / (wait + step), in [0, 1])``}``.

    Raises:
        ValueError: no step of the last epoch follows another (an epoch of one step).
    """
    if not steps:
        raise ValueError("no training step was timed")
    last = max(s.epoch for s in steps)
    timed = [s for s in steps if s.epoch == last and s.wait_s is not None]
    if not timed:
        raise ValueError(f"epoch {last + 1} has a single step: no wait between steps to time")
    wait = sum(s.wait_s for s in timed)
    step = sum(s.step_s for s in timed)
    return {
        "epoch": last + 1,
        "steps": len(timed),
        "wait_s": wait,
        "step_s": step,
        "images_per_s": len(timed) * images_per_step / (wait + step),
        "loader_share": wait / (wait + step),
    }
