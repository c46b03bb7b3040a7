"""One run from config to ``results.json``: solo-learn method, Lightning fit, offline evaluation."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import emim_bench.compat  # noqa: F401  (adapts solo-learn and Lightning before they load)

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from solo.methods import METHODS

from emim_bench import config, data
from emim_bench.methods import build_method
from emim_bench.run.device import loader_kwargs
from emim_bench.run.directory import (
    CONFIG_FILE,
    CURVE_FILE,
    FAILED_FILE,
    FEATURES_FILE,
    LAST_CHECKPOINT,
    RESULTS_FILE,
    Claim,
    RunClaimedError,
    is_rank_zero,
    last_curve_row,
    read_results,
    utc_now,
    write_features,
    write_json_atomic,
    write_text_atomic,
)
from emim_bench.run.evaluation import EvalSets, offline_metrics
from emim_bench.run.identity import run_dir, run_id
from emim_bench.run.results import (
    headline,
    reset_peak_memory,
    results_record,
    versions,
)
from emim_bench.run.trainer import (
    CheckpointError,
    EpochCurve,
    NonFiniteLossError,
    check_checkpoint,
    make_trainer,
    method_kwargs,
    pretrain_loader,
)


def run(cfg: DictConfig, callbacks: Sequence[pl.Callback] = ()) -> dict | None:
    """Pretrain one configured method, evaluate it offline and write its run directory.

    The run directory (:func:`run_dir`) receives ``config.yaml`` (resolved),
    ``checkpoints/last.ckpt``, ``logs/version_<n>/metrics.csv`` (Lightning's CSV log per start),
    ``curve.csv`` (one row per epoch) and, last and atomically, ``results.json``. A run with
    ``results.json`` is done and is not repeated unless ``force``; one with a checkpoint and
    no results resumes from it, wherever it was interrupted (an epoch, after the last
    checkpoint, the evaluation, the results). The run is claimed (:class:`Claim`) while it
    trains and evaluates.

    Under DDP every rank calls this; only rank 0 claims, writes and evaluates, the others
    train and return None. ``callbacks`` are added to the Trainer's own (a step timer, say).

    Returns:
        The results dict (the existing one when the run was already done); None on a rank
        other than 0.

    Raises:
        ConfigError: a GPU trainer without a visible GPU.
        DatasetNotFoundError: before any model is built.
        RunClaimedError: another live process holds the run.
        NonFiniteLossError: the loss became NaN/inf on any rank; ``failed.json`` names the
            step and the last good checkpoint is kept.
        CheckpointError: ``last.ckpt`` cannot be read (truncated or corrupt).
    """
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        raise config.ConfigError("trainer uses a GPU but none is visible; use trainer=cpu")
    root = data.data_root(cfg.data_root)
    data.check_available(cfg.data, root)
    out = run_dir(cfg)
    results_path = out / RESULTS_FILE
    done = read_results(out)
    if done is not None and not cfg.force:
        if is_rank_zero():
            print(f"{run_id(cfg)}: already done, results in {results_path} (force=true to redo)")
        return done
    if results_path.is_file() and is_rank_zero():
        print(f"{run_id(cfg)}: {results_path} is not valid JSON: evaluating again")
    if not is_rank_zero():
        return _pretrain_and_evaluate(cfg, root, out, callbacks)  # a DDP worker: trains only
    out.mkdir(parents=True, exist_ok=True)
    with Claim(out) as claim:
        if claim.taken_over:
            print(f"{run_id(cfg)}: taking over the claim of {claim.taken_over} (no longer running)")
        return _claimed_run(cfg, root, out, callbacks)


def _claimed_run(
    cfg: DictConfig, root: Path, out: Path, callbacks: Sequence[pl.Callback] = ()
) -> dict:
    """:func:`run` on rank 0 once the run is claimed: prepare, train, evaluate, write."""
    versions()  # read the commit now, while the checkout still holds the code being run
    results_path = out / RESULTS_FILE
    (out / FAILED_FILE).unlink(missing_ok=True)
    if cfg.force:
        for stale in (results_path, out / CURVE_FILE, out / LAST_CHECKPOINT):
            stale.unlink(missing_ok=True)
    write_text_atomic(out / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    started = utc_now()
    try:
        results = _pretrain_and_evaluate(cfg, root, out, callbacks)
    except Exception as error:
        write_json_atomic(
            out / FAILED_FILE,
            {
                "status": "failed",
                "run_id": run_id(cfg),
                "error": f"{type(error).__name__}: {error}",
                "started_utc": started,
                "failed_utc": utc_now(),
            },
        )
        raise
    results.update(started_utc=started, finished_utc=utc_now())
    write_json_atomic(results_path, results)
    print(f"{run_id(cfg)}: done ({headline(results['metrics'])}), results in {results_path}")
    return results


def _pretrain_and_evaluate(
    cfg: DictConfig, root: Path, out: Path, callbacks: Sequence[pl.Callback] = ()
) -> dict | None:
    reset_peak_memory()
    pl.seed_everything(cfg.seed, workers=True)
    eval_sets = EvalSets(cfg, root)
    trainer = make_trainer(cfg, out, eval_sets, callbacks)
    try:
        return _train_and_evaluate(cfg, root, out, eval_sets, trainer)
    finally:  # their persistent workers would outlive the run in this process
        eval_sets.release_workers()


def _train_and_evaluate(
    cfg: DictConfig, root: Path, out: Path, eval_sets: EvalSets, trainer: pl.Trainer
) -> dict | None:
    kwargs = method_kwargs(cfg, eval_sets.num_classes, trainer.world_size)
    if cfg.method.name == "random":
        method = METHODS["base"](**kwargs)  # an untrained backbone: the floor
    else:
        method = build_method(cfg.method.name, **kwargs)
        pretrain_set = data.training_subset(
            data.open_split(
                cfg.data,
                root,
                "pretrain",
                data.pretrain_transform(cfg.data.kind, cfg.method.augmentation, cfg.data.crop_size),
            ),
            eval_sets.val_indices,
            cfg.data.train_size,
            cfg.seed,
        )
        loader = pretrain_loader(
            pretrain_set, cfg.batch_size, seed=cfg.seed, **loader_kwargs(cfg.trainer)
        )
        resume = out / LAST_CHECKPOINT
        check_checkpoint(resume)
        trainer.fit(
            method,
            loader,
            eval_sets.loader("test"),  # the online probe's validation: the scored images
            ckpt_path=str(resume) if resume.is_file() else None,
        )
        if not trainer.is_global_zero:
            return None
    curve = next(c for c in trainer.callbacks if isinstance(c, EpochCurve))
    backbone = method.encoder.to(_device(trainer))
    feats = curve.final_features or eval_sets.features(backbone)
    metrics = offline_metrics(cfg, backbone, eval_sets, feats)
    write_features(out / FEATURES_FILE, *feats[2:])
    if cfg.method.name != "random":
        last = last_curve_row(out / CURVE_FILE)  # also right when fit had nothing left to do
        metrics["online_acc1"] = last.get("val_acc1")
        metrics["online_acc5"] = last.get("val_acc5")
    return results_record(cfg, trainer, metrics, out)


def _device(trainer: pl.Trainer) -> torch.device:
    return trainer.strategy.root_device


def run_or_report(cfg: DictConfig) -> int:
    """:func:`run`, turning the errors a user can fix into a one-line message and an exit code.

    Returns:
        0 on success; 2 for a missing GPU or dataset or a run directory that cannot be
        written; 1 for a failed run (``failed.json`` says
        why: a non-finite loss, an unreadable checkpoint) or one that another process holds.
    """
    try:
        run(cfg)
    except (config.ConfigError, data.DatasetNotFoundError) as error:
        print(f"emim-bench pretrain: error: {error}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, CheckpointError) as error:
        print(f"emim-bench pretrain: run failed: {error}", file=sys.stderr)
        return 1
    except RunClaimedError as error:
        print(f"emim-bench pretrain: {run_id(cfg)}: {error}: skipped", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. a runs_root that cannot be created or written
        print(f"emim-bench pretrain: error: {error} (check runs_root)", file=sys.stderr)
        return 2
    return 0
