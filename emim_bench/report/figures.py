"""The report's figures (seaborn): accuracy per method, kNN curves, throughput and memory."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from emim_bench.report.collect import done_runs
from emim_bench.report.labels import (
    HEADLINE_METRICS,
    METHOD_NAMES,
    METRIC_LABELS,
    base_method,
    method_label,
    method_order,
)
from emim_bench.report.published import PUBLISHED_ONLINE_ACC1
from emim_bench.report.stats import ablation_panels, as_numbers
from emim_bench.run.directory import FEATURES_FILE

FIGURES = (
    "accuracy.png",
    "ablation.png",
    "knn_vs_epoch.png",
    "knn_vs_time.png",
    "diagnostics.png",
    "saturation.png",
    "umap.png",
    "throughput.png",
)
# The per-epoch collapse diagnostics of curve.csv and how they are labelled.
DIAGNOSTICS = {
    "rankme_backbone": "RankMe of backbone features",
    "rankme_projector": "RankMe of projector output",
    "alignment": "alignment (lower: views agree)",
    "uniformity": "uniformity (lower: more uniform; 0: collapsed)",
}
_STYLE = dict(style="whitegrid")


@contextlib.contextmanager
def _fixed_jitter(seed: int = 0) -> Iterator[None]:
    """numpy's global generator seeded for the block, then restored.

    seaborn's ``stripplot`` jitters its dots with ``np.random`` (no seed argument), which
    made the same runs give a different PNG on every report.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


# The paper's five methods take tab10's first five colours, solo-learn's other ten tab20b's
# darker halves, EMIM's two log-determinant relatives two of Dark2's: one colour per method
# in every report.
_KNOWN_METHODS = [m for m in METHOD_NAMES if m != "random"]
_PAPER_METHODS, _ZOO_METHODS = _KNOWN_METHODS[:5], _KNOWN_METHODS[5:15]
_RELATIVES = _KNOWN_METHODS[15:]


def _palette(methods: Sequence[str]) -> dict[str, tuple]:
    """A colour per method (group), the same in every report for every method of the zoo: the
    five methods of the paper take tab10's first five, solo-learn's other ten methods ten
    colours of tab20b, CorInfoMax and MEC two of Dark2; groups that differ in their settings
    (``emim D=64``) take tab10's other colours but grey, less those too close (RGB distance
    below 0.25) to a method's or the floor's colour in this report, or, when there are more
    groups than that, n evenly spaced hues dealt out with a stride near 0.38 n, so that groups
    listed next to each other (the values of one factor) get far-apart hues; the floor is
    grey."""
    tab10, tab20b = sns.color_palette("tab10", 10), sns.color_palette("tab20b", 20)
    palette = {m: tab10[i] for i, m in enumerate(_PAPER_METHODS)}
    palette.update({m: tab20b[2 * i] for i, m in enumerate(_ZOO_METHODS)})
    dark2 = sns.color_palette("Dark2", 8)
    palette.update({m: dark2[3 * i] for i, m in enumerate(_RELATIVES)})
    palette["random"] = (0.45, 0.45, 0.45)
    known = set(palette)
    extra = [m for m in method_order(methods) if m not in known]
    in_use = [palette[m] for m in methods if m in palette]
    free = [
        c for c in (tab10[i] for i in (5, 6, 8, 9)) if all(math.dist(c, u) >= 0.25 for u in in_use)
    ]
    if len(extra) <= len(free):
        palette.update(zip(extra, free))
    else:
        n = len(extra)
        hues = sns.husl_palette(n, l=0.6)
        stride = next(k for k in range(round(0.38 * n), n) if math.gcd(k, n) == 1)
        palette.update({m: hues[(i * stride) % n] for i, m in enumerate(extra)})
    return palette


def _legend(ax) -> None:
    """A legend inside the axes for a few lines, beside them (right) for more, where it
    would hide the curves."""
    if len(ax.get_legend_handles_labels()[1]) <= 4:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _axes_grid(n_rows: int, n_cols: int, width: float, height: float):
    fig = Figure(figsize=(width * n_cols, height * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, format="png")
    return path


def floor_means(done: pd.DataFrame, setting: str) -> dict[str, float]:
    floor = done[(done["setting"] == setting) & (done["method"] == "random")]
    return {m: float(floor[m].mean()) for m in HEADLINE_METRICS if floor[m].notna().any()}


def accuracy_figure(df: pd.DataFrame, summary: pd.DataFrame, path: Path) -> Path | None:
    done = done_runs(df)
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
            for metric, value in floor_means(done, setting).items():
                if metric in metrics:
                    ax.axhline(
                        value,
                        ls="--",
                        lw=1.4,
                        color=metric_colours[metric],
                        label=f"random-init floor, {METRIC_LABELS[metric]}: {value:.1f}%",
                    )
            n_labels = [f"{method_label(m)}\n(n={int(n)})" for m, n in zip(methods, rows["n_runs"])]
            if max(len(label) for label in n_labels) > 16:  # setting groups: tilt, or they overlap
                ax.set_xticks(x, n_labels, rotation=30, ha="right", fontsize=7)
            else:
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


# Settings an ablation spans over orders of magnitude: drawn on a log axis (base 2 for sizes).
_LOG_SCALE_KEYS = {"eps": 10, "lr": 10, "batch": 2, "D": 2, "hidden": 2}


def ablation_figure(summary: pd.DataFrame, done: pd.DataFrame, path: Path) -> Path | None:
    """Each headline accuracy against the value of each varied setting (one row of panels
    per method and key, the other keys at their most common value): means with 95%
    t-intervals over seeds, the random-init floor as a dashed line; eps, batch size and
    learning rate, D and widths on a log axis. None when no setting varies."""
    panels = ablation_panels(summary)
    metrics = [
        m for m in HEADLINE_METRICS if f"{m}_mean" in summary and summary[f"{m}_mean"].notna().any()
    ]
    if not panels or not metrics:
        return None
    palette = _palette(method_order(summary["method"].map(base_method)))
    with sns.axes_style(**_STYLE):
        fig, axes = _axes_grid(len(panels), len(metrics), 4.2, 3.3)
        for row, panel in zip(axes, panels):
            setting, base, key, rows = panel.setting, panel.method, panel.key, panel.rows
            values = panel.values
            numbers = as_numbers(values)
            x = np.asarray(numbers) if numbers else np.arange(len(values))
            floor = floor_means(done, setting)
            for ax, metric in zip(row, metrics):
                mean = rows[f"{metric}_mean"].to_numpy(float)
                low = np.nan_to_num(mean - rows[f"{metric}_ci_low"].to_numpy(float))
                high = np.nan_to_num(rows[f"{metric}_ci_high"].to_numpy(float) - mean)
                ax.errorbar(
                    x,
                    mean,
                    yerr=[low, high],
                    marker="o",
                    capsize=3,
                    lw=1.6,
                    color=palette.get(base),
                    label=method_label(base),
                )
                if metric in floor:
                    ax.axhline(
                        floor[metric],
                        ls="--",
                        lw=1.2,
                        color="grey",
                        label=f"random-init floor ({floor[metric]:.1f}%)",
                    )
                if numbers and key in _LOG_SCALE_KEYS and min(numbers) > 0:
                    ax.set_xscale("log", base=_LOG_SCALE_KEYS[key])
                    ax.minorticks_off()
                if not numbers:
                    ax.set_xlim(-0.5, len(x) - 0.5)
                ax.set_xticks(x, values)  # the values the sweep ran
                ax.set_xlabel(key)
                ax.set_ylabel(f"{METRIC_LABELS[metric]} (%)", fontsize=8)
                ax.set_title(f"{method_label(base)}: {key}\n{setting}", fontsize=8)
            row[0].legend(fontsize=7, loc="best")
    return _save(fig, path)


def _time_unit(seconds_max: float) -> tuple[str, float]:
    if seconds_max < 300:
        return "s", 1.0
    if seconds_max < 3 * 3600:
        return "min", 60.0
    return "h", 3600.0


def curve_figure(curves: pd.DataFrame, done: pd.DataFrame, x: str, path: Path) -> Path | None:
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
                    label=f"{method_label(method)} ({n} run)"
                    if n == 1
                    else f"{method_label(method)} (mean of {n})",
                )
            floor = floor_means(done, setting).get("knn_acc1_k20")
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
            _legend(ax)
    return _save(fig, path)


def diagnostics_figure(curves: pd.DataFrame, path: Path) -> Path | None:
    """The collapse diagnostics against epoch, one line per method (mean over seeds), one
    row of four panels per setting; None when no curve has them."""
    present = [c for c in DIAGNOSTICS if c in curves and curves[c].notna().any()]
    if curves.empty or not present:
        return None
    curves = curves[curves[present].notna().any(axis=1)]
    settings = list(curves["setting"].drop_duplicates())
    palette = _palette(method_order(curves["method"]))
    with sns.axes_style(**_STYLE):
        fig, axes = _axes_grid(len(settings), len(present), 4.2, 3.4)
        for row, setting in zip(axes, settings):
            in_setting = curves[curves["setting"] == setting]
            for ax, column in zip(row, present):
                for method in method_order(in_setting["method"]):
                    runs = in_setting[(in_setting["method"] == method) & in_setting[column].notna()]
                    if runs.empty:
                        continue
                    mean = runs.groupby("epoch")[column].mean()
                    ax.plot(
                        mean.index,
                        mean.values,
                        color=palette.get(method),
                        lw=2,
                        marker="o",
                        ms=3,
                        label=method_label(method),
                    )
                ax.set_xlabel("epoch")
                ax.xaxis.get_major_locator().set_params(integer=True)
                ax.set_title(DIAGNOSTICS[column], fontsize=9)
            row[0].set_ylabel(setting, fontsize=8)
            row[0].legend(fontsize=7, loc="best")
    return _save(fig, path)


def saturation_figure(curves: pd.DataFrame, path: Path) -> Path | None:
    """EMIM's Theorem-1 estimate over its ceiling (``train_mi_ceiling_ratio`` of curve.csv,
    epoch means) against epoch: thick the mean over seeds, thin each seed; one panel per
    setting. None when no curve has the ratio."""
    column = "train_mi_ceiling_ratio"
    if curves.empty or column not in curves or curves[column].isna().all():
        return None
    curves = curves[curves[column].notna()]
    settings = list(curves["setting"].drop_duplicates())
    palette = _palette(method_order(curves["method"]))
    with sns.axes_style(**_STYLE):
        wide = curves["method"].nunique() > 4  # room for the legend beside the axes
        fig, axes = _axes_grid(1, len(settings), 9.0 if wide else 5.0, 3.6)
        for ax, setting in zip(axes[0], settings):
            in_setting = curves[curves["setting"] == setting]
            for method in method_order(in_setting["method"]):
                runs = in_setting[in_setting["method"] == method]
                colour = palette.get(method)
                for _, run in runs.groupby("run_id"):
                    ax.plot(run["epoch"], run[column], color=colour, lw=0.8, alpha=0.5)
                mean = runs.groupby("epoch")[column].mean()
                ax.plot(
                    mean.index,
                    mean.values,
                    color=colour,
                    lw=2,
                    marker="o",
                    ms=3,
                    label=method_label(method),
                )
            ax.axhline(1.0, color="black", ls="--", lw=1, label="ceiling")
            ax.set_ylim(0, 1.05)
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_ylabel("MI estimate / ceiling")
            ax.set_title(f"{setting}\nsaturation of the estimator", fontsize=9)
            _legend(ax)
    return _save(fig, path)


def umap_figure(df: pd.DataFrame, path: Path) -> Path | None:
    """UMAP (McInnes et al. 2018) of each method's test features, coloured by class.

    One panel per method: the finished run with the lowest seed of the first setting whose
    runs kept ``features.npz`` (at most 5,000 test images). UMAP with its defaults (15
    neighbours, min_dist 0.1) and ``random_state=0``, so the picture is reproducible.
    None when no run kept features.
    """
    done = done_runs(df)
    done = done[[(Path(p) / FEATURES_FILE).is_file() for p in done["path"]]]
    if done.empty:
        return None
    import umap  # here: numba compiles on first use, and only this figure needs it

    setting = done["setting"].iloc[0]
    runs = done[done["setting"] == setting].sort_values("seed")
    methods = method_order(runs["method"])
    with sns.axes_style("white"):
        fig, axes = _axes_grid(1, len(methods), 3.6, 3.7)
        for ax, method in zip(axes[0], methods):
            run = runs[runs["method"] == method].iloc[0]
            saved = np.load(Path(run["path"]) / FEATURES_FILE)
            embedding = umap.UMAP(n_components=2, random_state=0, n_jobs=1).fit_transform(
                saved["features"].astype(np.float32)
            )
            ax.scatter(
                embedding[:, 0],
                embedding[:, 1],
                c=saved["labels"],
                cmap="tab10" if saved["labels"].max() < 10 else "tab20",
                vmin=0,
                vmax=9 if saved["labels"].max() < 10 else 19,
                s=3,
                alpha=0.7,
                linewidths=0,
            )
            ax.set_title(f"{method_label(method)} (seed {int(run['seed'])})", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
        fig.suptitle(f"{setting}: UMAP of test features, coloured by class", fontsize=9)
    return _save(fig, path)


def throughput_figure(df: pd.DataFrame, path: Path) -> Path | None:
    done = done_runs(df)
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
            rows["name"] = rows["method"].map(method_label)
            rows["memory"] = pd.to_numeric(rows[mem_col], errors="coerce").astype(float) / mem_scale
            names = [method_label(m) for m in order]
            colours = {method_label(m): palette[m] for m in order}
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
                with _fixed_jitter():
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
