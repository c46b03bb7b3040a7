"""One GPU per job for sweeps whose jobs run in local worker processes (Hydra's joblib launcher).

The sweep process lists the GPUs it may use (:func:`visible_gpus`) and hands the list to
every job through Hydra's ``hydra.job.env_set`` as :data:`SWEEP_GPUS_ENV`; a job that trains
on one GPU narrows ``CUDA_VISIBLE_DEVICES`` to one of them (:func:`pin_job_gpu`) before
torch touches CUDA. Without GPUs the list is empty and nothing is set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

SWEEP_GPUS_ENV = "EMIM_BENCH_SWEEP_GPUS"  # the sweep's GPUs, comma-separated, as a job sees them

_pinned: str | None = None  # the GPU this process was given at its first pinned job


def visible_gpus() -> tuple[str, ...]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries.

    The entries of ``CUDA_VISIBLE_DEVICES`` when it is set (indices or UUIDs, kept as
    written; empty when it is empty), else ``0 .. n-1`` for the n GPUs torch counts
    (through NVML where it can, which leaves this process's CUDA uninitialised).
    """
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return tuple(entry.strip() for entry in listed.split(",") if entry.strip())
    import torch

    return tuple(str(index) for index in range(torch.cuda.device_count()))


def sweep_gpus() -> tuple[str, ...]:
    """The sweep's GPUs as a job was told them (:data:`SWEEP_GPUS_ENV`); () when not told."""
    return tuple(gpu for gpu in os.environ.get(SWEEP_GPUS_ENV, "").split(",") if gpu)


def device_for_job(job_num: int, visible: Sequence[str]) -> str:
    """The GPU of job ``job_num``: the visible GPUs in turn, ``visible[job_num % len(visible)]``.

    Raises:
        ValueError: ``visible`` is empty, or ``job_num`` is negative.
    """
    if not visible:
        raise ValueError("no GPU to give a job: the list of visible GPUs is empty")
    if job_num < 0:
        raise ValueError(f"job numbers start at 0, got {job_num}")
    return visible[job_num % len(visible)]


def pin_job_gpu(job_num: int, visible: Sequence[str]) -> str:
    """Make one GPU this process's only visible GPU: job ``job_num``'s, or the one it has.

    CUDA reads ``CUDA_VISIBLE_DEVICES`` once per process, when it initialises, and joblib's
    loky workers run one job after another in the same process; so a worker keeps the GPU of
    its first job (:func:`device_for_job`) for every later one. That is also what keeps two
    jobs off one GPU: with ``n_jobs`` at most the number of GPUs, the first jobs start on
    different workers and GPUs, and a job only ever follows another on the same worker.

    Returns:
        The ``CUDA_VISIBLE_DEVICES`` value now set.

    Raises:
        ValueError: as :func:`device_for_job`.
    """
    global _pinned
    if _pinned is None:
        _pinned = device_for_job(job_num, visible)
    os.environ["CUDA_VISIBLE_DEVICES"] = _pinned
    return _pinned
