"""A run directory: its files, its state, its claim, atomic writes and the per-epoch curve.

Our writers of a run directory go through this module (Lightning writes its checkpoints,
atomically, and its logs), and ``pretrain``, ``sweep`` and ``report`` read a run's state
with :func:`run_state`. Under DDP only rank 0 writes (the
callers check :func:`is_rank_zero`). Light on purpose (pandas only): the sweep plan and the
report read run directories without importing torch.
"""

from __future__ import annotations

import fcntl
import io
import json
import math
import os
import socket
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS_FILE = "results.json"
FAILED_FILE = "failed.json"
CURVE_FILE = "curve.csv"
CONFIG_FILE = "config.yaml"
CLAIM_FILE = "claim.lock"
FEATURES_FILE = "features.npz"
FEATURES_LIMIT = 5000  # test features kept for the report's UMAP picture
LAST_CHECKPOINT = "checkpoints/last.ckpt"
# The states of a run directory, in the order summaries list them.
STATES = ("done", "running", "failed", "partial", "to do")
# curve.csv's leading columns, in every row from the first epoch on (empty where a metric was
# not computed that epoch); the losses and accuracies the method logs follow them.
CURVE_COLUMNS = ("epoch", "step", "wall_s", "knn_acc1", "knn_acc5")


def is_rank_zero() -> bool:
    """Whether this process is rank 0 of its (possibly distributed) run.

    Read from the environment the way Lightning's ``rank_zero_only`` does (``RANK``,
    ``LOCAL_RANK``, ``SLURM_PROCID``): Lightning sets it for the processes it starts, and
    SLURM for its tasks, before any of our code runs in them.
    """
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return True


def utc_now() -> str:
    """The current time in UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically: a uniquely named temporary file, then a
    rename. A reader sees the old file or the new one, never a part; two writers never share
    a temporary file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from teammates
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_bytes_atomic` of ``text`` in UTF-8."""
    write_bytes_atomic(path, text.encode())


def write_features(path: Path, features, labels, limit: int = FEATURES_LIMIT) -> None:
    """Save the first ``limit`` test features (float16) and labels (int64) as ``.npz``, for
    the report's UMAP picture.

    Args:
        features: (M, F) array-like (a CPU tensor or an array); labels: (M,).
    """
    buffer = io.BytesIO()
    np.savez(
        buffer,
        features=np.asarray(features[:limit], dtype=np.float16),
        labels=np.asarray(labels[:limit], dtype=np.int64),
    )
    write_bytes_atomic(path, buffer.getvalue())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as sorted, indented JSON with :func:`write_text_atomic`."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True))


def read_curve(path: Path) -> pd.DataFrame:
    """The per-epoch curve of a run, one row per epoch (the last row wins after a resume);
    an empty file gives an empty frame with :data:`CURVE_COLUMNS`."""
    try:
        curve = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    return curve.drop_duplicates("epoch", keep="last").reset_index(drop=True)


def rewind_curve(path: Path, epochs_done: int) -> float:
    """Drop the rows of epochs after ``epochs_done`` (the checkpoint's) and return the
    training seconds recorded at ``epochs_done`` (0 when it has no row).

    A row is written just before its epoch's checkpoint, so a run killed in between, or
    restarted without its checkpoint, has rows the checkpoint does not cover; their time
    is not counted twice.
    """
    if not path.is_file():
        return 0.0
    curve = read_curve(path)
    kept = curve[curve["epoch"] <= epochs_done]
    if len(kept) < len(curve):
        write_text_atomic(path, kept.to_csv(index=False))
    at = kept[kept["epoch"] == epochs_done]["wall_s"]
    return float(at.iloc[-1]) if len(at) and not math.isnan(at.iloc[-1]) else 0.0


def append_curve_row(path: Path, row: dict) -> None:
    """Add one epoch's row to ``curve.csv`` (atomically rewritten; a repeated epoch replaces
    the earlier row).

    Columns: :data:`CURVE_COLUMNS` first, then the file's other columns, then any new key of
    ``row``; a value missing from a row is left empty (NaN when read).
    """
    rows = read_curve(path).to_dict("records") if path.is_file() else []
    rows = [r for r in rows if r["epoch"] != row["epoch"]] + [row]
    extra = [k for r in rows for k in r if k not in CURVE_COLUMNS]
    columns = [*CURVE_COLUMNS, *dict.fromkeys(extra)]
    curve = pd.DataFrame(rows, columns=columns).sort_values("epoch", kind="stable")
    write_text_atomic(path, curve.to_csv(index=False))


def read_results(directory: Path) -> dict | None:
    """The ``results.json`` of a run directory, or None when missing or not valid JSON."""
    try:
        results = json.loads((Path(directory) / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def last_curve_row(path: Path) -> dict:
    """The last epoch's row of ``curve.csv`` as a dict (missing values None; {} without a
    curve)."""
    if not path.is_file():
        return {}
    curve = read_curve(path)
    if not len(curve):
        return {}
    row = curve.iloc[-1].to_dict()
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


_CLAIM_ATTEMPTS = 5


class RunClaimedError(RuntimeError):
    """Another process holds the run; the message says which (host, pid, since)."""


class Claim:
    """An exclusive claim on a run directory, held while the run trains and evaluates.

    ``claim.lock`` is locked with ``flock``, which the operating system releases when the
    holder exits or is killed, so a claim never outlives its process; the file keeps the
    holder's host, pid and start time for the message a second process prints. A claim
    found in the file whose lock is free belonged to a process that is gone: it is taken
    over, and :attr:`taken_over` says from whom. On a shared filesystem the claim works
    across hosts where the filesystem supports ``flock`` (NFS v4, Lustre and GPFS with
    their usual mount options).

    Use as a context manager; entering raises :class:`RunClaimedError` when the run is
    held elsewhere.
    """

    def __init__(self, directory: Path):
        self.path = Path(directory) / CLAIM_FILE
        self.taken_over: str | None = None
        self._fd: int | None = None

    def __enter__(self) -> Claim:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(_CLAIM_ATTEMPTS):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == _CLAIM_ATTEMPTS - 1:
                    os.close(fd)
                    holder = describe_holder(self.path)
                    raise RunClaimedError(f"running elsewhere ({holder})") from None
                time.sleep(0.05)  # is_claimed() may be probing the lock this very moment
        previous = os.read(fd, 4096).decode(errors="replace").strip()
        if previous:
            self.taken_over = describe_holder(self.path)
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": utc_now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # released cleanly: no holder to take over from
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def describe_holder(claim_file: Path) -> str:
    """``"host H, pid P, since T"`` from a claim file ("unknown holder" if unreadable)."""
    try:
        holder = json.loads(claim_file.read_text())
        return f"host {holder['host']}, pid {holder['pid']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown holder"


def is_claimed(directory: Path) -> bool:
    """Whether a live process holds the claim of ``directory`` (probed without keeping it)."""
    path = Path(directory) / CLAIM_FILE
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False


def run_state(directory: Path) -> str:
    """The state of a run directory, one of :data:`STATES`.

    "done": a readable ``results.json``; "running": a live process holds its claim;
    "failed": ``failed.json`` exists, or a ``results.json`` that is not JSON (the run is
    evaluated again when rerun); "partial": a checkpoint without results (interrupted);
    "to do": none of these.
    """
    directory = Path(directory)
    if (directory / RESULTS_FILE).is_file():
        return "done" if read_results(directory) is not None else "failed"
    if is_claimed(directory):
        return "running"
    if (directory / FAILED_FILE).is_file():
        return "failed"
    if (directory / LAST_CHECKPOINT).is_file():
        return "partial"
    return "to do"
