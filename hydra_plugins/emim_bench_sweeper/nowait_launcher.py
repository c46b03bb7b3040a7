"""Submitit launchers that submit a sweep's jobs and return without waiting for them.

hydra-submitit-launcher's launchers submit one job per run and then wait for every result
(``job.results()``), so the command that submitted them lasts as long as the longest run.
``submitit_slurm_nowait`` and ``submitit_local_nowait`` take the same options and submit
the same jobs: the launcher object is each job's callable, so a job interrupted by its time
limit is checkpointed and requeued through the launcher's ``checkpoint`` as before. Only the
wait is left out; each run records its outcome in its own run directory, which
``emim-bench report`` reads later.

Selected by ``emim-bench sweep --no-wait``. It lives in ``hydra_plugins`` because Hydra
instantiates plugins from that package only.
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import (
    BaseQueueConf,
    LocalQueueConf,
    SlurmQueueConf,
)
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

_INIT_KEYS = ("submitit_folder", "max_num_timeout")  # executor arguments, not job parameters


class _SubmitOnly:
    """``launch`` of hydra-submitit-launcher 1.2's ``BaseSubmititLauncher``, ending at the
    submission: the same executor, parameters and job arguments, no ``job.results()``."""

    _EXECUTOR: str
    params: dict
    config: Any

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Submit one job per override list and return at once.

        Returns:
            One ``JobReturn`` per job with status ``UNKNOWN``: the jobs may not have started.
        """
        import submitit

        assert self.config is not None
        init = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in shared else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in _INIT_KEYS
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        nums = list(range(initial_job_idx, initial_job_idx + len(job_overrides)))
        jobs = executor.map_array(
            self,
            [list(overrides) for overrides in job_overrides],
            ["hydra.sweep.dir"] * len(nums),
            nums,
            [f"job_id_for_{num}" for num in nums],
            [Singleton.get_state()] * len(nums),
        )
        for num, overrides, job in zip(nums, job_overrides, jobs):
            log.info(f"\t#{num} : job {job.job_id} : {' '.join(filter_overrides(overrides))}")
        return [JobReturn(overrides=list(o), status=JobStatus.UNKNOWN) for o in job_overrides]


class SlurmNoWaitLauncher(_SubmitOnly, SlurmLauncher):
    """``submitit_slurm`` without the wait."""


class LocalNoWaitLauncher(_SubmitOnly, LocalLauncher):
    """``submitit_local`` without the wait: each job's controller process (which restarts
    a requeued job) goes on after the command that started it has returned."""


@dataclass
class SlurmNoWaitConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.emim_bench_sweeper.nowait_launcher.SlurmNoWaitLauncher"


@dataclass
class LocalNoWaitConf(LocalQueueConf):
    _target_: str = "hydra_plugins.emim_bench_sweeper.nowait_launcher.LocalNoWaitLauncher"


def _store(name: str, node: type) -> None:
    ConfigStore.instance().store(
        group="hydra/launcher", name=name, node=node, provider="emim-bench"
    )


_store("submitit_slurm_nowait", SlurmNoWaitConf)
_store("submitit_local_nowait", LocalNoWaitConf)
