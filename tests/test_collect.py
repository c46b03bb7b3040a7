"""Reading run directories into the report's table: one row per run, whatever state it is in.

Fast unit tests of :mod:`emim_bench.report.collect` (no figures, no rendering); the report
built from such a table is tested in ``test_report.py`` and ``test_report_golden.py``.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from fake_runs import make_run

from emim_bench.report import collect


def _rows(runs, expected=None) -> pd.DataFrame:
    return collect.collect_runs(runs, expected).set_index("run_id")


def test_a_done_run_gives_its_metrics_training_figures_and_versions(tmp_path):
    run = make_run(tmp_path, "simclr", 2, 41.5, linear=43.0, online=40.0, images_per_s=120.0)
    row = _rows(tmp_path).loc[run.name]
    assert (row.method, row.dataset, row.backbone, row.seed, row.epochs) == (
        "simclr",
        "cifar10",
        "resnet18",
        2,
        3,
    )
    assert (row.batch_size, row.train_size, row.budget, row.status, row.detail) == (
        64,
        2000,
        "cpu",
        "done",
        "",
    )
    assert (row.knn_acc1_k20, row.knn_acc5_k20, row.linear_acc1, row.online_acc1) == (
        41.5,
        90.0,
        43.0,
        40.0,
    )
    assert (row.wall_time_s, row.steps, row.images_per_s, row.peak_rss_bytes) == (
        60.0,
        93,
        120.0,
        3 * 2**30,
    )
    assert pd.isna(row.peak_gpu_memory_bytes)
    assert (row.version_torch, row.version_git_commit) == ("2.14.1", "abc123")
    assert (row.started_utc, row.finished_utc) == (
        "2025-01-01T00:00:00+00:00",
        "2025-01-01T00:02:00+00:00",
    )
    assert (row.devices, row.precision, row.accelerator) == ("1", "32", "cpu")
    assert (row.eval_split, row.sweep, row.starts, row.path) == ("test", "test", 0, str(run))
    # curve.csv's last row: a resumed epoch 3, 60 s
    assert (row.curve_epochs, row.curve_wall_s) == (3, 60.0)
    assert row.setting == "cifar10 · resnet18 · 3 epochs · 2000 training images"


def test_the_precision_a_run_trained_in_wins_over_its_configured_auto(tmp_path):
    auto = make_run(tmp_path, "emim", 0, 40.0)
    results = json.loads((auto / "results.json").read_text())
    results["config"]["trainer"]["precision"] = "auto"
    results["precision"] = "bf16"  # what trainer.precision=auto resolved to on its GPU
    (auto / "results.json").write_text(json.dumps(results))
    older = make_run(tmp_path, "emim", 1, 41.0)  # results.json from before the field: config's
    rows = _rows(tmp_path)
    assert (rows.loc[auto.name, "precision"], rows.loc[older.name, "precision"]) == ("bf16", "32")


def test_results_fields_win_over_the_config_and_a_val_split_is_kept(tmp_path):
    run = make_run(tmp_path, "emim", 0, 40.0)
    results = json.loads((run / "results.json").read_text())
    results.update(seed=7, epochs=5, batch_size=128, eval_split="val")
    results.update(method="simclr", dataset="stl10", backbone="resnet50")
    (run / "results.json").write_text(json.dumps(results))
    row = _rows(tmp_path).loc[run.name]
    assert (row.seed, row.epochs, row.batch_size, row.eval_split) == (7, 5, 128, "val")
    assert (row.method, row.dataset, row.backbone) == ("simclr", "stl10", "resnet50")


def test_unreadable_results_is_a_failure_that_says_why(tmp_path):
    run = make_run(tmp_path, "emim", 0, 40.0)
    (run / "results.json").write_text("{not json")
    row = _rows(tmp_path).loc[run.name]
    assert row.status == "failed"
    assert row.detail.startswith("unreadable results.json: ")
    assert (row.method, row.seed) == ("emim", 0)  # from config.yaml
    assert math.isnan(row.knn_acc1_k20)


def test_failed_run_gives_its_error_times_and_kept_checkpoint(tmp_path):
    run = make_run(tmp_path, "vicreg", 1, status="failed", error="NonFiniteLossError: nan")
    row = _rows(tmp_path).loc[run.name]
    assert (row.status, row.detail) == (
        "failed",
        "NonFiniteLossError: nan (last good checkpoint kept)",
    )
    assert (row.started_utc, row.finished_utc) == (
        "2025-01-01T00:00:00+00:00",
        "2025-01-01T00:01:00+00:00",
    )
    (run / "failed.json").write_text("[")
    (run / "checkpoints" / "last.ckpt").unlink()
    row = _rows(tmp_path).loc[run.name]
    assert row.status == "failed" and row.detail.startswith("unreadable failed.json: ")
    assert not row.detail.endswith("(last good checkpoint kept)")
    (run / "failed.json").write_text("{}")
    assert _rows(tmp_path).loc[run.name, "detail"] == "(no error message)"


def test_partial_run_says_how_far_its_curve_reached(tmp_path):
    run = make_run(tmp_path, "byol", 0, 30.0, status="partial", epochs=4)
    row = _rows(tmp_path).loc[run.name]
    assert row.status == "partial"
    assert row.detail == "checkpoint without results (interrupted); curve reaches epoch 4 of 4"
    (run / "curve.csv").unlink()
    assert _rows(tmp_path).loc[run.name, "detail"] == "checkpoint without results (interrupted)"


def test_a_run_killed_in_its_first_epoch_is_to_do(tmp_path):
    run = make_run(tmp_path, "byol", 0, 30.0, status="partial", curve=False)
    (run / "checkpoints" / "last.ckpt").unlink()
    (run / "checkpoints").rmdir()
    row = _rows(tmp_path).loc[run.name]
    assert row.status == "to do" and "killed in its first epoch" in row.detail


def test_an_unreadable_curve_is_named_and_the_rest_of_the_row_kept(tmp_path):
    run = make_run(tmp_path, "emim", 0, 40.0)
    (run / "curve.csv").write_text("epoch,step\n1,2,3,4\n\x00")
    row = _rows(tmp_path).loc[run.name]
    assert row.status == "done" and row.knn_acc1_k20 == 40.0
    assert row.detail.startswith("[unreadable curve.csv: ")
    assert pd.isna(row.curve_epochs)


def test_planned_runs_without_a_directory_are_to_do_and_unplanned_ones_stale(tmp_path):
    done = make_run(tmp_path, "emim", 0, 40.0).name
    old = make_run(tmp_path, "emim", 0, 40.0, epochs=9).name
    planned = "simclr-cifar10-resnet18-s3-0123abcd"
    rows = _rows(tmp_path, expected=[done, planned])
    assert rows.loc[done, "status"] == "done"
    assert (rows.loc[old, "status"], rows.loc[old, "detail"]) == (
        "stale",
        "not in the sweep plan (was done); left out",
    )
    new = rows.loc[planned]
    assert (new.status, new.detail, new.starts) == ("to do", "not started (no run directory)", 0)
    # what the run id says, lacking a config
    assert (new.method, new.dataset, new.backbone, new.seed) == ("simclr", "cifar10", "resnet18", 3)
    assert new.path == str(tmp_path / planned)
    assert _rows(tmp_path)["status"].tolist() == ["done", "done"]  # no plan: every run counts


def test_rows_are_sorted_by_setting_then_method_order_then_seed(tmp_path):
    for method, seed in [("simclr", 1), ("random", 0), ("emim", 1), ("byol", 0), ("emim", 0)]:
        make_run(tmp_path, method, seed, 40.0)
    make_run(tmp_path, "emim", 0, 40.0, dataset="cifar100")
    df = collect.collect_runs(tmp_path)
    assert list(zip(df["dataset"], df["method"], df["seed"])) == [
        ("cifar10", "emim", 0),
        ("cifar10", "emim", 1),
        ("cifar10", "byol", 0),
        ("cifar10", "simclr", 1),
        ("cifar10", "random", 0),
        ("cifar100", "emim", 0),
    ]


def test_metrics_beyond_the_known_ones_get_columns_after_them(tmp_path):
    run = make_run(tmp_path, "emim", 0, 40.0)
    results = json.loads((run / "results.json").read_text())
    results["metrics"].update(knn_acc1_k50="41.0", train_loss=-3.0)
    (run / "results.json").write_text(json.dumps(results))
    df = collect.collect_runs(tmp_path)
    metrics = collect.metric_columns(df)
    assert metrics == [*collect.METRICS, "knn_acc1_k50"]
    assert df.loc[0, "knn_acc1_k50"] == 41.0  # numbers, whatever the JSON held


def test_a_single_run_directory_is_a_sweep_of_one(tmp_path):
    run = make_run(tmp_path / "sweep", "emim", 0, 40.0)
    (tmp_path / "sweep" / ".hydra").mkdir()
    (tmp_path / "sweep" / "notes").mkdir()  # neither a run nor hidden: skipped
    assert collect.run_dirs(tmp_path / "sweep") == [run]
    assert collect.run_dirs(run) == [run]
    assert collect.collect_runs(run)["run_id"].tolist() == [run.name]


def test_a_missing_folder_is_a_report_error(tmp_path):
    with pytest.raises(collect.ReportError, match="does not exist or is not a folder"):
        collect.collect_runs(tmp_path / "nope")
    assert collect.collect_runs(tmp_path).empty


def test_malformed_config_yaml_reads_as_no_config(tmp_path):
    run = make_run(tmp_path, "emim", 0, status="partial")
    (run / "config.yaml").write_text("a: [unclosed")
    row = _rows(tmp_path).loc[run.name]
    assert (row.method, row.seed, row.status) == ("emim", 0, "partial")  # from the run id
    assert pd.isna(row.epochs)
    assert row.setting == "cifar10 · resnet18 · ? epochs"


@pytest.mark.parametrize(
    ("args", "label"),
    [
        (
            ("cifar10", "resnet18", 3.0, 2000.0),
            "cifar10 · resnet18 · 3 epochs · 2000 training images",
        ),
        (("cifar10", None, None, None), "cifar10 · ? · ? epochs"),
        ((None, "vit", 10, math.nan), "? · vit · 10 epochs"),
    ],
)
def test_setting_label(args, label):
    assert collect.setting_label(*args) == label


def test_variant_labels_order_short_names_first_and_mark_unset_keys():
    configs = [
        collect._flatten({"method": {"lr": 0.004, "kwargs": {"eps": 0.1, "zeta": 1}}}),
        collect._flatten({"method": {"lr": 0.001, "kwargs": {"eps": 0.01}}, "batch_size": 32}),
    ]
    assert collect.variant_labels(configs) == [
        "eps=0.1 batch=unset lr=4e-3 zeta=1",
        "eps=1e-2 batch=32 lr=1e-3 zeta=unset",
    ]


def test_curves_are_stacked_with_the_run_they_come_from(tmp_path):
    make_run(tmp_path, "emim", 0, 40.0, epochs=2, curve=False)  # listed first, no curve
    unreadable = make_run(tmp_path, "emim", 1, 40.0, epochs=2)
    (unreadable / "curve.csv").write_text("step,wall_s\n1,2.0\n")  # no epoch column
    make_run(tmp_path, "emim", 2, 40.0, epochs=2)
    make_run(tmp_path, "random", 0, 20.0)  # no curve
    runs = collect.collect_runs(tmp_path)
    curves = collect.collect_curves(runs)
    assert list(curves.columns[:5]) == ["run_id", "method", "seed", "setting", "status"]
    assert set(curves["seed"]) == {2}  # only the readable curve
    # one row per epoch: the row written after a resume replaces the first one
    assert curves["epoch"].tolist() == [1, 2] and set(curves["method"]) == {"emim"}
    assert curves["knn_acc1"].tolist() == [37.0, 40.0]
    empty = collect.collect_curves(runs[runs["method"] == "random"])
    assert empty.empty and list(empty.columns) == [
        "run_id",
        "method",
        "seed",
        "setting",
        "epoch",
        "wall_s",
    ]


def test_done_runs_keeps_only_finished_ones(tmp_path):
    make_run(tmp_path, "emim", 0, 40.0)
    make_run(tmp_path, "emim", 1, status="partial")
    assert collect.done_runs(collect.collect_runs(tmp_path))["seed"].tolist() == [0]


def test_a_run_directory_of_another_name_is_read_from_its_config(tmp_path):
    run = make_run(tmp_path, "byol", 4, status="partial", dataset="stl10", backbone="resnet50")
    renamed = run.rename(tmp_path / "my_run")
    row = _rows(tmp_path).loc["my_run"]
    assert (row.method, row.dataset, row.backbone, row.seed) == ("byol", "stl10", "resnet50", 4)
    assert row.path == str(renamed)


def test_a_curve_of_only_its_header_is_no_epoch_yet(tmp_path):
    run = make_run(tmp_path, "emim", 0, status="partial")
    (run / "curve.csv").write_text("epoch,step,wall_s,train_loss,knn_acc1\n")
    row = _rows(tmp_path).loc[run.name]
    assert row.curve_epochs == 0 and math.isnan(row.curve_wall_s)
    assert row.detail == "checkpoint without results (interrupted); curve reaches epoch 0 of 3"


def test_each_lightning_log_version_is_one_start_of_the_run(tmp_path):
    run = make_run(tmp_path, "emim", 0, 40.0)
    for version in ("version_0", "version_1", "other"):
        (run / "logs" / version).mkdir(parents=True)
    assert _rows(tmp_path).loc[run.name, "starts"] == 2
