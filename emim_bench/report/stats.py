"""Statistics over seeds: t-intervals per method, EMIM minus each baseline paired by seed, and
the one-factor-at-a-time slices of an ablation with the setting each one favours."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


def variant_of(group: str) -> dict[str, str]:
    """The settings in a group label: ``"emim D=64 eps=1e-2"`` -> ``{"D": "64", "eps": "1e-2"}``."""
    return dict(part.split("=", 1) for part in str(group).split(" ")[1:] if "=" in part)


def as_numbers(values: Sequence[str]) -> list[float] | None:
    """``["64", "1e-2"]`` -> ``[64.0, 0.01]``; None when a value is not a number."""
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


@dataclass(frozen=True)
class AblationPanel:
    """One slice of an ablation: the groups of one method that differ only in ``key``.

    Attributes:
        setting: the setting label (dataset, backbone, epochs, training-set size).
        method: the method's name (``"emim"``).
        key: the short name of the varied key (``"D"``, ``"eps"``, ``"lr"``).
        centre: the key's most common value among the method's groups, as labelled; in a
            one-factor-at-a-time sweep, the default the others are varied around. None when
            two values are equally common (a full grid, or a sweep not yet finished); the
            slice then holds the other keys at their first most common value.
        rows: the :func:`method_summary` rows of the slice, in increasing order of the
            key's value (numeric when every value is a number, else as the sweep ran them).
    """

    setting: str
    method: str
    key: str
    centre: str | None
    rows: pd.DataFrame

    @property
    def values(self) -> list[str]:
        """The key's value in each row, as labelled (``"1e-2"``)."""
        return [variant_of(m)[self.key] for m in self.rows["method"]]


def ablation_panels(summary: pd.DataFrame) -> list[AblationPanel]:
    """The one-factor-at-a-time slices of a sweep's groups: for each setting, method and
    varied key, the groups whose other keys hold their most common value, when that leaves
    two or more values of the key. The random floor has none.

    Args:
        summary: a :func:`method_summary` frame whose groups carry labels such as
            ``"emim D=64 eps=1e-2"``.
    """
    panels = []
    trained = summary[summary["method"] != "random"]
    for setting in trained["setting"].drop_duplicates():
        in_setting = trained[trained["setting"] == setting]
        for base in method_order(in_setting["method"].map(base_method)):
            groups = in_setting[in_setting["method"].map(base_method) == base]
            variants = [variant_of(m) for m in groups["method"]]
            keys = list(dict.fromkeys(k for v in variants for k in v))
            counts = {k: Counter(v.get(k) for v in variants).most_common(2) for k in keys}
            modes = {k: c[0][0] for k, c in counts.items()}
            tied = {k for k, c in counts.items() if len(c) == 2 and c[0][1] == c[1][1]}
            for key in keys:
                rows = [
                    i
                    for i, v in enumerate(variants)
                    if all(v.get(other) == modes[other] for other in keys if other != key)
                ]
                values = [variants[i].get(key) for i in rows]
                if len(set(values)) < 2:
                    continue
                numbers = as_numbers(values)
                if numbers:
                    rows = [rows[i] for i in np.argsort(numbers, kind="stable")]
                centre = None if key in tied else modes[key]
                panels.append(AblationPanel(setting, base, key, centre, groups.iloc[rows]))
    return panels


def selection_choices(summary: pd.DataFrame, metric: str = "knn_acc1_k20") -> pd.DataFrame:
    """What each ablation slice favours: its best alternative to the centre value, and whether
    that alternative beats the centre by more than the seeds' noise.

    The rule: change a setting only when the best other value's mean exceeds the centre's by
    more than twice the standard error of the difference of the two means,
    ``2 · s_p · sqrt(1/n_best + 1/n_centre)``, where ``s_p`` pools the seed-to-seed standard
    deviations of all the slice's groups with two seeds or more (squared deviations over
    degrees of freedom); otherwise keep the centre. The rule needs two seeds of both values
    compared. Two-standard-error margins are a rough guide, not a test corrected for the
    several values compared.

    Args:
        summary: a :func:`method_summary` frame (accuracies in percent).
        metric: the accuracy the choice is made on (the selection sweep's: validation kNN
            acc@1, k = 20).

    Returns:
        One row per :class:`AblationPanel` with ``setting``, ``method``, ``key``,
        ``values`` (the key's values, in the panel's order), ``means`` and ``n`` (the metric's
        mean over seeds and the number of seeds, per value), ``centre`` (None when no value
        is the most common), ``best_other`` (the
        other value with the highest mean; None when no other value has one), ``gain`` (its
        mean minus the centre's, percentage points), ``two_se`` (percentage points),
        ``choice`` (``best_other`` when ``gain > two_se``, else ``centre``; None when there
        is no centre or it was not run) and ``note`` (why no verdict could be reached, else
        ""). Empty when ``summary`` has no ``metric``.
    """
    columns = ["setting", "method", "key", "values", "means", "n", "centre", "best_other"]
    columns += ["gain", "two_se", "choice", "note"]
    if f"{metric}_mean" not in summary:
        return pd.DataFrame(columns=columns)
    rows = []
    for panel in ablation_panels(summary):
        values = panel.values
        means = panel.rows[f"{metric}_mean"].to_numpy(float)
        sds = panel.rows[f"{metric}_sd"].to_numpy(float)
        ns = panel.rows[f"{metric}_n"].fillna(0).to_numpy(int)
        row = {
            "setting": panel.setting,
            "method": panel.method,
            "key": panel.key,
            "values": values,
            "means": means.tolist(),
            "n": ns.tolist(),
            "centre": panel.centre,
            **_verdict(values, means, sds, ns, panel.centre),
        }
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def _verdict(values, means, sds, ns, centre_value) -> dict:
    """``best_other``, ``gain``, ``two_se``, ``choice`` and ``note`` of one ablation slice."""
    out = {"best_other": None, "gain": math.nan, "two_se": math.nan, "choice": None, "note": ""}
    if centre_value is None:
        out["note"] = "no value is more common than the others: no centre to compare with"
        return out
    if centre_value not in values:
        out["note"] = "the centre value has not been run in this slice"
        return out
    centre = values.index(centre_value)
    out["choice"] = centre_value
    others = [i for i in range(len(values)) if i != centre and ns[i] > 0]
    if not others or ns[centre] == 0:
        out["note"] = "no run of the centre or of another value finished"
        return out
    best = max(others, key=lambda i: means[i])
    out["best_other"], out["gain"] = values[best], float(means[best] - means[centre])
    dof = np.clip(ns - 1, 0, None)
    if min(ns[best], ns[centre]) < 2:
        out["note"] = "a value compared has one seed: no spread to judge by"
        return out
    pooled_var = float(np.sum(dof[dof > 0] * sds[dof > 0] ** 2) / dof.sum())
    out["two_se"] = 2 * math.sqrt(pooled_var * (1 / ns[best] + 1 / ns[centre]))
    if out["gain"] > out["two_se"]:
        out["choice"] = values[best]
    return out
