"""`make demo` runs the sweep the README describes; a tiny version of it runs end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from emim_bench.cli import main
from emim_bench.sweep import file as sweep_file

REPO = Path(__file__).parents[1]
TINY = [
    "data.train_size=64",
    "data.test_size=100",
    "batch_size=16",
    "epochs=1",
    "eval.linear_epochs=5",
    "trainer.num_workers=0",
    "progress_bar=false",
    "++method.kwargs.proj_hidden_dim=64",
    "++method.kwargs.proj_output_dim=32",
]


def test_make_demo_runs_the_cpu_demo_sweep_that_the_readme_describes():
    demo_recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M)
    assert demo_recipe and "emim-bench sweep sweeps/cpu_demo.yaml" in demo_recipe[1]
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "reports/cpu_demo/report.html" in readme

    demo = sweep_file.load_sweep(REPO / "sweeps" / "cpu_demo.yaml")
    assert demo.name == "cpu_demo" and "data=cifar10" in demo.overrides
    assert "budget=cpu" in demo.overrides
    assert demo.grids[0]["method"] == ["emim", "simclr", "byol", "barlow_twins", "vicreg", "random"]


def test_a_tiny_demo_runs_end_to_end(tmp_path, capsys, cifar10_npz_path):
    spec = yaml.safe_load((REPO / "sweeps" / "cpu_demo.yaml").read_text())
    spec["grid"]["method"] = ["emim", "random"]
    tiny = tmp_path / "cpu_demo.yaml"
    tiny.write_text(yaml.safe_dump(spec))

    code = main(
        [
            "sweep",
            str(tiny),
            f"runs_root={tmp_path / 'runs'}",
            *TINY,
            "--report-dir",
            str(tmp_path / "report"),
        ]
    )

    assert code == 0
    out = capsys.readouterr().out
    assert "sweep cpu_demo: 2 runs: 2 done, 0 running, 0 failed, 0 partial, 0 to do" in out
    assert str(tmp_path / "report" / "report.html") in out
    methods = {
        json.loads(p.read_text())["method"]
        for p in (tmp_path / "runs" / "cpu_demo").glob("*/results.json")
    }
    assert methods == {"emim", "random"}
    assert (tmp_path / "report" / "report.md").read_text().count("EMIM") >= 1


def test_the_selection_report_keeps_a_record_of_every_run_it_counts_as_done():
    """`make select` resumes from reports/select_cpu_budget/runs/ on a fresh clone, so each run
    the committed report counts as done must have its record committed, with the same score."""
    report_dir = REPO / "reports" / "select_cpu_budget"
    rows = pd.read_csv(report_dir / "results.csv")
    done = rows[rows["status"] == "done"]
    assert len(done) > 0
    for row in done.itertuples():
        record = json.loads((report_dir / "runs" / row.run_id / "results.json").read_text())
        assert record["eval_split"] == "val" and record["seed"] == row.seed
        assert record["metrics"]["knn_acc1_k20"] == pytest.approx(row.knn_acc1_k20)
