"""A run's identity: ``<method>-<data>-<backbone>-s<seed>-<hash8>``, a pure function of its config.

Light on purpose (omegaconf only): the sweep plan and the report read it without torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# Keys that say where or how verbosely a run happens, not what it computes: left out of its hash.
NOT_IDENTITY = (
    "force",
    "runs_root",
    "sweep",
    "data_root",
    "data.download",
    "logger",
    "progress_bar",
    "trainer.log_every_n_steps",
    "method.kwargs.check_every_n_steps",
    # How batches reach the GPU and how often the host checks the loss: the same numbers.
    "trainer.pin_memory",
    "trainer.finite_check_every",
)
# Keys added to the configs after runs were made, with the default that computes what those
# runs computed: left out of the hash while at that default, so earlier run ids stay valid.
ADDED_WITH_DEFAULT = {
    "data.val_size": None,
    # Other convolution kernels (channels-last, cuDNN's autotuned ones) round differently.
    "trainer.channels_last": False,
    "trainer.cudnn_benchmark": False,
    # Persistent loader workers carry their random generators from epoch to epoch, so they
    # draw other augmentations than workers started afresh each epoch. The pretraining
    # loader's workers always persisted.
    "trainer.persistent_workers": True,
}


def run_id(cfg: DictConfig) -> str:
    """``<method>-<data>-<backbone>-s<seed>-<hash8>``: a pure function of the resolved config.

    The hash is the first 8 hex digits of the SHA-256 of the resolved config
    as sorted JSON, without the keys that only place, fetch or present the run
    (``runs_root``, ``sweep``, ``data_root``, ``data.download``, ``force``, ``logger``,
    ``progress_bar``, ``trainer.log_every_n_steps``) or only say how batches reach the device
    and how often the host checks the loss (``trainer.pin_memory``,
    ``trainer.finite_check_every``, EMIM's ``check_every_n_steps``), and without the keys of
    :data:`ADDED_WITH_DEFAULT` while they hold that default.

    ``trainer.precision=auto`` hashes as ``auto``, whatever it resolves to on the machine
    (bf16 or fp16): a sweep planned on a login node finds the runs its GPU jobs make.
    """
    identity = OmegaConf.to_container(cfg, resolve=True)
    dropped = [*NOT_IDENTITY, *(k for k, v in ADDED_WITH_DEFAULT.items() if _get(identity, k) == v)]
    for dotted in dropped:
        *parents, key = dotted.split(".")
        node = identity
        for parent in parents:
            node = node.get(parent, {})
        node.pop(key, None)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{cfg.method.name}-{cfg.data.name}-{cfg.backbone.name}-s{cfg.seed}-{digest}"


def _get(tree: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def run_dir(cfg: DictConfig) -> Path:
    """``<runs_root>/<sweep>/<run_id>``."""
    return Path(cfg.runs_root) / str(cfg.sweep) / run_id(cfg)
