"""A run's life: its curve, its claim, resumes from every point, a bad checkpoint, and DDP.

DDP runs here as two CPU processes with gloo, started by Lightning exactly as on GPUs
(the command line run again with LOCAL_RANK set), through `emim-bench pretrain` and through
`emim-bench sweep` with the basic launcher.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from emim_bench import config
from emim_bench.run import directory as run_directory
from emim_bench.run import identity as run_identity
from emim_bench.run import pretrain
from emim_bench.run import trainer as run_trainer

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "progress_bar=false",
    "trainer.num_workers=0",
    "data.train_size=64",
    "data.test_size=100",
    "batch_size=16",
    "eval.linear_epochs=5",
    "method.kwargs.proj_hidden_dim=64",
    "method.kwargs.proj_output_dim=32",
]
CPU_DDP = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32",
    "trainer.sync_batchnorm=false",
]


def _cfg(runs_root: Path, *extra: str):
    return config.load(["method=simclr", f"runs_root={runs_root}", *TINY, *extra])


def _results(run: Path) -> dict:
    return json.loads((run / run_directory.RESULTS_FILE).read_text())


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emim_bench.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )


# ---------------------------------------------------------------------------------------
# curve.csv
# ---------------------------------------------------------------------------------------


def test_curve_rows_share_one_header_and_a_repeated_epoch_replaces_its_row(tmp_path):
    path = tmp_path / "curve.csv"
    run_directory.append_curve_row(path, {"epoch": 1, "step": 4, "wall_s": 1.0, "loss": 3.0})
    run_directory.append_curve_row(path, {"epoch": 2, "step": 8, "wall_s": 2.0, "knn_acc1": 40.0})
    run_directory.append_curve_row(path, {"epoch": 2, "step": 8, "wall_s": 2.5, "knn_acc1": 41.0})
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,step,wall_s,knn_acc1,knn_acc5,loss"
    assert len({line.count(",") for line in lines}) == 1  # every row has every column
    curve = pd.read_csv(path)  # plain pandas reads it
    assert curve["epoch"].tolist() == [1, 2] and curve["wall_s"].tolist() == [1.0, 2.5]
    assert pd.isna(curve.loc[0, "knn_acc1"]) and curve.loc[1, "knn_acc1"] == 41.0


def test_knn_every_second_epoch_writes_a_readable_curve_and_the_run_finishes_again(tmp_path):
    cfg = _cfg(tmp_path, "epochs=3", "knn_every_n_epochs=2")
    first = pretrain.run(cfg)
    run = run_identity.run_dir(cfg)
    curve = pd.read_csv(run / run_directory.CURVE_FILE)
    assert list(curve.columns[:5]) == list(run_directory.CURVE_COLUMNS)
    assert curve["knn_acc1"].isna().tolist() == [True, False, False]  # epochs 2 and 3 (last)
    diagnostics = curve[["rankme_backbone", "rankme_projector", "alignment", "uniformity"]]
    assert diagnostics.notna().all().all()  # every epoch
    assert ((diagnostics["uniformity"] < 0) & (diagnostics["rankme_backbone"] > 1)).all()
    kept = np.load(run / run_directory.FEATURES_FILE)  # for the report's UMAP picture
    assert kept["features"].shape == (100, 512) and kept["features"].dtype == np.float16
    assert sorted(np.bincount(kept["labels"])) == [10] * 10  # the balanced test subset
    (run / run_directory.RESULTS_FILE).unlink()  # as a kill during the final evaluation leaves it

    again = pretrain.run(cfg)

    assert again["metrics"] == first["metrics"]
    assert again["train"]["steps"] == first["train"]["steps"] == 12
    assert again["train"]["wall_time_s"] == first["train"]["wall_time_s"]


# ---------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------


def test_run_killed_in_an_epoch_ends_as_the_uninterrupted_run(tmp_path):
    """kill -9 in epoch 2, run again: the weights, metrics and schedule of an uninterrupted run."""
    overrides = ["pretrain", "method=simclr", *TINY, "epochs=3"]
    reference = _cli(*overrides, f"runs_root={tmp_path / 'whole'}")
    assert reference.returncode == 0, reference.stderr[-2000:]

    command = [sys.executable, "-m", "emim_bench.cli", *overrides, f"runs_root={tmp_path / 'cut'}"]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline, checkpoint = time.monotonic() + 300, None
    while time.monotonic() < deadline and process.poll() is None:
        found = list((tmp_path / "cut").glob(f"*/*/{run_directory.LAST_CHECKPOINT}"))
        if found and _checkpoint_step(found[0]) >= 4:  # epoch 1 is saved: epoch 2 is running
            checkpoint = found[0]
            break
        time.sleep(0.1)
    assert checkpoint is not None and process.poll() is None, "run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    cut = checkpoint.parents[1]
    assert run_directory.run_state(cut) == "partial"  # the claim died with its holder
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    whole = next((tmp_path / "whole" / "default").iterdir())
    assert cut.name == whole.name
    a, b = _results(whole), _results(cut)
    for key, value in a["metrics"].items():
        assert b["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert a["train"]["steps"] == b["train"]["steps"] == 12
    assert run_directory.read_curve(cut / run_directory.CURVE_FILE)["epoch"].tolist() == [1, 2, 3]
    ckpt_a, ckpt_b = (
        torch.load(r / run_directory.LAST_CHECKPOINT, map_location="cpu", weights_only=False)
        for r in (whole, cut)
    )
    assert ckpt_a["lr_schedulers"] == ckpt_b["lr_schedulers"]  # no step skipped or repeated
    for name, tensor in ckpt_a["state_dict"].items():
        assert torch.allclose(tensor.float(), ckpt_b["state_dict"][name].float(), atol=1e-6), name


def _checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # being replaced at this moment
        return -1


def test_epoch_order_is_a_function_of_seed_and_epoch():
    sampler = run_trainer.EpochShuffleSampler(50, seed=3)
    first, second = list(sampler), (sampler.set_epoch(1), list(sampler))[1]
    assert sorted(first) == list(range(50)) and first != second
    fresh = run_trainer.EpochShuffleSampler(50, seed=3)
    fresh.set_epoch(1)
    assert list(fresh) == second  # a resumed run at epoch 2 shuffles as the uninterrupted one
    assert list(run_trainer.EpochShuffleSampler(50, seed=4)) != first


def test_truncated_checkpoint_is_one_line_naming_the_file_and_the_ways_out(tmp_path):
    cfg = _cfg(tmp_path, "epochs=1")
    pretrain.run(cfg)
    run = run_identity.run_dir(cfg)
    (run / run_directory.RESULTS_FILE).unlink()
    checkpoint = run / run_directory.LAST_CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # a copy cut short
    before = {p.name: p.stat().st_size for p in run.iterdir() if p.is_file()}

    result = _cli("pretrain", "method=simclr", f"runs_root={tmp_path}", *TINY, "epochs=1")

    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if "error" in line or "failed" in line]
    assert len(error) == 1 and "Traceback" not in result.stderr
    assert str(checkpoint) in error[0] and "force=true" in error[0] and "delete" in error[0]
    after = {p.name: p.stat().st_size for p in run.iterdir() if p.is_file()}
    assert after == {**before, run_directory.FAILED_FILE: after[run_directory.FAILED_FILE]}
    assert checkpoint.stat().st_size == 1000  # nothing was removed or rewritten
    assert run_directory.run_state(run) == "failed"


# ---------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------


def test_a_claimed_run_is_skipped_with_its_holder_named(tmp_path, capsys):
    cfg = _cfg(tmp_path, "epochs=1")
    run = run_identity.run_dir(cfg)
    with run_directory.Claim(run):
        assert run_directory.run_state(run) == "running"
        with pytest.raises(run_directory.RunClaimedError, match=f"pid {os.getpid()}, since"):
            pretrain.run(cfg)
        assert pretrain.run_or_report(cfg) == 1
        assert "running elsewhere (host " in capsys.readouterr().err
    assert run_directory.run_state(run) == "to do"  # released: nothing else was written
    assert not (run / run_directory.CONFIG_FILE).exists()


def test_a_claim_whose_holder_is_gone_is_taken_over_and_said(tmp_path, capsys):
    cfg = _cfg(tmp_path, "epochs=1")
    run = run_identity.run_dir(cfg)
    run.mkdir(parents=True)
    stale = {"host": "node17", "pid": 4242, "since": "2026-01-01T00:00:00+00:00"}
    (run / run_directory.CLAIM_FILE).write_text(json.dumps(stale))  # its holder was killed
    assert run_directory.run_state(run) == "to do"

    pretrain.run(cfg)

    out = capsys.readouterr().out
    assert "taking over the claim of host node17, pid 4242, since 2026-01-01" in out
    assert run_directory.run_state(run) == "done"


def test_two_processes_never_hold_one_claim(tmp_path):
    probe = (
        "import sys\nfrom pathlib import Path\nfrom emim_bench.run.directory import Claim\n"
        "try:\n    Claim(Path(sys.argv[1])).__enter__()\nexcept Exception as e:\n"
        "    print(type(e).__name__, e)\nelse:\n    print('claimed')"
    )
    with run_directory.Claim(tmp_path):
        held = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True
        )
    free = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True
    )
    assert held.stdout.startswith(f"RunClaimedError running elsewhere (host {os.uname()[1]}")
    assert free.stdout.strip() == "claimed"


def test_non_finite_loss_on_another_rank_stops_this_one():
    class OtherRankSawNaN:
        def reduce_boolean_decision(self, decision, all=True):
            return True  # as DDP's all-reduce returns when any rank's loss is NaN

    class Trainer:
        strategy, global_step, current_epoch = OtherRankSawNaN(), 6, 1

    guard = run_trainer._NonFiniteLossGuard()
    with pytest.raises(run_trainer.NonFiniteLossError, match="at step 7 \\(epoch 2\\)"):
        guard.on_before_backward(Trainer(), None, torch.tensor(1.0))  # finite here


class _OneRank:
    """A strategy whose all-reduce is the identity, counting the host synchronisations."""

    def __init__(self):
        self.checks = 0

    def reduce_boolean_decision(self, decision, all=True):
        self.checks += 1
        return decision


class _Trainer:
    def __init__(self):
        self.strategy, self.global_step, self.current_epoch = _OneRank(), 0, 0


def _steps(guard, trainer, losses):
    for loss in losses:
        guard.on_before_backward(trainer, None, torch.tensor(loss))
        trainer.global_step += 1


def test_the_loss_is_checked_every_k_steps_and_a_nan_between_is_named_at_its_step():
    guard, trainer = run_trainer._NonFiniteLossGuard(every=5), _Trainer()
    guard.on_train_start(trainer, None)
    _steps(guard, trainer, [1.0] * 10)
    assert trainer.strategy.checks == 2  # steps 5 and 10: no host synchronisation between
    _steps(guard, trainer, [1.0, float("nan"), 1.0, 2.0])  # steps 11-14: the next check is 15
    with pytest.raises(run_trainer.NonFiniteLossError) as error:
        _steps(guard, trainer, [float("nan")])  # step 15: checked
    assert str(error.value).startswith(
        "non-finite training loss at step 12 (epoch 1; the loss is checked every 5 steps)"
    )


def test_a_nan_after_the_last_check_of_an_epoch_stops_before_its_checkpoint():
    guard, trainer = run_trainer._NonFiniteLossGuard(every=50), _Trainer()
    guard.on_train_start(trainer, None)
    _steps(guard, trainer, [1.0, 1.0, float("inf")])
    assert trainer.strategy.checks == 0
    with pytest.raises(run_trainer.NonFiniteLossError, match="at step 3 \\(epoch 1"):
        guard.on_train_epoch_end(trainer, None)  # runs before ModelCheckpoint's


def test_checking_every_step_stops_before_the_bad_steps_backward():
    guard, trainer = run_trainer._NonFiniteLossGuard(every=1), _Trainer()
    guard.on_train_start(trainer, None)
    _steps(guard, trainer, [1.0, 1.0])
    with pytest.raises(
        run_trainer.NonFiniteLossError, match=r"^non-finite training loss at step 3 \(epoch 1\); "
    ):
        guard.on_before_backward(trainer, None, torch.tensor(float("nan")))
    assert trainer.strategy.checks == 3


# ---------------------------------------------------------------------------------------
# DDP: two CPU processes with gloo
# ---------------------------------------------------------------------------------------


def test_ddp_pretrain_trains_on_two_ranks_and_rank_zero_alone_evaluates_and_writes(tmp_path):
    result = _cli("pretrain", "method=emim", f"runs_root={tmp_path}", *TINY, *CPU_DDP, "epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout  # two ranks trained
    runs = list((tmp_path / "default").iterdir())
    assert len(runs) == 1
    results = _results(runs[0])
    assert (result.stdout + result.stderr).count(": done (") == 1  # rank 0 alone reports
    assert results["config"]["trainer"]["devices"] == 2
    # 64 images, batch 16 per rank, 2 ranks: 2 steps per epoch over the global batch of 32
    assert results["train"]["steps"] == 4
    curve = pd.read_csv(runs[0] / run_directory.CURVE_FILE)
    assert curve["epoch"].tolist() == [1, 2] and curve["knn_acc1"].notna().all()
    assert curve[["train_emim_loss", "train_mi_nats", "rankme_projector"]].notna().all().all()
    assert sorted(p.name for p in runs[0].glob("*.tmp")) == []


def test_ddp_run_through_a_sweep_with_the_basic_launcher(tmp_path):
    sweep = tmp_path / "ddp.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "ddp",
                "overrides": [*TINY, *CPU_DDP, "epochs=1"],
                "grid": {"method": ["simclr"]},
                "launcher": "basic",
            }
        )
    )
    result = _cli("sweep", str(sweep), f"runs_root={tmp_path}", "--no-report")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sweep ddp: 1 runs: 1 done" in result.stdout
    (run,) = (p for p in (tmp_path / "ddp").iterdir() if not p.name.startswith("."))
    assert _results(run)["train"]["steps"] == 2


def test_a_test_subset_lacking_classes_is_evaluated_over_the_datasets_classes(tmp_path):
    cfg = config.load(
        ["method=random", f"runs_root={tmp_path}", *TINY[:3], "data.test_size=5", "epochs=1"]
    )
    results = pretrain.run(cfg)  # 5 test images cannot hold all 10 classes
    assert set(results["metrics"]) >= {"knn_acc1_k20", "knn_acc5_k200", "linear_acc5"}
    knn = [v for k, v in results["metrics"].items() if k.startswith("knn_")]
    assert len(knn) == 4 and all(v in (0.0, 20.0, 40.0, 60.0, 80.0, 100.0) for v in knn)


def test_collapse_diagnostics_leave_the_model_as_it_was():
    from emim_bench.run.evaluation import representation_diagnostics

    class Method(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(12))
            self.projector = torch.nn.Identity()

    method = Method().train()
    method.encoder[1].running_mean.fill_(0.5)
    views = torch.randn(20, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    stats = representation_diagnostics(method, views, views.clone())
    assert stats["alignment"] == pytest.approx(0.0, abs=1e-12)  # the two views are identical
    features = method.encoder.eval()(views)
    from emim_bench.metrics import effective_rank, uniformity

    assert stats["uniformity"] == pytest.approx(uniformity(features))
    assert stats["rankme_backbone"] == stats["rankme_projector"]  # identity projector
    assert stats["rankme_backbone"] == pytest.approx(float(effective_rank(features)))
    assert method.encoder[1].running_mean.eq(0.5).all()  # BatchNorm statistics untouched


def test_rewinding_the_curve_to_the_checkpoint_counts_no_epoch_twice(tmp_path):
    path = tmp_path / "curve.csv"
    for epoch in (1, 2, 3):
        run_directory.append_curve_row(
            path, {"epoch": epoch, "step": 4 * epoch, "wall_s": 10.0 * epoch}
        )
    assert run_directory.rewind_curve(path, 2) == 20.0  # the checkpoint is epoch 2's
    assert run_directory.read_curve(path)["epoch"].tolist() == [1, 2]
    assert run_directory.rewind_curve(path, 0) == 0.0  # no checkpoint: start from zero
    assert run_directory.read_curve(path).empty
    path.write_text("")  # an empty file reads as an empty curve
    assert list(run_directory.read_curve(path).columns) == list(run_directory.CURVE_COLUMNS)


def test_a_claim_waits_out_a_state_probe(tmp_path):
    import fcntl
    import threading

    (tmp_path / run_directory.CLAIM_FILE).touch()  # a released claim
    fd = os.open(tmp_path / run_directory.CLAIM_FILE, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # what is_claimed() holds for an instant

    def release():
        time.sleep(0.08)
        os.close(fd)

    threading.Thread(target=release).start()
    with run_directory.Claim(tmp_path):
        assert run_directory.run_state(tmp_path) == "running"


def test_results_are_readable_by_others_as_the_umask_allows(tmp_path):
    mask = os.umask(0o022)
    try:
        run_directory.write_json_atomic(tmp_path / "results.json", {"a": 1})
    finally:
        os.umask(mask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644
    assert list(tmp_path.iterdir()) == [tmp_path / "results.json"]  # no temporary file left


def test_a_results_file_that_is_not_json_is_failed_and_evaluated_again(tmp_path, capsys):
    cfg = _cfg(tmp_path, "epochs=1")
    first = pretrain.run(cfg)
    run = run_identity.run_dir(cfg)
    (run / run_directory.RESULTS_FILE).write_text('{"status": "do')  # cut by a full disk
    assert run_directory.run_state(run) == "failed"
    again = pretrain.run(cfg)
    assert "is not valid JSON: evaluating again" in capsys.readouterr().out
    assert again["metrics"] == first["metrics"] and run_directory.run_state(run) == "done"


def test_a_runs_root_that_cannot_be_created_is_one_line(capsys):
    cfg = config.load(["method=simclr", "runs_root=/proc/emim-bench-runs", *TINY])
    assert pretrain.run_or_report(cfg) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "check runs_root" in err
