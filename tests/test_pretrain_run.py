"""One benchmark run end to end: config -> training -> offline evaluation -> results.json."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import SMALL, tiny_run

from emim_bench import config, data, methods
from emim_bench.cli import main
from emim_bench.run import directory as run_directory
from emim_bench.run import pretrain
from emim_bench.run import results as run_results
from emim_bench.run import trainer as run_trainer


def checkpoint_step(path: Path) -> int:
    """The optimizer step a Lightning checkpoint was written at."""
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def only_run_dir(runs_root: Path) -> Path:
    (run,) = (runs_root / "default").iterdir()
    return run


@pytest.mark.parametrize("method", sorted(SMALL))
def test_each_method_produces_a_complete_results_json(method, tmp_path, cifar10_npz_path):
    assert main(["pretrain", *tiny_run(method, tmp_path)]) == 0

    run = only_run_dir(tmp_path)
    results = json.loads((run / run_directory.RESULTS_FILE).read_text())
    assert run.name == results["run_id"] and run.name.startswith(f"{method}-cifar10-resnet18-s0-")
    assert results["status"] == "done" and results["method"] == method
    assert results["eval_split"] == "test"
    accuracies = {k: v for k, v in results["metrics"].items() if v is not None}
    expected = {
        "knn_acc1_k20",
        "knn_acc5_k20",
        "knn_acc1_k200",
        "knn_acc5_k200",
        "linear_acc1",
        "linear_acc5",
    }
    if method != "random":
        expected |= {"online_acc1", "online_acc5"}
    assert set(accuracies) == expected
    assert all(0.0 <= v <= 100.0 for v in accuracies.values())
    assert set(results["versions"]) >= {
        "python",
        "torch",
        "pytorch_lightning",
        "solo_learn",
        "emim_bench",
        "git_commit",
    }
    assert results["train"]["peak_rss_bytes"] > 0
    assert (run / "config.yaml").is_file()
    if method == "random":
        assert results["metrics"]["knn_acc1_k20"] > 10.0  # above chance on 10 classes
        assert results["train"]["steps"] == 0
    else:
        assert results["train"]["steps"] == 4 and results["train"]["images_per_s"] > 0
        # DeepCluster V2 has no prototypes' assignments before its first epoch ends, so its
        # epoch 0 trains only the online classifier (compat.patch_deepcluster_first_epoch)
        assert _backbone_moved(run, method) == (method != "deepclusterv2"), (
            "pretraining left the backbone at its initialisation"
            if method != "deepclusterv2"
            else "DeepCluster V2 moved its backbone in epoch 0"
        )
        curve = run_directory.read_curve(run / run_directory.CURVE_FILE)
        assert curve["epoch"].tolist() == [1] and 0 <= curve["knn_acc1"].iloc[0] <= 100
        assert (run / run_directory.LAST_CHECKPOINT).is_file()


def _backbone_moved(run: Path, method: str) -> bool:
    """Compare the checkpoint's backbone with the initialisation the run started from."""
    import pytorch_lightning as pl

    cfg = config.load([f"method={method}", *tiny_run(method, run.parent.parent)[1:]])
    pl.seed_everything(cfg.seed)
    initial = methods.build_method(
        method, **run_trainer.method_kwargs(cfg, 10)
    ).encoder.state_dict()
    state = torch.load(run / run_directory.LAST_CHECKPOINT, map_location="cpu", weights_only=False)
    trained = {
        k.removeprefix("encoder."): v
        for k, v in state["state_dict"].items()
        if k.startswith("encoder.")
    }
    return not torch.equal(initial["conv1.weight"], trained["conv1.weight"])


def test_cpu_budget_narrows_only_barlow_twins_projector_and_overrides_still_win():
    def out_dim(*overrides):
        return config.load(list(overrides)).method.kwargs.proj_output_dim

    assert out_dim("method=barlow_twins") == 128  # budget_method/cpu_barlow_twins.yaml
    assert out_dim("method=barlow_twins", "budget=cifar_paper") == 2048  # the recipe
    assert out_dim("method=vicreg") == 2048
    assert out_dim("method=emim") == 128  # EMIM's own config: the same 2048-2048-128 head
    assert out_dim("method=barlow_twins", "method.kwargs.proj_output_dim=512") == 512


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_rss_restarts_with_each_run_of_a_process():
    """In a fresh interpreter: what earlier tests left in this process's allocator (freed
    memory kept resident by the compat layer) would hide a new allocation's pages."""
    probe = """
import numpy as np
from emim_bench.run import results
results.reset_peak_memory()
base = results.peak_rss_bytes()
block = np.ones(300 * 2**20 // 8)  # 300 MiB, every page touched
high = results.peak_rss_bytes()
del block
results.reset_peak_memory()  # the next run of a sweep starts here
print(base, high, results.peak_rss_bytes())
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    base, high, after = map(int, out.stdout.split())
    assert high - base >= 290 * 2**20
    assert after < high - 250 * 2**20


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_rss_of_a_run_excludes_what_an_earlier_run_left_in_a_reference_cycle():
    """A finished run's Trainer and LightningModule refer to each other, so only the cycle
    collector frees them; a new run's peak must not carry them (as it did over a sweep)."""
    probe = """
import gc
import numpy as np
from emim_bench.run import results
gc.disable()  # the collector runs by object count: here it would never run on its own
earlier_run = [np.ones(300 * 2**20 // 8)]  # 300 MiB, every page touched
earlier_run.append(earlier_run)
results.reset_peak_memory()
high = results.peak_rss_bytes()
del earlier_run
results.reset_peak_memory()  # the next run of a sweep starts here
print(high, results.peak_rss_bytes())
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    high, after = map(int, out.stdout.split())
    assert after < high - 250 * 2**20


def test_git_commit_is_read_once_per_process_not_per_result(monkeypatch):
    commits = iter(["a" * 40, "b" * 40])

    def fake_git(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout=next(commits) + "\n")

    run_results.versions.cache_clear()
    monkeypatch.setattr(run_results.subprocess, "run", fake_git)
    try:
        first = run_results.versions()["git_commit"]
        assert first == "a" * 40
        assert run_results.versions()["git_commit"] == first  # a later commit is not picked up
    finally:
        run_results.versions.cache_clear()


def test_finished_run_is_not_repeated_unless_forced(tmp_path, capsys, cifar10_npz_path):
    overrides = tiny_run("random", tmp_path)
    assert main(["pretrain", *overrides]) == 0
    results = only_run_dir(tmp_path) / run_directory.RESULTS_FILE
    before = results.stat().st_mtime_ns

    assert main(["pretrain", *overrides]) == 0
    assert "already done" in capsys.readouterr().out and results.stat().st_mtime_ns == before

    assert main(["pretrain", *overrides, "force=true"]) == 0
    assert results.stat().st_mtime_ns != before


def test_same_seed_same_config_gives_the_same_first_epoch_loss(tmp_path, cifar10_npz_path):
    losses = []
    for root in ("a", "b"):
        assert main(["pretrain", *tiny_run("simclr", tmp_path / root)]) == 0
        curve = run_directory.read_curve(only_run_dir(tmp_path / root) / run_directory.CURVE_FILE)
        losses.append(curve["train_nce_loss"].iloc[0])
    assert losses[0] == losses[1]


def test_imagenette_folder_runs_through_the_imagefolder_path(tmp_path, cifar10_npz_path):
    overrides = tiny_run(
        "simclr",
        tmp_path,
        "data=imagefolder",
        "data.path=imagenette-mini",
        "data.crop_size=32",
        "data.test_size=50",
    )
    assert main(["pretrain", *overrides]) == 0
    results = json.loads((only_run_dir(tmp_path) / run_directory.RESULTS_FILE).read_text())
    assert results["dataset"] == "imagefolder" and 0 <= results["metrics"]["linear_acc1"] <= 100


def test_a_run_leaves_no_loader_workers_behind(tmp_path, cifar10_npz_path):
    # A sweep's basic launcher and gpu-check run many runs in one process: each run's
    # persistent workers must end with it.
    # Children alive before the run (a joblib sweep test's idle loky workers) are not ours.
    overrides = [o for o in tiny_run("simclr", tmp_path) if not o.startswith("trainer.num_")]
    before = {child.pid for child in multiprocessing.active_children()}
    assert main(["pretrain", *overrides, "trainer.num_workers=1", "epochs=2"]) == 0
    assert [c for c in multiprocessing.active_children() if c.pid not in before] == []


def test_a_vit_backbone_trains_at_32_px(tmp_path, cifar10_npz_path):
    assert main(["pretrain", *tiny_run("simclr", tmp_path, "backbone=vit_tiny")]) == 0
    results = json.loads((only_run_dir(tmp_path) / run_directory.RESULTS_FILE).read_text())
    assert results["backbone"] == "vit_tiny" and 0 <= results["metrics"]["knn_acc1_k20"] <= 100


@pytest.mark.parametrize(
    ("method", "model"), [("simclr", "resnet10t"), ("byol", "vit_tiny_patch16_224")]
)
def test_a_timm_model_trains_as_the_backbone_of_any_method(
    method, model, tmp_path, cifar10_npz_path
):
    import timm

    overrides = tiny_run(method, tmp_path, "backbone=timm", f"backbone.name={model}")
    cfg = config.load(overrides)
    built = methods.build_method(method, **run_trainer.method_kwargs(cfg, num_classes=10))
    reference = timm.create_model(
        model, num_classes=0, **({"img_size": 32} if "vit" in model else {})
    )
    assert type(built.encoder) is type(reference)
    assert built.features_dim == reference.num_features == built.classifier.in_features
    if method == "byol":  # the momentum encoder is the same timm model, with the same weights
        for a, b in zip(built.encoder.parameters(), built.momentum_encoder.parameters()):
            assert torch.equal(a, b)
    assert main(["pretrain", *overrides]) == 0
    results = json.loads((only_run_dir(tmp_path) / run_directory.RESULTS_FILE).read_text())
    assert results["backbone"] == model and 0 <= results["metrics"]["knn_acc1_k20"] <= 100


def test_evaluating_a_checkpoint_alone_knows_timm_backbones():
    # `emim-bench evaluate` builds a backbone without importing the training modules
    code = (
        "import emim_bench.run.checkpoint; from solo.methods.base import BaseMethod; "
        "assert BaseMethod.__init__._takes_timm"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_an_unknown_timm_model_exits_2_naming_close_ones(capsys):
    assert main(["pretrain", "backbone=timm", "backbone.name=resnet1x"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert "unknown timm model 'resnet1x'" in line and "close names: resnet18" in line
    # solo-learn registers its own ViTs in timm, whose constructors do not fit timm's call
    assert main(["pretrain", "backbone=timm", "backbone.name=vit_tiny"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert "'vit_tiny' is solo-learn's own backbone" in line and "backbone=vit_tiny" in line


@pytest.mark.parametrize(
    ("backbone", "data_choice", "pixels"), [("vit_tiny", "cifar10", 32), ("vit_small", "stl10", 96)]
)
def test_vit_backbones_are_built_for_the_datasets_crop_size(backbone, data_choice, pixels):
    cfg = config.load([f"backbone={backbone}", f"data={data_choice}", "method=simclr"])
    kwargs = run_trainer.method_kwargs(cfg, num_classes=10)
    assert kwargs["backbone_args"]["img_size"] == pixels
    encoder = methods.build_method("simclr", **kwargs).encoder
    assert tuple(encoder.patch_embed.img_size) == (pixels, pixels)
    assert encoder(torch.zeros(1, 3, pixels, pixels)).shape == (1, encoder.num_features)


@pytest.mark.skipif(
    data._fashion_mnist_dir(Path("/nonexistent")) is None,
    reason="Fashion-MNIST idx files not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_runs_from_the_debian_idx_files(tmp_path):
    assert main(["pretrain", *tiny_run("random", tmp_path, "data=fashion_mnist")]) == 0
    results = json.loads((only_run_dir(tmp_path) / run_directory.RESULTS_FILE).read_text())
    assert results["dataset"] == "fashion_mnist" and results["metrics"]["knn_acc1_k20"] > 10.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("method=simclrr", "unknown method 'simclrr'; choose one of ['barlow_twins', 'byol'"),
        ("data=cifar11", "unknown data 'cifar11'; choose one of"),
        ("backbone=resnet19", "unknown backbone 'resnet19'; choose one of"),
        ("epochz=3", "unknown config key 'epochz'"),
        ("epochs=[1", "malformed override"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_choices(override, message, capsys):
    assert main(["pretrain", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=abc", "epochs must be an integer >= 1, got 'abc'"),
        ("batch_size=-3", "batch_size must be an integer >= 2, got -3"),
        ("data.train_size=0", "data.train_size must be an integer >= 1, got 0"),
        ("method.kwargs.eps=-1", "eps must be >= 0"),
    ],
)
def test_bad_values_exit_2_before_any_run_directory(override, message, tmp_path, capsys):
    assert main(["pretrain", f"runs_root={tmp_path}", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not tmp_path.joinpath("default").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_gpu_trainer_without_a_gpu_exits_2(tmp_path, capsys, cifar10_npz_path):
    assert main(["pretrain", f"runs_root={tmp_path}", "trainer=gpu"]) == 2
    assert "trainer uses a GPU but none is visible; use trainer=cpu" in capsys.readouterr().err
    assert not tmp_path.joinpath("default").exists()


def test_hydra_flags_work_before_and_after_overrides(capsys):
    assert main(["pretrain", "--cfg", "job"]) == 0
    assert "method:\n  name: emim" in capsys.readouterr().out
    assert main(["pretrain", "--cfg", "job", "method=byol"]) == 0
    assert "name: byol" in capsys.readouterr().out


def test_missing_dataset_fails_before_building_a_model(
    tmp_path, capsys, monkeypatch, cifar10_npz_path
):
    # The real data under $EMIM_BENCH_DATA must not be used: data_root= wins over it.
    monkeypatch.setenv("EMIM_BENCH_DATA", str(cifar10_npz_path.parents[1]))
    assert main(["pretrain", f"data_root={tmp_path}", f"runs_root={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert f"not found in {tmp_path / 'cifar10'}" in err and "data.download=true" in err
    assert not (tmp_path / "runs").exists()


def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path, monkeypatch, cifar10_npz_path):
    """Epoch 1 trains; the loss turns NaN at step 6: failed.json names it, the checkpoint stays."""
    import emim_bench.methods as methods

    calls = {"n": 0}
    real_loss = methods.emim.emim_loss_func

    def loss_turning_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] >= 6 else loss

    monkeypatch.setattr(methods.emim, "emim_loss_func", loss_turning_nan)
    cfg = config.load(tiny_run("emim", tmp_path, "epochs=2"))
    with pytest.raises(run_trainer.NonFiniteLossError, match="at step 6"):
        pretrain.run(cfg)
    run = only_run_dir(tmp_path)
    failed = json.loads((run / run_directory.FAILED_FILE).read_text())
    assert failed["status"] == "failed" and "step 6" in failed["error"]
    assert not (run / run_directory.RESULTS_FILE).exists()
    assert checkpoint_step(run / run_directory.LAST_CHECKPOINT) == 4


def test_the_data_root_defaults_to_emim_bench_data(tmp_path, monkeypatch):
    monkeypatch.setenv("EMIM_BENCH_DATA", str(tmp_path))
    assert config.load([]).data_root == str(tmp_path)
    monkeypatch.delenv("EMIM_BENCH_DATA")
    assert config.load([]).data_root == "../shared/data"


def test_a_run_with_a_validation_split_is_scored_on_it(tmp_path, cifar10_npz_path):
    assert main(["pretrain", *tiny_run("simclr", tmp_path, "data.val_size=40")]) == 0
    results = json.loads((only_run_dir(tmp_path) / run_directory.RESULTS_FILE).read_text())
    assert results["eval_split"] == "val" and results["config"]["data"]["val_size"] == 40
