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
)


def run_id(cfg: DictConfig) -> str:
    """``<method>-<data>-<backbone>-s<seed>-<hash8>``: a pure function of the resolved config.

    The hash is the first 8 hex digits of the SHA-256 of the resolved config
    as sorted JSON, without the keys that only place, fetch or present the run
    (``runs_root``, ``sweep``, ``data_root``, ``data.download``, ``force``, ``logger``,
    ``progress_bar``, ``trainer.log_every_n_steps``).
    """
    identity = OmegaConf.to_container(cfg, resolve=True)
    for dotted in NOT_IDENTITY:
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
