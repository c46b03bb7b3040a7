"""Reading a sweep's run directories into one table: a row per run, whatever its state."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from emim_bench.report.labels import method_order
from emim_bench.run.directory import (
    CLAIM_FILE,
    CURVE_FILE,
    FAILED_FILE,
    LAST_CHECKPOINT,
    RESULTS_FILE,
    describe_holder,
    read_curve,
    run_state,
)
from emim_bench.run.identity import ADDED_WITH_DEFAULT, NOT_IDENTITY

# Every metric results.json may hold (percent); others found in a run are appended.
METRICS = (
    "knn_acc1_k20",
    "knn_acc5_k20",
    "knn_acc1_k200",
    "knn_acc5_k200",
    "linear_acc1",
    "linear_acc5",
    "online_acc1",
    "online_acc5",
)
TRAIN_FIELDS = ("wall_time_s", "steps", "images_per_s", "peak_rss_bytes", "peak_gpu_memory_bytes")
VERSION_FIELDS = (
    "python",
    "torch",
    "torchvision",
    "pytorch_lightning",
    "solo_learn",
    "emim_bench",
    "git_commit",
)
_RUN_ID = re.compile(
    r"^(?P<method>[^-]+)-(?P<dataset>[^-]+)-(?P<backbone>[^-]+)-s(?P<seed>\d+)-(?P<hash>[0-9a-f]{8})$"
)


# Keys that never tell two groups of runs apart: the seed (runs differing in it are the
# replicates), where and how verbosely a run is logged or monitored, the budget's name (its
# values are compared instead), and the keys of the setting label.
_NOT_VARIANT = (
    *NOT_IDENTITY,
    "seed",
    "budget_name",
    "knn_every_n_epochs",
    "diagnostics_batch",
    "trainer.num_workers",
    "data.name",
    "backbone.name",
    "epochs",
    "data.train_size",
)
# Short names of the keys an ablation usually varies, for group labels such as "D=64 eps=1e-2".
_SHORT_KEYS = {
    "method.kwargs.proj_output_dim": "D",
    "method.kwargs.proj_hidden_dim": "hidden",
    "method.kwargs.eps": "eps",
    "method.kwargs.standardize": "standardize",
    "batch_size": "batch",
    "method.lr": "lr",
    "method.augmentation": "augmentation",
}


class ReportError(ValueError):
    """A report cannot be made (no such folder, no run in it); the message is one line."""


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists()
        for name in (RESULTS_FILE, FAILED_FILE, "config.yaml", "checkpoints", CURVE_FILE)
    )


def run_dirs(runs_dir: Path) -> list[Path]:
    if _is_run_dir(runs_dir) and (runs_dir / "config.yaml").is_file():
        return [runs_dir]  # RUNS_DIR is itself one run
    return sorted(p for p in runs_dir.iterdir() if not p.name.startswith(".") and _is_run_dir(p))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _read_config(run: Path) -> dict:
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _get(d: dict | None, *keys, default=None):
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return default if d is None else d


def setting_label(dataset, backbone, epochs, train_size=None) -> str:
    """``"cifar10 · resnet18 · 3 epochs · 2000 training images"``: what makes runs comparable."""
    parts = [str(dataset or "?"), str(backbone or "?")]
    parts.append(f"{int(epochs)} epochs" if present(epochs) else "? epochs")
    if present(train_size):
        parts.append(f"{int(train_size)} training images")
    return " · ".join(parts)


def _plain(value) -> str | None:
    """``1.0`` -> ``"1"``, ``"auto"`` -> ``"auto"``, missing -> None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _flatten(cfg: dict, prefix: str = "") -> dict[str, str]:
    """``{"method": {"kwargs": {"eps": 0.01}}}`` -> ``{"method.kwargs.eps": "0.01"}``."""
    flat = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = json.dumps(value, sort_keys=True)
    return flat


def compact_number(value) -> str:
    """A config value as a group label prints it: ``0.001`` -> ``1e-3``, ``1e-05`` -> ``1e-5``,
    ``0.1`` -> ``0.1``, ``128`` -> ``128``, ``true`` -> ``True``; lists and text as they are."""
    if not isinstance(value, float):
        return str(value)  # text, lists, booleans, and integers as written (batch=1000)
    plain = f"{value:g}"
    mantissa, _, exponent = f"{value:.0e}".partition("e")
    scientific = f"{mantissa}e{int(exponent)}"
    if float(scientific) == value and len(scientific) <= len(plain):
        return scientific
    return plain


def variant_labels(configs: Sequence[dict[str, str]]) -> list[str]:
    """The label of each run among runs of one method and setting: ``key=value`` for every
    resolved config key whose value differs among them (short names of :data:`_SHORT_KEYS`,
    else the key's last part), "" when none differs.

    Args:
        configs: flattened configs (:func:`_flatten`), one per run.
    """
    keys = sorted({k for c in configs for k in c} - set(_NOT_VARIANT))
    varying = [k for k in keys if len({c.get(k) for c in configs}) > 1]
    varying.sort(key=lambda k: (list(_SHORT_KEYS).index(k) if k in _SHORT_KEYS else 99, k))
    labels = []
    for c in configs:
        parts = []
        for key in varying:
            value = json.loads(c[key]) if key in c else "unset"
            parts.append(f"{_SHORT_KEYS.get(key, key.rsplit('.', 1)[-1])}={compact_number(value)}")
        labels.append(" ".join(parts))
    return labels


def _base_row(run_id: str, cfg: dict) -> dict:
    """The identifying fields of a run from its config (or, lacking one, its run id)."""
    parsed = _RUN_ID.match(run_id)
    guess = parsed.groupdict() if parsed else {}
    return {
        "run_id": run_id,
        "sweep": _get(cfg, "sweep"),
        "method": _get(cfg, "method", "name", default=guess.get("method")),
        "dataset": _get(cfg, "data", "name", default=guess.get("dataset")),
        "backbone": _get(cfg, "backbone", "name", default=guess.get("backbone")),
        "seed": _get(cfg, "seed", default=int(guess["seed"]) if guess else None),
        "epochs": _get(cfg, "epochs"),
        "batch_size": _get(cfg, "batch_size"),
        "train_size": _get(cfg, "data", "train_size"),
        "budget": _get(cfg, "budget_name"),
        "accelerator": _get(cfg, "trainer", "accelerator"),
        "devices": _get(cfg, "trainer", "devices"),
        "precision": _get(cfg, "trainer", "precision"),
        # Runs made before a key existed ran at its default: they hold that value.
        "_config": {**{k: json.dumps(v) for k, v in ADDED_WITH_DEFAULT.items()}, **_flatten(cfg)}
        if cfg
        else {},
    }


def _read_run(run: Path) -> dict:
    """One row of :func:`collect_runs` for the run directory ``run``."""
    results_path, failed_path = run / RESULTS_FILE, run / FAILED_FILE
    results, unreadable = None, None
    if results_path.is_file():
        try:
            results = _read_json(results_path)
        except (OSError, ValueError) as error:
            unreadable = f"unreadable {RESULTS_FILE}: {error}"
    if unreadable:
        row = _base_row(run.name, _read_config(run))
        row.update(status="failed", detail=unreadable)
    elif results is not None:
        cfg = results.get("config") or _read_config(run)
        row = _base_row(results.get("run_id", run.name), cfg)
        for key in ("method", "dataset", "backbone", "seed", "epochs", "batch_size"):
            if results.get(key) is not None:
                row[key] = results[key]
        row.update(status="done", detail="")
        if results.get("precision") is not None:  # what trainer.precision=auto resolved to
            row["precision"] = results["precision"]
        row["eval_split"] = results.get("eval_split") or "test"  # earlier runs: the test split
        row.update({k: v for k, v in (results.get("metrics") or {}).items()})
        row.update({k: (results.get("train") or {}).get(k) for k in TRAIN_FIELDS})
        versions = results.get("versions") or {}
        row.update({f"version_{k}": versions.get(k) for k in VERSION_FIELDS})
        row.update(started_utc=results.get("started_utc"), finished_utc=results.get("finished_utc"))
    elif (state := run_state(run)) == "running":
        row = _base_row(run.name, _read_config(run))
        row.update(status="running", detail=f"claimed by {describe_holder(run / CLAIM_FILE)}")
    elif state == "failed":
        row = _base_row(run.name, _read_config(run))
        try:
            failed = _read_json(failed_path)
            error = failed.get("error") or "(no error message)"
            row.update(started_utc=failed.get("started_utc"), finished_utc=failed.get("failed_utc"))
        except (OSError, ValueError) as exc:
            error = f"unreadable {FAILED_FILE}: {exc}"
        row.update(status="failed", detail=error)
        if (run / LAST_CHECKPOINT).is_file():
            row["detail"] += " (last good checkpoint kept)"
    elif state == "partial":
        row = _base_row(run.name, _read_config(run))
        row.update(status="partial", detail="checkpoint without results (interrupted)")
    else:
        row = _base_row(run.name, _read_config(run))
        row.update(
            status="to do",
            detail="run directory without checkpoint or results (killed in its first epoch)",
        )
    curve = run / CURVE_FILE
    if curve.is_file():
        try:
            c = read_curve(curve)
            epochs = int(c["epoch"].max()) if len(c) else 0
            wall_s = float(c["wall_s"].iloc[-1]) if len(c) else math.nan
            row.update(curve_epochs=epochs, curve_wall_s=wall_s)  # both or neither
        except (OSError, ValueError, KeyError, pd.errors.ParserError) as error:
            row["detail"] = f"{row['detail']} [unreadable {CURVE_FILE}: {error}]".strip()
    if row["status"] == "partial" and present(row.get("curve_epochs")):
        total = f" of {int(row['epochs'])}" if present(row.get("epochs")) else ""
        row["detail"] += f"; curve reaches epoch {row['curve_epochs']}{total}"
    row["starts"] = len(list((run / "logs").glob("version_*"))) if (run / "logs").is_dir() else 0
    row["path"] = str(run)
    return row


def collect_runs(runs_dir: str | Path, expected: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run of a sweep folder, whatever its state.

    Args:
        runs_dir: the sweep folder holding ``<run_id>/`` run directories (or one run
            directory itself).
        expected: run ids of the sweep plan; those without a directory are added with
            status ``to do``, and directories not in the plan (left by an earlier version
            of the sweep file) get status ``stale``, so no statistic counts them. None: every
            directory is a run of the report.

    Returns:
        Columns ``run_id, sweep, method, dataset, backbone, seed, epochs, batch_size,
        train_size, budget, accelerator, devices, precision, status, detail`` (``method``
        is the registry name followed by the settings that vary among that method's runs
        of a setting, e.g. ``emim D=64``: see :func:`variant_labels`; status is
        one of :data:`~emim_bench.run.directory.STATES`: ``done``, ``running`` (detail: who
        holds its claim), ``failed`` (detail: the error), ``partial`` (a checkpoint without
        results), ``to do`` or, with ``expected``, ``stale``), ``setting``
        (:func:`setting_label`), ``eval_split`` (``test``, or ``val`` for a run scored on
        its validation split; empty for runs not done), every metric of ``results.json``
        (percent, NaN when absent), the training statistics ``wall_time_s`` (s), ``steps``,
        ``images_per_s``, ``peak_rss_bytes``, ``peak_gpu_memory_bytes`` (bytes),
        ``version_*``, ``started_utc``, ``finished_utc``, ``curve_epochs`` and
        ``curve_wall_s`` (last row of curve.csv), ``starts`` (Lightning log versions: 2 or
        more means the run was resumed) and ``path``. Sorted by setting, method order
        (:func:`method_order`), then seed.

    Raises:
        ReportError: ``runs_dir`` does not exist or is not a folder.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ReportError(f"RUNS_DIR {runs_dir} does not exist or is not a folder")
    rows = [_read_run(run) for run in run_dirs(runs_dir)]
    seen = {row["run_id"] for row in rows} | {Path(row["path"]).name for row in rows}
    if expected is not None:
        planned = set(expected)
        for row in rows:
            if row["run_id"] not in planned and Path(row["path"]).name not in planned:
                row["detail"] = f"not in the sweep plan (was {row['status']}); left out"
                row["status"] = "stale"
    for run_id in expected or ():
        if run_id not in seen:
            row = _base_row(run_id, {})
            row.update(status="to do", detail="not started (no run directory)", starts=0)
            row["path"] = str(runs_dir / run_id)
            rows.append(row)
    columns = [
        "run_id",
        "sweep",
        "method",
        "dataset",
        "backbone",
        "seed",
        "epochs",
        "batch_size",
        "train_size",
        "budget",
        "accelerator",
        "devices",
        "precision",
        "status",
        "detail",
        "setting",
        "eval_split",
    ]
    found = [k for row in rows for k in row if k not in columns]
    metric_cols = list(METRICS) + sorted(
        {k for k in found if re.match(r"^(knn|linear|online)_acc", k) and k not in METRICS}
    )
    columns += metric_cols + list(TRAIN_FIELDS) + [f"version_{k}" for k in VERSION_FIELDS]
    columns += ["started_utc", "finished_utc", "curve_epochs", "curve_wall_s", "starts", "path"]
    df = pd.DataFrame(rows).reindex(columns=columns + ["_config"])
    if df.empty:
        return df.drop(columns="_config")
    df["setting"] = [
        setting_label(r.dataset, r.backbone, r.epochs, r.train_size) for r in df.itertuples()
    ]
    _label_variants(df)
    for col in metric_cols + ["wall_time_s", "images_per_s", "curve_wall_s"]:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in ("seed", "epochs", "batch_size", "train_size", "steps", "starts", "curve_epochs"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in ("peak_rss_bytes", "peak_gpu_memory_bytes"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in ("devices", "precision"):  # 1 or "auto", 32 or "16-mixed": kept as text
        df[col] = df[col].map(_plain).astype(object)
    rank = {m: i for i, m in enumerate(method_order(df["method"].dropna()))}
    df["_rank"] = df["method"].map(rank).fillna(len(rank))
    df = df.sort_values(["setting", "_rank", "seed", "run_id"], na_position="last")
    return df.drop(columns=["_rank", "_config"]).reset_index(drop=True)


def _label_variants(df: pd.DataFrame) -> None:
    """Append to ``method`` the settings that vary among that method's runs of one setting
    (``emim`` -> ``emim D=64 eps=1e-2``), so that every statistic groups like with like.
    Runs without a config (planned, never started) and the random floor keep the bare name."""
    configured = df["_config"].map(lambda c: isinstance(c, dict) and bool(c))
    for (_, method), group in df[configured].groupby(["setting", "method"], sort=False):
        if method == "random":
            continue
        for index, label in zip(group.index, variant_labels(list(group["_config"]))):
            if label:
                df.loc[index, "method"] = f"{method} {label}"


def collect_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch curves of the runs of ``runs`` (a :func:`collect_runs` frame), stacked.

    Returns:
        Long frame: ``run_id, method, seed, setting, status`` plus the curve.csv
        columns (``epoch``, ``step``, ``wall_s`` in seconds, ``knn_acc1`` in percent,
        losses, ...). Runs without a readable curve contribute nothing.
    """
    frames = []
    for r in runs.itertuples():
        path = Path(r.path) / CURVE_FILE
        if not path.is_file():
            continue
        try:
            curve = read_curve(path)
        except (OSError, ValueError, KeyError, pd.errors.ParserError):
            continue
        curve.insert(0, "status", r.status)
        curve.insert(0, "setting", r.setting)
        curve.insert(0, "seed", r.seed)
        curve.insert(0, "method", r.method)
        curve.insert(0, "run_id", r.run_id)
        frames.append(curve)
    if not frames:
        return pd.DataFrame(columns=["run_id", "method", "seed", "setting", "epoch", "wall_s"])
    return pd.concat(frames, ignore_index=True)


def done_runs(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "done"]


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if re.match(r"^(knn|linear|online)_acc", c)]
