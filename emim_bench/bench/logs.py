"""The bytes Lightning's CSV log writes over a run, simulated without training.

Lightning 1.9's ``CSVLogger`` keeps every logged row in memory and, at every flush
(each ``flush_logs_every_n_steps`` = 100 steps), rewrites ``metrics.csv`` whole: the
bytes written grow with the square of the run's length. This module replays the
logger's calls and rules (:func:`logged_rows`, :func:`csv_log_bytes`) and adds up the size
of every rewrite, without torch and without writing a file; a test checks the sum against
the real logger on a short run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

# What EMIM logs every logged step, and once per epoch (solo-learn's names).
STEP_METRICS = (
    "train_class_loss",
    "train_acc1",
    "train_acc5",
    "train_emim_loss",
    "train_mi_nats",
    "train_effective_rank",
)
EPOCH_METRICS = ("val_loss", "val_acc1", "val_acc5", *(f"{m}_epoch" for m in STEP_METRICS))
FLUSH_EVERY = 100  # Lightning's default flush_logs_every_n_steps


def logged_rows(
    epochs: int, steps_per_epoch: int, log_every_n_steps: int, seed: int = 0
) -> Iterator[tuple[dict, int]]:
    """The ``(metrics, step)`` calls a run makes to its logger: a row of step metrics when
    ``(step + 1) % log_every_n_steps == 0``, a row of epoch metrics at each epoch's end.

    Values are random floats (the logger stores ``tensor.item()``), so rows have the
    size of a real run's to a few bytes.
    """
    rng = random.Random(seed)
    for epoch in range(epochs):
        for batch in range(steps_per_epoch):
            step = epoch * steps_per_epoch + batch
            if (step + 1) % log_every_n_steps == 0:
                yield {m: rng.random() * 10 for m in STEP_METRICS} | {"epoch": epoch}, step
        yield {m: rng.random() * 10 for m in EPOCH_METRICS} | {"epoch": epoch}, step


def csv_log_bytes(
    epochs: int,
    steps_per_epoch: int,
    log_every_n_steps: int,
    flush_every: int = FLUSH_EVERY,
    seed: int = 0,
) -> dict[str, int]:
    """Bytes written to ``metrics.csv`` by Lightning's CSVLogger over one training run.

    Replays :func:`logged_rows` under the logger's rules: a row is kept in memory and, after
    a row whose ``(step + 1) % flush_every == 0`` and at the end, the whole file is written
    again. A row under the columns C takes the characters of its values plus ``len(C) - 1``
    commas and ``\r\n``; the header lists the columns seen so far.

    Args:
        epochs, steps_per_epoch: the run's length (e.g. 1000 and 195 for CIFAR at batch 256).
        log_every_n_steps: Lightning's logging interval (``trainer.log_every_n_steps``).
        flush_every: the logger's flush interval in steps.

    Returns:
        ``{"bytes_written", "final_file_bytes", "rows", "flushes"}``, sizes in bytes.
    """
    columns: dict[str, None] = {}  # the file's columns, in order of first appearance
    content = rows = written = flushes = 0

    def file_bytes() -> int:
        return len(",".join(columns)) + 2 + content + rows * (len(columns) + 1)

    for metrics, step in logged_rows(epochs, steps_per_epoch, log_every_n_steps, seed):
        values = metrics | {"step": step}
        columns.update(dict.fromkeys(values))
        content, rows = content + sum(len(str(v)) for v in values.values()), rows + 1
        if (step + 1) % flush_every == 0:
            written, flushes = written + file_bytes(), flushes + 1
    written, flushes = written + file_bytes(), flushes + 1  # the save at the end of training
    return {
        "bytes_written": written,
        "final_file_bytes": file_bytes(),
        "rows": rows,
        "flushes": flushes,
    }


def paper_cifar_log_volume(log_every: tuple[int, ...] = (1, 50)) -> list[dict]:
    """:func:`csv_log_bytes` of a 1000-epoch CIFAR run (50,000 images, batch 256, one GPU)
    for each logging interval."""
    steps_per_epoch = math.floor(50_000 / 256)
    return [
        {
            "epochs": 1000,
            "steps_per_epoch": steps_per_epoch,
            "log_every_n_steps": n,
            **csv_log_bytes(1000, steps_per_epoch, n),
        }
        for n in log_every
    ]
