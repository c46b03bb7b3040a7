"""`emim-bench evaluate`: any checkpoint, loaded strictly, evaluated on any dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_run

from emim_bench import config
from emim_bench.cli import main
from emim_bench.run import checkpoint as run_checkpoint
from emim_bench.run import directory as run_directory
from emim_bench.run import identity as run_identity
from emim_bench.run import pretrain


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cifar10_npz_path) -> Path:
    """A finished one-epoch SimCLR run directory."""
    cfg = config.load(tiny_run("simclr", tmp_path_factory.mktemp("runs")))
    pretrain.run(cfg)
    return run_identity.run_dir(cfg)


def _offline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("online")}


def test_evaluating_a_run_directory_reproduces_its_offline_metrics(trained_run, capsys):
    results = trained_run / run_directory.RESULTS_FILE
    before = results.stat().st_mtime_ns
    assert main(["evaluate", str(trained_run)]) == 0
    evaluated = json.loads((trained_run / "eval-cifar10.json").read_text())
    assert evaluated["metrics"] == _offline(json.loads(results.read_text())["metrics"])
    assert results.stat().st_mtime_ns == before  # results.json is left alone
    assert "cifar10: kNN acc@1" in capsys.readouterr().out


def test_a_checkpoint_with_the_backbone_under_backbone_dot_loads_the_same(trained_run, tmp_path):
    """Later solo-learn versions keep the backbone under `backbone.`, 1.0.2 under `encoder.`."""
    payload = torch.load(trained_run / run_directory.LAST_CHECKPOINT, weights_only=False)
    payload["state_dict"] = {
        k.replace("encoder.", "backbone.", 1): v for k, v in payload["state_dict"].items()
    }
    renamed = tmp_path / "solo.ckpt"
    torch.save(payload, renamed)
    ours = run_checkpoint.backbone_state(trained_run / run_directory.LAST_CHECKPOINT)
    theirs = run_checkpoint.backbone_state(renamed)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # a bare checkpoint takes its config from the overrides: the run's backbone settings
    target, result = run_checkpoint.evaluate_path(
        renamed, [*tiny_run("simclr", tmp_path), "backbone.cifar=false", "budget=cpu"]
    )
    assert target == tmp_path / "eval-cifar10.json"
    expected = json.loads((trained_run / run_directory.RESULTS_FILE).read_text())["metrics"]
    assert result["metrics"] == _offline(expected)


def test_a_backbone_that_does_not_fit_is_one_line_naming_the_keys(trained_run, capsys):
    assert main(["evaluate", str(trained_run), "backbone=resnet50"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "does not fit backbone=resnet50" in err and "missing keys (first: layer1.0.conv3" in err


def test_a_checkpoint_without_a_backbone_or_unreadable_is_one_line(tmp_path, capsys):
    torch.save({"state_dict": {"head.weight": torch.ones(2)}}, tmp_path / "head.ckpt")
    (tmp_path / "cut.ckpt").write_bytes(b"PK\x03\x04 truncated")
    for name, words in (("head.ckpt", "holds no backbone"), ("cut.ckpt", "cannot read")):
        assert main(["evaluate", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "no such run directory or checkpoint" in capsys.readouterr().err


def test_transfer_evaluation_on_another_dataset(trained_run):
    target, result = run_checkpoint.evaluate_path(
        trained_run,
        ["data=imagefolder", "data.path=imagenette-mini", "data.crop_size=32", "eval.knn_k=[5]"],
    )
    assert target.name == "eval-imagefolder.json" and target.is_file()
    assert set(result["metrics"]) == {"knn_acc1_k5", "knn_acc5_k5", "linear_acc1", "linear_acc5"}
    assert result["config"]["method"]["name"] == "simclr"  # the run's, not the default's
    assert result["config"]["data"]["path"] == "imagenette-mini"


def test_method_or_budget_cannot_change_under_a_trained_model(trained_run, capsys):
    assert main(["evaluate", str(trained_run), "method=byol"]) == 2
    assert "method= cannot change for a trained model" in capsys.readouterr().err
