"""Statistics over seeds: t-intervals per method and EMIM minus each baseline, paired by seed."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from emim_bench.report.collect import done_runs, metric_columns
from emim_bench.report.labels import base_method, method_order

NO_TEST_ONE_SEED = "no test is possible with a single seed"


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


def method_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per setting and method, over the finished runs: accuracy statistics and training cost.

    Args:
        df: a :func:`collect_runs` frame (only ``status == "done"`` rows are used).

    Returns:
        One row per (``setting``, ``method``) in :func:`method_order`, with ``dataset``,
        ``backbone``, ``epochs``, ``n_runs`` and, for every metric ``m`` (percent),
        ``m_mean``, ``m_sd``, ``m_n``, ``m_ci_low``, ``m_ci_high`` (:func:`t_interval`
        over seeds, several runs of one seed averaged first; NaN when n < 2), and the
        means over runs of ``wall_time_s`` (s), ``images_per_s``, ``peak_rss_bytes`` and
        ``peak_gpu_memory_bytes`` (bytes), named ``<field>_mean``.
    """
    done = done_runs(df)
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
            # Runs of one seed (copies of one setting) count once: the seeds are the replicates.
            per_seed = runs.groupby("seed", dropna=False)
            for metric in metric_columns(done):
                for key, value in t_interval(per_seed[metric].mean()).items():
                    row[f"{metric}_{key}"] = value
            for field in ("wall_time_s", "images_per_s", "peak_rss_bytes", "peak_gpu_memory_bytes"):
                # numeric in collect_runs' frame; pandas' mean skips NaN (all NaN: NaN)
                row[f"{field}_mean"] = float(runs[field].astype(float).mean())
            rows.append(row)
    if not rows:
        return pd.DataFrame(
            columns=["setting", "dataset", "backbone", "epochs", "method", "n_runs"]
        )
    return pd.DataFrame(rows)


def paired_differences(df: pd.DataFrame, metric: str, reference: str = "emim") -> pd.DataFrame:
    """``reference`` (EMIM) minus each other method on ``metric``, paired by seed.

    Only seeds that both methods finished (in the same setting) are paired; several
    runs of one method with the same seed are averaged first. ``reference`` is a group
    (``"emim D=64"``) or a method name, which stands for all of its groups; each is
    compared with every group of the other methods, not with its own method's groups.

    Args:
        df: a :func:`collect_runs` frame (only ``status == "done"`` rows are used).
        metric: a metric column, e.g. ``"knn_acc1_k20"`` (percent).

    Returns:
        One row per (``setting``, ``reference``, ``baseline``) with ``metric``,
        ``n_pairs``, ``seeds``, ``reference_mean``, ``baseline_mean``, ``mean_diff``,
        ``sd_diff``, ``ci_low``, ``ci_high`` (percentage points; 95% Student-t interval
        of the mean difference, NaN for fewer than 2 pairs), ``t`` and ``p_value`` (two-sided
        :func:`scipy.stats.ttest_rel`, NaN for fewer than 2 pairs or identical
        differences) and ``note``. Empty when ``reference`` has no finished run.
    """
    columns = [
        "setting",
        "metric",
        "reference",
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
    done = done_runs(df)
    if metric not in done.columns:
        return pd.DataFrame(columns=columns)
    done = done[done[metric].notna()]
    rows = []
    for setting in done["setting"].drop_duplicates():
        in_setting = done[done["setting"] == setting]
        per_seed = in_setting.groupby(["method", "seed"])[metric].mean()
        groups = method_order(in_setting["method"])
        for group in groups:
            if group == reference or base_method(group) == reference:
                rows += _paired_rows(per_seed, setting, metric, group, groups)
    return pd.DataFrame(rows, columns=columns)


def _paired_rows(per_seed: pd.Series, setting: str, metric: str, reference: str, groups):
    """The rows of :func:`paired_differences` for one reference group."""
    rows = []
    ref = per_seed.loc[reference]
    for baseline in groups:
        if base_method(baseline) == base_method(reference):
            continue
        has_seeds = baseline in per_seed.index.get_level_values("method")
        base = per_seed.loc[baseline] if has_seeds else pd.Series(dtype=float)
        seeds = sorted(set(ref.index) & set(base.index))
        a, b = ref.loc[seeds].to_numpy(), base.loc[seeds].to_numpy()
        ci = t_interval(a - b)
        row = {
            "setting": setting,
            "metric": metric,
            "reference": reference,
            "baseline": baseline,
            "n_pairs": len(seeds),
            "seeds": ",".join(str(int(s)) for s in seeds),
            "reference_mean": float(a.mean()) if len(seeds) else math.nan,
            "baseline_mean": float(b.mean()) if len(seeds) else math.nan,
            "mean_diff": ci["mean"],
            "sd_diff": ci["sd"],
            "ci_low": ci["ci_low"],
            "ci_high": ci["ci_high"],
            "note": "",
        }  # t and p_value: NaN unless the test below runs
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
    return rows
