"""A run directory's files: their names, the run's state, atomic writes, the per-epoch curve.

Light on purpose (pandas only): the sweep plan and the report read run directories
without importing torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

RESULTS_FILE = "results.json"
FAILED_FILE = "failed.json"
CURVE_FILE = "curve.csv"
LAST_CHECKPOINT = "checkpoints/last.ckpt"
# The states of a run directory, in the order summaries list them.
STATES = ("done", "failed", "partial", "to do")


def read_curve(path: Path) -> pd.DataFrame:
    """The per-epoch curve of a run, one row per epoch (the last row wins after a resume)."""
    curve = pd.read_csv(path)
    return curve.drop_duplicates("epoch", keep="last").reset_index(drop=True)


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically: a temporary file in the same folder, then a rename."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def run_state(directory: Path) -> str:
    """The state of a run directory, one of :data:`STATES`.

    "done": ``results.json`` exists; "failed": ``failed.json`` exists; "partial": a
    checkpoint without results (interrupted, or running); "to do": none of these.
    """
    if (directory / RESULTS_FILE).is_file():
        return "done"
    if (directory / FAILED_FILE).is_file():
        return "failed"
    if (directory / LAST_CHECKPOINT).is_file():
        return "partial"
    return "to do"
