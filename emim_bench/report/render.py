"""The report of a sweep: its sections, in order, written as report.md, report.html, results.csv."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from emim_bench.recipes import NAMED_DIFFERENCES
from emim_bench.report.collect import (
    VERSION_FIELDS,
    ReportError,
    collect_curves,
    collect_runs,
    done_runs,
    present,
    run_dirs,
)
from emim_bench.report.document import (
    DASH,
    Document,
    fmt_bytes,
    fmt_ci,
    fmt_mean_sd,
    fmt_num,
    fmt_p,
    fmt_p_clause,
    fmt_seconds,
)
from emim_bench.report.figures import (
    FIGURES,
    ablation_figure,
    accuracy_figure,
    curve_figure,
    diagnostics_figure,
    floor_means,
    saturation_figure,
    throughput_figure,
    umap_figure,
)
from emim_bench.report.labels import HEADLINE_METRICS, METRIC_LABELS, base_method, method_label
from emim_bench.report.published import PUBLISHED_SOURCE, published_comparison
from emim_bench.report.stats import (
    NO_TEST_ONE_SEED,
    method_order,
    method_summary,
    paired_differences,
    selection_choices,
)
from emim_bench.run.directory import STATES

# Known departures of solo-learn's implementations from the original papers.
QUIRKS = {
    "vicreg": "solo-learn's VICReg variance term is not halved (2x the official weight).",
    "byol": "solo-learn's BYOL sums its two pair losses.",
    "barlow_twins": "solo-learn's Barlow Twins normalises with per-device BatchNorm statistics.",
}


def _headline_rows(summary: pd.DataFrame) -> list[list[str]]:
    rows = []
    for r in summary.itertuples():
        row = [method_label(r.method), str(r.n_runs)]
        for metric in HEADLINE_METRICS:
            row.append(
                fmt_mean_sd(
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


def _split_words(done: pd.DataFrame) -> str:
    """Which images the finished runs were scored on, for the results table's caption."""
    splits = set(done["eval_split"])
    if splits == {"val"}:
        return "the validation split (`data.val_size` training images held out)"
    if splits == {"test"}:
        return "the test split"
    return "each run's evaluation split (the `eval_split` column of results.csv)"


def _summary_section(doc: Document, df: pd.DataFrame, summary: pd.DataFrame, multi: bool):
    doc.h(2, "Results per method")
    doc.p(
        f"Accuracies in percent on {_split_words(done_runs(df))}, as mean ± standard "
        "deviation over seeds, "
        "with the 95% Student-t confidence interval of the mean "
        "(mean ± t(0.975, n−1)·sd/√n; “–” when n < 2). kNN: k = 20, cosine similarity, "
        "temperature 0.07, on frozen features. Linear: the offline probe on cached, "
        "standardised frozen features. Online: solo-learn's online linear classifier at the "
        "last epoch. Training time, images/s and peak memory are means over runs."
    )
    gpu = summary["peak_gpu_memory_bytes_mean"].notna().any()
    done = done_runs(df)
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
            row = [method_label(r.method), str(r.n_runs)]
            for metric in HEADLINE_METRICS:
                mean, sd, low, high = (
                    getattr(r, f"{metric}_{k}", math.nan)
                    for k in ("mean", "sd", "ci_low", "ci_high")
                )
                row += [fmt_mean_sd(mean, sd), fmt_ci(low, high)]
            row += [
                fmt_seconds(r.wall_time_s_mean) if r.method != "random" else DASH,
                fmt_num(r.images_per_s_mean, ".1f"),
                fmt_bytes(r.peak_rss_bytes_mean),
            ]
            if gpu:
                row.append(fmt_bytes(r.peak_gpu_memory_bytes_mean))
            table.append(row)
        doc.table(header, table, align="lr")
        doc.p(_floor_sentence(done, rows, setting))


def _choices_section(doc: Document, summary: pd.DataFrame):
    """A selection sweep's verdict per ablation slice: keep the centre value or change it."""
    choices = selection_choices(summary)
    if choices.empty:
        return
    multi = choices["setting"].nunique() > 1
    doc.h(2, "Settings the validation split favours")
    doc.p(
        f"For each slice of the ablations above: the {METRIC_LABELS['knn_acc1_k20']} on the "
        "validation split of each value (mean over its n seeds), the centre value (the "
        "most common one, which the others are varied around: in a one-factor-at-a-time "
        "sweep, the current default) and the best other value. A setting is changed only "
        "when that value beats the centre by more than two standard errors of the "
        "difference of their means (pooled seed-to-seed standard deviation of the slice); "
        "otherwise the centre is kept. This is a rough guide, not a test corrected for the "
        "several values compared."
    )
    table = []
    for r in choices.itertuples():
        cells = [
            f"**{v}: {fmt_num(m, '.1f')}**" if v == r.choice else f"{v}: {fmt_num(m, '.1f')}"
            for v, m in zip(r.values, r.means)
        ]
        n = sorted(set(r.n))
        if r.choice is None:
            verdict = "no verdict"
        elif r.choice != r.centre:
            verdict = f"change to {r.choice}"
        else:
            verdict = f"keep {r.centre}"
        if r.note:
            verdict += f" ({r.note})"
        table.append(
            [method_label(r.method) + (f" ({r.setting})" if multi else ""), r.key]
            + [" · ".join(cells), "/".join(map(str, n)), r.centre or DASH, r.best_other or DASH]
            + [fmt_num(r.gain, "+.2f"), fmt_num(r.two_se), verdict]
        )
    header = ["method", "setting", "value: kNN acc@1 (%)", "n", "centre", "best other"]
    doc.table(
        header + ["best other − centre (pp)", "2 SE (pp)", "choice"], table, align="llllllrrl"
    )


def _floor_sentence(done: pd.DataFrame, rows: pd.DataFrame, setting: str) -> str:
    floor = floor_means(done, setting).get("knn_acc1_k20")
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
        verdicts[verdict].append(
            f"{method_label(method)} ({text})" if verdict else method_label(method)
        )
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
    if present(r.ci_low) and not pd.isna(r.ci_low):
        text += f", 95% CI {r.ci_low:+.2f} to {r.ci_high:+.2f}"
    if r.mean_diff <= 0:
        return "not above", text
    if present(r.ci_low) and not pd.isna(r.ci_low) and r.ci_low > 0 and r.sd_diff > 0:
        return "clearly above", text
    return "above, but not clearly", text


def _paired_section(doc: Document, df: pd.DataFrame, multi: bool):
    doc.h(2, "EMIM minus each baseline, paired by seed")
    done = done_runs(df)
    is_emim = done["method"].map(base_method) == "emim"
    if not is_emim.any():
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
    emim_online = done[is_emim]["online_acc1"].notna().any()
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
        several = part["reference"].nunique() > 1  # EMIM groups that differ in a setting
        rows = [
            [
                METRIC_LABELS[r.metric],
                *([method_label(r.reference)] if several else []),
                method_label(r.baseline),
                str(r.n_pairs),
                fmt_num(r.reference_mean),
                fmt_num(r.baseline_mean),
                fmt_num(r.mean_diff, "+.2f"),
                fmt_ci(r.ci_low, r.ci_high, "+.2f"),
                fmt_num(r.t, ".2f"),
                fmt_p(r.p_value),
                r.note,
            ]
            for r in part.itertuples()
        ]
        header = [
            "metric",
            *(["EMIM group"] if several else []),
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
        doc.table(header, rows, align=("lll" if several else "ll") + "rrrrrrrl")
        singles = part[part["n_pairs"] == 1]
        if len(singles):
            seed = singles["seeds"].iloc[0]
            doc.p(
                f"Only one seed (seed {seed}) is paired for "
                f"{', '.join(sorted({method_label(b) for b in singles['baseline']}))}: "
                f"{NO_TEST_ONE_SEED}, and the difference above is a single observation. "
                "Run more seeds (`seed=1`, `seed=2`, ...) for an interval and a test."
            )
        none = part[part["n_pairs"] == 0]
        if len(none):
            names = ", ".join(sorted({method_label(b) for b in none["baseline"]}))
            doc.p(f"No seed was finished by both EMIM and {names}: nothing to pair.")
        tested = part[part["p_value"].notna()]
        significant = tested[tested["p_value"] < 0.05]
        if len(tested):
            if len(significant):
                doc.p(
                    "Differences with p < 0.05: "
                    + "; ".join(
                        f"{METRIC_LABELS[r.metric]} vs {method_label(r.baseline)} "
                        f"({r.mean_diff:+.2f} pp, {fmt_p_clause(r.p_value)})"
                        for r in significant.itertuples()
                    )
                    + "."
                )
            else:
                doc.p("No difference reaches p < 0.05.")
    duplicates = done.groupby(["setting", "method", "seed"]).size()
    duplicates = duplicates[duplicates > 1]
    if len(duplicates):
        names = ", ".join(f"{method_label(m)} seed {s}" for _, m, s in duplicates.index)
        doc.p(
            f"Several finished runs share a seed ({names}), e.g. runs with different "
            "hyperparameters in one sweep; they were averaged per seed before pairing."
        )


def _published_section(doc: Document, summary: pd.DataFrame, df: pd.DataFrame):
    doc.h(2, "Published numbers")
    table = published_comparison(summary)
    if table.empty:
        settings = "; ".join(summary["setting"].drop_duplicates()) or "no finished run"
        budgets = sorted(set(done_runs(df)["budget"].dropna()))
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
            method_label(r.method),
            fmt_mean_sd(r.ours_mean, r.ours_sd),
            str(r.n),
            fmt_num(r.published),
            fmt_num(r.difference, "+.2f"),
        ]
        for r in table.itertuples()
    ]
    doc.table(
        ["setting", "method", "ours (mean ± sd)", "n", "published", "ours − published (pp)"],
        rows,
        align="llr",
    )
    differences = "; ".join(f"{flag}: {why}" for flag, why in NAMED_DIFFERENCES.items())
    doc.p(
        "Runs at `budget=cifar_paper` and `budget=imagenet100_paper` take every value of "
        "solo-learn 1.0.2's script for the method (`method_configs/recipes/`; EMIM, which "
        "solo-learn does not have, runs ours), except where our harness differs on purpose: "
        f"{differences}. Our offline kNN and linear probe are ours; the published column is "
        "solo-learn's online linear probe."
    )
    done = done_runs(df)
    subsets = done[done["setting"].isin(table["setting"]) & done["train_size"].notna()]
    if len(subsets):
        doc.p(
            "Some of these runs pretrained on a subset of the training set "
            f"(`data.train_size` = {', '.join(str(s) for s in sorted(set(subsets['train_size'])))}"
            "), unlike the published recipe: the comparison is indicative only."
        )


def _problems_section(doc: Document, df: pd.DataFrame):
    doc.h(2, "Runs not done")
    bad = df[df["status"] != "done"]
    if bad.empty:
        doc.p("None: every run of the sweep finished.")
        return
    counts = bad["status"].value_counts()
    doc.p(
        ", ".join(f"{counts[s]} {s}" for s in (*STATES, "stale") if s in counts)
        + ". Running runs are held by a live process (its claim names it); failed runs keep "
        "`failed.json` (and their last good checkpoint); partial runs resume from their "
        "checkpoint when the same command is run again; runs to do never saved a checkpoint; "
        "stale runs are directories the sweep file no longer plans (an earlier version of it). "
        "None of them enters the statistics above."
    )
    rows = [
        [
            f"`{r.run_id}`",
            method_label(r.method),
            "–" if pd.isna(r.seed) else str(r.seed),
            f"**{r.status}**",
            r.detail,
        ]
        for r in bad.itertuples()
    ]
    doc.table(["run", "method", "seed", "status", "detail"], rows, align="l")


def _environment_section(doc: Document, df: pd.DataFrame, command: str, command_note: str = ""):
    doc.h(2, "Environment and reproduction")
    done = done_runs(df)
    rows = []
    for key in VERSION_FIELDS:
        values = done[f"version_{key}"].dropna().astype(str)
        if values.empty:
            rows.append([key, DASH])
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
        df[df["status"] != "to do"][["accelerator", "devices", "precision"]]
        .astype(str)
        .value_counts()
    )
    device = "; ".join(
        f"accelerator `{a}`, devices `{d}`, precision `{p}` ({n} runs)"
        for (a, d, p), n in devices.items()
    )
    sweeps = ", ".join(f"`{s}`" for s in df["sweep"].dropna().astype(str).unique()) or DASH
    started = done["started_utc"].dropna()
    finished = done["finished_utc"].dropna()
    items = [f"Device: {device or DASH}.", f"Sweep: {sweeps}."]
    if len(started):
        items.append(f"Runs started {started.min()} and finished by {finished.max()} (UTC).")
    batch = sorted({int(b) for b in done["batch_size"].dropna()})
    if batch:
        items.append(f"Batch size per device: {', '.join(map(str, batch))}.")
    resumed = done[done["starts"].fillna(0) > 1]
    if len(resumed):
        items.append(
            f"Resumed runs ({', '.join(f'`{r}`' for r in resumed['run_id'])}): their training "
            "time and images/s cover every start (an epoch cut by a kill counts once), so a "
            "run resumed on another machine mixes the two machines' speeds."
        )
    doc.bullets(items)
    doc.p(f"Command{command_note}:")
    doc.code(command)


def _notes_section(doc: Document, df: pd.DataFrame):
    methods = set(df["method"].dropna())
    notes = [QUIRKS[m] for m in method_order(methods) if m in QUIRKS]
    notes.append(
        "The offline linear probe trains a softmax classifier on cached, standardised, "
        "non-augmented features; expect it 1–2 points below solo-learn's augmented probe."
    )
    doc.h(2, "Notes")
    doc.bullets(notes)


def _per_run_section(doc: Document, df: pd.DataFrame):
    doc.h(2, "Every run")
    rows = [
        [
            f"`{r.run_id}`",
            method_label(r.method),
            "–" if pd.isna(r.seed) else str(r.seed),
            r.status,
            fmt_num(r.knn_acc1_k20),
            fmt_num(r.linear_acc1),
            fmt_num(r.online_acc1),
            fmt_seconds(r.wall_time_s) if r.status == "done" and r.method != "random" else DASH,
            fmt_num(r.images_per_s, ".1f"),
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
        expected: run ids of the sweep plan; those never started are listed as to do.
        notes: the sweep file's ``notes`` key, shown under "Sweep notes": plain
            paragraphs separated by blank lines (line breaks inside one are joined;
            lines starting with "- " are bullets; `code` and **bold** are rendered);
            nothing when empty.

    Returns:
        The path of ``report.html``.

    Raises:
        ReportError: ``runs_dir`` does not exist, or it holds no run directory and no
            run is expected.
    """
    return render_report(runs_dir, out_dir, command, expected, notes)[0]


def _notes_blocks(doc: Document, notes: str) -> None:
    """The sweep file's notes as paragraphs, and as bullets where lines start with "- "
    (a bullet's following lines continue it; lines before the first bullet are a paragraph)."""
    for paragraph in notes.strip().split("\n\n"):
        text, items = [], []
        for line in paragraph.splitlines():
            line = line.strip()
            if line.startswith("- "):
                items.append(line[2:])
            elif items:
                items[-1] += " " + line
            else:
                text.append(line)
        if text:
            doc.p(" ".join(" ".join(text).split()))
        if items:
            doc.bullets([" ".join(item.split()) for item in items])


def render_report(runs_dir, out_dir, command, expected, notes="") -> tuple[Path, pd.DataFrame]:
    """:func:`write_report`, also returning the :func:`method_summary` it rendered."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    df = collect_runs(runs_dir, expected)
    if df.empty:
        hint = ""
        if any(run_dirs(p) for p in runs_dir.iterdir() if p.is_dir()):
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
    curves = collect_curves(done_runs(df))
    multi = summary["setting"].nunique() > 1

    sweeps = sorted(df["sweep"].dropna().astype(str).unique())
    title = f"EMIM benchmark report: {', '.join(sweeps) or runs_dir.name}"
    doc = Document(out_dir)
    doc.h(1, title)
    counts = df["status"].value_counts()
    doc.p(
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from "
        f"`{runs_dir}`: {len(df)} run{'s' if len(df) != 1 else ''}, "
        + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES)
        + "."
    )
    if summary.empty:
        doc.p("No run finished: there are no statistics to show.")
    else:
        doc.p("Settings: " + "; ".join(f"**{s}**" for s in summary["setting"].unique()) + ".")
        if (done_runs(df)["eval_split"] == "val").any():
            doc.p(
                "**Selection sweep: every accuracy in this report is on a validation split** "
                "(`data.val_size` images held out of the training split, the same for every "
                "seed, never trained on), with seeds that reported sweeps do not use. Use it "
                "to choose settings; report test accuracy from a sweep with other seeds."
            )
        _summary_section(doc, df, summary, multi)
        accuracy = accuracy_figure(df, summary, figures_dir / "accuracy.png")
        if accuracy:
            doc.figure(
                accuracy,
                "Accuracy per method: bars are means with 95% t-intervals over seeds (no bar "
                "for n = 1), dots are single seeds, dashed lines the random-init floor.",
            )
        ablation = ablation_figure(summary, done_runs(df), figures_dir / "ablation.png")
        if ablation:
            doc.h(2, "Ablations")
            doc.figure(
                ablation,
                "Each accuracy against each setting the sweep varies, the other settings at "
                "their most common value: means with 95% t-intervals over seeds (no interval "
                "for n = 1); dashed, the random-init floor.",
            )
        if set(done_runs(df)["eval_split"]) == {"val"}:
            _choices_section(doc, summary)
        _paired_section(doc, df, multi)
    if notes.strip():
        doc.h(2, "Sweep notes")
        _notes_blocks(doc, notes)
    if not summary.empty:
        doc.h(2, "Learning curves")
        by_epoch = curve_figure(curves, done_runs(df), "epoch", figures_dir / "knn_vs_epoch.png")
        by_time = curve_figure(curves, done_runs(df), "wall_s", figures_dir / "knn_vs_time.png")
        if by_epoch:
            doc.figure(by_epoch, "kNN acc@1 (k=20) of the per-epoch monitor against epoch.")
            doc.figure(
                by_time,
                "kNN acc@1 (k=20) against training wall-clock time (the kNN monitoring "
                "itself excluded): accuracy per unit of compute.",
            )
        else:
            doc.p("No run has a curve with kNN accuracy (`curve.csv`): no learning curves.")
        diagnostics = diagnostics_figure(curves, figures_dir / "diagnostics.png")
        if diagnostics:
            doc.figure(
                diagnostics,
                "Collapse diagnostics per epoch on a fixed batch of held-out images (mean over "
                "seeds): RankMe (Garrido et al. 2023) of the backbone features and of the "
                "projector output, alignment and uniformity (Wang and Isola 2020) of the "
                "L2-normalised projector output. A collapsing method shows a falling RankMe "
                "and both alignment and uniformity near 0.",
            )
        saturation = saturation_figure(curves, figures_dir / "saturation.png")
        if saturation:
            doc.figure(
                saturation,
                "EMIM's mutual-information estimate (Theorem 1, epoch mean) as a fraction of "
                "the most it can reach at that batch size, embedding width and eps "
                "(`mi_ceiling_nats`, derived in emim_bench/losses.py). Near 1 the batch is "
                "saturated: the loss has little left to push, whatever the encoder learns.",
            )

        umap_plot = umap_figure(df, figures_dir / "umap.png")
        if umap_plot:
            doc.h(2, "Representations")
            doc.figure(
                umap_plot,
                "UMAP (McInnes et al. 2018; random_state 0) of each method's frozen test "
                "features, coloured by class: one run per method (its lowest seed).",
            )

        doc.h(2, "Throughput and memory")
        throughput = throughput_figure(df, figures_dir / "throughput.png")
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
