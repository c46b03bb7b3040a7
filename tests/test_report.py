"""The sweep report: statistics against scipy, run states, figures, HTML, published numbers, CLI.

Run directories are written by hand (results.json, failed.json, curve.csv, config.yaml)
with chosen numbers, so every expectation is computed independently here.
"""

from __future__ import annotations

import base64
import json
import math
import os
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_runs import make_run
from scipy import stats

from emim_bench.cli import main
from emim_bench.report import collect, published, render
from emim_bench.report import figures as report_figures
from emim_bench.report import stats as report_stats

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


EMIM_KNN = {0: 50.0, 1: 52.0, 2: 54.0}
SIMCLR_KNN = {0: 48.0, 1: 49.0, 2: 53.0}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """EMIM and SimCLR over seeds 0-2, BYOL below the floor, the floor, a failure, a partial run."""
    runs = tmp_path / "runs" / "test"
    for seed in range(3):
        make_run(runs, "emim", seed, EMIM_KNN[seed], linear=60 + seed, images_per_s=90 + seed)
        make_run(runs, "simclr", seed, SIMCLR_KNN[seed], linear=57 + 2 * seed)
    make_run(runs, "byol", 0, 20.0)
    make_run(runs, "random", 0, 25.0, linear=28.0)
    make_run(runs, "vicreg", 0, status="failed")
    make_run(runs, "barlow_twins", 0, status="partial")
    return runs


def _t_ci(x) -> tuple[float, float]:
    x = np.asarray(x, float)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


# ---------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------


def test_method_summary_matches_numpy_and_scipy_t_interval(sweep):
    summary = report_stats.method_summary(collect.collect_runs(sweep)).set_index("method")
    assert list(summary.index) == ["emim", "byol", "simclr", "random"]  # emim first, random last
    for method, values in (("emim", EMIM_KNN), ("simclr", SIMCLR_KNN)):
        x = list(values.values())
        row = summary.loc[method]
        assert row["knn_acc1_k20_n"] == 3
        assert row["knn_acc1_k20_mean"] == pytest.approx(np.mean(x))
        assert row["knn_acc1_k20_sd"] == pytest.approx(np.std(x, ddof=1))
        low, high = _t_ci(x)
        assert row["knn_acc1_k20_ci_low"] == pytest.approx(low)
        assert row["knn_acc1_k20_ci_high"] == pytest.approx(high)
        assert row["images_per_s_mean"] == pytest.approx(91.0 if method == "emim" else 100.0)
        assert row["peak_rss_bytes_mean"] == 3 * 2**30
    # n = 1: no sd, no interval; the floor has no online accuracy
    assert summary.loc["byol", "knn_acc1_k20_n"] == 1
    assert math.isnan(summary.loc["byol", "knn_acc1_k20_sd"])
    assert math.isnan(summary.loc["byol", "knn_acc1_k20_ci_low"])
    assert summary.loc["random", "online_acc1_n"] == 0


def test_paired_difference_equals_scipy_ttest_rel(sweep):
    diff = report_stats.paired_differences(collect.collect_runs(sweep), "knn_acc1_k20")
    row = diff.set_index("baseline").loc["simclr"]
    a, b = list(EMIM_KNN.values()), list(SIMCLR_KNN.values())
    expected = stats.ttest_rel(a, b)
    assert row["n_pairs"] == 3
    assert row["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert row["p_value"] == pytest.approx(expected.pvalue)
    assert row["t"] == pytest.approx(expected.statistic)
    low, high = _t_ci(np.subtract(a, b))
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    # BYOL and the floor only have seed 0: one pair, no test
    byol = diff.set_index("baseline").loc["byol"]
    assert byol["n_pairs"] == 1 and math.isnan(byol["p_value"])
    assert byol["mean_diff"] == pytest.approx(EMIM_KNN[0] - 20.0)
    assert report_stats.NO_TEST_ONE_SEED in byol["note"]


def test_pairs_only_the_seeds_both_methods_finished(tmp_path):
    runs = tmp_path / "runs"
    for seed, value in ((0, 50.0), (1, 52.0), (2, 57.0), (3, 51.0)):
        make_run(runs, "emim", seed, value)
    for seed, value in ((1, 49.0), (2, 50.0), (3, 50.5), (4, 10.0)):
        make_run(runs, "simclr", seed, value)
    row = report_stats.paired_differences(collect.collect_runs(runs), "linear_acc1").iloc[0]
    assert row["seeds"] == "1,2,3"
    assert row["p_value"] == pytest.approx(stats.ttest_rel([52, 57, 51], [49, 50, 50.5]).pvalue)


def test_one_seed_report_says_no_test_is_possible(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "emim", 0, 40.0)
    make_run(runs, "simclr", 0, 38.0)
    render.write_report(runs, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert report_stats.NO_TEST_ONE_SEED in md
    assert "+2.00" in md
    assert "Accuracies in percent on the test split" in md and "validation" not in md


def test_no_emim_run_is_said(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "simclr", 0, 38.0)
    make_run(runs, "byol", 0, 39.0)
    assert report_stats.paired_differences(collect.collect_runs(runs), "knn_acc1_k20").empty
    render.write_report(runs, tmp_path / "out")
    assert "no finished EMIM run" in (tmp_path / "out" / "report.md").read_text()


# ---------------------------------------------------------------------------------------
# The written report: files, HTML, run states, floor, published numbers
# ---------------------------------------------------------------------------------------


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.external = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.srcs.append(attrs.get("src", ""))
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.external.append(tag)


def test_report_files_html_embeds_every_figure(sweep, tmp_path):
    out = tmp_path / "reports" / "test"
    html_path = render.write_report(sweep, out, command="make sweep SWEEP=test")
    assert html_path == out / "report.html"
    for name in ("report.md", "report.html", "results.csv"):
        assert (out / name).is_file()
    figures = sorted((out / "figures").glob("*.png"))
    assert {f.name for f in figures} == set(report_figures.FIGURES) - {
        "ablation.png",
        "diagnostics.png",
        "saturation.png",
        "umap.png",
    }
    for figure in figures:
        assert figure.read_bytes()[:8] == PNG_MAGIC
    parser = _Images()
    parser.feed(html_path.read_text())
    parser.close()
    assert not parser.external
    assert len(parser.srcs) == len(figures)
    embedded = sorted(base64.b64decode(s.split(",", 1)[1]) for s in parser.srcs)
    assert all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    assert embedded == sorted(f.read_bytes() for f in figures)
    md = (out / "report.md").read_text()
    for figure in figures:
        assert f"figures/{figure.name}" in md
    assert "make sweep SWEEP=test" in md and "make sweep SWEEP=test" in html_path.read_text()
    assert "`2.14.1`" in md  # versions


def test_failed_partial_and_planned_runs_are_listed(sweep, tmp_path):
    planned = "vicreg-cifar10-resnet18-s1-0123abcd"
    truncated = make_run(sweep, "emim", 7, 50.0)
    (truncated / "results.json").write_text('{"status": "do')
    out = tmp_path / "out"
    render.write_report(sweep, out, expected=[p.name for p in sweep.iterdir()] + [planned])
    rows = pd.read_csv(out / "results.csv").set_index("run_id")
    assert len(rows) == 12  # 6 + 1 + 1 done, 2 failed, 1 partial, 1 to do
    assert rows.loc[truncated.name, "status"] == "failed"
    assert rows.loc[truncated.name, "detail"].startswith("unreadable results.json")
    failed = rows[rows["method"] == "vicreg"]
    assert set(failed["status"]) == {"failed", "to do"}
    assert "non-finite training loss" in failed[failed["status"] == "failed"]["detail"].iloc[0]
    assert rows.loc[planned, "status"] == "to do" and rows.loc[planned, "seed"] == 1
    assert rows[rows["method"] == "barlow_twins"]["status"].tolist() == ["partial"]
    assert {"knn_acc1_k20", "linear_acc5", "online_acc1", "images_per_s", "wall_time_s"} <= set(
        rows.columns
    )
    md = (out / "report.md").read_text()
    problems = md.split("## Runs not done")[1].split("\n## ")[0]
    assert "**failed**" in problems and "non-finite training loss (nan) at step 7" in problems
    assert "**partial**" in problems and "barlow_twins-cifar10" in problems
    assert "**to do**" in problems and planned in problems


def _floor_paragraph(md: str) -> str:
    return next(line for line in md.splitlines() if line.startswith("kNN acc@1 against the"))


def test_random_floor_shown_and_method_below_it_named(sweep, tmp_path):
    render.write_report(sweep, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| random init | 1 | 25.00 |" in md
    floor = _floor_paragraph(md)
    assert "25.00% for an untrained backbone" in floor
    not_above, rest = floor.split("**Not above the random-init floor:**")[1].split("Above the")
    assert "BYOL (-5.00 pp, n = 1)" in not_above and "EMIM" not in not_above
    # the floor has seed 0 only: one pair each, so above but not clearly
    assert "EMIM (+25.00 pp, n = 1)" in rest and "SimCLR (+23.00 pp, n = 1)" in rest
    assert "Clearly above" not in floor


def test_floor_verdicts_use_the_seed_paired_t_interval(tmp_path):
    runs = tmp_path / "runs"
    floor = {0: 30.0, 1: 31.0, 2: 32.0}
    clear = {0: 35.0, 1: 36.5, 2: 36.0}  # differences 5, 5.5, 4
    unclear = {0: 40.0, 1: 30.0, 2: 31.0}  # differences 10, -1, -1
    for seed in range(3):
        make_run(runs, "random", seed, floor[seed])
        make_run(runs, "emim", seed, clear[seed])
        make_run(runs, "simclr", seed, unclear[seed])
    render.write_report(runs, tmp_path / "out")
    text = _floor_paragraph((tmp_path / "out" / "report.md").read_text())
    low, high = _t_ci([5.0, 5.5, 4.0])
    assert f"Clearly above the floor: EMIM (+4.83 pp, n = 3, 95% CI {low:+.2f} to {high:+.2f})" in (
        text
    )
    low, high = _t_ci([10.0, -1.0, -1.0])
    assert low < 0
    assert (
        f"SimCLR (+2.67 pp, n = 3, 95% CI {low:+.2f} to {high:+.2f})"
        in text.split("not clearly")[1].split("Clearly above")[0]
    )
    assert "Not above" not in text


def test_floor_verdict_names_methods_it_cannot_compare_and_doubts_identical_differences(
    tmp_path,
):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        make_run(runs, "random", seed, 30.0 + seed)
        make_run(runs, "simclr", seed, 35.0 + seed)  # +5 on both seeds: sd 0, no interval
    for seed in (3, 4):
        make_run(runs, "emim", seed, 60.0)  # no seed shared with the floor
    render.write_report(runs, tmp_path / "out")
    text = _floor_paragraph((tmp_path / "out" / "report.md").read_text())
    assert "Not compared (no seed with both a kNN result and a floor run): EMIM." in text
    assert "not clearly" in text and "SimCLR (+5.00 pp, n = 2" in text
    assert "Clearly above the floor" not in text and "Every method" not in text


def test_report_command_takes_the_notes_from_the_sweep_file(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "emim", 0, 40.0)
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: s\ngrid: {method: [emim]}\nnotes: |\n  Why EMIM.\n")
    assert main(["report", str(runs), "-o", str(tmp_path / "out"), "--sweep", str(sweep_file)]) == 0
    assert "## Sweep notes\n\nWhy EMIM.\n" in (tmp_path / "out" / "report.md").read_text()
    assert main(["report", str(runs), "-o", str(tmp_path / "o2"), "--sweep", "nope.yaml"]) == 2


def test_all_above_floor_is_said(tmp_path):
    runs = tmp_path / "runs"
    for seed, (knn, base) in enumerate(((40.0, 25.0), (42.0, 26.0), (41.0, 24.0))):
        make_run(runs, "emim", seed, knn)
        make_run(runs, "random", seed, base)
    render.write_report(runs, tmp_path / "out")
    assert "Every method's mean kNN acc@1 is clearly above the random-init floor" in (
        (tmp_path / "out" / "report.md").read_text()
    )


def test_sweep_notes_become_a_notes_section_one_paragraph_each(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "emim", 0, 40.0)
    render.write_report(runs, tmp_path / "out", notes="BYOL sits at the floor\nbecause.\n\nSecond.")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Sweep notes\n\nBYOL sits at the floor because.\n\nSecond.\n" in md
    render.write_report(runs, tmp_path / "plain")
    assert "## Sweep notes" not in (tmp_path / "plain" / "report.md").read_text()
    failed_only = tmp_path / "failed_only"
    make_run(failed_only, "byol", 0, status="failed")
    render.write_report(failed_only, tmp_path / "f", notes="Why nothing finished.")
    md = (tmp_path / "f" / "report.md").read_text()
    assert "No run finished" in md and "## Sweep notes\n\nWhy nothing finished.\n" in md


def test_sweep_notes_lines_starting_with_a_dash_become_bullets(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "emim", 0, 40.0)
    notes = "How they differ:\n- EMIM: joint\n  covariance.\n- MEC: Taylor series.\n\nAfter."
    render.write_report(runs, tmp_path / "out", notes=notes)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "How they differ:\n\n- EMIM: joint covariance.\n- MEC: Taylor series.\n\nAfter." in md
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<li>EMIM: joint covariance.</li>" in html


def test_published_number_beside_ours_for_the_cifar_recipe(tmp_path):
    runs = tmp_path / "runs"
    for method in ("emim", "simclr"):
        make_run(runs, method, 0, 85.0, online=89.5, epochs=1000, train_size=None)
    table = published.published_comparison(report_stats.method_summary(collect.collect_runs(runs)))
    simclr = table.set_index("method").loc["simclr"]
    assert simclr["published"] == 90.74
    assert simclr["difference"] == pytest.approx(89.5 - 90.74)
    assert math.isnan(table.set_index("method").loc["emim", "published"])
    render.write_report(runs, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    section = md.split("## Published numbers")[1].split("\n## ")[0]
    simclr_line = next(line for line in section.splitlines() if "| SimCLR |" in line)
    assert "90.74" in simclr_line and "89.50" in simclr_line
    emim_line = next(line for line in section.splitlines() if "| EMIM |" in line)
    assert emim_line.rstrip().endswith("| – | – |")


def test_cpu_budget_run_matches_no_published_setting(sweep, tmp_path):
    assert published.published_comparison(
        report_stats.method_summary(collect.collect_runs(sweep))
    ).empty
    render.write_report(sweep, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "matches no published one" in md and "budget cpu" in md
    assert "90.74" not in md


def test_differing_versions_are_noted(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "emim", 0, 40.0)
    other = {"torch": "2.15.0", "git_commit": "def456"}
    make_run(runs, "simclr", 0, 38.0, versions=other)
    render.write_report(runs, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "**differs**" in md and "`2.15.0` (1 runs)" in md


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def test_cli_report_runs_and_prints_the_headline(sweep, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["report", str(sweep), "-o", str(out), "--command", "make x"]) == 0
    printed = capsys.readouterr().out
    assert "EMIM" in printed and "52.00 ± 2.00" in printed
    assert str(out / "report.html") in printed
    assert "make x" in (out / "report.md").read_text()


def test_cli_report_default_command_is_the_report_command(sweep, tmp_path):
    assert main(["report", str(sweep), "-o", str(tmp_path / "o")]) == 0
    assert f"emim-bench report {sweep} -o {tmp_path / 'o'}" in (
        (tmp_path / "o" / "report.md").read_text()
    )


def test_missing_or_empty_runs_dir_exits_2_with_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    assert "holds no run directories" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path)])  # -o is required
    assert exit_info.value.code == 2


def test_a_run_held_by_a_live_process_is_reported_running_with_its_holder(sweep, tmp_path):
    from emim_bench.run.directory import Claim

    partial = next(sweep.glob("barlow_twins-*"))
    with Claim(partial):
        df = collect.collect_runs(sweep)
    row = df.set_index("run_id").loc[partial.name]
    assert row["status"] == "running"
    assert row["detail"].startswith(f"claimed by host {os.uname()[1]}, pid {os.getpid()}, since ")
    assert collect.collect_runs(sweep).set_index("run_id").loc[partial.name, "status"] == "partial"


def test_runs_that_kept_features_get_a_umap_picture_per_method(tmp_path):
    runs = tmp_path / "runs"
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    for method in ("emim", "simclr"):
        for seed in (1, 0):
            run = make_run(runs, method, seed, 40.0 + seed)
            labels = np.repeat(np.arange(3), 40)
            features = centres[labels] + rng.normal(size=(120, 16))
            np.savez(run / "features.npz", features=features.astype(np.float16), labels=labels)
    render.write_report(runs, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Representations" in md and "(figures/umap.png)" in md
    assert (tmp_path / "out" / "figures" / "umap.png").read_bytes()[:8] == PNG_MAGIC


def test_emim_runs_that_logged_the_ceiling_ratio_get_a_saturation_figure(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        run = make_run(runs, "emim", seed, 40.0)
        curve = pd.read_csv(run / "curve.csv")
        curve["train_mi_ceiling_ratio"] = 0.3 * curve["epoch"]
        curve.to_csv(run / "curve.csv", index=False)
    make_run(runs, "simclr", 0, 41.0)
    render.write_report(runs, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "(figures/saturation.png)" in md and "fraction of the most it can reach" in md
    assert (tmp_path / "out" / "figures" / "saturation.png").read_bytes()[:8] == PNG_MAGIC
    assert report_figures.saturation_figure(pd.DataFrame(), tmp_path / "none.png") is None


def test_runs_the_sweep_no_longer_plans_are_stale_and_left_out(sweep, tmp_path):
    """An earlier version of the sweep left a done EMIM run at seed 0 with another setting:
    it must not be pooled with the planned runs as an extra seed."""
    planned = [p.name for p in sweep.iterdir()]
    old = make_run(sweep, "emim", 0, 99.0, epochs=5).name
    out = tmp_path / "out"
    _, summary = render.render_report(sweep, out, None, planned)
    rows = pd.read_csv(out / "results.csv").set_index("run_id")
    assert rows.loc[old, "status"] == "stale"
    assert rows.loc[old, "detail"].startswith("not in the sweep plan (was done)")
    emim = summary[summary["method"] == "emim"]
    assert emim["n_runs"].tolist() == [3] and emim["knn_acc1_k20_mean"].max() < 99.0
    assert "1 stale" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "value, text",
    [
        (0.001, "1e-3"),
        (0.01, "1e-2"),
        (0.1, "0.1"),
        (0.0015, "0.0015"),
        (3e-4, "3e-4"),
        (128, "128"),
        (5000, "5000"),
        (1e-5, "1e-5"),
        (1e6, "1e6"),
        (2.5e-5, "2.5e-05"),
        (1.0, "1"),
        (True, "True"),
        ("vicreg", "vicreg"),
    ],
)
def test_group_labels_print_numbers_compactly(value, text):
    assert collect.compact_number(value) == text


def test_variant_labels_name_only_the_keys_that_differ():
    def flat(**cfg):
        return collect._flatten(cfg)

    configs = [
        flat(seed=0, batch_size=64, method={"kwargs": {"proj_output_dim": 64, "eps": 0.01}}),
        flat(seed=1, batch_size=64, method={"kwargs": {"proj_output_dim": 128, "eps": 0.001}}),
        flat(seed=2, batch_size=64, method={"kwargs": {"proj_output_dim": 64, "eps": 0.01}}),
    ]
    assert collect.variant_labels(configs) == ["D=64 eps=1e-2", "D=128 eps=1e-3", "D=64 eps=1e-2"]
    assert collect.variant_labels(configs[::2]) == ["", ""]  # only the seed differs
    logged = [flat(sweep="a", runs_root="/x", trainer={"log_every_n_steps": 1}), flat(sweep="b")]
    assert collect.variant_labels(logged) == ["", ""]


def test_runs_are_grouped_by_every_setting_that_varies(tmp_path):
    """EMIM at two eps values over two seeds each, SimCLR and the floor: two EMIM groups of
    two seeds (not one of four), each compared with SimCLR and the floor, not each other."""
    runs = tmp_path / "runs"
    for seed in (0, 1):
        make_run(runs, "emim", seed, 40.0 + seed, kwargs={"eps": 0.01})
        make_run(runs, "emim", seed, 30.0 + seed, kwargs={"eps": 0.001})
        make_run(runs, "simclr", seed, 35.0 + 2 * seed, kwargs={"temperature": 0.2})
        make_run(runs, "random", seed, 20.0)
    out = tmp_path / "out"
    _, summary = render.render_report(runs, out, None, None)
    assert summary["method"].tolist() == ["emim eps=1e-3", "emim eps=1e-2", "simclr", "random"]
    assert summary["n_runs"].tolist() == [2, 2, 2, 2]
    assert summary["knn_acc1_k20_mean"].tolist() == [30.5, 40.5, 36.0, 20.0]
    paired = report_stats.paired_differences(collect.collect_runs(runs), "knn_acc1_k20")
    assert paired[["reference", "baseline"]].values.tolist() == [
        ["emim eps=1e-3", "simclr"],
        ["emim eps=1e-3", "random"],
        ["emim eps=1e-2", "simclr"],
        ["emim eps=1e-2", "random"],
    ]
    assert paired["mean_diff"].tolist() == [-5.5, 10.5, 4.5, 20.5]
    md = (out / "report.md").read_text()
    assert "| EMIM eps=1e-2 |" in md and "EMIM group" in md


def test_a_report_of_runs_scored_on_validation_images_says_so(tmp_path):
    runs = tmp_path / "runs"
    for seed in (100, 101):
        run = make_run(runs, "emim", seed, 40.0)
        results = json.loads((run / "results.json").read_text())
        (run / "results.json").write_text(json.dumps({**results, "eval_split": "val"}))
    render.write_report(runs, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Selection sweep: every accuracy in this report is on a validation split" in md
    assert "Accuracies in percent on the validation split" in md and "test split" not in md
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    assert rows["eval_split"].tolist() == ["val", "val"]


def test_an_ablation_gets_one_factor_at_a_time_panels_with_the_floor(tmp_path):
    """D varied at eps 1e-2, eps varied at D 128: two panels, each through the centre."""
    runs = tmp_path / "runs"
    settings = [(32, 0.01), (128, 0.01), (512, 0.01), (128, 0.001), (128, 0.1)]
    for d, eps in settings:
        for seed in (0, 1):
            knn = 30.0 + d / 64 + seed
            make_run(runs, "emim", seed, knn, kwargs={"proj_output_dim": d, "eps": eps})
    make_run(runs, "random", 0, 25.0)
    out = tmp_path / "out"
    _, summary = render.render_report(runs, out, None, None)
    panels = report_stats.ablation_panels(summary)
    assert [(p.method, p.key, p.centre) for p in panels] == [
        ("emim", "D", "128"),
        ("emim", "eps", "1e-2"),
    ]
    assert panels[0].rows["method"].tolist() == [
        "emim D=32 eps=1e-2",
        "emim D=128 eps=1e-2",
        "emim D=512 eps=1e-2",
    ]
    assert panels[1].rows["method"].tolist() == [
        "emim D=128 eps=1e-3",
        "emim D=128 eps=1e-2",
        "emim D=128 eps=0.1",
    ]
    assert panels[1].values == ["1e-3", "1e-2", "0.1"]  # numeric order, not the label's
    assert panels[0].rows["knn_acc1_k20_mean"].tolist() == [31.0, 32.5, 38.5]
    md = (out / "report.md").read_text()
    assert "## Ablations" in md and "(figures/ablation.png)" in md
    assert (out / "figures" / "ablation.png").read_bytes()[:8] == PNG_MAGIC
    assert "Settings the validation split favours" not in md  # scored on the test split


def test_a_selection_report_changes_a_setting_only_when_it_wins_by_two_standard_errors(tmp_path):
    """Seeds 0 and 1 of every group differ by 2 points (sd sqrt 2), so two standard errors
    of a difference of two 2-seed means are 2 * sqrt(2) * sqrt(1/2 + 1/2) = 2.83 points:
    D=64 beats the centre D=128 by 3 (changed), eps=0.1 beats eps=1e-2 by 1.5 (kept)."""
    runs = tmp_path / "runs"
    centres = {(128, 0.01): 41.0, (64, 0.01): 44.0, (128, 0.1): 42.5}
    for (d, eps), mean in centres.items():
        for seed, offset in ((0, -1.0), (1, 1.0)):
            run = make_run(
                runs, "emim", seed, mean + offset, kwargs={"proj_output_dim": d, "eps": eps}
            )
            results = json.loads((run / "results.json").read_text())
            (run / "results.json").write_text(json.dumps({**results, "eval_split": "val"}))
    out = tmp_path / "out"
    _, summary = render.render_report(runs, out, None, None)
    choices = report_stats.selection_choices(summary).set_index("key")
    assert choices.loc["D", "values"] == ["64", "128"] and choices.loc["D", "n"] == [2, 2]
    assert choices.loc["D", "means"] == pytest.approx([44.0, 41.0])
    assert choices.loc["D", "gain"] == pytest.approx(3.0)
    assert choices.loc["eps", "gain"] == pytest.approx(1.5)
    assert choices["two_se"].tolist() == pytest.approx([2 * math.sqrt(2)] * 2)
    assert choices["choice"].to_dict() == {"D": "64", "eps": "1e-2"}
    md = (out / "report.md").read_text()
    assert "## Settings the validation split favours" in md
    assert (
        "| EMIM | D | **64: 44.0** · 128: 41.0 | 2 | 128 | 64 | +3.00 | 2.83 | change to 64 |" in md
    )
    assert (
        "| EMIM | eps | **1e-2: 41.0** · 0.1: 42.5 | 2 | 1e-2 | 0.1 | +1.50 | 2.83 | keep 1e-2 |"
        in md
    )


def _summary_of_groups(groups: dict[str, tuple[float, float, int]]) -> pd.DataFrame:
    """A method_summary frame of EMIM groups: label -> (kNN mean, sd, n seeds)."""
    return pd.DataFrame(
        {
            "setting": "s",
            "method": [f"emim {label}" for label in groups],
            "knn_acc1_k20_mean": [g[0] for g in groups.values()],
            "knn_acc1_k20_sd": [g[1] for g in groups.values()],
            "knn_acc1_k20_n": [g[2] for g in groups.values()],
        }
    )


def test_a_selection_slice_pools_its_spread_by_degrees_of_freedom_and_needs_two_seeds():
    """D: sds 1, 2, 3 over 3, 2, 4 seeds pool to (2·1 + 1·4 + 3·9) / 6 = 5.5, so 2 SE of
    D=64 (n 2) against D=128 (n 3) is 2·sqrt(5.5·(1/2 + 1/3)) = 4.28 > gain 3: kept (an
    unpooled SE, 3.06, would change it). eps: 0.1 leads by 5 but on one seed: kept."""
    summary = _summary_of_groups(
        {
            "D=128 eps=1e-2": (40.0, 1.0, 3),
            "D=64 eps=1e-2": (43.0, 2.0, 2),
            "D=256 eps=1e-2": (39.0, 3.0, 4),
            "D=128 eps=0.1": (45.0, math.nan, 1),
        }
    )
    choices = report_stats.selection_choices(summary).set_index("key")
    assert choices.loc["D", "values"] == ["64", "128", "256"]
    assert choices.loc["D", ["centre", "best_other", "choice"]].tolist() == ["128", "64", "128"]
    assert choices.loc["D", "two_se"] == pytest.approx(2 * math.sqrt(5.5 * 5 / 6))
    assert choices.loc["eps", ["best_other", "gain", "choice"]].tolist() == ["0.1", 5.0, "1e-2"]
    assert math.isnan(choices.loc["eps", "two_se"])
    assert choices.loc["eps", "note"] == "a value compared has one seed: no spread to judge by"


def test_a_selection_slice_keeps_its_centre_on_a_tie_with_two_standard_errors():
    """sd 1 over 2 seeds each: 2 SE = 2·sqrt(1·(1/2 + 1/2)) = 2, exactly D=64's gain."""
    groups = {"D=128 eps=1e-2": (40.0, 1.0, 2), "D=64 eps=1e-2": (42.0, 1.0, 2)}
    groups |= {"D=32 eps=1e-2": (41.0, 1.0, 2), "D=128 eps=0.1": (39.0, 1.0, 2)}
    choices = report_stats.selection_choices(_summary_of_groups(groups)).set_index("key")
    assert choices.loc["D", ["gain", "two_se", "choice"]].tolist() == [2.0, 2.0, "128"]


def test_a_selection_slice_whose_values_are_equally_common_has_no_centre():
    """Half a one-factor sweep: the default and one alternative, one group each. Which one is
    the default cannot be told, so nothing is changed or kept."""
    groups = {"augmentation=symmetric": (28.3, 1.0, 2), "augmentation=vicreg": (35.1, 1.0, 2)}
    (row,) = report_stats.selection_choices(_summary_of_groups(groups)).itertuples()
    assert (row.centre, row.choice, row.best_other) == (None, None, None)
    assert row.note == "no value is more common than the others: no centre to compare with"


def test_a_selection_slice_without_its_centre_gives_no_verdict():
    """A partial sweep: D=128 eps=1e-2, the run every slice passes through, is not done."""
    summary = _summary_of_groups(
        {
            "D=64 eps=1e-2": (43.0, 1.0, 2),
            "D=256 eps=1e-2": (39.0, 1.0, 2),
            "D=128 eps=0.1": (41.0, 1.0, 2),
            "D=128 eps=1e-3": (42.0, 1.0, 2),
        }
    )
    choices = report_stats.selection_choices(summary)
    assert choices["centre"].tolist() == ["128", "1e-2"]
    assert choices["choice"].tolist() == [None, None]
    assert set(choices["note"]) == {"the centre value has not been run in this slice"}


def test_a_selection_slice_whose_runs_lack_the_metric_gives_no_verdict():
    groups = {"D=128 eps=1e-2": (math.nan, math.nan, 0), "D=64 eps=1e-2": (40.0, 1.0, 2)}
    groups |= {"D=128 eps=0.1": (41.0, 1.0, 2)}
    summary = _summary_of_groups(groups)
    choices = report_stats.selection_choices(summary).set_index("key")
    assert choices.loc["D", ["best_other", "choice"]].tolist() == [None, "128"]
    assert math.isnan(choices.loc["D", "gain"])
    assert set(choices["note"]) == {"no run of the centre or of another value finished"}
    assert report_stats.selection_choices(summary.drop(columns="knn_acc1_k20_mean")).empty


def test_a_baseline_without_a_seed_is_listed_with_nothing_to_pair():
    """A run whose seed cannot be read (no config, an id that is not ours) pairs with nothing."""
    df = pd.DataFrame(
        {
            "status": ["done"] * 3,
            "setting": ["s"] * 3,
            "method": ["emim", "emim", "simclr"],
            "seed": [0, 1, None],
            "knn_acc1_k20": [40.0, 42.0, 39.0],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" in the report's output
        (row,) = report_stats.paired_differences(df, "knn_acc1_k20").itertuples()
    assert (row.baseline, row.n_pairs, row.note) == ("simclr", 0, "no seed finished by both")
    assert math.isnan(row.reference_mean) and math.isnan(row.baseline_mean)
    assert math.isnan(row.t) and math.isnan(row.p_value)


def test_a_sweep_without_a_finished_run_has_an_empty_summary_with_its_key_columns():
    df = pd.DataFrame({"status": ["failed"], "setting": ["s"], "method": ["emim"], "seed": [0]})
    summary = report_stats.method_summary(df)
    assert summary.empty
    assert list(summary.columns) == ["setting", "dataset", "backbone", "epochs", "method", "n_runs"]


def test_the_published_table_takes_our_online_accuracy_and_leaves_out_the_floor():
    summary = pd.DataFrame(
        {
            "setting": ["s", "s", "s", "t"],
            "dataset": ["cifar10", "cifar10", "cifar10", "cifar10"],
            "backbone": ["resnet18"] * 4,
            "epochs": [1000, 1000, 1000, None],
            "method": ["emim", "simclr", "random", "simclr"],
            "online_acc1_mean": [88.0, 90.0, math.nan, 50.0],
            "online_acc1_sd": [0.5, 0.25, math.nan, 1.0],
            "online_acc1_n": [3, 3, 0, 1],
        }
    )
    table = published.published_comparison(summary)
    assert table["method"].tolist() == ["emim", "simclr"]  # no floor, no unmatched setting
    simclr = table.set_index("method").loc["simclr"]
    assert (simclr.ours_mean, simclr.ours_sd, simclr.n, simclr.published) == (90.0, 0.25, 3, 90.74)
    assert simclr.difference == pytest.approx(-0.74)
    assert math.isnan(table.set_index("method").loc["emim", "published"])
    # A sweep whose runs log no online accuracy (the floor alone) still gets a table.
    bare = published.published_comparison(summary.drop(columns=["online_acc1_mean"]).iloc[:2])
    assert bare["ours_mean"].isna().all() and len(bare) == 2


def test_runs_made_before_a_config_key_existed_group_with_runs_at_its_default(tmp_path):
    runs = tmp_path / "runs"
    old = make_run(runs, "emim", 0, 40.0)  # its config has no data.val_size
    new = make_run(runs, "emim", 1, 41.0)
    results = json.loads((new / "results.json").read_text())
    results["config"]["data"]["val_size"] = None
    (new / "results.json").write_text(json.dumps(results))
    assert set(collect.collect_runs(runs)["method"]) == {"emim"}
    assert old.name != new.name


def test_every_method_of_the_zoo_has_its_own_colour_in_every_report():
    from emim_bench import config
    from emim_bench.report.labels import method_order

    zoo = config.choices("method")
    together = report_figures._palette(zoo)
    assert len(zoo) == 18 and len({together[m] for m in zoo}) == len(zoo)
    for method in zoo:  # the same colour alone, beside the floor, or among all
        assert report_figures._palette([method, "random"])[method] == together[method]
    assert method_order(zoo)[0] == "emim" and method_order(zoo)[-1] == "random"


def test_groups_of_settings_take_colours_far_from_the_methods_beside_them():
    import math

    groups = ["wmse", "mec eps=64", "mec eps=1024", "emim", "random"]
    palette = report_figures._palette(groups)
    for a in groups:
        for b in groups:
            if a < b:
                assert math.dist(palette[a], palette[b]) >= 0.25, (a, b)


@pytest.mark.parametrize(
    ("p", "clause"), [(0.0236, "p = 0.024"), (0.0004, "p < 0.001"), (float("nan"), "p = –")]
)
def test_a_p_value_reads_as_a_clause_in_a_sentence(p, clause):
    from emim_bench.report.document import fmt_p_clause

    assert fmt_p_clause(p) == clause
