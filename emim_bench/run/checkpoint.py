"""Evaluating any checkpoint: ours, a colleague's run directory, or solo-learn's own.

``emim-bench evaluate PATH [OVERRIDES]`` loads the backbone of a Lightning checkpoint
strictly (a backbone whose keys do not match is an error, never a random backbone), runs
the offline kNN and linear probe of :mod:`emim_bench.run.evaluation` on any dataset
choice, and writes ``eval-<data>.json`` beside the checkpoint; ``results.json`` is never
touched.
"""

from __future__ import annotations

from pathlib import Path

import emim_bench.compat  # noqa: F401  (adapts solo-learn and Lightning before they load)

import torch
from omegaconf import DictConfig, OmegaConf
from solo.methods import METHODS

from emim_bench import config, data
from emim_bench import methods as _methods  # noqa: F401  (EMIM and timm backbones registered)
from emim_bench.run.directory import CONFIG_FILE, LAST_CHECKPOINT, utc_now, write_json_atomic
from emim_bench.run.evaluation import EvalSets, offline_metrics
from emim_bench.run.results import versions
from emim_bench.run.trainer import method_kwargs

# Where a LightningModule keeps its backbone: solo-learn 1.0.2 (and so our runs) under
# ``encoder.``, later solo-learn versions under ``backbone.``.
BACKBONE_PREFIXES = ("encoder.", "backbone.")


class CheckpointLoadError(ValueError):
    """A checkpoint that cannot be evaluated; the message is one line that names why."""


def resolve(path: str | Path) -> tuple[Path, DictConfig | None]:
    """``(checkpoint file, the run's config or None)`` for a run directory or a checkpoint.

    A run directory gives its ``checkpoints/last.ckpt`` and its ``config.yaml``; a
    checkpoint inside a run directory (``<run>/checkpoints/x.ckpt``) gives that run's config.

    Raises:
        CheckpointLoadError: no such file, or a folder without ``checkpoints/last.ckpt``.
    """
    path = Path(path)
    if path.is_dir():
        checkpoint = path / LAST_CHECKPOINT
        if not checkpoint.is_file():
            raise CheckpointLoadError(f"{path} is a folder without {LAST_CHECKPOINT}")
        run = path
    elif path.is_file():
        checkpoint, run = path, path.parent.parent
    else:
        raise CheckpointLoadError(f"no such run directory or checkpoint: {path}")
    saved = run / CONFIG_FILE
    return checkpoint, OmegaConf.load(saved) if saved.is_file() else None


def backbone_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The backbone's tensors of a Lightning checkpoint, prefix removed, loaded on the CPU.

    Raises:
        CheckpointLoadError: unreadable file, no ``state_dict``, or no key under any of
            :data:`BACKBONE_PREFIXES`.
    """
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
        state = payload["state_dict"]
    except Exception as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise CheckpointLoadError(f"cannot read {checkpoint} ({reason})") from None
    for prefix in BACKBONE_PREFIXES:
        found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if found:
            return found
    first = ", ".join(list(state)[:3]) or "none"
    raise CheckpointLoadError(
        f"{checkpoint} holds no backbone: no key starts with {' or '.join(BACKBONE_PREFIXES)} "
        f"(first keys: {first})"
    )


def load_backbone(cfg: DictConfig, checkpoint: Path, num_classes: int) -> torch.nn.Module:
    """The configured backbone (as solo-learn builds it) with the checkpoint's weights.

    Raises:
        CheckpointLoadError: the checkpoint's backbone keys or shapes do not match the
            configured backbone; the message names the first missing and unexpected keys.
    """
    backbone = METHODS["base"](**method_kwargs(cfg, num_classes)).encoder
    state = backbone_state(checkpoint)
    missing = [k for k in backbone.state_dict() if k not in state]
    unexpected = [k for k in state if k not in backbone.state_dict()]
    if missing or unexpected:
        raise CheckpointLoadError(
            f"{checkpoint} does not fit backbone={cfg.backbone.name} "
            f"(backbone.cifar={cfg.backbone.get('cifar')}): {len(missing)} missing keys "
            f"(first: {missing[0] if missing else '-'}), {len(unexpected)} unexpected "
            f"(first: {unexpected[0] if unexpected else '-'}); pass the backbone it was "
            "trained with, e.g. backbone=resnet50 backbone.cifar=true"
        )
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as error:  # same keys, other shapes
        first = next((line.strip() for line in str(error).splitlines() if "size" in line), "")
        raise CheckpointLoadError(f"{checkpoint} does not fit the backbone: {first}") from None
    return backbone


def evaluate_path(path: str | Path, overrides: list[str]) -> tuple[Path, dict]:
    """Evaluate the backbone of a run directory or checkpoint; write ``eval-<data>.json``.

    The config is the run's ``config.yaml`` (when there is one) with ``overrides`` applied
    on top, e.g. ``data=cifar100`` for transfer; for a bare checkpoint, the default config
    with ``overrides`` (name its ``backbone``).

    Returns:
        ``(path of eval-<data>.json, its content)``: metrics in percent as in
        ``results.json`` (kNN for every k of ``eval.knn_k``, the linear probe).

    Raises:
        CheckpointLoadError, ConfigError, DatasetNotFoundError: with one-line messages.
    """
    checkpoint, saved = resolve(path)
    cfg = config.load(overrides) if saved is None else config.load_onto(saved, overrides)
    root = data.data_root(cfg.data_root)
    data.check_available(cfg.data, root)
    eval_sets = EvalSets(cfg, root)
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    backbone = load_backbone(cfg, checkpoint, eval_sets.num_classes).to(device)
    try:
        metrics = offline_metrics(cfg, backbone, eval_sets)
    finally:
        eval_sets.release_workers()
    result = {
        "checkpoint": str(checkpoint),
        "dataset": cfg.data.name,
        "backbone": cfg.backbone.name,
        "metrics": metrics,
        "knn": {"k": list(cfg.eval.knn_k), "temperature": cfg.eval.knn_temperature},
        "evaluated_utc": utc_now(),
        "versions": versions(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    out = checkpoint.parent.parent if saved is not None else checkpoint.parent
    target = out / f"eval-{cfg.data.name}.json"
    write_json_atomic(target, result)
    return target, result
