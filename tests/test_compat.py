"""Each adaptation in emim_bench.compat is needed: without it, the test's scenario breaks."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from solo.methods import SimCLR
from solo.methods.base import BaseMomentumMethod

from emim_bench.data import ArrayImageDataset, pretrain_transform
from emim_bench.methods import build_method
from emim_bench.run.trainer import fit, pretrain_loader


def test_momentum_methods_fail_under_lightning_19_without_hook_patch(
    cifar10_train_subset, tiny_kwargs, tmp_path, monkeypatch
):
    images, labels = cifar10_train_subset
    dataset = ArrayImageDataset(images, labels, pretrain_transform("cifar10", "asymmetric"))
    unpatched = BaseMomentumMethod.on_train_batch_end.__wrapped__
    monkeypatch.setattr(BaseMomentumMethod, "on_train_batch_end", unpatched)
    method = build_method("byol", **tiny_kwargs("byol"))
    with pytest.raises(TypeError, match="dataloader_idx"):
        fit(method, pretrain_loader(dataset, batch_size=16), tmp_path, max_steps=1)


class _HydraConfiguredSimCLR(SimCLR):
    """SimCLR whose hyperparameters hold an OmegaConf node, as a Hydra-built method's do."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters({"config": OmegaConf.create({"method": "simclr", "lr": 0.3})})


def test_checkpoint_round_trip_gives_identical_outputs(cifar10_views, tiny_kwargs, tmp_path):
    torch.manual_seed(0)
    kwargs = tiny_kwargs("simclr")
    method = _HydraConfiguredSimCLR(**kwargs)
    trainer = fit(method, pretrain_loader(cifar10_views, batch_size=16), tmp_path, max_steps=2)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)

    # torch >= 2.6 refuses this checkpoint by default; Lightning 1.9 calls torch.load that way.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location="cpu")

    restored = _HydraConfiguredSimCLR.load_from_checkpoint(path, **kwargs)
    assert restored.hparams["config"]["lr"] == 0.3
    method.eval(), restored.eval()
    x = torch.stack([cifar10_views[i][0][0] for i in range(8)])
    with torch.no_grad():
        expected, got = method(x), restored(x)
    for key in ("feats", "z", "logits"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_resume_from_checkpoint_continues_step_count(cifar10_views, tiny_kwargs, tmp_path):
    kwargs = tiny_kwargs("simclr")
    loader = pretrain_loader(cifar10_views, batch_size=16)
    first = fit(_HydraConfiguredSimCLR(**kwargs), loader, tmp_path / "a", max_steps=2)
    path = tmp_path / "step2.ckpt"
    first.save_checkpoint(path)

    resumed = fit(
        _HydraConfiguredSimCLR(**kwargs), loader, tmp_path / "b", max_steps=3, ckpt_path=path
    )

    assert resumed.global_step == 3


def test_importing_the_training_stack_prints_no_warnings():
    stack = "import emim_bench.run.pretrain, emim_bench.bench.loss, emim_bench.bench.step"
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", stack],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr == "" and result.stdout == ""


def test_solo_argparse_pipeline_fails_without_accumulate_grad_batches_patch(monkeypatch, tmp_path):
    import solo.args.setup as setup

    argv = [
        "main_pretrain.py",
        "--method",
        "simclr",
        "--dataset",
        "cifar10",
        "--data_dir",
        str(tmp_path),
        "--encoder",
        "resnet18",
        "--optimizer",
        "sgd",
        "--max_epochs",
        "1",
        "--gpus",
        "0",
        "--brightness",
        "0.4",
        "--contrast",
        "0.4",
        "--saturation",
        "0.2",
        "--hue",
        "0.1",
        "--proj_hidden_dim",
        "32",
        "--proj_output_dim",
        "16",
        "--temperature",
        "0.2",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    args = setup.parse_args_pretrain()
    assert args.accumulate_grad_batches == 1
    SimCLR(**args.__dict__)

    monkeypatch.setattr(
        setup, "additional_setup_pretrain", setup.additional_setup_pretrain.__wrapped__
    )
    with pytest.raises(TypeError):
        SimCLR(**setup.parse_args_pretrain().__dict__)


_RETAINED_AFTER_FREE = """
import ctypes, sys
{setup}
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
block = ctypes.create_string_buffer(16 * 1024 * 1024)  # 16 MiB, touched (zeroed)
before_free = rss()
del block
print(before_free - rss())
"""


def _bytes_returned_to_os_on_free(setup: str) -> int:
    code = _RETAINED_AFTER_FREE.format(setup=setup)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_freed_buffers_stay_in_the_process_after_import():
    """Without keep_freed_memory glibc unmaps a freed 16 MiB buffer (to be faulted in again)."""
    default = _bytes_returned_to_os_on_free("")
    tuned = _bytes_returned_to_os_on_free("import emim_bench.compat")
    assert default > 15 * 1024 * 1024
    assert tuned < 1024 * 1024
