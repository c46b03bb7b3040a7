"""How a run uses its device: numeric precision, memory format, cuDNN autotuning, loader options.

:func:`device_settings` decides them from the trainer config (``trainer.*``) and the machine.
The Lightning Trainer (:func:`emim_bench.run.trainer.make_trainer`) and the training-step
benchmark (:mod:`emim_bench.bench.step`) both take them from it, so the benchmark times the
step the trainer runs. Light: torch and omegaconf only, no Lightning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from omegaconf import DictConfig

# The values trainer.precision accepts (as written in YAML or on the command line).
PRECISIONS = ("32", "16", "bf16", "auto")


def resolve_precision(value: int | str, accelerator: str) -> int | str:
    """Lightning 1.9's ``precision`` for the configured ``trainer.precision``.

    ``auto`` is ``"bf16"`` on a GPU that computes in bfloat16 natively (compute capability
    8.0 and later: A100, H100, ...), 16 on other GPUs (fp16 with a gradient scaler), and 32
    on the CPU. 32, 16 and "bf16" are kept (as the int 32 or 16, or "bf16"), except 16 on the
    CPU, which is "bf16" as Lightning makes it (CPU autocast has no fp16).

    Args:
        value: ``trainer.precision``: 32, 16, "bf16" or "auto" (32 and 16 also as strings).
        accelerator: ``trainer.accelerator``, "cpu" or "gpu".

    Raises:
        ValueError: a value not in :data:`PRECISIONS`.
    """
    text = str(value)
    if text not in PRECISIONS:
        raise ValueError(f"trainer.precision must be one of 32, 16, bf16, auto; got {value!r}")
    if text == "auto":
        if accelerator != "gpu":
            return 32
        return "bf16" if _cuda_bf16() else 16
    if text == "16" and accelerator != "gpu":
        return "bf16"
    return text if text == "bf16" else int(text)


def _cuda_bf16() -> bool:
    """Whether the current CUDA device computes in bfloat16 natively (False without CUDA)."""
    if not torch.cuda.is_available():
        return False
    return torch.cuda.is_bf16_supported(including_emulation=False)


@dataclass(frozen=True)
class DeviceSettings:
    """The resolved device settings of a run (see :func:`device_settings`)."""

    accelerator: str  # "cpu" or "gpu"
    precision: int | str  # Lightning's: 32, 16 or "bf16"
    channels_last: bool  # model weights and image batches in NHWC memory format
    cudnn_benchmark: bool  # torch.backends.cudnn.benchmark while training
    num_workers: int  # loader worker processes
    pin_memory: bool  # loader batches in page-locked host memory
    persistent_workers: bool  # loader workers kept between epochs and evaluations

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype Lightning's mixed precision autocasts the forward pass to (None at 32)."""
        return {16: torch.float16, "bf16": torch.bfloat16}.get(self.precision)

    @property
    def grad_scaler(self) -> bool:
        """Whether Lightning scales the loss (fp16 on a GPU: a ``GradScaler``)."""
        return self.precision == 16 and self.accelerator == "gpu"

    @property
    def memory_format(self) -> torch.memory_format:
        """``torch.channels_last`` or ``torch.contiguous_format``."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def loader_kwargs(self) -> dict[str, Any]:
        """``num_workers``, ``pin_memory`` and ``persistent_workers`` for a ``DataLoader``."""
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
        }

    def describe(self) -> dict[str, Any]:
        """The settings as plain JSON values (precision as text: "32", "16", "bf16")."""
        return {**asdict(self), "precision": str(self.precision)}


def loader_kwargs(trainer: DictConfig) -> dict[str, Any]:
    """``num_workers``, ``pin_memory`` and ``persistent_workers`` for every ``DataLoader`` of
    a run with the trainer config ``trainer``: memory is pinned on GPUs only, workers persist
    only where there are workers. Touches no CUDA state."""
    workers = int(trainer.num_workers)
    return {
        "num_workers": workers,
        "pin_memory": trainer.accelerator == "gpu" and bool(trainer.get("pin_memory", False)),
        "persistent_workers": bool(trainer.get("persistent_workers", True)) and workers > 0,
    }


def release_workers(loaders: Iterable[Any]) -> None:
    """Stop the worker processes that persistent DataLoaders keep alive between epochs.

    A loader with ``persistent_workers`` holds its iterator, and with it ``num_workers``
    processes, for as long as the loader lives, and Lightning's Trainer keeps a run's
    loaders referenced after ``fit``. A process that runs several runs (a sweep's basic
    launcher, ``gpu-check``) therefore gathered ``num_workers`` processes per loader per run:
    a CPU sweep kept 2 per finished run, and a GPU check of 5 runs at 8 workers took minutes
    to exit. Loaders without live workers, and objects that are not DataLoaders (None), are
    left as they are; calling it twice is harmless.
    """
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()  # torch's own shutdown: ends and joins the workers
            loader._iterator = None


def device_settings(trainer: DictConfig) -> DeviceSettings:
    """The device settings of the trainer config ``trainer`` (a run's ``cfg.trainer``).

    ``channels_last``, ``cudnn_benchmark`` and ``pin_memory`` apply on GPUs only and are off
    on the CPU whatever the config says; ``precision`` is resolved by
    :func:`resolve_precision`; the loader options are :func:`loader_kwargs`'. Keys missing
    from an older config take the defaults of ``trainer=cpu``, which compute what runs made
    before those keys existed computed.

    Raises:
        ValueError: an unknown ``trainer.precision``.
    """
    gpu = trainer.accelerator == "gpu"
    return DeviceSettings(
        accelerator=str(trainer.accelerator),
        precision=resolve_precision(trainer.precision, trainer.accelerator),
        channels_last=gpu and bool(trainer.get("channels_last", False)),
        cudnn_benchmark=gpu and bool(trainer.get("cudnn_benchmark", False)),
        **loader_kwargs(trainer),
    )


def channels_last_batch(batch: Any) -> Any:
    """``batch`` with every 4-D tensor (images, N x C x H x W) in channels-last memory format.

    Lists (what PyTorch's default collate makes of tuples, and solo-learn's list of views)
    are changed in place, so a Lightning hook that receives the batch can convert it; a
    tuple becomes a new tuple. Other values are returned as they are.
    """
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch
    if isinstance(batch, list):
        batch[:] = [channels_last_batch(item) for item in batch]
        return batch
    if isinstance(batch, tuple):
        return tuple(channels_last_batch(item) for item in batch)
    return batch
