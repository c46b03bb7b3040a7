"""EMIM under DDP: the loss and gradients of 2 processes at step 0 against one process.

Two processes (NCCL on GPUs, gloo on the CPU) each take half of a fixed batch of real
images, wrap EMIM in ``DistributedDataParallel`` as Lightning does, and run one training
step's forward and backward; one process runs the whole batch. EMIM gathers both views over
the processes before its statistics (see :func:`emim_bench.losses.emim_loss_func`), so its
loss must be the one-process loss and the averaged gradients the one-process gradients.

BatchNorm layers are put in eval mode (their initial running statistics), so each image's
embedding does not depend on which process holds the rest of the batch: what is checked is
the loss's global batch, not BatchNorm's per-device batch (``trainer.sync_batchnorm``).
Computed in float32 with TF32 off, so the tolerances sit far above rounding and far below
what a per-process statistic would change.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from emim_bench import config, data
from emim_bench.gpu_check.plan import CheckPlan
from emim_bench.methods import build_method
from emim_bench.run.trainer import method_kwargs

WORLD = 2
LOSS_TOLERANCE = 1e-4  # |loss difference| / max(1, |loss|)
GRAD_TOLERANCE = 1e-3  # max |gradient difference| / max |gradient|
_LOGGED = "train_emim_loss"


class _TrainingStep(nn.Module):
    """A method whose forward is its ``training_step`` (as Lightning wraps it for DDP)."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, batch):
        return self.method.training_step(batch, 0)


def fixed_batch(cfg, root: Path, n: int) -> tuple:
    """A solo-learn batch ``(indexes, [view1, view2], targets)`` of the first ``n`` training
    images in the evaluation transform: view 1 as they are, view 2 flipped left to right
    (float32 (n, 3, H, W) each, on the CPU). No randomness: every process sees the same."""
    split = data.open_split(
        cfg.data, root, "train", data.eval_transform(cfg.data.kind, cfg.data.crop_size)
    )
    images, labels = zip(*(split[i] for i in range(n)))
    x = torch.stack(images)
    return torch.arange(n), [x, x.flip(-1)], torch.as_tensor(labels)


def _prepared(kwargs: dict, state: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """EMIM from ``kwargs`` with the weights ``state`` on ``device``, BatchNorm in eval mode,
    logging into the returned dict instead of a Trainer."""
    method = build_method("emim", **kwargs)
    method.load_state_dict(state)
    method = method.to(device).train()
    for module in method.modules():
        if isinstance(module, _BatchNorm):
            module.eval()
    logged: dict = {}

    def record(name_or_metrics, value=None, **_):
        metrics = name_or_metrics if value is None else {name_or_metrics: value}
        logged.update({k: v for k, v in metrics.items()})

    method.log, method.log_dict = record, record
    return method, logged


def _exact_float32() -> None:
    """Full float32 matrix products and convolutions (TF32 off) in this process."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _to(batch: tuple, device: torch.device, rows: slice) -> tuple:
    indexes, views, targets = batch
    return indexes[rows].to(device), [v[rows].to(device) for v in views], targets[rows].to(device)


def _step(method: nn.Module, logged: dict, batch: tuple, wrap) -> tuple[float, dict]:
    """One forward and backward of ``wrap(_TrainingStep(method))`` on ``batch``; the logged
    EMIM loss and the gradients (on the CPU)."""
    model = wrap(_TrainingStep(method))
    model(batch).backward()
    if _LOGGED not in logged:
        raise RuntimeError(f"EMIM logged no {_LOGGED} at step 0; logged: {sorted(logged)}")
    grads = {n: p.grad.detach().cpu() for n, p in method.named_parameters() if p.grad is not None}
    return float(torch.as_tensor(logged[_LOGGED]).detach()), grads


def _worker(rank, port, kwargs, state, batch, device_type, out_dir):  # pragma: no cover
    """One DDP process: half the batch, one step, its loss and gradients to ``rank<r>.pt``.

    Runs in a child process (covered by the tests through :func:`ddp_loss_check`)."""
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    if device_type == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        torch.set_num_threads(1)
        device = torch.device("cpu")
    dist.init_process_group(
        "nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=WORLD
    )
    try:
        _exact_float32()
        method, logged = _prepared(kwargs, state, device)
        n = len(batch[0]) // WORLD
        ids = [rank] if device_type == "cuda" else None
        loss, grads = _step(
            method,
            logged,
            _to(batch, device, slice(rank * n, (rank + 1) * n)),
            lambda m: nn.parallel.DistributedDataParallel(m, device_ids=ids),
        )
        torch.save({"loss": loss, "grads": grads}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_loss_check(plan: CheckPlan, root: Path) -> dict:
    """EMIM's step-0 loss and gradients on 2 DDP processes against one process.

    On CUDA it needs two GPUs (NCCL, a process each); on the CPU (``--cpu``) it runs two
    gloo processes. The batch is ``plan.ddp``'s ``batch_size`` per process, so the one
    process sees twice that.

    Returns:
        ``{"status"``: "passed", "failed" or "skipped", ``"reason"`` (skipped or failed),
        ``"backend"``, ``"batch_per_process"``, ``"loss_one_process"``,
        ``"loss_per_process"`` (list), ``"loss_difference"`` (largest |difference|, nats),
        ``"grad_difference"`` (largest |difference| over the largest |gradient|),
        ``"loss_tolerance"``, ``"grad_tolerance"``, ``"seconds"}``.
    """
    started = time.perf_counter()
    cuda = plan.mode == "cuda"
    backend = "nccl" if cuda else "gloo"
    if cuda and torch.cuda.device_count() < WORLD:
        reason = f"needs {WORLD} GPUs; {torch.cuda.device_count()} visible"
        return {"status": "skipped", "reason": reason, "backend": backend}
    if not dist.is_available():
        return {"status": "skipped", "reason": "torch.distributed is not available"}
    cfg = config.load(list(plan.ddp))
    n = cfg.batch_size
    kwargs = method_kwargs(cfg, num_classes=10, world_size=WORLD)
    batch = fixed_batch(cfg, data.data_root(cfg.data_root), WORLD * n)
    torch.manual_seed(cfg.seed)
    state = build_method("emim", **kwargs).state_dict()

    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    try:
        _exact_float32()
        method, logged = _prepared(kwargs, state, device)
        loss, grads = _step(method, logged, _to(batch, device, slice(None)), lambda m: m)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags

    # fork where CUDA is not involved (fast); CUDA cannot be forked once initialised.
    fork = not cuda and "fork" in multiprocessing.get_all_start_methods()
    with tempfile.TemporaryDirectory() as out_dir:
        context = mp.start_processes(
            _worker,
            args=(_free_port(), kwargs, state, batch, "cuda" if cuda else "cpu", out_dir),
            nprocs=WORLD,
            join=False,
            start_method="fork" if fork else "spawn",
        )
        deadline = time.monotonic() + plan.ddp_timeout_s
        try:
            while not context.join(timeout=1):
                if time.monotonic() > deadline:
                    for process in context.processes:
                        process.kill()
                    return _result(
                        "failed",
                        backend,
                        n,
                        started,
                        loss,
                        reason=(
                            f"the DDP processes did not finish within {plan.ddp_timeout_s:.0f} s"
                        ),
                    )
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as error:
            last = str(error).strip().splitlines()[-1]
            return _result("failed", backend, n, started, loss, reason=f"a process failed: {last}")
        ranks = [torch.load(Path(out_dir) / f"rank{r}.pt") for r in range(WORLD)]

    losses = [r["loss"] for r in ranks]
    loss_diff = max(abs(x - loss) for x in losses)
    scale = max(float(g.abs().max()) for g in grads.values())
    grad_diff = max(
        float((r["grads"][name] - g).abs().max()) for r in ranks for name, g in grads.items()
    ) / max(scale, 1e-12)
    passed = (
        all(math.isfinite(x) for x in [loss, *losses])
        and loss_diff <= LOSS_TOLERANCE * max(1.0, abs(loss))
        and grad_diff <= GRAD_TOLERANCE
    )
    return _result(
        "passed" if passed else "failed",
        backend,
        n,
        started,
        loss,
        losses=losses,
        loss_difference=loss_diff,
        grad_difference=grad_diff,
        reason=None if passed else "the processes' loss or gradients differ from one process's",
    )


def _result(status, backend, n, started, loss, reason=None, **measured) -> dict:
    return {
        "status": status,
        "reason": reason,
        "backend": backend,
        "batch_per_process": n,
        "loss_one_process": loss,
        "loss_per_process": measured.get("losses"),
        "loss_difference": measured.get("loss_difference"),
        "grad_difference": measured.get("grad_difference"),
        "loss_tolerance": LOSS_TOLERANCE,
        "grad_tolerance": GRAD_TOLERANCE,
        "seconds": time.perf_counter() - started,
    }
