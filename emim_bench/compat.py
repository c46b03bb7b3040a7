"""The one place where solo-learn 1.0.2 is adapted to today's torch and Lightning.

solo-learn's only PyPI release (1.0.2, 2021) was written for torch 1.9 and
pytorch-lightning 1.4. emim-bench runs it on torch 2.14 and Lightning 1.9.5
(see README, "Setup"). Everything needed for that lives here, applied once by
:func:`apply` when this module is first imported. Every module of emim-bench that imports
solo-learn or Lightning imports ``emim_bench.compat`` first (ruff's isort keeps it there):

1. :func:`silence_known_warnings` -- third-party deprecation warnings that are
   expected under this stack and say nothing to a user of emim-bench.
2. :func:`patch_momentum_hook` -- BYOL and every other ``BaseMomentumMethod``
   crash at the end of the first training batch without it.
3. :func:`patch_checkpoint_loading` -- loading a checkpoint whose
   hyperparameters hold config objects fails under torch's ``weights_only``
   default without it.
4. :func:`patch_argparse_setup` -- solo-learn's own argparse pretraining
   pipeline crashes on Lightning 1.9's ``accumulate_grad_batches=None`` default.
5. :func:`patch_dino_gradient_clipping` -- DINO crashes at its first training
   step without it (its ``clip_gradients`` shadows Lightning's).
6. :func:`patch_whitening_cholesky` -- W-MSE crashes at its first forward pass
   in training without it (``torch.cholesky`` is gone).
7. :func:`patch_dino_teacher_schedule` -- DINO crashes in any run shorter than its
   teacher-temperature warm-up (50 epochs) without it.
8. :func:`patch_deepcluster_first_epoch` -- DeepCluster V2's epoch 0 (no cluster
   assignments yet) without it: a NaN loss, which stops the finite-loss guard, and, under
   Adam, weight decay alone moving every backbone weight by about the learning rate.
9. :func:`keep_freed_memory` -- not a solo-learn matter but the platform's:
   without it, CPU training steps run up to 40x slower on virtual machines.

Each patch is idempotent and has a test in ``tests/test_compat.py`` (7 and 8: in
``tests/test_zoo.py``) that fails without it. Patches 2 and 4 to 8 each replace one
function of one solo-learn class or module and keep the original as ``__wrapped__`` (8 also
gives DeepCluster V2 the ``on_after_backward`` hook it lacks); only 3 changes Lightning
itself, because there it is Lightning, not solo-learn, that calls ``torch.load``.

What is deliberately not here: solo-learn's own tests (the installed
top-level ``tests`` package) also pass the ``Trainer(checkpoint_callback=...)``
argument that Lightning 1.7 removed. Only that test code passes it, never
solo-learn's library, so it is translated by the pytest plugin that runs
solo-learn's suite (``tests/solo_suite_plugin.py``), not by a patch of
Lightning's ``Trainer`` for every program that imports emim-bench.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import numbers
import warnings
from pathlib import Path
from typing import Any

SOLO_LEARN_VERSION = "1.0.2"

# (category, module regex, message regex) of warnings that the pinned stack raises
# while training. Each is a known, harmless deprecation or advice we act on in config.
_KNOWN_RUNTIME_WARNINGS: list[tuple[type[Warning], str, str]] = [
    # Lightning 1.9's checkpoint code calls torch APIs that torch 2.x deprecates.
    (FutureWarning, r"(pytorch_lightning|lightning_fabric)(\..*)?", r".*"),
    (DeprecationWarning, r"(pytorch_lightning|lightning_fabric|torchmetrics)(\..*)?", r".*"),
    # Lightning suggests more DataLoader workers on every run; the config chooses them.
    (UserWarning, r"pytorch_lightning(\..*)?", r".*does not have many workers.*"),
    # lightning-bolts' warmup-cosine scheduler (used by solo) calls get_lr() directly.
    (UserWarning, r"torch\.optim\.lr_scheduler", r".*get_last_lr\(\).*"),
]


def silence_known_warnings() -> None:
    """Silence the known third-party warnings of the pinned stack, and only those.

    The imports of pytorch-lightning 1.9, lightning-bolts 0.7 and solo-learn
    1.0.2 raise a burst of deprecation notices (pkg_resources namespace
    packages, numpy aliases, "under review" features, torch.cuda.amp) that say
    nothing to a user of emim-bench, so they are imported here once with
    warnings suppressed. Afterwards only the categories listed in
    ``_KNOWN_RUNTIME_WARNINGS`` and lightning-bolts' ``UnderReviewWarning`` are
    ignored; warnings from any other module, emim-bench's own included, still show.
    """
    # record=True collects what is raised instead of printing it; this also covers
    # lightning-bolts, which installs its own "once" filters while importing.
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        import pl_bolts.optimizers.lr_scheduler  # noqa: F401
        import pytorch_lightning  # noqa: F401
        import solo.methods  # noqa: F401
        from pl_bolts.utils.stability import UnderReviewWarning

    warnings.filterwarnings("ignore", category=UnderReviewWarning)
    for category, module, message in _KNOWN_RUNTIME_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def check_solo_learn() -> None:
    """Fail early, with the fix, when solo-learn is missing or not 1.0.2.

    Raises:
        ImportError: solo-learn is not installed, or another version is.
    """
    try:
        version = importlib.metadata.version("solo-learn")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            "solo-learn is not installed. emim-bench needs solo-learn=="
            f"{SOLO_LEARN_VERSION}, installed without its stale pins: run `make setup`, or "
            f"`pip install --no-deps solo-learn=={SOLO_LEARN_VERSION}` in this environment."
        ) from None
    if version != SOLO_LEARN_VERSION:
        raise ImportError(
            f"emim-bench is adapted to solo-learn=={SOLO_LEARN_VERSION}, found {version}. "
            f"Run `pip install --no-deps solo-learn=={SOLO_LEARN_VERSION}` (or `make setup`)."
        )


def patch_momentum_hook() -> None:
    """Give ``BaseMomentumMethod.on_train_batch_end`` a default ``dataloader_idx=0``.

    Without it: Lightning 1.9 calls ``on_train_batch_end(outputs, batch,
    batch_idx)``, solo-learn 1.0.2 declares a required ``dataloader_idx``, and
    BYOL (any momentum method) raises ``TypeError`` after its first batch, so the
    EMA of the momentum (target) network never runs.
    """
    from solo.methods.base import BaseMomentumMethod

    original = BaseMomentumMethod.on_train_batch_end
    if getattr(original, "_emim_bench_patched", False):
        return

    @functools.wraps(original)
    def on_train_batch_end(self, outputs, batch, batch_idx, dataloader_idx: int = 0):
        return original(self, outputs, batch, batch_idx, dataloader_idx)

    on_train_batch_end._emim_bench_patched = True  # type: ignore[attr-defined]
    BaseMomentumMethod.on_train_batch_end = on_train_batch_end


def _load_trusted_checkpoint(path_or_url: Any, map_location: Any = None) -> Any:
    """Lightning 1.9's checkpoint loader, with ``weights_only=False`` passed to torch.load."""
    import torch
    from lightning_fabric.utilities.cloud_io import get_filesystem

    if not isinstance(path_or_url, (str, Path)):  # a BytesIO or other file object
        return torch.load(path_or_url, map_location=map_location, weights_only=False)
    if str(path_or_url).startswith("http"):
        return torch.hub.load_state_dict_from_url(
            str(path_or_url), map_location=map_location, weights_only=False
        )
    with get_filesystem(path_or_url).open(path_or_url, "rb") as f:
        return torch.load(f, map_location=map_location, weights_only=False)


def patch_checkpoint_loading() -> None:
    """Make Lightning 1.9 load its own checkpoints under torch >= 2.6.

    Without it: torch >= 2.6 defaults ``torch.load`` to ``weights_only=True``,
    Lightning 1.9 does not pass the argument, and a checkpoint whose saved
    hyperparameters hold anything but plain tensors and builtins (an OmegaConf
    node from a Hydra config, the ``type`` Lightning records beside it, a
    ``pathlib.Path``) fails to load -- both in ``load_from_checkpoint`` and
    when resuming with ``Trainer.fit(ckpt_path=...)``. Checkpoints are
    pickles: load only those you wrote or trust, as with any Lightning release.
    """
    import lightning_fabric.plugins.io.torch_io as torch_io
    import lightning_fabric.utilities.cloud_io as fabric_cloud_io
    import pytorch_lightning.core.saving as saving
    import pytorch_lightning.utilities.cloud_io as pl_cloud_io

    # Lightning imports the loader by name in four modules; rebind each.
    fabric_cloud_io._load = _load_trusted_checkpoint
    torch_io.pl_load = _load_trusted_checkpoint
    saving.pl_load = _load_trusted_checkpoint
    pl_cloud_io.new_load = _load_trusted_checkpoint


def patch_argparse_setup() -> None:
    """Treat Lightning 1.9's ``--accumulate_grad_batches`` default (None) as 1 in solo's pipeline.

    Without it: Lightning 1.4's argparse default was 1, Lightning 1.9's is
    None, and ``BaseMethod.__init__`` multiplies the learning rate by it, so a
    method built by ``solo.args.setup.parse_args_pretrain`` (solo's
    ``main_pretrain.py`` route) raises ``TypeError`` unless the flag is given.
    """
    import solo.args.setup as setup

    original = setup.additional_setup_pretrain
    if getattr(original, "_emim_bench_patched", False):
        return

    @functools.wraps(original)
    def additional_setup_pretrain(args):
        if getattr(args, "accumulate_grad_batches", 1) is None:
            args.accumulate_grad_batches = 1
        return original(args)

    additional_setup_pretrain._emim_bench_patched = True  # type: ignore[attr-defined]
    setup.additional_setup_pretrain = additional_setup_pretrain


def patch_dino_gradient_clipping() -> None:
    """Let ``DINO.clip_gradients`` serve both solo-learn's call and Lightning 1.9's.

    Without it: solo-learn 1.0.2's DINO defines ``clip_gradients(clip)`` (each
    backbone parameter's gradient rescaled to an L2 norm of at most ``clip``,
    called from its ``on_after_backward`` when ``clip_grad > 0``), which
    shadows ``LightningModule.clip_gradients(optimizer, gradient_clip_val=None,
    gradient_clip_algorithm=None)``. Lightning >= 1.5 calls the latter after
    every backward pass (through ``configure_gradient_clipping``), whether or
    not ``Trainer(gradient_clip_val=...)`` is set, so DINO raised
    ``TypeError`` at its first training step.

    The patched method dispatches on its first argument: a number (solo's
    ``clip``, positional or by name) runs DINO's per-parameter clipping as
    before; anything else (an optimizer) runs Lightning's, which clips all the
    optimizer's parameters together to ``Trainer(gradient_clip_val)`` and is a
    no-op when that is unset. Only DINO is touched; Lightning's own method is
    not.
    """
    from pytorch_lightning import LightningModule
    from solo.methods.dino import DINO

    original = DINO.clip_gradients
    if getattr(original, "_emim_bench_patched", False):
        return

    @functools.wraps(original)
    def clip_gradients(self, *args, **kwargs):
        clip = kwargs["clip"] if "clip" in kwargs else (args[0] if args else None)
        if isinstance(clip, numbers.Real):
            return original(self, *args, **kwargs)
        return LightningModule.clip_gradients(self, *args, **kwargs)

    clip_gradients._emim_bench_patched = True  # type: ignore[attr-defined]
    DINO.clip_gradients = clip_gradients


def patch_whitening_cholesky() -> None:
    """Whiten W-MSE's embeddings with ``torch.linalg`` instead of the removed ``torch.cholesky``.

    Without it: ``solo.utils.whitening.Whitening2d.forward`` calls
    ``torch.cholesky``, which torch 2.14 keeps only as a stub that raises
    ``RuntimeError``, so W-MSE fails at its first training step (and
    ``torch.triangular_solve`` beside it warns that it is deprecated).

    The replacement computes what solo-learn's does, with the same argument
    and output, shape ``(N, D)`` with ``D = output_dim``: centre the batch,
    take its unbiased covariance ``C = Xc^T Xc / (N - 1)``, shrink it to
    ``S = (1 - eps) C + eps I``, factor ``S = L L^T`` with ``L`` lower
    triangular (``torch.cholesky``'s default ``upper=False`` is
    ``torch.linalg.cholesky``), and return ``Xc L^{-T}``, whose covariance is
    ``L^{-1} C L^{-T}`` -- the identity when ``eps = 0``. Under CUDA autocast
    it runs in float32, as solo-learn's ``custom_fwd(cast_inputs=float32)``
    does. A covariance that is not positive definite (``N <= D`` with
    ``eps = 0``, or a collapsed batch) raises ``torch.linalg.LinAlgError``
    where solo-learn's raised ``RuntimeError`` (of which it is a subclass).

    Only ``Whitening2d.forward`` is replaced; ``torch.cholesky`` itself is not
    brought back for other code.
    """
    import torch
    from solo.utils.whitening import Whitening2d

    original = Whitening2d.forward
    if getattr(original, "_emim_bench_patched", False):
        return

    @functools.wraps(original)
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=0, keepdim=True)  # N x D
        cov = centred.T @ centred / (x.shape[0] - 1)  # D x D
        eye = torch.eye(self.output_dim, dtype=cov.dtype, device=cov.device)
        shrunk = (1 - self.eps) * cov + self.eps * eye
        lower = torch.linalg.cholesky(shrunk)  # shrunk = L L^T
        inv_lower = torch.linalg.solve_triangular(lower, eye, upper=False)  # L^{-1}
        return centred @ inv_lower.T  # N x D

    forward._emim_bench_patched = True  # type: ignore[attr-defined]
    Whitening2d.forward = forward


def patch_dino_teacher_schedule() -> None:
    """Let DINO train for fewer epochs than its teacher-temperature warm-up.

    Without it: ``DINOLoss`` builds its per-epoch teacher temperatures as a linear warm-up
    over ``warmup_teacher_temp_epochs`` (50 in the recipes) followed by
    ``num_epochs - warmup_teacher_temp_epochs`` constant values, which raises "negative
    dimensions are not allowed" for any run shorter than the warm-up (a 4-epoch CPU run).
    With it, a shorter run takes the first ``num_epochs`` temperatures of the warm-up: the
    ones a longer run has at the same epochs. Runs at least as long are unchanged.
    """
    from solo.losses.dino import DINOLoss

    original = DINOLoss.__init__
    if getattr(original, "_emim_bench_patched", False):
        return

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        num_epochs = kwargs["num_epochs"]
        warmup = kwargs["warmup_teacher_temp_epochs"]
        original(self, *args, **{**kwargs, "num_epochs": max(num_epochs, warmup)})
        self.teacher_temp_schedule = self.teacher_temp_schedule[:num_epochs]

    __init__._emim_bench_patched = True  # type: ignore[attr-defined]
    DINOLoss.__init__ = __init__


def patch_deepcluster_first_epoch() -> None:
    """Make DeepCluster V2's epoch 0, before its first clustering, train the online
    classifier alone, as solo-learn means it to.

    In epoch 0 there are no k-means assignments (every target is -1, which
    ``cross_entropy`` ignores), so the loss is a mean over nothing: NaN, with a zero
    gradient. Two things follow, each fixed here:

    - The NaN stops our finite-loss guard at the first step. A prototype layer with no
      assigned target now adds 0 (same zero gradient); any other batch gives the same value
      as before.
    - The backbone's and projector's gradients are zero, not absent, so the optimizer still
      steps them with weight decay as their only gradient. SGD then shrinks each weight by
      lr * wd per step (solo-learn's recipes: negligible), but Adam, whose L2 decay is part
      of the gradient it normalises, moves every weight by about the learning rate per step
      towards 0: at ``budget=cpu`` one epoch of that left ResNet-18's early convolutions at
      a third of their magnitude and kNN accuracy below the untrained floor. Their
      gradients are now dropped (set to ``None``) after each backward pass of epoch 0, so
      every optimizer leaves them as they are; the online classifier's are kept.
    """
    import solo.losses.deepclusterv2 as losses
    import solo.methods.deepclusterv2 as method
    import torch.nn.functional as F

    original = losses.deepclusterv2_loss_func
    if getattr(original, "_emim_bench_patched", False):
        return

    def on_after_backward(self) -> None:
        if self.current_epoch == 0:  # solo's on_train_epoch_start: no assignments yet
            for name, param in self.named_parameters():
                if not name.startswith("classifier."):
                    param.grad = None

    method.DeepClusterV2.on_after_backward = on_after_backward

    @functools.wraps(original)
    def deepclusterv2_loss_func(outputs, assignments, temperature: float = 0.1):
        # solo's mean over assigned targets, written as sum / max(count, 1): no host sync
        per_layer = []
        for scores, targets in zip(outputs, assignments):  # one prototype layer each
            targets = targets.repeat(scores.size(0)).to(scores.device, non_blocking=True)
            logits = scores.reshape(-1, scores.size(-1)) / temperature
            total = F.cross_entropy(logits, targets, ignore_index=-1, reduction="sum")
            per_layer.append(total / (targets >= 0).sum().clamp(min=1))
        return sum(per_layer) / len(per_layer)

    deepclusterv2_loss_func._emim_bench_patched = True  # type: ignore[attr-defined]
    losses.deepclusterv2_loss_func = deepclusterv2_loss_func
    method.deepclusterv2_loss_func = deepclusterv2_loss_func


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Make glibc keep freed large buffers instead of returning them to the OS.

    By default glibc serves buffers above a dynamic threshold with fresh
    ``mmap`` pages and unmaps them on free; torch allocates and frees tens of
    MB of activations every training step, so every step faults its memory in
    anew. On virtual machines a page fault is expensive: measured on 2 cores,
    ResNet-18 steps ran at 4-25 images/s for the first 2-7 steps of every
    process (and of every epoch after evaluation) against 180 images/s once
    warm. A fixed 32 MiB mmap threshold and a 2 GiB trim threshold -- what
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` would set -- give
    180 images/s from the first step. The cost: the process keeps up to 2 GiB
    of freed memory for reuse.

    Returns:
        True when applied; False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    )


def apply() -> None:
    """Apply every adaptation above (idempotent). Called when this module is imported.

    Raises:
        ImportError: from :func:`check_solo_learn`.
    """
    check_solo_learn()
    silence_known_warnings()
    patch_momentum_hook()
    patch_checkpoint_loading()
    patch_argparse_setup()
    patch_dino_gradient_clipping()
    patch_whitening_cholesky()
    patch_dino_teacher_schedule()
    patch_deepcluster_first_epoch()
    keep_freed_memory()


apply()
