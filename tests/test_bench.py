"""The speed benchmark's logic: timing, ratio tables, targets, report files, the CLI.

No assertion here is about speed: the numbers belong in the benchmark's output.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from emim_bench import config
from emim_bench.bench import cli as bench_cli
from emim_bench.bench import logs as bench_logs
from emim_bench.bench import loss as bench_loss
from emim_bench.bench import options as bench_options
from emim_bench.bench import render as bench_render
from emim_bench.bench import run as bench_run
from emim_bench.bench import step as bench_step
from emim_bench.bench import timing as bench_timing
from emim_bench.cli import build_parser, main
from emim_bench.run import device as run_device

TINY = bench_timing.TimingPolicy(warmup=1, warmup_max=1, min_repeats=3, max_repeats=3, budget_s=0.0)


def _loss_rows(n: int, d: int, seconds: dict[str, float]) -> list[dict]:
    return [
        {"method": m, "n": n, "d": d, "median_s": s, "min_s": s, "repeats": 3}
        for m, s in seconds.items()
    ]


def _step_rows(images_per_s: dict[str, float], batch_size: int = 64) -> list[dict]:
    return [
        {
            "method": m,
            "median_s": batch_size / v,
            "min_s": batch_size / v,
            "images_per_s": v,
            "views_per_s": 2 * v,
            "steps": 10,
            "final_loss": 1.0,
        }
        for m, v in images_per_s.items()
    ]


HAND_LOSS = _loss_rows(
    256,
    2048,
    {
        "emim_primal": 10.0,
        "emim_dual": 0.05,
        "barlow_twins": 0.25,
        "vicreg": 0.2,
        "simclr": 0.025,
        "byol": 0.001,
    },
) + _loss_rows(512, 128, {"emim_primal": 0.01, "emim_dual": 0.04, "barlow_twins": 0.02})
HAND_STEP = _step_rows(
    {"emim": 90.0, "barlow_twins": 100.0, "vicreg": 95.0, "simclr": 120.0, "byol": 60.0}
)


def test_time_call_warms_up_then_returns_at_least_min_repeats_positive_durations():
    calls = []
    policy = bench_timing.TimingPolicy(
        warmup=2, warmup_max=2, min_repeats=3, max_repeats=3, budget_s=10.0
    )
    times = bench_timing.time_call(lambda: calls.append(sum(range(1000))), policy)
    assert len(calls) == 5 and len(times) == 3
    assert all(t > 0 for t in times)


def test_time_call_repeats_more_while_under_its_time_budget():
    policy = bench_timing.TimingPolicy(
        warmup=1, warmup_max=1, min_repeats=3, max_repeats=50, budget_s=0.05
    )
    times = bench_timing.time_call(lambda: torch.randn(64, 64) @ torch.randn(64, 64), policy)
    assert 3 <= len(times) <= 50
    assert len(times) == 50 or sum(times) >= 0.05


@pytest.mark.parametrize("method", bench_loss.LOSS_METHODS)
def test_bench_loss_times_forward_backward_with_positive_median(method):
    row = bench_loss.bench_loss(method, n=16, d=8, device="cpu", policy=TINY)
    assert row["method"] == method and (row["n"], row["d"]) == (16, 8)
    assert row["repeats"] == 3
    assert 0 < row["min_s"] <= row["median_s"]


def test_loss_function_backpropagates_to_both_views_and_rejects_unknown_names():
    z1, z2 = (torch.randn(16, 8, requires_grad=True) for _ in range(2))
    for method in bench_loss.LOSS_METHODS:
        z1.grad = z2.grad = None
        bench_loss.loss_function(method, z1, z2)().backward()
        assert z1.grad is not None and z2.grad is not None, method
    with pytest.raises(ValueError, match="unknown loss 'barlow'.*'barlow_twins'"):
        bench_loss.loss_function("barlow", z1, z2)


def test_ratio_tables_from_hand_made_timings():
    ratios = bench_render.ratio_tables(HAND_LOSS, HAND_STEP)

    fastest = {(e["n"], e["d"]): e for e in ratios["loss_vs_fastest"]}
    cell = fastest[(256, 2048)]
    assert cell["byol"] == pytest.approx(1.0)
    assert cell["simclr"] == pytest.approx(25.0)
    assert cell["emim_dual"] == pytest.approx(50.0)
    assert cell["emim_primal"] == pytest.approx(10_000.0)
    assert fastest[(512, 128)]["emim_primal"] == pytest.approx(1.0)
    assert fastest[(512, 128)]["barlow_twins"] == pytest.approx(2.0)

    vs_barlow = {(e["n"], e["d"]): e for e in ratios["loss_emim_vs_barlow"]}
    assert vs_barlow[(256, 2048)]["dual"] == pytest.approx(5.0)
    assert vs_barlow[(256, 2048)]["primal"] == pytest.approx(0.025)
    assert vs_barlow[(256, 2048)]["auto_form"] == "dual"
    assert vs_barlow[(256, 2048)]["auto"] == pytest.approx(5.0)
    assert vs_barlow[(512, 128)]["auto_form"] == "primal"  # N = 512 >= 2D = 256
    assert vs_barlow[(512, 128)]["auto"] == pytest.approx(2.0)

    assert ratios["step_vs_fastest"]["simclr"] == pytest.approx(1.0)
    assert ratios["step_vs_fastest"]["emim"] == pytest.approx(0.75)
    assert ratios["step_emim_vs_barlow"] == pytest.approx(0.9)


def test_targets_pass_or_say_by_how_much_they_miss():
    narrow, wide, step_target = bench_render.ratio_tables(HAND_LOSS, HAND_STEP)["targets"]
    assert wide["status"] == "PASS" and wide["ratio"] == pytest.approx(5.0)  # N=256, D=2048
    assert narrow["status"] == "PASS" and narrow["ratio"] == pytest.approx(2.0)  # N=512, D=128
    assert step_target["ratio"] == pytest.approx(0.9)
    assert step_target["status"] == "MISS by 5.3%"  # 1 - 0.9 / 0.95

    passing = bench_render.ratio_tables([], _step_rows({"emim": 95.0, "barlow_twins": 100.0}))[
        "targets"
    ]
    assert passing[0]["status"] == "NOT MEASURED" and passing[0]["ratio"] is None
    assert passing[2]["status"] == "PASS"  # exactly at the 0.95 threshold


def test_loss_targets_judge_the_slowest_cell_of_each_width():
    slow = _loss_rows(256, 128, {"emim_primal": 0.004, "emim_dual": 0.009, "barlow_twins": 0.001})
    slow += _loss_rows(512, 128, {"emim_primal": 0.002, "barlow_twins": 0.002})
    slow += _loss_rows(256, 1024, {"emim_dual": 0.02, "barlow_twins": 0.019})
    slow += _loss_rows(256, 2048, {"emim_dual": 0.01, "barlow_twins": 0.05})
    narrow, wide, _ = bench_render.ratio_tables(slow, HAND_STEP)["targets"]
    # N=256, D=128: auto picks primal (N = 2D), 4x slower than Barlow Twins: ratio 0.25
    assert narrow["ratio"] == pytest.approx(0.25) and narrow["status"] == "MISS by 50.0%"
    assert "N=256, D=128 (primal)" in narrow["detail"]
    assert wide["ratio"] == pytest.approx(0.95) and wide["status"] == "MISS by 5.0%"
    assert "N=256, D=1024 (dual)" in wide["detail"]


def test_emim_auto_form_matches_the_loss_rule():
    assert bench_loss.emim_auto_form(256, 2048) == "dual"
    assert (
        bench_loss.emim_auto_form(256, 128) == "primal"
    )  # N = 2D: the joint covariance is full rank
    assert bench_loss.emim_auto_form(512, 128) == "primal"


def test_report_files_parse_and_contain_every_method_device_and_versions(tmp_path):
    options = bench_options.BenchOptions(command="emim-bench bench --out x")
    result = bench_run.make_result(options, HAND_LOSS, HAND_STEP, duration_s=12.0)
    json_path, md_path = bench_render.write_report(result, tmp_path / "reports", "cpu")

    assert json_path.name == "cpu.json" and md_path.name == "cpu.md"
    data = json.loads(json_path.read_text())
    assert {r["method"] for r in data["loss"]} == set(bench_loss.LOSS_METHODS)
    assert {r["method"] for r in data["step"]} == set(bench_step.STEP_METHODS)
    env = data["environment"]
    assert env["device"]["kind"] == "cpu" and env["device"]["cpu"]
    assert env["device"]["torch_threads"] >= 1
    assert set(env["versions"]) >= {"python", "torch", "solo-learn", "emim-bench"}
    assert "commit" in env["git"]
    assert data["command"] == "emim-bench bench --out x"

    md = md_path.read_text()
    assert "Command: `emim-bench bench --out x`" in md
    for label in bench_render.LABELS.values():
        assert label in md
    assert env["device"]["cpu"] in md and torch.__version__ in md
    assert "MISS by 5.3%" in md and "PASS" in md


def test_other_cpu_load_is_a_non_negative_average_number_of_cpus():
    with bench_timing.OtherCpuLoad() as other:
        torch.randn(256, 256) @ torch.randn(256, 256)
    if other.cpus is not None:  # None only where there is no /proc/stat
        assert 0 <= other.cpus <= 2 * (os.cpu_count() or 1)


def test_report_flags_timings_taken_while_other_processes_used_the_cpus(tmp_path):
    loss = [dict(r, other_cpus=0.9 if r["method"] == "vicreg" else 0.0) for r in HAND_LOSS]
    result = bench_run.make_result(
        bench_options.BenchOptions(), loss, HAND_STEP, 1.0, other_cpus=0.5
    )
    md = bench_render.render_markdown(result)
    assert "**Warning:** timings marked * (1) ran while other processes used more" in md
    assert md.count("(3)*") == 1  # the VICReg cell, nothing else

    quiet = bench_run.make_result(
        bench_options.BenchOptions(), HAND_LOSS, HAND_STEP, 1.0, other_cpus=0.0
    )
    assert "Warning" not in bench_render.render_markdown(quiet)


def test_patience_retries_only_disturbed_work_and_only_while_it_lasts(monkeypatch):
    monkeypatch.setattr(bench_timing.Patience, "wait_for_quiet", lambda self, max_wait_s=20.0: None)
    patience = bench_timing.Patience(10.0)
    assert not patience.retry(0.0, spent_s=3.0) and patience.left_s == 10.0  # quiet: keep it
    assert not patience.retry(None, spent_s=3.0)  # unknown load: keep it
    assert patience.retry(0.9, spent_s=6.0) and patience.left_s == 4.0
    assert patience.retry(0.9, spent_s=6.0) and patience.left_s == -2.0
    assert not patience.retry(0.9, spent_s=1.0)  # out of patience: keep it, flagged


def test_loss_cells_timed_while_cpus_were_busy_are_timed_again(monkeypatch):
    monkeypatch.setattr(bench_timing.Patience, "wait_for_quiet", lambda self, max_wait_s=20.0: None)
    calls = []

    def fake_bench_loss(method, n, d, device, policy):
        calls.append(method)
        busy = method == "vicreg" and calls.count("vicreg") == 1  # disturbed the first time only
        return {"method": method, "n": n, "d": d, "median_s": 1.0, "other_cpus": 0.9 * busy}

    monkeypatch.setattr(bench_loss, "bench_loss", fake_bench_loss)
    rows = bench_loss.run_loss_grid(
        "cpu", {"n": (8,), "d": (4,)}, TINY, bench_timing.Patience(60.0)
    )
    attempts = {r["method"]: r["attempts"] for r in rows}
    assert attempts == {m: 2 if m == "vicreg" else 1 for m in bench_loss.LOSS_METHODS}
    assert all(r["other_cpus"] == 0.0 for r in rows)


def test_step_rounds_timed_while_cpus_were_busy_are_discarded(monkeypatch):
    monkeypatch.setattr(bench_timing.Patience, "wait_for_quiet", lambda self, max_wait_s=20.0: None)
    monkeypatch.setattr(
        bench_step, "_step_closure", lambda name, options, device, settings: lambda: torch.ones(())
    )
    real_round, rounds = bench_step._step_round, []

    def round_busy_the_second_time(*args):
        rounds.append(real_round(*args))
        return rounds[-1] | {"other_cpus": 0.9 if len(rounds) == 2 else 0.0}

    monkeypatch.setattr(bench_step, "_step_round", round_busy_the_second_time)
    options = bench_options.BenchOptions(batch_size=4, steps=3, warmup_steps=1)
    rows = bench_step.bench_steps(options, torch.device("cpu"), bench_timing.Patience(60.0))
    assert len(rounds) == 1 + 3 + 1  # warm-up, three kept, one discarded
    assert [r["method"] for r in rows] == list(bench_step.STEP_METHODS)
    for row in rows:
        assert row["steps"] == 3 and row["discarded_rounds"] == 1 and row["other_cpus"] == 0.0
        assert row["images_per_s"] == pytest.approx(4 / row["median_s"])
        assert row["views_per_s"] == pytest.approx(2 * row["images_per_s"])


def test_report_stem_keeps_partial_runs_off_the_full_report():
    assert bench_render.report_stem("cpu", quick=False, only=None) == "cpu"
    assert bench_render.report_stem("cuda", quick=False, only=None) == "cuda"
    assert bench_render.report_stem("cpu", quick=True, only=None) == "cpu-quick"
    assert bench_render.report_stem("cpu", quick=False, only="loss") == "cpu-loss"


def test_cli_bench_quick_runs_end_to_end_and_writes_json_and_markdown(tmp_path, capsys):
    # One thread: on a shared 2-core machine, two OpenMP threads competing with
    # another process make this run ten times slower (oversubscription).
    argv = ["bench", "--quick", "--out", str(tmp_path), "--threads", "1"]
    threads = torch.get_num_threads()
    assert main(argv) == 0
    assert torch.get_num_threads() == threads  # restored after the run

    kind = "cuda" if torch.cuda.is_available() else "cpu"
    data = json.loads((tmp_path / f"{kind}-quick.json").read_text())
    md = (tmp_path / f"{kind}-quick.md").read_text()
    assert data["command"] == "emim-bench " + " ".join(argv)
    assert data["environment"]["device"]["torch_threads"] == 1
    assert {r["method"] for r in data["loss"]} == set(bench_loss.LOSS_METHODS)
    assert {r["method"] for r in data["step"]} == set(bench_step.STEP_METHODS)
    assert all(r["median_s"] > 0 for r in data["loss"] + data["step"])
    assert data["settings"]["batch_size"] == 8
    assert f"Command: `emim-bench {' '.join(argv)}`" in md
    assert "EMIM / Barlow Twins" in capsys.readouterr().out


def test_cli_bench_defaults_depend_on_device_and_quick():
    parser = build_parser()
    cpu = bench_cli.options_from_args(parser.parse_args(["bench", "--device", "cpu"]))
    assert (cpu.batch_size, cpu.steps, cpu.only, cpu.cifar_stem) == (64, 20, None, False)
    quick = bench_cli.options_from_args(parser.parse_args(["bench", "--device", "cpu", "--quick"]))
    assert (quick.batch_size, quick.steps) == (8, 2)
    custom = bench_cli.options_from_args(
        parser.parse_args(
            ["bench", "--device", "cpu", "--batch-size", "32", "--only", "step", "--cifar-stem"]
        )
    )
    assert (custom.batch_size, custom.only, custom.cifar_stem) == (32, "step", True)
    assert (
        cpu.threads,
        bench_cli.options_from_args(parser.parse_args(["bench", "--threads", "1"])).threads,
    ) == (None, 1)


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--only", "losses"],
        ["bench", "--batch-size", "0"],
        ["bench", "--device", "tpu"],
        ["bench", "--patience", "-1"],
    ],
)
def test_cli_bench_rejects_bad_input_with_exit_code_2_and_one_error_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1


def test_step_comparison_gives_emim_and_barlow_twins_the_recipe_projector():
    emim, barlow = (
        bench_step.step_method_kwargs(m, batch_size=64) for m in ("emim", "barlow_twins")
    )
    for kwargs in (emim, barlow):
        assert (kwargs["proj_hidden_dim"], kwargs["proj_output_dim"]) == (2048, 2048)
    assert emim["optimizer"] == barlow["optimizer"] and emim["lr"] == barlow["lr"]


def test_the_benchmark_step_uses_the_trainers_settings_for_the_device():
    assert bench_step.step_device_settings("cpu") == run_device.device_settings(
        config.load(["trainer=cpu"]).trainer
    )


@pytest.mark.parametrize(("device", "trainer"), [("cpu", "cpu"), ("cuda", "gpu")])
def test_the_benchmark_step_checks_emim_as_often_as_the_trainer_on_the_device(device, trainer):
    assert bench_step.trainer_config(device) == trainer
    kwargs = bench_step.step_method_kwargs("emim", 64, trainer=bench_step.trainer_config(device))
    every = config.load([f"trainer={trainer}"]).trainer.finite_check_every
    assert kwargs["check_every_n_steps"] == every
    assert every == (1 if trainer == "cpu" else 50)


def test_the_benchmark_steps_check_emim_every_n_steps_as_a_trainer_does(monkeypatch):
    from emim_bench import methods

    checks, real_loss = [], methods.emim.emim_loss_func

    def recording_loss(*args, **kwargs):
        checks.append(kwargs["check"])
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(methods.emim, "emim_loss_func", recording_loss)
    real_kwargs = bench_step.step_method_kwargs
    monkeypatch.setattr(
        bench_step,
        "step_method_kwargs",
        lambda *a, **k: real_kwargs(*a, **k) | {"check_every_n_steps": 2},
    )
    options = bench_options.BenchOptions(batch_size=4)
    step = bench_step._step_closure(
        "emim", options, torch.device("cpu"), bench_step.step_device_settings("cpu")
    )
    for _ in range(4):
        step()
    assert checks == [True, False, True, False]


def test_the_benchmark_step_runs_in_the_settings_precision_and_memory_format(monkeypatch):
    seen = {}
    build = bench_step.build_method

    def spying_build(name, **kwargs):
        method = build(name, **kwargs)
        step = method.training_step

        def training_step(batch, batch_idx):
            seen["autocast"] = torch.is_autocast_enabled("cpu")
            seen["dtype"] = torch.get_autocast_dtype("cpu") if seen["autocast"] else None
            seen["views"] = all(
                v.is_contiguous(memory_format=torch.channels_last) for v in batch[1]
            )
            conv = next(m for m in method.modules() if isinstance(m, torch.nn.Conv2d))
            seen["weights"] = conv.weight.is_contiguous(memory_format=torch.channels_last)
            return step(batch, batch_idx)

        method.training_step = training_step
        return method

    monkeypatch.setattr(bench_step, "build_method", spying_build)
    settings = run_device.DeviceSettings(
        accelerator="cpu",
        precision="bf16",
        channels_last=True,
        cudnn_benchmark=False,
        num_workers=0,
        pin_memory=False,
        persistent_workers=False,
    )
    options = bench_options.BenchOptions(batch_size=4, steps=1, warmup_steps=0)
    loss = bench_step._step_closure("simclr", options, torch.device("cpu"), settings)()
    assert math.isfinite(float(loss))
    assert seen == {"autocast": True, "dtype": torch.bfloat16, "views": True, "weights": True}
    plain = run_device.device_settings(config.load(["trainer=cpu"]).trainer)
    bench_step._step_closure("simclr", options, torch.device("cpu"), plain)()
    assert seen == {"autocast": False, "dtype": None, "views": False, "weights": False}


def test_csv_log_simulation_matches_the_bytes_lightnings_logger_writes(tmp_path, monkeypatch):
    import lightning_fabric.loggers.csv_logs as fabric_csv
    from pytorch_lightning.loggers import CSVLogger

    written = []
    save = fabric_csv._ExperimentWriter.save

    def counting_save(self):
        save(self)
        written.append(os.path.getsize(self.metrics_file_path))

    monkeypatch.setattr(fabric_csv._ExperimentWriter, "save", counting_save)
    logger = CSVLogger(str(tmp_path), name="log")
    for metrics, step in bench_logs.logged_rows(epochs=3, steps_per_epoch=70, log_every_n_steps=1):
        logger.log_metrics(metrics, step)
    logger.save()

    simulated = bench_logs.csv_log_bytes(epochs=3, steps_per_epoch=70, log_every_n_steps=1)
    assert simulated["flushes"] == len(written) == 3  # steps 99, 199 and the end
    assert simulated["bytes_written"] == sum(written)
    assert simulated["final_file_bytes"] == written[-1]
    assert simulated["rows"] == 3 * 70 + 3


def test_logging_every_50_steps_writes_a_fraction_of_logging_every_step():
    every_step, every_50 = (
        bench_logs.csv_log_bytes(epochs=20, steps_per_epoch=195, log_every_n_steps=n)
        for n in (1, 50)
    )
    assert every_step["rows"] == 20 * 195 + 20 and every_50["rows"] == 20 * 195 // 50 + 20
    # every 100th step (39), the last epoch's row at step 3899 (once more), the end of training
    assert every_step["flushes"] == every_50["flushes"] == 39 + 1 + 1
    assert 20 < every_step["bytes_written"] / every_50["bytes_written"] < 50
