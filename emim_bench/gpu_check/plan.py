"""What ``emim-bench gpu-check`` runs: the GPU check and its CPU rehearsal (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("emim", "simclr", "byol", "barlow_twins", "vicreg")
BUDGET_S = 480.0  # the check's budget on one GPU: 8 minutes


@dataclass(frozen=True)
class CheckPlan:
    """The sizes of one gpu-check mode.

    ``training`` are the overrides of every method's run (the method, ``runs_root`` and
    ``sweep`` are added per run); ``method_training`` adds overrides per method. ``ddp``
    composes the config of the 2-process EMIM check, whose batch is per process. ``bench``
    are :class:`emim_bench.bench.options.BenchOptions` fields besides the device and files.
    """

    mode: str  # "cuda" or "cpu"
    device: str  # the torch device the runs train on
    training: tuple[str, ...]
    method_training: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ddp: tuple[str, ...] = ()
    bench: dict = field(default_factory=dict)
    ddp_timeout_s: float = 180.0
    budget_s: float = BUDGET_S

    @property
    def stem(self) -> str:
        """File stem of the check's report: ``gpu_check`` (cuda) or ``gpu_check-cpu``."""
        return "gpu_check" if self.mode == "cuda" else "gpu_check-cpu"

    def training_overrides(self, method: str, runs_root: str) -> list[str]:
        """The overrides of ``method``'s timed run, its directory under ``runs_root``."""
        return [
            *self.training,
            f"method={method}",
            *self.method_training.get(method, ()),
            f"runs_root={runs_root}",
            "sweep=gpu_check",
            "force=true",  # a check always trains; it never reports an earlier run
            "progress_bar=false",
        ]


# The paper recipe, cut to 2 epochs of a 10,000-image subset (39 steps of 256 an epoch).
CUDA_PLAN = CheckPlan(
    mode="cuda",
    device="cuda",
    training=("budget=cifar_paper", "trainer=gpu", "epochs=2", "data.train_size=10000"),
    ddp=("budget=cifar_paper", "trainer=ddp", "trainer.devices=2", "method=emim"),
    bench={"quick": False, "batch_size": 256, "steps": 50, "cifar_stem": True, "patience_s": 60},
)

_TINY_PROJECTOR = ("method.kwargs.proj_hidden_dim=64", "method.kwargs.proj_output_dim=32")

# The same path at toy sizes: 4 steps of 16 images an epoch, the ImageNet stem at 32 px
# (fast on CPUs), 64-64-32 projectors, one loader worker, a short probe.
CPU_PLAN = CheckPlan(
    mode="cpu",
    device="cpu",
    training=(
        "budget=cifar_paper",
        "trainer=cpu",
        "trainer.num_workers=1",
        "trainer.log_every_n_steps=4",  # an epoch's steps (Lightning warns at a longer interval)
        "epochs=2",
        "data.train_size=64",
        "data.test_size=64",
        "batch_size=16",
        "backbone.cifar=false",
        "eval.linear_epochs=2",
        "diagnostics_batch=16",
        *_TINY_PROJECTOR,
    ),
    method_training={"byol": ("method.kwargs.pred_hidden_dim=64",)},
    ddp=(
        "budget=cifar_paper",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32",
        "trainer.sync_batchnorm=false",
        "method=emim",
        "batch_size=16",
        "backbone.cifar=false",
        *_TINY_PROJECTOR,
    ),
    bench={"quick": True, "batch_size": 8, "steps": 2, "cifar_stem": False, "patience_s": 0},
    ddp_timeout_s=120.0,
)


def plan_for(cpu: bool) -> CheckPlan:
    """:data:`CPU_PLAN` for ``--cpu``, else :data:`CUDA_PLAN`."""
    return CPU_PLAN if cpu else CUDA_PLAN
