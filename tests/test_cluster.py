"""Sweeps through submitit, run here with its local executor: jobs in processes of their own,
a job requeued after the signal SLURM sends before a time limit, and submitting without
waiting. Real SLURM is not run here; submitit_slurm differs in how jobs start and requeue
(sbatch, scontrol), not in the job callable, its checkpoint or the run it resumes.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from emim_bench.cli import main
from emim_bench.report.collect import collect_runs
from emim_bench.run import directory as run_directory
from emim_bench.sweep import file as sweep_file
from emim_bench.sweep import plan as sweep_plan

REPO = Path(__file__).resolve().parents[1]
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


def _submitit_logs(sweep_dir: Path) -> list[str]:
    """The text of each submitit job's stdout and stderr, one entry per job."""
    folders = [p for p in (sweep_dir / ".hydra" / ".submitit").iterdir() if p.name != "%j"]
    return ["".join(f.read_text() for f in sorted(p.glob("*_log.*"))) for p in folders]


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def test_a_submitit_local_sweep_runs_each_run_as_a_job_and_the_report_sees_them(
    tmp_path, capsys, cifar10_npz_path
):
    spec = _sweep_file(tmp_path / "local.yaml", epochs=1, seeds=[0, 1])

    code = main(["sweep", str(spec), f"runs_root={tmp_path}", "--no-report"])

    assert code == 0
    assert "sweep local: 2 runs: 2 done, 0 running, 0 failed" in capsys.readouterr().out
    logs = _submitit_logs(tmp_path / "local")
    assert len(logs) == 2 and all("Job completed successfully" in log for log in logs)
    table = collect_runs(tmp_path / "local", [r.run_id for r in _planned(spec, tmp_path)])
    assert table["status"].tolist() == ["done", "done"]
    assert table["seed"].tolist() == [0, 1] and table["knn_acc1_k20"].notna().all()


def _checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # not written yet, or being replaced at this moment
        return -1


def test_a_job_requeued_at_its_time_limit_resumes_and_ends_as_the_uninterrupted_run(
    tmp_path, cifar10_npz_path
):
    """SIGUSR2 to the job, as SLURM sends it before the time limit (submitit's default
    signal): submitit calls the launcher's checkpoint(), the local controller starts the job
    again, and the run resumes from its last.ckpt.

    With a limit of at most 10 minutes submitit counts any such signal as the time limit
    (a timeout, not a preemption); the controller's own signal comes 30 s before the limit,
    after this test.
    """
    spec = _sweep_file(tmp_path / "requeue.yaml", 3, [0], launcher_options={"timeout_min": 10})
    (run,) = _planned(spec, tmp_path / "cut")
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emim_bench.cli",
            "sweep",
            str(spec),
            f"runs_root={tmp_path / 'cut'}",
            "--no-report",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    reference = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emim_bench.cli",
            "pretrain",
            *TINY,
            "epochs=3",
            "method=simclr",
            f"runs_root={tmp_path / 'whole'}",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoint = run.run_dir / run_directory.LAST_CHECKPOINT
    _wait_for(lambda: _checkpoint_step(checkpoint) >= 2, "epoch 1's checkpoint")  # 2 steps/epoch
    holder = json.loads((run.run_dir / run_directory.CLAIM_FILE).read_text())
    os.kill(holder["pid"], signal.SIGUSR2)  # the job's own process, in epoch 2
    assert sweep.wait(timeout=WAIT_S) == 0
    assert reference.wait(timeout=WAIT_S) == 0, reference.stderr.read()[-2000:]

    (log,) = _submitit_logs(tmp_path / "cut" / "requeue")
    assert "this job is timed-out" in log and "Requeued job" in log
    assert log.count("Starting with JobEnvironment") == 2
    second = run.run_dir / "logs" / "version_1" / "metrics.csv"
    assert second.is_file() and "train_" in second.read_text()  # the second start trained
    whole = next((tmp_path / "whole" / "default").iterdir())
    assert whole.name == run.run_id
    a, b = (json.loads((r / run_directory.RESULTS_FILE).read_text()) for r in (whole, run.run_dir))
    for key, value in a["metrics"].items():
        assert b["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert a["train"]["steps"] == b["train"]["steps"] == 6
    curve = run_directory.read_curve(run.run_dir / run_directory.CURVE_FILE)
    assert curve["epoch"].tolist() == [1, 2, 3]
    ckpt_a, ckpt_b = (
        torch.load(r / run_directory.LAST_CHECKPOINT, map_location="cpu", weights_only=False)
        for r in (whole, run.run_dir)
    )
    assert ckpt_a["lr_schedulers"] == ckpt_b["lr_schedulers"]
    for name, tensor in ckpt_a["state_dict"].items():
        assert torch.allclose(tensor.float(), ckpt_b["state_dict"][name].float(), atol=1e-6), name


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
