"""A Hydra sweeper that launches a sweep plan: a list of jobs, each its own list of overrides.

Hydra's basic sweeper expands ``key=a,b`` into a cartesian product. An emim-bench sweep
launches only the runs of its grid that are not done yet, which is in general no product,
so ``emim-bench sweep`` writes the plan to a YAML file (``jobs: [[override, ...], ...]``)
and selects this sweeper with ``hydra/sweeper=planned hydra.sweeper.plan_file=PATH``.
Each job's overrides go to the launcher unchanged (basic, joblib, submitit), which composes
the job's config from them exactly as ``emim-bench pretrain OVERRIDES`` would.

It lives in ``hydra_plugins`` because Hydra instantiates plugins from that package only.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class PlannedSweeperConf:
    _target_: str = "hydra_plugins.emim_bench_sweeper.planned_sweeper.PlannedSweeper"
    plan_file: str = "???"


ConfigStore.instance().store(
    group="hydra/sweeper", name="planned", node=PlannedSweeperConf, provider="emim-bench"
)


def read_plan(path: str | Path) -> list[list[str]]:
    """The jobs of a plan file: one list of override strings per job.

    Raises:
        ValueError: the file does not hold ``jobs:`` as a list of lists of strings.
    """
    jobs = (yaml.safe_load(Path(path).read_text()) or {}).get("jobs")
    if not isinstance(jobs, list) or not all(isinstance(job, list) for job in jobs):
        raise ValueError(f"{path}: expected 'jobs:' as a list of override lists")
    return [[str(override) for override in job] for job in jobs]


class PlannedSweeper(Sweeper):
    """Launches the jobs of ``plan_file`` in one batch with the configured launcher."""

    def __init__(self, plan_file: str):
        self.plan_file = plan_file
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        """Launch the plan's jobs; ``arguments`` (the command line's task overrides) are
        not used: every job carries all of its own overrides."""
        assert self.config is not None and self.launcher is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        return self.launcher.launch(read_plan(self.plan_file), initial_job_idx=0)
