"""``emim-bench gpu-check``: its CPU rehearsal end to end, its refusal without a GPU, its parts.

There is no GPU here: the GPU mode is checked through its plan (the configs it composes);
``--cpu`` runs the same code path at toy sizes on real CIFAR-10.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from emim_bench import config, data
from emim_bench.cli import main
from emim_bench.gpu_check import ddp as gpu_ddp
from emim_bench.gpu_check import plan as gpu_plan
from emim_bench.gpu_check.step_timer import StepTime, StepTimer, summarise


def test_cpu_rehearsal_trains_times_benchmarks_and_checks_ddp_end_to_end(
    tmp_path, capsys, cifar10_npz_path
):
    methods = ["emim", "byol"]  # the other three take the same path (test_plan_... below)
    code = main(["gpu-check", "--cpu", "--out", str(tmp_path), "--methods", *methods])
    out = capsys.readouterr().out
    assert code == 0, out

    result = json.loads((tmp_path / "gpu_check" / "gpu_check-cpu.json").read_text())
    assert result["status"] == "passed" and result["mode"] == "cpu"
    assert [r["method"] for r in result["training"]] == methods
    for row in result["training"]:
        assert row["status"] == "done"
        # 64 images in batches of 16: 4 steps an epoch; the last epoch's 3 after its first.
        assert (row["epoch_timed"], row["steps_timed"]) == (2, 3)
        assert math.isfinite(row["images_per_s"]) and row["images_per_s"] > 0
        assert 0.0 <= row["loader_share"] <= 1.0
        total = row["wait_s"] + row["step_s"]
        assert row["images_per_s"] == pytest.approx(3 * 16 / total)
        assert row["loader_share"] == pytest.approx(row["wait_s"] / total)
        assert row["peak_gpu_memory_bytes"] is None and row["peak_rss_bytes"] > 0
        assert row["precision"] == "32" and row["settings"]["persistent_workers"] is True
        assert f"{row['method']}: {row['images_per_s']:.1f} images/s" in out

    ddp = result["ddp"]
    assert (ddp["status"], ddp["backend"], ddp["batch_per_process"]) == ("passed", "gloo", 16)
    assert len(ddp["loss_per_process"]) == 2 and math.isfinite(ddp["loss_one_process"])
    assert ddp["loss_difference"] <= 1e-4 * max(1.0, abs(ddp["loss_one_process"]))

    bench = result["bench"]
    assert bench["status"] == "done" and bench["step_device"]["precision"] == "32"
    assert set(bench["step_images_per_s"]) == {"emim", "barlow_twins", "vicreg", "simclr", "byol"}
    bench_json = json.loads((tmp_path / "benchmarks" / "cpu-quick.json").read_text())
    assert bench_json["settings"]["step_device"]["channels_last"] is False
    assert (tmp_path / "benchmarks" / "cpu-quick.md").is_file()

    markdown = (tmp_path / "gpu_check" / "gpu_check-cpu.md").read_text()
    assert "# GPU check: CPU rehearsal (--cpu)" in markdown
    assert "| EMIM | " in markdown and "| BYOL | " in markdown
    assert "[../benchmarks/cpu-quick.md](../benchmarks/cpu-quick.md)" in markdown
    assert "**passed**" in markdown
    assert not (tmp_path / "gpu_check" / "runs-cpu").exists()  # scratch runs removed


def test_without_cuda_and_without_cpu_it_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu-check", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "emim-bench gpu-check: error: gpu-check needs a CUDA GPU (torch.cuda.is_available() is "
        "False); run it on a GPU machine, or --cpu for the tiny CPU rehearsal\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_the_gpu_plan_is_two_epochs_of_the_paper_recipe_on_10000_images(tmp_path):
    for method in gpu_plan.METHODS:
        cfg = config.load(gpu_plan.CUDA_PLAN.training_overrides(method, str(tmp_path)))
        assert (cfg.method.name, cfg.budget_name, cfg.epochs) == (method, "cifar_paper", 2)
        assert (cfg.data.train_size, cfg.batch_size, cfg.backbone.cifar) == (10000, 256, True)
        assert cfg.optim.lars and cfg.trainer.accelerator == "gpu"
        assert (cfg.trainer.precision, cfg.trainer.channels_last) == ("auto", True)
        assert cfg.force and cfg.runs_root == str(tmp_path)
        tiny = config.load(gpu_plan.CPU_PLAN.training_overrides(method, str(tmp_path)))
        assert (tiny.method.name, tiny.budget_name, tiny.trainer.accelerator) == (
            method,
            "cifar_paper",
            "cpu",
        )
    ddp = config.load(list(gpu_plan.CUDA_PLAN.ddp))
    assert (ddp.trainer.strategy, ddp.trainer.devices, ddp.batch_size) == ("ddp", 2, 256)
    assert gpu_plan.BUDGET_S == 480


def test_step_timer_syncs_only_at_the_step_hooks_and_leaves_out_time_between_epochs():
    syncs = []
    timer = StepTimer(sync=lambda: syncs.append(1))

    class Trainer:
        current_epoch = 0

    trainer = Trainer()
    for epoch in range(2):
        trainer.current_epoch = epoch
        timer.on_train_epoch_start(trainer, None)
        for batch_idx in range(3):
            timer.on_train_batch_start(trainer, None, None, batch_idx)
            timer.on_train_batch_end(trainer, None, None, None, batch_idx)
    assert len(syncs) == 12  # two per step
    assert [s.epoch for s in timer.steps] == [0, 0, 0, 1, 1, 1]
    assert [s.wait_s is None for s in timer.steps] == [True, False, False] * 2
    assert all(s.step_s >= 0 and (s.wait_s is None or s.wait_s >= 0) for s in timer.steps)


def test_summary_is_over_the_last_epochs_steps_that_follow_another():
    steps = [
        StepTime(0, None, 9.0),
        StepTime(0, 5.0, 9.0),  # an earlier epoch: left out
        StepTime(1, None, 2.0),  # the last epoch's first step: no wait before it, left out
        StepTime(1, 0.25, 1.0),
        StepTime(1, 0.75, 1.0),
    ]
    summary = summarise(steps, images_per_step=10)
    assert summary == {
        "epoch": 2,
        "steps": 2,
        "wait_s": 1.0,
        "step_s": 2.0,
        "images_per_s": 20 / 3,
        "loader_share": 1 / 3,
    }
    with pytest.raises(ValueError, match="epoch 1 has a single step"):
        summarise([StepTime(0, None, 1.0)], images_per_step=10)


def test_ddp_check_fails_when_each_process_sees_only_its_own_half(monkeypatch, cifar10_npz_path):
    """With BatchNorm in training mode, each process normalises over its own half: the
    check must then see the difference (a check that cannot fail would pass here)."""
    prepared = gpu_ddp._prepared

    def batchnorm_in_training_mode(kwargs, state, device):
        method, logged = prepared(kwargs, state, device)
        return method.train(), logged

    monkeypatch.setattr(gpu_ddp, "_prepared", batchnorm_in_training_mode)  # forked workers too
    result = gpu_ddp.ddp_loss_check(gpu_plan.CPU_PLAN, data.data_root(config.load().data_root))
    assert result["status"] == "failed"
    assert result["loss_difference"] > result["loss_tolerance"]
