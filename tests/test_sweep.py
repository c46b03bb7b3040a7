"""Sweeps: plan, skip done runs, resume after a kill, go on past failures, report at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from emim_bench import config
from emim_bench.cli import main
from emim_bench.run import directory as run_directory
from emim_bench.sweep import devices as sweep_devices
from emim_bench.sweep import file as sweep_file
from emim_bench.sweep import launch as sweep_launch
from emim_bench.sweep import plan as sweep_plan

REPO = Path(__file__).parents[1]


def write_sweep(path: Path, **changes) -> Path:
    """sweeps/smoke.yaml with some keys changed, written to ``path``."""
    spec = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec))
    return path


def test_smoke_sweep_runs_four_runs_and_writes_a_report(tmp_path, capsys, cifar10_npz_path):
    report_dir = tmp_path / "report"
    code = main(
        [
            "sweep",
            str(REPO / "sweeps" / "smoke.yaml"),
            f"runs_root={tmp_path}",
            "--report-dir",
            str(report_dir),
        ]
    )

    assert code == 0
    out = capsys.readouterr().out
    summary = "sweep smoke: 4 runs: 4 done, 0 running, 0 failed, 0 partial, 0 to do"
    assert summary in out.splitlines()[-1]
    results = sorted((tmp_path / "smoke").glob(f"*/{run_directory.RESULTS_FILE}"))
    assert len(results) == 4
    assert {json.loads(p.read_text())["method"] for p in results} == {"emim", "simclr"}
    assert (report_dir / "report.html").is_file() and (report_dir / "results.csv").is_file()
    # Hydra got each run's overrides as a job of their own, and composed the planned config
    planned = sweep_plan.plan(
        sweep_file.load_sweep(REPO / "sweeps" / "smoke.yaml"), [f"runs_root={tmp_path}"]
    )
    jobs = yaml.safe_load((tmp_path / "smoke" / ".hydra" / "plan.yaml").read_text())["jobs"]
    assert jobs == [r.overrides for r in planned]
    assert {p.parent.name for p in results} == {r.run_id for r in planned}

    # the same sweep again: everything is done, nothing is re-run
    stamps = [p.stat().st_mtime_ns for p in results]
    assert (
        main(
            [
                "sweep",
                str(REPO / "sweeps" / "smoke.yaml"),
                f"runs_root={tmp_path}",
                "--no-report",
            ]
        )
        == 0
    )
    assert [p.stat().st_mtime_ns for p in results] == stamps


def test_overrides_may_follow_options(tmp_path, capsys):
    smoke = str(REPO / "sweeps" / "smoke.yaml")
    assert main(["sweep", smoke, f"runs_root={tmp_path}", "--dry-run"]) == 0
    before = capsys.readouterr().out
    assert main(["sweep", smoke, "--dry-run", f"runs_root={tmp_path}", "epochs=2"]) == 0
    after = capsys.readouterr().out
    assert "emim-cifar10-resnet18-s1-" in after and before != after  # epochs=2 changed the ids
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", smoke, "--dry-run", "--frobnicate"])
    assert exit_info.value.code == 2


def test_joblib_launcher_runs_the_jobs_in_parallel_processes(tmp_path, capsys, cifar10_npz_path):
    spec = write_sweep(
        tmp_path / "parallel.yaml",
        name="parallel",
        grid={"method": ["simclr"], "seed": [0, 1]},
        launcher="joblib",
        launcher_options={"n_jobs": 2},
    )
    code = main(["sweep", str(spec), f"runs_root={tmp_path / 'runs'}", "--no-report"])
    assert code == 0
    captured = capsys.readouterr()
    assert "sweep parallel: 2 runs: 2 done" in captured.out
    assert "Joblib.Parallel(n_jobs=2" in captured.out + captured.err
    job_logs = [p.read_text() for p in (tmp_path / "runs" / "parallel" / ".hydra").glob("*/*.log")]
    assert len(job_logs) == 2 and not any("CUDA_VISIBLE_DEVICES" in log for log in job_logs)


def test_joblib_jobs_training_on_one_gpu_each_see_the_gpu_of_their_job_number(
    tmp_path, cifar10_npz_path
):
    spec = write_sweep(
        tmp_path / "gpus.yaml",
        name="gpus",
        grid={"trainer": ["gpu"], "seed": [0, 1]},
        launcher="joblib",
        launcher_options={"n_jobs": 2},
    )
    sweep = sweep_file.load_sweep(spec)
    runs = sweep_plan.plan(sweep, [f"runs_root={tmp_path}"])

    sweep_launch.launch(sweep, runs, gpus=("3", "5"))  # as if CUDA_VISIBLE_DEVICES=3,5

    hydra_dir = tmp_path / "gpus" / ".hydra"
    for num, gpu in enumerate(["3", "5"]):
        (log,) = (hydra_dir / str(num)).glob("*.log")  # Hydra's log of job <num>
        assert f"job {num}: CUDA_VISIBLE_DEVICES={gpu}" in log.read_text()


def test_job_numbers_take_the_visible_gpus_in_turn():
    assert [sweep_devices.device_for_job(n, ("3", "5")) for n in range(5)] == [
        "3",
        "5",
        "3",
        "5",
        "3",
    ]
    assert sweep_devices.device_for_job(4, ("GPU-8f2c",)) == "GPU-8f2c"  # UUIDs as given
    with pytest.raises(ValueError, match="list of visible GPUs is empty"):
        sweep_devices.device_for_job(0, ())


def test_the_visible_gpus_are_those_cuda_visible_devices_names(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5,GPU-8f2c")
    assert sweep_devices.visible_gpus() == ("3", "5", "GPU-8f2c")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert sweep_devices.visible_gpus() == ()


def test_a_worker_process_keeps_the_gpu_of_its_first_job(monkeypatch):
    monkeypatch.setattr(sweep_devices, "_pinned", None)  # a fresh worker
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert sweep_devices.pin_job_gpu(1, ("3", "5")) == "5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    # its next job (number 2 would be "3") stays on "5": CUDA read the variable already
    assert sweep_devices.pin_job_gpu(2, ("3", "5")) == "5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def test_the_hydra_command_line_gives_the_chosen_launcher_its_own_options(tmp_path):
    spec = write_sweep(
        tmp_path / "keyed.yaml",
        launcher="submitit_slurm",
        launcher_options={
            "submitit_slurm": {"partition": "gpu", "timeout_min": 60},
            "joblib": {"n_jobs": 2},
        },
    )
    sweep = sweep_file.read_sweep(spec)
    plan_file, hydra_dir = tmp_path / "plan.yaml", tmp_path / ".hydra"
    head = ["--multirun", "hydra/sweeper=planned", f"hydra.sweeper.plan_file='{plan_file}'"]
    tail = [
        f"hydra.sweep.dir='{hydra_dir}'",
        "hydra.sweep.subdir=${hydra:job.num}",
        "hydra.job.chdir=false",
    ]

    def argv(launcher, **kwargs):
        return sweep_launch.hydra_argv(sweep, launcher, plan_file, hydra_dir, **kwargs)

    slurm = ["hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=60"]
    assert argv("submitit_slurm") == [*head, "hydra/launcher=submitit_slurm", *slurm, *tail]
    assert argv("joblib") == [*head, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *tail]
    assert argv("basic") == [*head, "hydra/launcher=basic", *tail]
    assert argv("submitit_local") == [*head, "hydra/launcher=submitit_local", *tail]
    assert argv("submitit_slurm", wait=False) == [
        *head,
        "hydra/launcher=submitit_slurm_nowait",
        *slurm,
        *tail,
    ]
    # joblib's jobs are told the GPUs to take in turn; other launchers' jobs are not
    gpus = "++hydra.job.env_set.EMIM_BENCH_SWEEP_GPUS='3,5'"
    assert argv("joblib", gpus=("3", "5")) == [
        *head,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        gpus,
        *tail,
    ]
    assert gpus not in argv("basic", gpus=("3", "5"))
    with pytest.raises(ValueError, match="--no-wait needs a launcher whose jobs outlive"):
        argv("joblib", wait=False)


def test_flat_launcher_options_belong_to_the_files_own_launcher(tmp_path, capsys):
    spec = write_sweep(tmp_path / "flat.yaml", launcher="joblib", launcher_options={"n_jobs": 2})
    sweep = sweep_file.read_sweep(spec)
    assert sweep.launcher_options == {"joblib": {"n_jobs": 2}}
    assert sweep.options_for("joblib") == {"n_jobs": 2} and sweep.options_for("basic") == {}

    assert (
        main(["sweep", str(spec), f"runs_root={tmp_path}", "--launcher", "basic", "--dry-run"]) == 0
    )
    assert capsys.readouterr().err.strip() == (
        "emim-bench sweep: the file's launcher_options are for joblib; basic runs with its "
        "defaults (key them by launcher to give it its own)"
    )


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_no_wait_with_a_launcher_that_runs_the_jobs_itself_is_one_line(launcher, tmp_path, capsys):
    smoke = str(REPO / "sweeps" / "smoke.yaml")
    code = main(["sweep", smoke, f"runs_root={tmp_path}", "--launcher", launcher, "--no-wait"])
    assert code == 2
    err = capsys.readouterr().err
    assert err == (
        "emim-bench sweep: error: --no-wait needs a launcher whose jobs outlive this command "
        f"(submitit_slurm, submitit_local); {launcher} runs them inside it: run the sweep under "
        "tmux or nohup instead\n"
    )
    assert not (tmp_path / "smoke").exists()


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    assert (
        main(
            [
                "sweep",
                str(REPO / "sweeps" / "smoke.yaml"),
                f"runs_root={tmp_path}",
                "--dry-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("to do") == 5  # four runs and the summary line
    assert "emim-cifar10-resnet18-s1-" in out and not (tmp_path / "smoke").exists()


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, capsys, cifar10_npz_path):
    spec = write_sweep(
        tmp_path / "failing.yaml",
        name="failing",
        grid={"method": ["emim"], "optim.optimizer": ["sgd", "rmsprop"]},
    )
    code = main(["sweep", str(spec), f"runs_root={tmp_path / 'runs'}", "--no-report"])

    assert code == 1
    out = capsys.readouterr().out
    assert "sweep failing: 2 runs: 1 done, 0 running, 1 failed, 0 partial, 0 to do" in out
    assert "rmsprop not in (sgd, adam, adamw)" in out  # solo-learn's own error, at fit time
    states = {
        r.choices["optim.optimizer"]: r.state
        for r in sweep_plan.plan(sweep_file.load_sweep(spec), [f"runs_root={tmp_path / 'runs'}"])
    }
    assert states == {"sgd": "done", "rmsprop": "failed"}


def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path, cifar10_npz_path):
    command = [
        sys.executable,
        "-m",
        "emim_bench.cli",
        "sweep",
        str(REPO / "sweeps" / "smoke.yaml"),
        f"runs_root={tmp_path}",
        "--no-report",
    ]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if len(list((tmp_path / "smoke").glob(f"*/{run_directory.RESULTS_FILE}"))) >= 2:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the sweep ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "smoke").glob("*/results.json")}
    assert 2 <= len(finished) < 4

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True)

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    lines = rerun.stdout.splitlines()
    planned = next(line for line in lines if line.startswith("sweep smoke: 4 runs:"))
    assert f"{len(finished)} done" in planned  # the plan before launching shows what was kept
    assert len(list((tmp_path / "smoke").glob("*/results.json"))) == 4
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in finished.items())


@pytest.mark.parametrize(
    "content, message",
    [
        ("name: x\ngrid: {method: [emim]\n", "malformed YAML"),
        ("name: x\ngrid: {method: [simclrr]}\n", "unknown method 'simclrr'"),
        ("name: x\ngrid: {method: [emim]}\nlauncher: slurmm\n", "unknown launcher 'slurmm'"),
        ("name: x\ngrid: {method: emim}\n", "grid must map config keys to non-empty lists"),
        ("name: x\ngrid: {epochz: [1]}\n", "unknown config key 'epochz'"),
        ("name: x\ngrid: {method: [emim], method.kwargs.eps: [-1.0]}\n", "eps must be >= 0"),
        ("name: x\ngrid: {method: [emim]}\nlaunchr: basic\n", "unknown keys ['launchr']"),
        ("name: x\ngrid: {method: [emim]}\nnotes: [a]\n", "notes must be text (paragraphs)"),
        ("name: x\ngrid: {method: [emim]}\nlauncher_options: [1]\n", "must be a mapping"),
        # Options are checked against the launcher's own config when the file is read.
        (
            "name: x\ngrid: {method: [emim]}\nlauncher: joblib\n"
            "launcher_options: {partition: gpu}\n",
            "launcher joblib has no option 'partition' (it accepts: n_jobs, backend,",
        ),
        (
            "name: x\ngrid: {method: [emim]}\nlauncher_options: {submitit_local: {partition: a}}\n",
            "launcher submitit_local has no option 'partition'",
        ),
        (
            "name: x\ngrid: {method: [emim]}\nlauncher_options: {joblib: {n_jobs: 2}, n_jobs: 2}\n",
            "launcher_options mixes launchers (joblib) with options (n_jobs)",
        ),
        (
            "name: x\ngrid: {method: [emim]}\nlauncher_options: {joblib: 2}\n",
            "launcher_options.joblib must be a mapping of options",
        ),
        ("name: ../x\ngrid: {method: [emim]}\n", "name must be a plain folder name"),
        ("name: x\ngrid: {seed: [0, 1, 0]}\n", "grid.seed lists a value twice"),
        ("name: x\nselection: yes please\ngrid: {seed: [100]}\n", "selection must be true"),
        # Settings are chosen on validation images with seeds no report shows.
        ("name: x\nselection: true\ngrid: {seed: [100]}\n", "add data.val_size=N"),
        (
            "name: x\nselection: true\noverrides: [data.val_size=500]\ngrid: {seed: [99, 100]}\n",
            "seed 99 is a reported seed",
        ),
        ("name: x\noverrides: [data.val_size=500]\ngrid: {seed: [0]}\n", "mark the sweep"),
        ("name: x\ngrid: {seed: [0, 100]}\n", "seed 100 is kept for selection sweeps"),
    ],
)
def test_bad_sweep_files_exit_2_naming_the_problem(content, message, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err


def test_sweep_notes_are_read_as_markdown_text(tmp_path):
    path = tmp_path / "noted.yaml"
    path.write_text(
        "name: x\ngrid: {method: [emim]}\nnotes: |\n  First line\n  goes on.\n\n  Second.\n"
    )
    assert sweep_file.load_sweep(path).notes == "First line\ngoes on.\n\nSecond."
    path.write_text("name: x\ngrid: {method: [emim]}\n")
    assert sweep_file.load_sweep(path).notes == ""


def test_missing_sweep_file_exits_2(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "sweep file not found" in capsys.readouterr().err


def test_shipped_sweeps_compose(tmp_path):
    names = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
    assert names == [
        "cifar100_paper",
        "cifar10_cpu_budget",
        "cifar10_paper",
        "cpu_demo",
        "emim_ablation_cpu",
        "imagenet100_paper",
        "logdet_cpu",
        "select_cpu_budget",
        "smoke",
        "zoo_cpu",
    ]
    for name in names:
        spec = sweep_file.load_sweep(REPO / "sweeps" / f"{name}.yaml")
        assert spec.name == name
        runs = sweep_plan.plan(spec, [f"runs_root={tmp_path}"])
        assert len({r.run_id for r in runs}) == len(runs)
        relatives = {"corinfomax", "mec"}
        if name == "zoo_cpu":  # EMIM, every method of solo-learn's zoo and the floor
            assert set(spec.grids[0]["method"]) == set(config.choices("method")) - relatives
        elif name == "logdet_cpu":
            assert relatives | {"emim", "wmse", "random"} <= set(spec.grids[0]["method"])
        elif name not in ("smoke", "emim_ablation_cpu", "select_cpu_budget"):
            assert set(spec.grids[0]["method"]) == {
                "emim",
                "simclr",
                "byol",
                "barlow_twins",
                "vicreg",
                "random",
            }


def test_a_selection_sweep_scoring_validation_images_with_its_own_seeds_loads(tmp_path):
    path = tmp_path / "select.yaml"
    path.write_text(
        "name: select\nselection: true\noverrides: [data.val_size=500]\n"
        "grid: {method.kwargs.eps: [0.001, 0.01], seed: [100, 101]}\n"
    )
    sweep = sweep_file.load_sweep(path)
    assert sweep.selection and len(sweep_file.grid_points(sweep)) == 4
    assert sweep_file.SELECTION_SEEDS_FROM == 100


def test_several_grids_pool_their_runs_once_each(tmp_path):
    """A one-factor ablation: D around 128 and eps around 1e-2 share the centre run."""
    path = tmp_path / "ablation.yaml"
    path.write_text(
        "name: ablation\n"
        "grid:\n"
        "  - {method: [emim], method.kwargs.proj_output_dim: [64, 128], seed: [0]}\n"
        "  - {method: [emim], method.kwargs.eps: [0.001, 0.01], seed: [0]}\n"
    )
    spec = sweep_file.load_sweep(path)
    runs = sweep_plan.plan(spec, [f"runs_root={tmp_path}"])
    assert len(runs) == 3  # D=64, D=128 (= eps 1e-2, the default), eps=1e-3
    assert sweep_file.grid_keys(spec) == [
        "method",
        "method.kwargs.proj_output_dim",
        "seed",
        "method.kwargs.eps",
    ]
    assert "ablation: 3 runs" in sweep_plan.format_plan(spec, runs)
