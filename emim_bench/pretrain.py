"""Pretraining: one run from config to results.json (solo method, Lightning fit, evaluation)."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins import TorchCheckpointIO
from solo.methods import METHODS
from solo.methods.base import BaseMethod
from torch.utils.data import DataLoader, Dataset

from emim_bench import config, data, evaluate
from emim_bench.data import IndexedDataset


def build_method(name: str, **kwargs) -> BaseMethod:
    """Instantiate a method of solo-learn's registry (``solo.methods.METHODS``) by name.

    Args:
        name: registry key, e.g. "simclr", "byol", "barlow_twins", "vicreg", "emim".
        **kwargs: the method's constructor arguments (solo-learn's BaseMethod
            arguments plus the method's own, e.g. ``proj_hidden_dim``).

    Raises:
        ValueError: ``name`` is not registered; the message lists the valid names.
    """
    if name not in METHODS or name in ("base", "linear"):
        valid = sorted(k for k in METHODS if k not in ("base", "linear"))
        raise ValueError(f"unknown method {name!r}; choose one of {valid}")
    return METHODS[name](**kwargs)


def pretrain_loader(
    dataset: Dataset, batch_size: int, num_workers: int = 0, seed: int = 0
) -> DataLoader:
    """Shuffled loader of ``(index, [view1, view2], label)`` batches, dropping the last partial one.

    ``dataset`` returns ``(views, label)``; the index that solo-learn's
    ``training_step`` expects is added here.

    Shuffling uses its own generator seeded with ``seed``, so the batch order is
    reproducible. ``drop_last`` keeps every batch at ``batch_size``, which the
    batch statistics of Barlow Twins, VICReg and EMIM assume.
    """
    return DataLoader(
        IndexedDataset(dataset),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
    )


def fit(
    method: BaseMethod,
    loader: DataLoader,
    root_dir: str | Path,
    max_steps: int = -1,
    max_epochs: int | None = None,
    accelerator: str = "cpu",
    devices: int | str = 1,
    ckpt_path: str | Path | None = None,
    **trainer_kwargs,
) -> pl.Trainer:
    """Fit ``method`` on ``loader`` with a Lightning Trainer; checkpoints go under ``root_dir``.

    Args:
        max_steps: optimizer steps to stop after (-1: no limit).
        max_epochs: epochs to stop after (None: Lightning's default, 1000 epochs,
            unless ``max_steps`` stops first).
        ckpt_path: a Lightning checkpoint to resume from (weights, optimizer,
            scheduler and step count), or None to start fresh.
        **trainer_kwargs: passed to :class:`pytorch_lightning.Trainer` (logger,
            callbacks, precision, ...). By default no logger and no progress bar.

    Returns:
        The trainer after ``fit``, e.g. for ``trainer.global_step`` or
        ``trainer.checkpoint_callback.last_model_path``.
    """
    trainer_kwargs.setdefault("logger", False)
    trainer_kwargs.setdefault("enable_progress_bar", False)
    trainer_kwargs.setdefault("enable_model_summary", False)
    trainer = pl.Trainer(
        default_root_dir=str(root_dir),
        max_steps=max_steps,
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        **trainer_kwargs,
    )
    trainer.fit(method, loader, ckpt_path=None if ckpt_path is None else str(ckpt_path))
    return trainer


# ---------------------------------------------------------------------------------------
# One benchmark run: config -> solo method -> Lightning fit -> offline evaluation -> results.json
# ---------------------------------------------------------------------------------------

RESULTS_FILE = "results.json"
FAILED_FILE = "failed.json"
CURVE_FILE = "curve.csv"
LAST_CHECKPOINT = "checkpoints/last.ckpt"
# Keys that say where or how verbosely a run happens, not what it computes: left out of its hash.
_NOT_IDENTITY = (
    "force",
    "runs_root",
    "sweep",
    "data_root",
    "data.download",
    "logger",
    "progress_bar",
)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step."""


def run_id(cfg: DictConfig) -> str:
    """``<method>-<data>-<backbone>-s<seed>-<hash8>``: a pure function of the resolved config.

    The hash is the first 8 hex digits of the SHA-256 of the resolved config
    as sorted JSON, without the keys that only place, fetch or present the run
    (``runs_root``, ``sweep``, ``data_root``, ``data.download``, ``force``, ``logger``,
    ``progress_bar``).
    """
    identity = OmegaConf.to_container(cfg, resolve=True)
    for dotted in _NOT_IDENTITY:
        *parents, key = dotted.split(".")
        node = identity
        for parent in parents:
            node = node.get(parent, {})
        node.pop(key, None)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{cfg.method.name}-{cfg.data.name}-{cfg.backbone.name}-s{cfg.seed}-{digest}"


def run_dir(cfg: DictConfig) -> Path:
    """``<runs_root>/<sweep>/<run_id>``."""
    return Path(cfg.runs_root) / str(cfg.sweep) / run_id(cfg)


def method_kwargs(cfg: DictConfig, num_classes: int, world_size: int = 1) -> dict:
    """solo-learn constructor kwargs of the configured method.

    The learning rate of the method config is for a total batch of 256 and is
    scaled linearly by ``batch_size * world_size / 256``, as solo-learn does.
    """
    backbone_args = {
        k: cfg.backbone[k]
        for k in ("cifar", "zero_init_residual", "patch_size")
        if k in cfg.backbone
    }
    return dict(
        encoder=cfg.backbone.encoder,
        num_classes=num_classes,
        backbone_args=backbone_args,
        max_epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        optimizer=cfg.optim.optimizer,
        lars=cfg.optim.lars,
        eta_lars=cfg.optim.eta_lars,
        grad_clip_lars=cfg.optim.grad_clip_lars,
        exclude_bias_n_norm=cfg.optim.exclude_bias_n_norm,
        lr=cfg.method.lr * cfg.batch_size * world_size / 256,
        weight_decay=cfg.method.weight_decay,
        classifier_lr=cfg.optim.classifier_lr,
        accumulate_grad_batches=1,
        extra_optimizer_args={"momentum": cfg.optim.momentum}
        if cfg.optim.optimizer == "sgd"
        else {},
        scheduler=_scheduler(cfg),
        min_lr=cfg.optim.min_lr,
        warmup_start_lr=cfg.optim.warmup_start_lr,
        warmup_epochs=cfg.warmup_epochs,
        num_large_crops=2,
        num_small_crops=0,
        **OmegaConf.to_container(cfg.method.kwargs, resolve=True),
    )


def _scheduler(cfg: DictConfig) -> str:
    """solo-learn's scheduler name; "warmup_cosine" without warm-up epochs becomes "cosine".

    lightning-bolts' LinearWarmupCosineAnnealingLR (solo's "warmup_cosine") sets
    every learning rate to ``warmup_start_lr`` in epoch 0 and then updates it
    multiplicatively; with ``warmup_epochs=0`` and ``warmup_start_lr=0`` the
    learning rate therefore stays 0 for the whole run. torch's cosine schedule
    starts at the base learning rates instead.
    """
    if cfg.optim.scheduler == "warmup_cosine" and cfg.warmup_epochs == 0:
        return "cosine"
    return cfg.optim.scheduler


class _EvalSets:
    """The frozen-feature evaluation sets of a run: labelled train (kNN bank, probe) and test."""

    def __init__(self, cfg: DictConfig, root: Path):
        transform = data.eval_transform(cfg.data.kind, cfg.data.crop_size)
        train = data.open_split(cfg.data, root, "train", transform)
        test = data.open_split(cfg.data, root, "test", transform)
        self.train = data.balanced_subset_of(train, cfg.data.train_size, cfg.seed)
        self.test = data.balanced_subset_of(test, cfg.data.test_size, cfg.seed)
        self.batch_size, self.num_workers = cfg.eval.batch_size, cfg.trainer.num_workers

    def features(self, backbone: torch.nn.Module):
        """``(train_features, train_labels, test_features, test_labels)`` of ``backbone``."""
        train = evaluate.extract_features(backbone, self.train, self.batch_size, self.num_workers)
        test = evaluate.extract_features(backbone, self.test, self.batch_size, self.num_workers)
        return (*train, *test)


class _EpochCurve(pl.Callback):
    """Appends one row per epoch to ``curve.csv``: losses, online and kNN accuracy, wall time.

    ``wall_s`` is training time (validation included, this callback's kNN
    evaluation excluded) in seconds since the run started, across resumes.

    Runs before the checkpoint of the epoch is written, so a killed run
    repeats at most the last epoch (duplicate rows are resolved on reading,
    keeping the last).
    """

    def __init__(self, path: Path, eval_sets: _EvalSets, knn_every: int, knn_k: int, temperature):
        self.path, self.eval_sets = path, eval_sets
        self.knn_every, self.knn_k, self.temperature = knn_every, knn_k, temperature
        self.offset_s = float(read_curve(path)["wall_s"].iloc[-1]) if path.is_file() else 0.0

    def on_train_start(self, trainer, module):
        self.started, self.knn_s = time.perf_counter(), 0.0

    def on_train_epoch_end(self, trainer, module):
        epoch, tic = trainer.current_epoch, time.perf_counter()
        row = {"epoch": epoch + 1, "step": trainer.global_step}
        row["wall_s"] = self.offset_s + tic - self.started - self.knn_s
        for key, value in trainer.callback_metrics.items():
            if key.endswith("_epoch") or key.startswith("val_"):
                row[key.removesuffix("_epoch")] = float(value)
        if self.knn_every and (
            (epoch + 1) % self.knn_every == 0 or epoch + 1 == trainer.max_epochs
        ):
            feats = self.eval_sets.features(module.encoder)
            row["knn_acc1"], row["knn_acc5"] = evaluate.knn_accuracy(
                *feats, k=self.knn_k, temperature=self.temperature
            )
            self.knn_s += time.perf_counter() - tic
        new = not self.path.is_file()
        pd.DataFrame([row]).to_csv(self.path, mode="a", header=new, index=False)


def read_curve(path: Path) -> pd.DataFrame:
    """The per-epoch curve of a run, one row per epoch (the last row wins after a resume)."""
    curve = pd.read_csv(path)
    return curve.drop_duplicates("epoch", keep="last").reset_index(drop=True)


class _AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic: a temporary file, then a rename.

    Lightning 1.9 writes ``last.ckpt`` in place; a run killed during that write
    would leave a truncated checkpoint that cannot be resumed from.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        tmp = Path(f"{path}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


class _NonFiniteLossGuard(pl.Callback):
    """Stops training with :class:`NonFiniteLossError` at the first NaN/inf training loss.

    Checked before the backward pass, so the weights never take the bad step.
    """

    def on_before_backward(self, trainer, module, loss):
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at step {trainer.global_step + 1} "
                f"(epoch {trainer.current_epoch + 1}); lower the learning rate or check the data"
            )


def run(cfg: DictConfig) -> dict | None:
    """Pretrain one configured method, evaluate it offline and write its run directory.

    The run directory (:func:`run_dir`) receives ``config.yaml`` (resolved),
    ``checkpoints/last.ckpt``, ``logs/version_<n>/metrics.csv`` (Lightning's CSV log per start),
    ``curve.csv`` (one row per epoch) and, last and atomically,
    ``results.json``. A run with ``results.json`` is done and is not repeated
    unless ``force``; one with a checkpoint and no results resumes from it.

    Returns:
        The results dict, or the existing one when the run was already done.

    Raises:
        ConfigError: a GPU trainer without a visible GPU.
        DatasetNotFoundError: before any model is built.
        NonFiniteLossError: the loss became NaN/inf; ``failed.json`` names the
            step and the last good checkpoint is kept.
    """
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        raise config.ConfigError("trainer uses a GPU but none is visible; use trainer=cpu")
    root = data.data_root(cfg.data_root)
    data.check_available(cfg.data, root)
    out = run_dir(cfg)
    results_path = out / RESULTS_FILE
    if results_path.is_file() and not cfg.force:
        print(f"{run_id(cfg)}: already done, results in {results_path} (force=true to redo)")
        return json.loads(results_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    versions()  # read the commit now, while the checkout still holds the code being run
    (out / FAILED_FILE).unlink(missing_ok=True)
    if cfg.force:
        for stale in (results_path, out / CURVE_FILE, out / LAST_CHECKPOINT):
            stale.unlink(missing_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    started = _utc_now()
    try:
        results = _pretrain_and_evaluate(cfg, root, out)
    except Exception as error:
        _write_json(
            out / FAILED_FILE,
            {
                "status": "failed",
                "run_id": run_id(cfg),
                "error": f"{type(error).__name__}: {error}",
                "started_utc": started,
                "failed_utc": _utc_now(),
            },
        )
        raise
    results.update(started_utc=started, finished_utc=_utc_now())
    _write_json(results_path, results)
    print(f"{run_id(cfg)}: done ({_headline(results['metrics'])}), results in {results_path}")
    return results


def reset_peak_memory() -> None:
    """Start a new peak-memory window for this process (one run of a sweep).

    Runs of a sweep share one process under Hydra's basic launcher, so the lifetime
    peak (``getrusage``'s ``ru_maxrss``) would carry over from run to run. Resets
    Linux's peak resident set size (``VmHWM``, by writing 5 to ``/proc/self/clear_refs``)
    and torch's CUDA peak-allocation counters; a no-op where neither exists.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since :func:`reset_peak_memory`, in bytes.

    The window starts at the resident size of that moment, so memory an earlier run
    of the same process still holds (allocator caches) is counted: an upper bound.

    ``VmHWM`` from ``/proc/self/status`` on Linux; elsewhere the lifetime peak
    (``ru_maxrss``, KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _pretrain_and_evaluate(cfg: DictConfig, root: Path, out: Path) -> dict:
    reset_peak_memory()
    pl.seed_everything(cfg.seed, workers=True)
    eval_sets = _EvalSets(cfg, root)
    num_classes = cfg.data.num_classes or int(data.labels_of(eval_sets.train).max()) + 1
    trainer = _make_trainer(cfg, out, eval_sets)
    kwargs = method_kwargs(cfg, num_classes, trainer.world_size)
    train_s, steps = 0.0, 0
    if cfg.method.name == "random":
        method = METHODS["base"](**kwargs)  # an untrained backbone: the floor
    else:
        method = build_method(cfg.method.name, **kwargs)
        pretrain_set = data.balanced_subset_of(
            data.open_split(
                cfg.data,
                root,
                "pretrain",
                data.pretrain_transform(cfg.data.kind, cfg.method.augmentation, cfg.data.crop_size),
            ),
            cfg.data.train_size,
            cfg.seed,
        )
        loader = pretrain_loader(pretrain_set, cfg.batch_size, cfg.trainer.num_workers, cfg.seed)
        resume = out / LAST_CHECKPOINT
        start_step = _checkpoint_step(resume)
        tic = time.perf_counter()
        trainer.fit(
            method,
            loader,
            DataLoader(
                eval_sets.test, batch_size=cfg.eval.batch_size, num_workers=cfg.trainer.num_workers
            ),
            ckpt_path=str(resume) if resume.is_file() else None,
        )
        curve = next(c for c in trainer.callbacks if isinstance(c, _EpochCurve))
        train_s = time.perf_counter() - tic - curve.knn_s  # kNN monitoring is not training
        steps = trainer.global_step - start_step
    metrics = _offline_metrics(cfg, method.encoder.to(_device(trainer)), eval_sets, num_classes)
    if cfg.method.name != "random":
        metrics["online_acc1"] = _metric(trainer, "val_acc1")
        metrics["online_acc5"] = _metric(trainer, "val_acc5")
    return _results(cfg, trainer, metrics, train_s, steps, out)


def _make_trainer(cfg: DictConfig, out: Path, eval_sets: _EvalSets) -> pl.Trainer:
    callbacks = [
        _NonFiniteLossGuard(),
        _EpochCurve(
            out / CURVE_FILE,
            eval_sets,
            cfg.knn_every_n_epochs,
            cfg.eval.knn_k[0],
            cfg.eval.knn_temperature,
        ),
        ModelCheckpoint(
            dirpath=out / "checkpoints", save_last=True, save_top_k=0, save_on_train_epoch_end=True
        ),
    ]
    loggers = [CSVLogger(str(out), name="logs")]  # logs/version_<n>/metrics.csv, one per (re)start
    if cfg.logger == "tensorboard":
        loggers.append(TensorBoardLogger(str(out), name="tensorboard", version=""))
    elif cfg.logger == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        loggers.append(WandbLogger(save_dir=str(out), offline=True, name=run_id(cfg)))
    return pl.Trainer(
        default_root_dir=str(out),
        max_epochs=cfg.epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        precision=cfg.trainer.precision,
        strategy=cfg.trainer.strategy,
        logger=loggers,
        callbacks=callbacks,
        plugins=[_AtomicCheckpointIO()],
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )


def _offline_metrics(cfg, backbone, eval_sets: _EvalSets, num_classes: int) -> dict:
    feats = eval_sets.features(backbone)
    metrics = {}
    for k in cfg.eval.knn_k:
        acc1, acc5 = evaluate.knn_accuracy(*feats, k=k, temperature=cfg.eval.knn_temperature)
        metrics[f"knn_acc1_k{k}"], metrics[f"knn_acc5_k{k}"] = acc1, acc5
    metrics["linear_acc1"], metrics["linear_acc5"] = evaluate.linear_probe_accuracy(
        *feats, num_classes=num_classes, epochs=cfg.eval.linear_epochs, seed=cfg.seed
    )
    return metrics


def _results(cfg, trainer, metrics, train_s, steps, out) -> dict:
    images = steps * cfg.batch_size * trainer.world_size
    return {
        "status": "done",
        "run_id": run_id(cfg),
        "method": cfg.method.name,
        "dataset": cfg.data.name,
        "backbone": cfg.backbone.name,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "metrics": metrics,
        "knn": {"k": list(cfg.eval.knn_k), "temperature": cfg.eval.knn_temperature},
        # Training of this start (a resumed run counts the part after its checkpoint): seconds
        # in Trainer.fit without the kNN monitoring; source images (two views each) per second.
        "train": {
            "wall_time_s": train_s,
            "steps": steps,
            "images_per_s": images / train_s if train_s > 0 else None,
            "peak_rss_bytes": peak_rss_bytes(),  # of this run: see reset_peak_memory
            "peak_gpu_memory_bytes": (
                torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
            ),
        },
        "curve_file": CURVE_FILE if (out / CURVE_FILE).is_file() else None,
        "versions": versions(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    """Versions of the stack and the git commit of this checkout ("unknown" outside git).

    Read once per process, at the first run it starts: the runs of a sweep share
    one process, and a commit made while they train must not be credited with them.
    """
    import platform

    import solo
    import torchvision

    import emim_bench

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pytorch_lightning": pl.__version__,
        "solo_learn": getattr(solo, "__version__", "1.0.2"),
        "emim_bench": emim_bench.__version__,
        "git_commit": commit,
    }


def _headline(metrics: dict) -> str:
    """E.g. "kNN acc@1 41.2%, linear acc@1 44.0%, online acc@1 38.5%"."""
    names = {
        "knn_acc1_k20": "kNN acc@1",
        "linear_acc1": "linear acc@1",
        "online_acc1": "online acc@1",
    }
    return ", ".join(
        f"{name} {metrics[key]:.1f}%" for key, name in names.items() if metrics.get(key) is not None
    )


def _metric(trainer: pl.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


def _device(trainer: pl.Trainer) -> torch.device:
    return trainer.strategy.root_device


def _checkpoint_step(path: Path) -> int:
    if not path.is_file():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically: a temporary file in the same folder, then a rename."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# `emim-bench pretrain [HYDRA OVERRIDES]`
# ---------------------------------------------------------------------------------------

_HYDRA_FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p")


def register(subparsers) -> None:
    """Add the ``pretrain`` subcommand to the ``emim-bench`` parser."""
    groups = "\n".join(f"  {g:9s} {', '.join(config.choices(g))}" for g in config.GROUPS)
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain and evaluate one configured run",
        description="Pretrain one method, evaluate it offline, write its run directory.\n"
        f"Config groups (GROUP=CHOICE):\n{groups}\n"
        "Any key can be overridden (epochs=5 data.train_size=1000 seed=1); Hydra's --cfg job "
        "prints the composed config.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="Hydra overrides and flags")
    # Hydra's own flags (--cfg job, --info, --multirun ...) pass through to Hydra; the handler
    # reads the raw command line, since argparse would reorder flags and their values.
    parser.set_defaults(handler=_pretrain_command, accepts_extra=lambda extra: True)


def _pretrain_command(args) -> int:
    raw = args.argv[args.argv.index("pretrain") + 1 :]
    overrides, hydra_flags = _split_hydra_flags(raw)
    multirun = bool({"-m", "--multirun"} & set(hydra_flags))
    try:
        cfg = config.check_overrides(overrides) if multirun else config.load(overrides)
    except config.ConfigError as error:
        print(f"emim-bench pretrain: error: {error}", file=sys.stderr)
        return 2
    if hydra_flags:
        return _hydra_main(raw)
    return run_or_report(cfg)


def _split_hydra_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(overrides, hydra flags with their values)`` of a ``pretrain`` command line."""
    overrides, flags, expect_value = [], [], False
    for arg in argv:
        if expect_value:
            flags.append(arg)
            expect_value = False
        elif arg.startswith("-"):
            flags.append(arg)
            expect_value = arg in _HYDRA_FLAGS_WITH_VALUE
        else:
            overrides.append(arg)
    return overrides, flags


def run_or_report(cfg: DictConfig) -> int:
    """:func:`run`, turning the errors a user can fix into a one-line message and an exit code.

    Returns:
        0 on success; 2 for a missing GPU or dataset; 1 for a failed run (``failed.json`` says
        why).
    """
    try:
        run(cfg)
    except (config.ConfigError, data.DatasetNotFoundError) as error:
        print(f"emim-bench pretrain: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"emim-bench pretrain: run failed: {error}", file=sys.stderr)
        return 1
    return 0


def _hydra_main(argv: list[str]) -> int:
    """Hand the command line to Hydra's own entry point (``--cfg``, ``--info``, ``--multirun``)."""
    import hydra

    @hydra.main(
        config_path=str(config.CONFIG_DIR), config_name=config.CONFIG_NAME, version_base="1.3"
    )
    def app(cfg: DictConfig) -> None:
        code = run_or_report(cfg)
        if code:
            raise SystemExit(code)

    saved, sys.argv = sys.argv, ["emim-bench pretrain", *argv]
    try:
        app()
    finally:
        sys.argv = saved
    return 0
