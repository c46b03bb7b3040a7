"""The report of a sweep: statistics per method, EMIM against each baseline, curves, figures.

``emim-bench report RUNS_DIR -o reports/NAME`` reads every run directory of a
sweep (``RUNS_DIR/<run_id>/``, written by :func:`emim_bench.pretrain.run`) and
writes into the output folder:

- ``report.md`` and a self-contained ``report.html`` (figures embedded as
  base64 PNG, inline CSS, no external files),
- ``results.csv``: one row per run (done, failed, partial or missing) with its
  metrics and training statistics,
- ``figures/*.png``: accuracy per method with 95% confidence intervals and the
  random-init floor, kNN accuracy against epoch and against wall-clock time,
  throughput and peak memory.

Units throughout: accuracies in percent, times in seconds, throughput in
source images per second, memory in bytes (MiB/GiB in the rendered report).
Confidence intervals are Student-t intervals over seeds,
``mean ± t(0.975, n-1) · sd / sqrt(n)``, undefined for n < 2. EMIM is compared
with each baseline by seed (paired t-test, :func:`scipy.stats.ttest_rel`).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import re
import shlex
import sys
import warnings
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
import yaml
from matplotlib.figure import Figure
from scipy import stats

from emim_bench.pretrain import CURVE_FILE, FAILED_FILE, LAST_CHECKPOINT, RESULTS_FILE, read_curve

__all__ = [
    "PUBLISHED_ONLINE_ACC1",
    "METRICS",
    "HEADLINE_METRICS",
    "ReportError",
    "method_order",
    "t_interval",
    "collect_runs",
    "collect_curves",
    "method_summary",
    "paired_differences",
    "published_comparison",
    "write_report",
    "register",
]

# Published online linear acc@1 (percent) of solo-learn's recipes, from the solo-learn
# README (tag 1.0.8 and later): ResNet-18, CIFAR-10/100
# for 1000 epochs, ImageNet-100 for 400 epochs. Keyed by (dataset, backbone, epochs).
# EMIM has no entry: the EMIM paper's numbers are not available here, so its column stays empty.
PUBLISHED_ONLINE_ACC1: dict[tuple[str, str, int], dict[str, float]] = {
    ("cifar10", "resnet18", 1000): {
        "simclr": 90.74,
        "byol": 92.58,
        "barlow_twins": 92.10,
        "vicreg": 92.07,
    },
    ("cifar100", "resnet18", 1000): {
        "simclr": 65.78,
        "byol": 70.46,
        "barlow_twins": 70.90,
        "vicreg": 68.54,
    },
    ("imagenet100", "resnet18", 400): {
        "simclr": 77.64,
        "byol": 80.16,
        "barlow_twins": 80.38,
        "vicreg": 79.22,
    },
}
PUBLISHED_SOURCE = "solo-learn README (online linear acc@1)"

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
# The three accuracies of the tables, the figures and the EMIM-minus-baseline tests.
HEADLINE_METRICS = ("knn_acc1_k20", "linear_acc1", "online_acc1")
METRIC_LABELS = {
    "knn_acc1_k20": "kNN acc@1 (k=20)",
    "linear_acc1": "linear acc@1 (offline)",
    "online_acc1": "online linear acc@1",
}
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
METHOD_NAMES = {
    "emim": "EMIM",
    "simclr": "SimCLR",
    "byol": "BYOL",
    "barlow_twins": "Barlow Twins",
    "vicreg": "VICReg",
    "random": "random init",
}
# Known departures of solo-learn's implementations from the original papers.
QUIRKS = {
    "vicreg": "solo-learn's VICReg variance term is not halved (2x the official weight).",
    "byol": "solo-learn's BYOL sums its two pair losses.",
    "barlow_twins": "solo-learn's Barlow Twins normalises with per-device BatchNorm statistics.",
}
FIGURES = ("accuracy.png", "knn_vs_epoch.png", "knn_vs_time.png", "throughput.png")
NO_TEST_ONE_SEED = "no test is possible with a single seed"
_RUN_ID = re.compile(
    r"^(?P<method>[^-]+)-(?P<dataset>[^-]+)-(?P<backbone>[^-]+)-s(?P<seed>\d+)-(?P<hash>[0-9a-f]{8})$"
)
_DASH = "–"


class ReportError(ValueError):
    """A report cannot be made (no such folder, no run in it); the message is one line."""


# ---------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------


def method_order(methods: Iterable[str]) -> list[str]:
    """``emim`` first, then the baselines alphabetically, then ``random`` (the floor)."""
    unique = set(methods)
    middle = sorted(m for m in unique if m not in ("emim", "random"))
    return [m for m in ("emim",) if m in unique] + middle + [m for m in ("random",) if m in unique]


def t_interval(values: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample standard deviation, n and Student-t confidence interval of ``values``.

    NaN values are ignored. ``sd`` (ddof 1) and the interval
    ``mean ± t((1 + confidence) / 2, n - 1) · sd / sqrt(n)`` are NaN when n < 2.

    Returns:
        ``{"mean", "sd", "n", "ci_low", "ci_high"}`` (in the unit of ``values``).
    """
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "sd": math.nan, "n": n, "ci_low": math.nan, "ci_high": math.nan}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci_low": mean - half, "ci_high": mean + half}


# ---------------------------------------------------------------------------------------
# Reading run directories
# ---------------------------------------------------------------------------------------


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists()
        for name in (RESULTS_FILE, FAILED_FILE, "config.yaml", "checkpoints", CURVE_FILE)
    )


def _run_dirs(runs_dir: Path) -> list[Path]:
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
    parts.append(f"{int(epochs)} epochs" if _present(epochs) else "? epochs")
    if _present(train_size):
        parts.append(f"{int(train_size)} training images")
    return " · ".join(parts)


def _plain(value) -> str | None:
    """``1.0`` -> ``"1"``, ``"auto"`` -> ``"auto"``, missing -> None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


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
        row.update({k: v for k, v in (results.get("metrics") or {}).items()})
        row.update({k: (results.get("train") or {}).get(k) for k in TRAIN_FIELDS})
        versions = results.get("versions") or {}
        row.update({f"version_{k}": versions.get(k) for k in VERSION_FIELDS})
        row.update(started_utc=results.get("started_utc"), finished_utc=results.get("finished_utc"))
    elif failed_path.is_file():
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
    elif (run / LAST_CHECKPOINT).is_file():
        row = _base_row(run.name, _read_config(run))
        row.update(status="partial", detail="checkpoint without results (interrupted or running)")
    else:
        row = _base_row(run.name, _read_config(run))
        row.update(
            status="missing",
            detail="run directory without checkpoint or results (killed in its first epoch, "
            "or running)",
        )
    curve = run / CURVE_FILE
    if curve.is_file():
        try:
            c = read_curve(curve)
            row["curve_epochs"] = int(c["epoch"].max()) if len(c) else 0
            row["curve_wall_s"] = float(c["wall_s"].iloc[-1]) if len(c) else math.nan
        except (OSError, ValueError, KeyError, pd.errors.ParserError) as error:
            row["detail"] = f"{row.get('detail', '')} [unreadable {CURVE_FILE}: {error}]".strip()
    if row["status"] == "partial" and _present(row.get("curve_epochs")):
        total = f" of {int(row['epochs'])}" if _present(row.get("epochs")) else ""
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
            status ``missing``. Directories not in the plan are kept all the same.

    Returns:
        Columns ``run_id, sweep, method, dataset, backbone, seed, epochs, batch_size,
        train_size, budget, accelerator, devices, precision, status, detail`` (status is
        ``done``, ``failed`` (detail: the error), ``partial`` (a checkpoint without
        results) or ``missing``), ``setting`` (:func:`setting_label`), every metric of
        ``results.json`` (percent, NaN when absent), the training statistics
        ``wall_time_s`` (s), ``steps``, ``images_per_s``, ``peak_rss_bytes``,
        ``peak_gpu_memory_bytes`` (bytes), ``version_*``, ``started_utc``,
        ``finished_utc``, ``curve_epochs`` and ``curve_wall_s`` (last row of curve.csv),
        ``starts`` (Lightning log versions: 2 or more means the run was resumed) and
        ``path``. Sorted by setting, method order (:func:`method_order`), then seed.

    Raises:
        ReportError: ``runs_dir`` does not exist or is not a folder.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ReportError(f"RUNS_DIR {runs_dir} does not exist or is not a folder")
    rows = [_read_run(run) for run in _run_dirs(runs_dir)]
    seen = {row["run_id"] for row in rows} | {Path(row["path"]).name for row in rows}
    for run_id in expected or ():
        if run_id not in seen:
            row = _base_row(run_id, {})
            row.update(status="missing", detail="not started (no run directory)", starts=0)
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
    ]
    found = [k for row in rows for k in row if k not in columns]
    metric_cols = list(METRICS) + sorted(
        {k for k in found if re.match(r"^(knn|linear|online)_acc", k) and k not in METRICS}
    )
    columns += metric_cols + list(TRAIN_FIELDS) + [f"version_{k}" for k in VERSION_FIELDS]
    columns += ["started_utc", "finished_utc", "curve_epochs", "curve_wall_s", "starts", "path"]
    df = pd.DataFrame(rows).reindex(columns=columns)
    if df.empty:
        return df
    df["setting"] = [
        setting_label(r.dataset, r.backbone, r.epochs, r.train_size) for r in df.itertuples()
    ]
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
    return df.drop(columns="_rank").reset_index(drop=True)


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


def _done(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "done"]


def _metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if re.match(r"^(knn|linear|online)_acc", c)]


def method_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per setting and method, over the finished runs: accuracy statistics and training cost.

    Args:
        df: a :func:`collect_runs` frame (only ``status == "done"`` rows are used).

    Returns:
        One row per (``setting``, ``method``) in :func:`method_order`, with ``dataset``,
        ``backbone``, ``epochs``, ``n_runs`` and, for every metric ``m`` (percent),
        ``m_mean``, ``m_sd``, ``m_n``, ``m_ci_low``, ``m_ci_high`` (:func:`t_interval`;
        NaN when n < 2), and the means over runs of ``wall_time_s`` (s),
        ``images_per_s``, ``peak_rss_bytes`` and ``peak_gpu_memory_bytes`` (bytes),
        named ``<field>_mean``.
    """
    done = _done(df)
    rows = []
    for setting in done["setting"].drop_duplicates():
        in_setting = done[done["setting"] == setting]
        for method in method_order(in_setting["method"].dropna()):
            runs = in_setting[in_setting["method"] == method]
            first = runs.iloc[0]
            row = {
                "setting": setting,
                "dataset": first["dataset"],
                "backbone": first["backbone"],
                "epochs": first["epochs"],
                "method": method,
                "n_runs": len(runs),
            }
            for metric in _metric_columns(done):
                for key, value in t_interval(runs[metric]).items():
                    row[f"{metric}_{key}"] = value
            for field in ("wall_time_s", "images_per_s", "peak_rss_bytes", "peak_gpu_memory_bytes"):
                values = pd.to_numeric(runs[field], errors="coerce").astype(float).dropna()
                row[f"{field}_mean"] = float(values.mean()) if len(values) else math.nan
            rows.append(row)
    if not rows:
        return pd.DataFrame(
            columns=["setting", "dataset", "backbone", "epochs", "method", "n_runs"]
        )
    return pd.DataFrame(rows)


def paired_differences(df: pd.DataFrame, metric: str, reference: str = "emim") -> pd.DataFrame:
    """``reference`` (EMIM) minus each other method on ``metric``, paired by seed.

    Only seeds that both methods finished (in the same setting) are paired; several
    runs of one method with the same seed are averaged first.

    Args:
        df: a :func:`collect_runs` frame (only ``status == "done"`` rows are used).
        metric: a metric column, e.g. ``"knn_acc1_k20"`` (percent).

    Returns:
        One row per (``setting``, ``baseline``) with ``metric``, ``n_pairs``, ``seeds``,
        ``reference_mean``, ``baseline_mean``, ``mean_diff``, ``sd_diff``, ``ci_low``,
        ``ci_high`` (percentage points; 95% Student-t interval of the mean difference,
        NaN for fewer than 2 pairs), ``t`` and ``p_value`` (two-sided
        :func:`scipy.stats.ttest_rel`, NaN for fewer than 2 pairs or identical
        differences) and ``note``. Empty when ``reference`` has no finished run.
    """
    columns = [
        "setting",
        "metric",
        "baseline",
        "n_pairs",
        "seeds",
        "reference_mean",
        "baseline_mean",
        "mean_diff",
        "sd_diff",
        "ci_low",
        "ci_high",
        "t",
        "p_value",
        "note",
    ]
    done = _done(df)
    if metric not in done.columns:
        return pd.DataFrame(columns=columns)
    done = done[done[metric].notna()]
    rows = []
    for setting in done["setting"].drop_duplicates():
        in_setting = done[done["setting"] == setting]
        per_seed = in_setting.groupby(["method", "seed"])[metric].mean()
        if reference not in per_seed.index.get_level_values("method"):
            continue
        ref = per_seed.loc[reference]
        for baseline in method_order(in_setting["method"]):
            if baseline == reference:
                continue
            has_seeds = baseline in per_seed.index.get_level_values("method")
            base = per_seed.loc[baseline] if has_seeds else pd.Series(dtype=float)
            seeds = sorted(set(ref.index) & set(base.index))
            a = ref.loc[seeds].to_numpy(float)
            b = base.loc[seeds].to_numpy(float)
            ci = t_interval(a - b)
            row = {
                "setting": setting,
                "metric": metric,
                "baseline": baseline,
                "n_pairs": len(seeds),
                "seeds": ",".join(str(int(s)) for s in seeds),
                "reference_mean": float(a.mean()) if len(seeds) else math.nan,
                "baseline_mean": float(b.mean()) if len(seeds) else math.nan,
                "mean_diff": ci["mean"],
                "sd_diff": ci["sd"],
                "ci_low": ci["ci_low"],
                "ci_high": ci["ci_high"],
                "t": math.nan,
                "p_value": math.nan,
                "note": "",
            }
            if len(seeds) == 0:
                row["note"] = "no seed finished by both"
            elif len(seeds) == 1:
                row["note"] = f"one paired seed: {NO_TEST_ONE_SEED}"
            elif np.allclose(a - b, (a - b)[0]):
                row["note"] = "identical differences on every seed: t undefined"
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    test = stats.ttest_rel(a, b)
                row["t"], row["p_value"] = float(test.statistic), float(test.pvalue)
            rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def published_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """Our online acc@1 beside solo-learn's published one, for settings that match one.

    A setting matches when ``(dataset, backbone, epochs)`` is a key of
    :data:`PUBLISHED_ONLINE_ACC1` (CIFAR-10/100, ResNet-18, 1000 epochs;
    ImageNet-100, ResNet-18, 400 epochs).

    Args:
        summary: a :func:`method_summary` frame.

    Returns:
        One row per matching (setting, method), the random floor left out, with
        ``ours_mean``, ``ours_sd``, ``n`` and ``published`` (percent; NaN for EMIM) and
        ``difference`` (ours minus published, percentage points). Empty when no
        setting matches.
    """
    rows = []
    for r in summary.itertuples():
        key = (r.dataset, r.backbone, int(r.epochs) if _present(r.epochs) else None)
        if key not in PUBLISHED_ONLINE_ACC1 or r.method == "random":
            continue
        published = PUBLISHED_ONLINE_ACC1[key].get(r.method, math.nan)
        ours = getattr(r, "online_acc1_mean", math.nan)
        rows.append(
            {
                "setting": r.setting,
                "method": r.method,
                "ours_mean": ours,
                "ours_sd": getattr(r, "online_acc1_sd", math.nan),
                "n": getattr(r, "online_acc1_n", 0),
                "published": published,
                "difference": ours - published,
            }
        )
    return pd.DataFrame(
        rows, columns=["setting", "method", "ours_mean", "ours_sd", "n", "published", "difference"]
    )


# ---------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------


def _name(method) -> str:
    return METHOD_NAMES.get(method, str(method))


def _num(x, spec: str = ".2f") -> str:
    return _DASH if not _present(x) or pd.isna(x) else format(float(x), spec)


def _mean_sd(mean, sd, spec: str = ".2f") -> str:
    if not _present(mean) or pd.isna(mean):
        return _DASH
    return f"{mean:{spec}} ± {sd:{spec}}" if _present(sd) and not pd.isna(sd) else f"{mean:{spec}}"


def _ci(low, high, spec: str = ".2f") -> str:
    if not _present(low) or pd.isna(low):
        return _DASH
    return f"[{low:{spec}}, {high:{spec}}]"


def _bytes(x) -> str:
    if not _present(x) or pd.isna(x):
        return _DASH
    x = float(x)
    return f"{x / 2**30:.2f} GiB" if x >= 2**30 else f"{x / 2**20:.0f} MiB"


def _seconds(x) -> str:
    if not _present(x) or pd.isna(x):
        return _DASH
    return f"{x:.0f} s" if x < 600 else f"{x / 60:.1f} min" if x < 7200 else f"{x / 3600:.2f} h"


def _p(p) -> str:
    if not _present(p) or pd.isna(p):
        return _DASH
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _text(x) -> str:
    return _DASH if x is None or (not isinstance(x, str) and pd.isna(x)) else str(x)


# ---------------------------------------------------------------------------------------
# A document rendered twice: Markdown and self-contained HTML
# ---------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; }
th { background: #f3f3f3; }
td.r { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, pre { background: #f6f6f6; font-family: Menlo, Consolas, monospace; font-size: .9em; }
pre { padding: .6em; overflow-x: auto; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; }
"""


def _inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


class _Doc:
    """Blocks (headings, paragraphs, tables, figures, code) rendered as Markdown and HTML."""

    def __init__(self, out_dir: Path):
        self.out_dir, self.blocks = out_dir, []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]):
        self.blocks.append(("ul", list(items)))

    def code(self, text: str):
        self.blocks.append(("code", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence], align: str = "l"):
        """``align``: "l" (text) or "r" (numbers) per column; the last letter repeats."""
        align = align + align[-1] * (len(header) - len(align))
        self.blocks.append(("table", list(header), [[_text(c) for c in r] for r in rows], align))

    def figure(self, path: Path, caption: str):
        self.blocks.append(("fig", path, caption))

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append(f"{'#' * block[1]} {block[2]}")
            elif kind == "p":
                out.append(block[1])
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in block[1]))
            elif kind == "code":
                out.append(f"```\n{block[1]}\n```")
            elif kind == "table":
                _, header, rows, align = block
                cell = lambda c: str(c).replace("|", "\\|").replace("\n", " ")
                lines = ["| " + " | ".join(cell(c) for c in header) + " |"]
                lines.append("|" + "|".join("---" if a == "l" else "---:" for a in align) + "|")
                lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
                out.append("\n".join(lines))
            elif kind == "fig":
                rel = block[1].relative_to(self.out_dir).as_posix()
                out.append(f"![{block[2]}]({rel})\n\n*{block[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_CSS}</style></head><body>",
        ]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append(f"<h{block[1]}>{_inline_html(block[2])}</h{block[1]}>")
            elif kind == "p":
                out.append(f"<p>{_inline_html(block[1])}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]))
                out.append("</ul>")
            elif kind == "code":
                out.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
            elif kind == "table":
                _, header, rows, align = block
                out.append("<table><thead><tr>")
                out.append("".join(f"<th>{_inline_html(str(c))}</th>" for c in header))
                out.append("</tr></thead><tbody>")
                for r in rows:
                    cells = (
                        f"<td{'' if align[i] == 'l' else ' class=r'}>{_inline_html(str(c))}</td>"
                        for i, c in enumerate(r)
                    )
                    out.append("<tr>" + "".join(cells) + "</tr>")
                out.append("</tbody></table>")
            elif kind == "fig":
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                alt = html.escape(block[2])
                out.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
                    f"<figcaption>{_inline_html(block[2])}</figcaption></figure>"
                )
        out.append("</body></html>")
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# Figures (matplotlib's object API with the Agg canvas: no pyplot, no global backend)
# ---------------------------------------------------------------------------------------

_STYLE = dict(style="whitegrid")


def _palette(methods: Sequence[str]) -> dict[str, tuple]:
    colours = sns.color_palette("tab10", 10)
    order = ["emim", "simclr", "byol", "barlow_twins", "vicreg"]
    extra = [m for m in methods if m not in order and m != "random"]
    palette = {m: colours[i % 10] for i, m in enumerate(order + extra)}
    palette["random"] = (0.45, 0.45, 0.45)
    return palette


def _axes_grid(n_rows: int, n_cols: int, width: float, height: float):
    fig = Figure(figsize=(width * n_cols, height * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, format="png")
    return path


def _floor_means(done: pd.DataFrame, setting: str) -> dict[str, float]:
    floor = done[(done["setting"] == setting) & (done["method"] == "random")]
    return {m: float(floor[m].mean()) for m in HEADLINE_METRICS if floor[m].notna().any()}


def _accuracy_figure(df: pd.DataFrame, summary: pd.DataFrame, path: Path) -> Path | None:
    done = _done(df)
    trained = summary[summary["method"] != "random"]
    settings = list(trained["setting"].drop_duplicates())
    if not settings:
        return None
    metric_colours = dict(zip(HEADLINE_METRICS, sns.color_palette("deep", 3)))
    with sns.axes_style(**_STYLE):
        fig, axes = _axes_grid(len(settings), 1, 11.5, 4.6)
        for ax, setting in zip(axes[:, 0], settings):
            rows = summary[(summary["setting"] == setting) & (summary["method"] != "random")]
            methods = list(rows["method"])
            x = np.arange(len(methods))
            metrics = [
                m
                for m in HEADLINE_METRICS
                if f"{m}_mean" in rows and rows[f"{m}_mean"].notna().any()
            ]
            width = 0.8 / max(len(metrics), 1)
            for i, metric in enumerate(metrics):
                means = rows[f"{metric}_mean"].to_numpy(float)
                half = (rows[f"{metric}_ci_high"] - rows[f"{metric}_mean"]).to_numpy(float)
                offset = (i - (len(metrics) - 1) / 2) * width
                ax.bar(
                    x + offset,
                    means,
                    width * 0.92,
                    yerr=np.where(np.isnan(half), 0, half),
                    capsize=3,
                    color=metric_colours[metric],
                    label=METRIC_LABELS[metric],
                    error_kw={"elinewidth": 1.2},
                )
                # every seed as a dot, so n = 1 and n = 2 read honestly
                for j, method in enumerate(methods):
                    vals = done[(done["setting"] == setting) & (done["method"] == method)][metric]
                    vals = vals.dropna().to_numpy(float)
                    ax.scatter(
                        np.full(len(vals), x[j] + offset),
                        vals,
                        s=10,
                        color="black",
                        alpha=0.6,
                        zorder=3,
                        linewidths=0,
                    )
            first = rows.iloc[0]
            key = (first["dataset"], first["backbone"], first["epochs"])
            published = PUBLISHED_ONLINE_ACC1.get(key, {})
            if "online_acc1" in metrics and any(m in published for m in methods):
                offset = (metrics.index("online_acc1") - (len(metrics) - 1) / 2) * width
                points = [(j, published[m]) for j, m in enumerate(methods) if m in published]
                ax.scatter(
                    [x[j] + offset for j, _ in points],
                    [v for _, v in points],
                    marker="*",
                    s=120,
                    color="gold",
                    edgecolors="black",
                    zorder=4,
                    label="published online acc@1 (solo-learn README)",
                )
            for metric, value in _floor_means(done, setting).items():
                if metric in metrics:
                    ax.axhline(
                        value,
                        ls="--",
                        lw=1.4,
                        color=metric_colours[metric],
                        label=f"random-init floor, {METRIC_LABELS[metric]}: {value:.1f}%",
                    )
            n_labels = [f"{_name(m)}\n(n={int(n)})" for m, n in zip(methods, rows["n_runs"])]
            ax.set_xticks(x, n_labels)
            ax.set_ylabel("accuracy (%)")
            ax.set_xlabel("method (n = finished seeds)")
            ax.set_title(f"{setting}\nmean with 95% t-interval over seeds (dots: single seeds)")
            top = np.nanmax(
                np.r_[
                    rows[[f"{m}_ci_high" for m in metrics]].to_numpy(float).ravel(),
                    rows[[f"{m}_mean" for m in metrics]].to_numpy(float).ravel(),
                    1.0,
                ]
            )
            ax.set_ylim(0, min(100, top * 1.08 + 2))
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=True)
    return _save(fig, path)


def _time_unit(seconds_max: float) -> tuple[str, float]:
    if seconds_max < 300:
        return "s", 1.0
    if seconds_max < 3 * 3600:
        return "min", 60.0
    return "h", 3600.0


def _curve_figure(curves: pd.DataFrame, done: pd.DataFrame, x: str, path: Path) -> Path | None:
    """kNN acc@1 (k=20) of the per-epoch monitor against ``x`` (``epoch`` or ``wall_s``)."""
    if curves.empty or "knn_acc1" not in curves or curves["knn_acc1"].notna().sum() == 0:
        return None
    curves = curves[curves["knn_acc1"].notna()]
    settings = list(curves["setting"].drop_duplicates())
    palette = _palette(method_order(curves["method"]))
    unit, scale = _time_unit(float(curves["wall_s"].max())) if x == "wall_s" else ("", 1.0)
    with sns.axes_style(**_STYLE):
        fig, axes = _axes_grid(len(settings), 1, 8.5, 4.4)
        for ax, setting in zip(axes[:, 0], settings):
            in_setting = curves[curves["setting"] == setting]
            for method in method_order(in_setting["method"]):
                runs = in_setting[in_setting["method"] == method]
                colour = palette.get(method)
                for _, run in runs.groupby("run_id"):
                    ax.plot(run[x] / scale, run["knn_acc1"], color=colour, alpha=0.3, lw=1)
                mean = runs.groupby("epoch")[[x, "knn_acc1"]].mean().reset_index(drop=True)
                n = runs["run_id"].nunique()
                ax.plot(
                    mean[x] / scale,
                    mean["knn_acc1"],
                    color=colour,
                    lw=2.2,
                    marker="o",
                    ms=4,
                    label=f"{_name(method)} ({n} run)"
                    if n == 1
                    else f"{_name(method)} (mean of {n})",
                )
            floor = _floor_means(done, setting).get("knn_acc1_k20")
            if floor is not None:
                ax.axhline(
                    floor,
                    ls="--",
                    color=palette["random"],
                    lw=1.4,
                    label=f"random-init floor: {floor:.1f}%",
                )
            if x == "epoch":
                ax.set_xlabel("epoch")
                ax.xaxis.get_major_locator().set_params(integer=True)
            else:
                ax.set_xlabel(f"training wall-clock time ({unit}; kNN monitoring excluded)")
                ax.set_xlim(left=0)
            ax.set_ylabel("kNN acc@1, k=20 (%)")
            ax.set_title(f"{setting}\nkNN accuracy during training (thick: mean; thin: seeds)")
            ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def _throughput_figure(df: pd.DataFrame, path: Path) -> Path | None:
    done = _done(df)
    done = done[done["images_per_s"].notna() & (done["method"] != "random")]
    if done.empty:
        return None
    settings = list(done["setting"].drop_duplicates())
    palette = _palette(method_order(done["method"]))
    gpu = done["peak_gpu_memory_bytes"].notna().any()
    mem_col = "peak_gpu_memory_bytes" if gpu else "peak_rss_bytes"
    mem_max = float(pd.to_numeric(done[mem_col], errors="coerce").max() or 0)
    mem_unit, mem_scale = ("GiB", 2.0**30) if mem_max >= 2**30 else ("MiB", 2.0**20)
    with sns.axes_style(**_STYLE):
        fig, axes = _axes_grid(len(settings), 2, 5.2, 4.0)
        for (ax_speed, ax_mem), setting in zip(axes, settings):
            rows = done[done["setting"] == setting].copy()
            order = method_order(rows["method"])
            rows["name"] = rows["method"].map(_name)
            rows["memory"] = pd.to_numeric(rows[mem_col], errors="coerce").astype(float) / mem_scale
            names = [_name(m) for m in order]
            colours = {_name(m): palette[m] for m in order}
            for ax, col, label in (
                (ax_speed, "images_per_s", "throughput (source images/s)"),
                (ax_mem, "memory", f"peak {'GPU' if gpu else 'process RSS'} memory ({mem_unit})"),
            ):
                if rows[col].notna().sum() == 0:
                    ax.set_axis_off()
                    continue
                sns.barplot(
                    data=rows,
                    x="name",
                    y=col,
                    hue="name",
                    order=names,
                    hue_order=names,
                    palette=colours,
                    errorbar=None,
                    ax=ax,
                    legend=False,
                    alpha=0.85,
                )
                sns.stripplot(
                    data=rows,
                    x="name",
                    y=col,
                    order=names,
                    color="black",
                    size=4,
                    ax=ax,
                    alpha=0.7,
                )
                ax.set_xlabel("method (bar: mean; dots: seeds)")
                ax.set_ylabel(label)
                ax.tick_params(axis="x", labelrotation=20)
            ax_speed.set_title(f"{setting}\ntraining throughput", fontsize=10)
            ax_mem.set_title(f"{setting}\npeak memory", fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------


def _headline_rows(summary: pd.DataFrame) -> list[list[str]]:
    rows = []
    for r in summary.itertuples():
        row = [_name(r.method), str(r.n_runs)]
        for metric in HEADLINE_METRICS:
            row.append(
                _mean_sd(
                    getattr(r, f"{metric}_mean", math.nan), getattr(r, f"{metric}_sd", math.nan)
                )
            )
        rows.append(row)
    return rows


def headline_table(summary: pd.DataFrame) -> str:
    """Plain-text table (method, n, kNN acc@1, linear acc@1, online acc@1; mean ± sd, %)."""
    header = ["method", "n", "kNN acc@1 (k=20) %", "linear acc@1 %", "online acc@1 %"]
    lines = []
    for setting in summary["setting"].drop_duplicates():
        rows = _headline_rows(summary[summary["setting"] == setting])
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

        def fmt(cells, widths=widths):
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            )

        lines += [setting, fmt(header), fmt(["-" * w for w in widths])]
        lines += [fmt(r) for r in rows] + [""]
    return "\n".join(lines).rstrip()


def _summary_section(doc: _Doc, df: pd.DataFrame, summary: pd.DataFrame, multi: bool):
    doc.h(2, "Results per method")
    doc.p(
        "Accuracies in percent on the test split, as mean ± standard deviation over seeds, "
        "with the 95% Student-t confidence interval of the mean "
        "(mean ± t(0.975, n−1)·sd/√n; “–” when n < 2). kNN: k = 20, cosine similarity, "
        "temperature 0.07, on frozen features. Linear: the offline probe on cached, "
        "standardised frozen features. Online: solo-learn's online linear classifier at the "
        "last epoch. Training time, images/s and peak memory are means over runs."
    )
    gpu = summary["peak_gpu_memory_bytes_mean"].notna().any()
    done = _done(df)
    for setting in summary["setting"].drop_duplicates():
        rows = summary[summary["setting"] == setting]
        if multi:
            doc.h(3, setting)
        header = ["method", "n"]
        for metric in HEADLINE_METRICS:
            header += [f"{METRIC_LABELS[metric]}", "95% CI"]
        header += ["training time", "images/s", "peak RSS"] + (["peak GPU memory"] if gpu else [])
        table = []
        for r in rows.itertuples():
            row = [_name(r.method), str(r.n_runs)]
            for metric in HEADLINE_METRICS:
                mean, sd, low, high = (
                    getattr(r, f"{metric}_{k}", math.nan)
                    for k in ("mean", "sd", "ci_low", "ci_high")
                )
                row += [_mean_sd(mean, sd), _ci(low, high)]
            row += [
                _seconds(r.wall_time_s_mean) if r.method != "random" else _DASH,
                _num(r.images_per_s_mean, ".1f"),
                _bytes(r.peak_rss_bytes_mean),
            ]
            if gpu:
                row.append(_bytes(r.peak_gpu_memory_bytes_mean))
            table.append(row)
        doc.table(header, table, align="lr")
        doc.p(_floor_sentence(done, rows, setting))


def _floor_sentence(done: pd.DataFrame, rows: pd.DataFrame, setting: str) -> str:
    floor = _floor_means(done, setting).get("knn_acc1_k20")
    if floor is None:
        return (
            "No random-init run (`method=random`) finished in this setting: there is no floor "
            "to compare the kNN accuracies with."
        )
    trained = [m for m in rows["method"] if m != "random"]
    if not trained:
        return f"The random-init floor is {floor:.2f}% kNN acc@1; no trained method finished."
    verdicts = {"clearly above": [], "above, but not clearly": [], "not above": [], None: []}
    for method in trained:
        verdict, text = _floor_verdict(done[done["setting"] == setting], method)
        verdicts[verdict].append(f"{_name(method)} ({text})" if verdict else _name(method))
    parts = [
        f"kNN acc@1 against the random-init floor ({floor:.2f}% for an untrained backbone), "
        "paired by seed, in percentage points with the 95% t-interval of the mean difference; "
        "**clearly above** means the interval lies above 0."
    ]
    if verdicts["not above"]:
        parts.append(
            f"**Not above the random-init floor:** {'; '.join(verdicts['not above'])}. "
            "In this setting, that pretraining has not improved on random features."
        )
    if verdicts["above, but not clearly"]:
        parts.append(
            "Above the floor, but not clearly (one seed, or an interval that is not above 0): "
            f"{'; '.join(verdicts['above, but not clearly'])}."
        )
    if verdicts[None]:
        parts.append(
            f"Not compared (no seed with both a kNN result and a floor run): "
            f"{', '.join(verdicts[None])}."
        )
    if verdicts["clearly above"]:
        parts.append(f"Clearly above the floor: {'; '.join(verdicts['clearly above'])}.")
    if len(verdicts["clearly above"]) == len(trained):
        parts.append("Every method's mean kNN acc@1 is clearly above the random-init floor.")
    return " ".join(parts)


def _floor_verdict(done: pd.DataFrame, method: str) -> tuple[str | None, str]:
    """Classify ``method`` against the random floor from its seed-paired kNN differences."""
    diff = paired_differences(done, "knn_acc1_k20", reference=method)
    diff = diff[diff["baseline"] == "random"]
    if diff.empty or diff.iloc[0]["n_pairs"] == 0:
        return None, ""
    r = diff.iloc[0]
    text = f"{r.mean_diff:+.2f} pp, n = {int(r.n_pairs)}"
    if _present(r.ci_low) and not pd.isna(r.ci_low):
        text += f", 95% CI {r.ci_low:+.2f} to {r.ci_high:+.2f}"
    if r.mean_diff <= 0:
        return "not above", text
    if _present(r.ci_low) and not pd.isna(r.ci_low) and r.ci_low > 0 and r.sd_diff > 0:
        return "clearly above", text
    return "above, but not clearly", text


def _paired_section(doc: _Doc, df: pd.DataFrame, multi: bool):
    doc.h(2, "EMIM minus each baseline, paired by seed")
    done = _done(df)
    if not (done["method"] == "emim").any():
        doc.p("There is no finished EMIM run in this sweep, so EMIM cannot be compared.")
        return
    doc.p(
        "Differences in percentage points (EMIM − baseline) over the seeds both finished, "
        "with the 95% t-interval of the mean difference and the two-sided paired t-test "
        "(`scipy.stats.ttest_rel`). A positive difference favours EMIM. With few seeds the "
        "test has little power: a large p-value is not evidence of equal accuracy. "
        "p-values are not corrected for the several comparisons."
    )
    metrics = ["knn_acc1_k20", "linear_acc1"]
    emim_online = done[(done["method"] == "emim")]["online_acc1"].notna().any()
    if emim_online:
        metrics.append("online_acc1")
    parts = [paired_differences(df, m) for m in metrics]
    parts = [t for t in parts if not t.empty]
    if not parts:
        doc.p("EMIM has no baseline to compare with in this sweep.")
        return
    tables = pd.concat(parts, ignore_index=True)
    for setting in tables["setting"].drop_duplicates():
        if multi:
            doc.h(3, setting)
        part = tables[tables["setting"] == setting]
        rows = [
            [
                METRIC_LABELS[r.metric],
                _name(r.baseline),
                str(r.n_pairs),
                _num(r.reference_mean),
                _num(r.baseline_mean),
                _num(r.mean_diff, "+.2f"),
                _ci(r.ci_low, r.ci_high, "+.2f"),
                _num(r.t, ".2f"),
                _p(r.p_value),
                r.note,
            ]
            for r in part.itertuples()
        ]
        header = [
            "metric",
            "baseline",
            "paired seeds",
            "EMIM mean (paired seeds)",
            "baseline mean",
            "EMIM − baseline (pp)",
            "95% CI",
            "t",
            "p (paired t-test)",
            "note",
        ]
        doc.table(header, rows, align="llrrrrrrrl")
        singles = part[part["n_pairs"] == 1]
        if len(singles):
            seed = singles["seeds"].iloc[0]
            doc.p(
                f"Only one seed (seed {seed}) is paired for "
                f"{', '.join(sorted({_name(b) for b in singles['baseline']}))}: "
                f"{NO_TEST_ONE_SEED}, and the difference above is a single observation. "
                "Run more seeds (`seed=1`, `seed=2`, ...) for an interval and a test."
            )
        none = part[part["n_pairs"] == 0]
        if len(none):
            names = ", ".join(sorted({_name(b) for b in none["baseline"]}))
            doc.p(f"No seed was finished by both EMIM and {names}: nothing to pair.")
        tested = part[part["p_value"].notna()]
        significant = tested[tested["p_value"] < 0.05]
        if len(tested):
            if len(significant):
                doc.p(
                    "Differences with p < 0.05: "
                    + "; ".join(
                        f"{METRIC_LABELS[r.metric]} vs {_name(r.baseline)} "
                        f"({r.mean_diff:+.2f} pp, p = {_p(r.p_value)})"
                        for r in significant.itertuples()
                    )
                    + "."
                )
            else:
                doc.p("No difference reaches p < 0.05.")
    duplicates = done.groupby(["setting", "method", "seed"]).size()
    duplicates = duplicates[duplicates > 1]
    if len(duplicates):
        names = ", ".join(f"{_name(m)} seed {s}" for _, m, s in duplicates.index)
        doc.p(
            f"Several finished runs share a seed ({names}), e.g. runs with different "
            "hyperparameters in one sweep; they were averaged per seed before pairing."
        )


def _published_section(doc: _Doc, summary: pd.DataFrame, df: pd.DataFrame):
    doc.h(2, "Published numbers")
    table = published_comparison(summary)
    if table.empty:
        settings = "; ".join(summary["setting"].drop_duplicates()) or "no finished run"
        budgets = sorted(set(_done(df)["budget"].dropna()))
        budget = f" (budget {', '.join(budgets)})" if budgets else ""
        doc.p(
            f"The setting of these runs ({settings}{budget}) matches no published one "
            "(solo-learn: CIFAR-10/100 with ResNet-18 for 1000 epochs, ImageNet-100 with "
            "ResNet-18 for 400 epochs), so no published number is shown beside ours."
        )
        return
    doc.p(
        f"Online linear acc@1 (%) beside the {PUBLISHED_SOURCE} for the same dataset, "
        "backbone and number of epochs. EMIM's published column is empty: the EMIM paper's "
        "numbers are not available here."
    )
    rows = [
        [
            r.setting,
            _name(r.method),
            _mean_sd(r.ours_mean, r.ours_sd),
            str(r.n),
            _num(r.published),
            _num(r.difference, "+.2f"),
        ]
        for r in table.itertuples()
    ]
    doc.table(
        ["setting", "method", "ours (mean ± sd)", "n", "published", "ours − published (pp)"],
        rows,
        align="llr",
    )
    done = _done(df)
    subsets = done[done["setting"].isin(table["setting"]) & done["train_size"].notna()]
    if len(subsets):
        doc.p(
            "Some of these runs pretrained on a subset of the training set "
            f"(`data.train_size` = {', '.join(str(s) for s in sorted(set(subsets['train_size'])))}"
            "), unlike the published recipe: the comparison is indicative only."
        )


def _problems_section(doc: _Doc, df: pd.DataFrame):
    doc.h(2, "Failed, partial and missing runs")
    bad = df[df["status"] != "done"]
    if bad.empty:
        doc.p("None: every run of the sweep finished.")
        return
    counts = bad["status"].value_counts()
    doc.p(
        ", ".join(f"{counts[s]} {s}" for s in ("failed", "partial", "missing") if s in counts)
        + ". Failed runs keep `failed.json` (and their last good checkpoint); partial runs "
        "resume from their checkpoint when the same command is run again; missing runs never "
        "saved anything. None of them enters the statistics above."
    )
    rows = [
        [
            f"`{r.run_id}`",
            _name(r.method),
            "–" if pd.isna(r.seed) else str(r.seed),
            f"**{r.status}**",
            r.detail,
        ]
        for r in bad.itertuples()
    ]
    doc.table(["run", "method", "seed", "status", "detail"], rows, align="l")


def _environment_section(doc: _Doc, df: pd.DataFrame, command: str, command_note: str = ""):
    doc.h(2, "Environment and reproduction")
    done = _done(df)
    rows = []
    for key in VERSION_FIELDS:
        values = done[f"version_{key}"].dropna().astype(str)
        if values.empty:
            rows.append([key, _DASH])
        elif values.nunique() == 1:
            rows.append([key, f"`{values.iloc[0]}`"])
        else:
            counts = values.value_counts()
            rows.append(
                [key, "**differs**: " + ", ".join(f"`{v}` ({n} runs)" for v, n in counts.items())]
            )
    doc.table(["package", "version"], rows, align="l")
    differ = [r[0] for r in rows if r[1].startswith("**differs")]
    if differ:
        doc.p(f"Versions differ across runs ({', '.join(differ)}): compare with care.")
    devices = (
        df[df["status"] != "missing"][["accelerator", "devices", "precision"]]
        .astype(str)
        .value_counts()
    )
    device = "; ".join(
        f"accelerator `{a}`, devices `{d}`, precision `{p}` ({n} runs)"
        for (a, d, p), n in devices.items()
    )
    sweeps = ", ".join(f"`{s}`" for s in df["sweep"].dropna().astype(str).unique()) or _DASH
    started = done["started_utc"].dropna()
    finished = done["finished_utc"].dropna()
    items = [f"Device: {device or _DASH}.", f"Sweep: {sweeps}."]
    if len(started):
        items.append(f"Runs started {started.min()} and finished by {finished.max()} (UTC).")
    batch = sorted({int(b) for b in done["batch_size"].dropna()})
    if batch:
        items.append(f"Batch size per device: {', '.join(map(str, batch))}.")
    resumed = done[done["starts"].fillna(0) > 1]
    if len(resumed):
        items.append(
            f"Resumed runs ({', '.join(f'`{r}`' for r in resumed['run_id'])}): their training "
            "time and images/s in results.json cover the last start only; their curve's "
            "wall-clock covers every start."
        )
    doc.bullets(items)
    doc.p(f"Command{command_note}:")
    doc.code(command)


def _notes_section(doc: _Doc, df: pd.DataFrame):
    methods = set(df["method"].dropna())
    notes = [QUIRKS[m] for m in method_order(methods) if m in QUIRKS]
    notes.append(
        "The offline linear probe trains a softmax classifier on cached, standardised, "
        "non-augmented features; expect it 1–2 points below solo-learn's augmented probe."
    )
    doc.h(2, "Notes")
    doc.bullets(notes)


def _per_run_section(doc: _Doc, df: pd.DataFrame):
    doc.h(2, "Every run")
    rows = [
        [
            f"`{r.run_id}`",
            _name(r.method),
            "–" if pd.isna(r.seed) else str(r.seed),
            r.status,
            _num(r.knn_acc1_k20),
            _num(r.linear_acc1),
            _num(r.online_acc1),
            _seconds(r.wall_time_s) if r.status == "done" and r.method != "random" else _DASH,
            _num(r.images_per_s, ".1f"),
        ]
        for r in df.itertuples()
    ]
    doc.table(
        [
            "run",
            "method",
            "seed",
            "status",
            "kNN acc@1",
            "linear acc@1",
            "online acc@1",
            "training time",
            "images/s",
        ],
        rows,
        align="llrlr",
    )
    doc.p("All columns (every metric, training statistics, versions) are in `results.csv`.")


def write_report(
    runs_dir: str | Path,
    out_dir: str | Path,
    command: str | None = None,
    expected: Sequence[str] | None = None,
    notes: str = "",
) -> Path:
    """Write the report of the sweep in ``runs_dir`` into ``out_dir``.

    Writes ``report.md``, a self-contained ``report.html`` (figures embedded as
    base64 PNG), ``results.csv`` (:func:`collect_runs`, one row per run) and
    ``figures/*.png``. Figures without data (e.g. no curve) are not written.

    Args:
        runs_dir: the sweep folder of run directories.
        out_dir: the output folder (created; files of an earlier report are replaced).
        command: the command that reproduces the sweep, shown verbatim (default:
            ``emim-bench report RUNS_DIR -o OUT``).
        expected: run ids of the sweep plan; those never started are listed as missing.
        notes: the sweep file's ``notes`` key, shown under "Sweep notes": plain
            paragraphs separated by blank lines (line breaks inside one are joined;
            `code` and **bold** are rendered); nothing when empty.

    Returns:
        The path of ``report.html``.

    Raises:
        ReportError: ``runs_dir`` does not exist, or it holds no run directory and no
            run is expected.
    """
    return _write(runs_dir, out_dir, command, expected, notes)[0]


def _write(runs_dir, out_dir, command, expected, notes="") -> tuple[Path, pd.DataFrame]:
    """:func:`write_report`, also returning the :func:`method_summary` it rendered."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    df = collect_runs(runs_dir, expected)
    if df.empty:
        hint = ""
        if any(_run_dirs(p) for p in runs_dir.iterdir() if p.is_dir()):
            hint = " (it holds sweep folders: pass one of them, e.g. runs/<sweep>)"
        raise ReportError(f"RUNS_DIR {runs_dir} holds no run directories{hint}")
    command_note = ""
    if not command:
        command = f"emim-bench report {shlex.quote(str(runs_dir))} -o {shlex.quote(str(out_dir))}"
        command_note = " (this report's; `--command` records the sweep's own)"
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:
        (figures_dir / name).unlink(missing_ok=True)
    summary = method_summary(df)
    curves = collect_curves(_done(df))
    multi = summary["setting"].nunique() > 1

    sweeps = sorted(df["sweep"].dropna().astype(str).unique())
    title = f"EMIM benchmark report: {', '.join(sweeps) or runs_dir.name}"
    doc = _Doc(out_dir)
    doc.h(1, title)
    counts = df["status"].value_counts()
    doc.p(
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from "
        f"`{runs_dir}`: {len(df)} run{'s' if len(df) != 1 else ''}, "
        + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "failed", "partial", "missing"))
        + "."
    )
    if summary.empty:
        doc.p("No run finished: there are no statistics to show.")
    else:
        doc.p("Settings: " + "; ".join(f"**{s}**" for s in summary["setting"].unique()) + ".")
        _summary_section(doc, df, summary, multi)
        accuracy = _accuracy_figure(df, summary, figures_dir / "accuracy.png")
        if accuracy:
            doc.figure(
                accuracy,
                "Accuracy per method: bars are means with 95% t-intervals over seeds (no bar "
                "for n = 1), dots are single seeds, dashed lines the random-init floor.",
            )
        _paired_section(doc, df, multi)
    if notes.strip():
        doc.h(2, "Sweep notes")
        for paragraph in notes.strip().split("\n\n"):
            doc.p(" ".join(paragraph.split()))
    if not summary.empty:
        doc.h(2, "Learning curves")
        by_epoch = _curve_figure(curves, _done(df), "epoch", figures_dir / "knn_vs_epoch.png")
        by_time = _curve_figure(curves, _done(df), "wall_s", figures_dir / "knn_vs_time.png")
        if by_epoch:
            doc.figure(by_epoch, "kNN acc@1 (k=20) of the per-epoch monitor against epoch.")
            doc.figure(
                by_time,
                "kNN acc@1 (k=20) against training wall-clock time (the kNN monitoring "
                "itself excluded): accuracy per unit of compute.",
            )
        else:
            doc.p("No run has a curve with kNN accuracy (`curve.csv`): no learning curves.")

        doc.h(2, "Throughput and memory")
        throughput = _throughput_figure(df, figures_dir / "throughput.png")
        if throughput:
            doc.figure(
                throughput,
                "Training throughput in source images per second (two views each) and peak "
                "memory, per method.",
            )
        else:
            doc.p("No finished training run reports its throughput.")
        _published_section(doc, summary, df)
    _problems_section(doc, df)
    _per_run_section(doc, df)
    _environment_section(doc, df, command, command_note)
    _notes_section(doc, df)

    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "results.csv", index=False)
    (out_dir / "report.md").write_text(doc.markdown())
    html_path = out_dir / "report.html"
    html_path.write_text(doc.html(title))
    return html_path, summary


# ---------------------------------------------------------------------------------------
# `emim-bench report RUNS_DIR -o OUT`
# ---------------------------------------------------------------------------------------


def register(subparsers) -> None:
    """Add the ``report`` subcommand and its handler to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "report",
        help="the report of a sweep: tables, paired tests, figures (md, html, csv)",
        description="Read every run directory of a sweep folder and write report.md, a "
        "self-contained report.html, results.csv and figures/*.png into the output folder.",
    )
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="sweep folder, e.g. runs/smoke")
    parser.add_argument("-o", "--out", required=True, help="output folder, e.g. reports/smoke")
    parser.add_argument(
        "--command",
        default=None,
        help="the command that reproduces the sweep, shown in the report "
        "(default: this report command)",
    )
    parser.add_argument(
        "--expected",
        default=None,
        metavar="FILE",
        help="text file of the sweep plan's run ids, one a line: those without a directory "
        "are listed as missing",
    )
    parser.add_argument(
        "--sweep",
        default=None,
        metavar="FILE",
        help="the sweep file, for its notes (shown under 'Sweep notes')",
    )
    parser.set_defaults(handler=_report_command)


def _report_command(args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs_dir)
    try:
        expected = None
        if args.expected:
            try:
                lines = Path(args.expected).read_text().splitlines()
            except OSError as error:
                raise ReportError(f"cannot read --expected {args.expected}: {error}") from None
            expected = [s.strip() for s in lines if s.strip() and not s.startswith("#")]
        notes = _sweep_notes(args.sweep) if args.sweep else ""
        html_path, summary = _write(runs_dir, args.out, args.command, expected, notes)
    except ReportError as error:
        print(f"emim-bench report: error: {error}", file=sys.stderr)
        return 2
    if not summary.empty:
        print(headline_table(summary))
    print(f"\nwrote {html_path} (and report.md, results.csv, figures/)")
    return 0


def _sweep_notes(path: str) -> str:
    from emim_bench import sweep  # sweep imports this module at run time, not at import

    try:
        return sweep.load_sweep(path).notes
    except sweep.SweepError as error:
        raise ReportError(str(error)) from None
