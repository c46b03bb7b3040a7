"""The launch of a sweep plan through Hydra's multirun: one job per run, any launcher plugin.

The plan (each run's own overrides) goes to Hydra as a YAML file read by the ``planned``
sweeper (``hydra_plugins/emim_bench_sweeper``); the launcher (basic, joblib, submitit)
composes each job's config from its overrides, and the job runs it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import DictConfig

from emim_bench import config
from emim_bench.run.cli import single_run_command
from emim_bench.sweep.devices import SWEEP_GPUS_ENV, pin_job_gpu, sweep_gpus, visible_gpus
from emim_bench.sweep.file import Sweep, override_value
from emim_bench.sweep.launchers import nowait_variant
from emim_bench.sweep.plan import PlannedRun

PLAN_FILE = "plan.yaml"

log = logging.getLogger(__name__)


def launch(
    sweep: Sweep,
    runs: list[PlannedRun],
    launcher: str | None = None,
    wait: bool = True,
    gpus: Sequence[str] | None = None,
) -> None:
    """Hand the runs to Hydra's multirun with the sweep's launcher plugin, one job per run.

    Writes ``<runs dir>/.hydra/plan.yaml`` (the jobs' overrides) and Hydra's own job
    folders beside it. Each job runs :func:`run_job` on its composed config; a run that
    fails writes its ``failed.json`` and the sweep goes on.

    Args:
        launcher: a launcher of :data:`~emim_bench.sweep.launchers.LAUNCHERS` instead of the
            file's; the file's ``launcher_options`` for it apply.
        wait: False submits the jobs and returns (submitit launchers only).
        gpus: the GPUs joblib's jobs are spread over (default :func:`visible_gpus`).

    Raises:
        LauncherOptionError: as :func:`hydra_argv`.
    """
    if not runs:
        return
    launcher = launcher or sweep.launcher
    if gpus is None:
        gpus = visible_gpus() if launcher == "joblib" else ()
    import hydra

    hydra_dir = runs[0].run_dir.parent / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    plan_file = hydra_dir / PLAN_FILE
    plan_file.write_text(yaml.safe_dump({"jobs": [list(r.overrides) for r in runs]}))
    argv = hydra_argv(sweep, launcher, plan_file, hydra_dir, wait, gpus)

    @hydra.main(
        config_path=str(config.CONFIG_DIR), config_name=config.CONFIG_NAME, version_base="1.3"
    )
    def app(cfg: DictConfig) -> int:
        return run_job(cfg)

    saved, sys.argv = sys.argv, [sys.argv[0], *argv]
    try:
        app()
    finally:
        sys.argv = saved


def hydra_argv(
    sweep: Sweep,
    launcher: str,
    plan_file: Path,
    hydra_dir: Path,
    wait: bool = True,
    gpus: Sequence[str] = (),
) -> list[str]:
    """The Hydra command line of a sweep's multirun.

    The launcher gets the sweep file's options for it (:meth:`Sweep.options_for`).
    ``wait=False`` selects the launcher's ``_nowait`` variant. Under joblib with ``gpus``,
    the jobs are told the GPUs in ``hydra.job.env_set`` (see :func:`run_job`).

    Raises:
        LauncherOptionError: ``wait=False`` with a launcher that runs the jobs in this
            process (basic, joblib).
    """
    options = [
        f"hydra.launcher.{k}={override_value(v)}" for k, v in sweep.options_for(launcher).items()
    ]
    env = []
    if launcher == "joblib" and gpus:
        env = [f"++hydra.job.env_set.{SWEEP_GPUS_ENV}={_quote(','.join(gpus))}"]
    return [
        "--multirun",
        "hydra/sweeper=planned",
        f"hydra.sweeper.plan_file={_quote(str(Path(plan_file).resolve()))}",
        f"hydra/launcher={launcher if wait else nowait_variant(launcher)}",
        *options,
        *env,
        f"hydra.sweep.dir={_quote(str(hydra_dir))}",
        "hydra.sweep.subdir=${hydra:job.num}",
        "hydra.job.chdir=false",
    ]


def run_job(cfg: DictConfig) -> int:
    """One sweep job: run the composed config; never raises, so the sweep goes on.

    A job of a joblib sweep on GPUs (:func:`~emim_bench.sweep.devices.sweep_gpus`) that
    trains on one GPU sees only its own (:func:`~emim_bench.sweep.devices.pin_job_gpu`, by
    Hydra's job number), set before the run starts CUDA; its Hydra job log says which.

    Returns:
        The exit code of :func:`emim_bench.run.pretrain.run_or_report` (0 done, 1 failed,
        2 a configuration or data error).
    """
    from hydra.core.hydra_config import HydraConfig

    gpus = sweep_gpus()
    if gpus and cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == 1:
        num = HydraConfig.get().job.num
        log.info(f"job {num}: CUDA_VISIBLE_DEVICES={pin_job_gpu(num, gpus)}")
    from emim_bench.run.pretrain import run_or_report

    try:
        config.check_values(cfg)
        with single_run_command():
            return run_or_report(cfg)
    except Exception as error:  # recorded in failed.json by the run; the sweep goes on
        print(f"emim-bench sweep: run failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


def _quote(text: str) -> str:
    """``text`` as a single-quoted Hydra override value."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
