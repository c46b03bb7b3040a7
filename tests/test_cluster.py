"""Sweeps through submitit, run here with its local executor: submitting without waiting.
Real SLURM is not run here; submitit_slurm differs in how jobs start and requeue (sbatch,
scontrol), not in the job callable or the run it resumes.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import yaml

from emim_bench.cli import main
from emim_bench.report.collect import collect_runs
from emim_bench.run import directory as run_directory
from emim_bench.sweep import file as sweep_file
from emim_bench.sweep import plan as sweep_plan

# Seconds per run: the tiny overrides of the run tests, fewer images scored, no diagnostics.
TINY = [
    "budget=cpu",
    "progress_bar=false",
    "trainer.num_workers=0",
    "data.train_size=32",
    "data.test_size=50",
    "batch_size=16",
    "eval.linear_epochs=5",
    "method.kwargs.proj_hidden_dim=64",
    "method.kwargs.proj_output_dim=32",
    "diagnostics_batch=0",
]
WAIT_S = 900  # for runs in processes of their own on two busy cores


def _sweep_file(path: Path, epochs: int, seeds: list[int], **spec) -> Path:
    content = {
        "name": path.stem,
        "overrides": [*TINY, f"epochs={epochs}"],
        "grid": {"method": ["simclr"], "seed": seeds},
        "launcher": "submitit_local",
        **spec,
    }
    path.write_text(yaml.safe_dump(content))
    return path


def _planned(spec: Path, runs_root: Path) -> list[sweep_plan.PlannedRun]:
    return sweep_plan.plan(sweep_file.load_sweep(spec), [f"runs_root={runs_root}"])


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def test_no_wait_submits_returns_before_the_run_ends_and_the_report_comes_later(
    tmp_path, capsys, cifar10_npz_path
):
    spec = _sweep_file(tmp_path / "detached.yaml", epochs=1, seeds=[0])
    (run,) = _planned(spec, tmp_path)

    code = main(["sweep", str(spec), f"runs_root={tmp_path}", "--no-wait", "--report-dir", "rep"])

    assert code == 0
    assert run_directory.run_state(run.run_dir) in ("to do", "running")  # not waited for
    out = capsys.readouterr().out.splitlines()
    ids_file = tmp_path / "detached" / ".hydra" / "run_ids.txt"
    assert ids_file.read_text() == f"{run.run_id}\n"
    sweep_command = ["emim-bench", "sweep", str(spec), f"runs_root={tmp_path}"]
    assert out[-3:] == [
        "sweep detached: submitted 1 runs, not waiting for them",
        f"their states: {shlex.join([*sweep_command, '--dry-run'])}",
        "the report, once they are done: "
        + shlex.join(
            [
                "emim-bench",
                "report",
                str(tmp_path / "detached"),
                "-o",
                "rep",
                "--sweep",
                str(spec),
                "--expected",
                str(ids_file),
                "--command",
                shlex.join(sweep_command),
            ]
        ),
    ]
    _wait_for(lambda: run_directory.run_state(run.run_dir) == "done", "the run")
    table = collect_runs(tmp_path / "detached", ids_file.read_text().split())
    assert table["status"].tolist() == ["done"] and table["knn_acc1_k20"].notna().all()
