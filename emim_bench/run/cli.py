"""``emim-bench pretrain [HYDRA OVERRIDES]``: argument handling only; the run is imported lazily."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from omegaconf import DictConfig

from emim_bench import config

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
    from emim_bench.run.pretrain import run_or_report

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


def _hydra_main(argv: list[str]) -> int:
    """Hand the command line to Hydra's own entry point (``--cfg``, ``--info``, ``--multirun``)."""
    import hydra

    from emim_bench.run.pretrain import run_or_report

    @hydra.main(
        config_path=str(config.CONFIG_DIR), config_name=config.CONFIG_NAME, version_base="1.3"
    )
    def app(cfg: DictConfig) -> None:
        with single_run_command():
            code = run_or_report(cfg)
        if code:
            raise SystemExit(code)

    saved, sys.argv = sys.argv, [sys.argv[0], *argv]
    try:
        app()
    finally:
        sys.argv = saved
    return 0


@contextlib.contextmanager
def single_run_command() -> Iterator[None]:
    """Inside a Hydra job: ``sys.argv`` is ``<program> pretrain <the job's overrides>`` for the
    duration of the block.

    Lightning starts the other DDP ranks by running the process's command line again (with
    ``hydra.run.dir`` and ``hydra.job.name`` appended); for a job of a sweep or a multirun
    that command must be the one run's, not the whole sweep's.
    """
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task)
    saved, sys.argv = sys.argv, [sys.argv[0], "pretrain", *overrides]
    try:
        yield
    finally:
        sys.argv = saved


def register_evaluate(subparsers) -> None:
    """Add the ``evaluate`` subcommand to the ``emim-bench`` parser."""
    parser = subparsers.add_parser(
        "evaluate",
        help="kNN and linear probe of any checkpoint, on any dataset (eval-<data>.json)",
        description="Evaluate the backbone of a run directory, one of our checkpoints, or a "
        "checkpoint of solo-learn's own main_pretrain.py (backbone under encoder. or "
        "backbone.). A run directory's config.yaml is the starting config; overrides change "
        "the dataset (data=cifar100), the backbone of a bare checkpoint (backbone=resnet50) "
        "or the device (trainer=gpu). Writes eval-<data>.json beside the checkpoint; "
        "results.json is left alone.",
    )
    parser.add_argument("path", metavar="PATH", help="run directory or .ckpt file")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data=cifar100")
    parser.set_defaults(
        handler=_evaluate_command,
        accepts_extra=lambda extra: all("=" in x and not x.startswith("-") for x in extra),
    )


def _evaluate_command(args) -> int:
    from emim_bench import data
    from emim_bench.run.checkpoint import CheckpointLoadError, evaluate_path
    from emim_bench.run.results import headline

    try:
        target, result = evaluate_path(args.path, args.overrides)
    except (CheckpointLoadError, config.ConfigError, data.DatasetNotFoundError) as error:
        print(f"emim-bench evaluate: error: {error}", file=sys.stderr)
        return 2
    print(f"{result['dataset']}: {headline(result['metrics'])}; wrote {target}")
    return 0
