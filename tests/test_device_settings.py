"""The trainer's device settings: precision, memory format, cuDNN, loaders, the finite-loss check.

One function (``emim_bench.run.device.device_settings``) decides them; the Trainer and the
benchmark's training step both take them from it. No GPU here: the GPU branches are reached
through the config (``trainer=gpu``) and a stand-in for the bf16 query.
"""

from __future__ import annotations

import argparse
import warnings

import pytest
import torch

from emim_bench import config
from emim_bench.run import device as run_device
from emim_bench.run import trainer as run_trainer


@pytest.mark.parametrize(
    "value, accelerator, bf16, expected",
    [
        ("auto", "gpu", True, "bf16"),
        ("auto", "gpu", False, 16),
        ("auto", "cpu", True, 32),
        (32, "gpu", True, 32),
        ("32", "cpu", False, 32),
        (16, "gpu", True, 16),
        (16, "cpu", False, "bf16"),  # as Lightning makes it: CPU autocast has no fp16
        ("bf16", "gpu", False, "bf16"),
        ("bf16", "cpu", False, "bf16"),
    ],
)
def test_precision_resolves_auto_to_bf16_where_the_gpu_has_it_else_fp16(
    value, accelerator, bf16, expected, monkeypatch
):
    monkeypatch.setattr(run_device, "_cuda_bf16", lambda: bf16)
    assert run_device.resolve_precision(value, accelerator) == expected


def test_an_unknown_precision_is_refused_naming_the_valid_values():
    with pytest.raises(ValueError, match="32, 16, bf16, auto; got 'fp8'"):
        run_device.resolve_precision("fp8", "gpu")


def test_cpu_trainer_computes_as_before_the_settings_existed():
    settings = run_device.device_settings(config.load(["trainer=cpu"]).trainer)
    assert settings == run_device.DeviceSettings(
        accelerator="cpu",
        precision=32,
        channels_last=False,
        cudnn_benchmark=False,
        num_workers=2,
        pin_memory=False,
        persistent_workers=True,
    )
    assert settings.autocast_dtype is None and not settings.grad_scaler
    assert settings.memory_format == torch.contiguous_format


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainers_use_bf16_channels_last_cudnn_autotuning_and_pinned_memory(
    trainer, monkeypatch
):
    cfg = config.load([f"trainer={trainer}"]).trainer
    assert cfg.precision == "auto" and cfg.finite_check_every == 50
    monkeypatch.setattr(run_device, "_cuda_bf16", lambda: True)
    settings = run_device.device_settings(cfg)
    assert (settings.precision, settings.autocast_dtype, settings.grad_scaler) == (
        "bf16",
        torch.bfloat16,
        False,
    )
    assert settings.channels_last and settings.memory_format == torch.channels_last
    assert settings.cudnn_benchmark and settings.pin_memory and settings.persistent_workers
    monkeypatch.setattr(run_device, "_cuda_bf16", lambda: False)  # e.g. a V100
    older = run_device.device_settings(cfg)
    assert (older.precision, older.autocast_dtype, older.grad_scaler) == (16, torch.float16, True)


def test_gpu_only_switches_are_off_on_the_cpu_whatever_the_config_says():
    cfg = config.load(
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.sync_batchnorm=false"]
    ).trainer
    settings = run_device.device_settings(cfg)
    assert cfg.channels_last and cfg.pin_memory and cfg.cudnn_benchmark  # configured on
    assert not (settings.channels_last or settings.pin_memory or settings.cudnn_benchmark)
    assert settings.precision == 32  # auto on the CPU


def test_every_loader_persists_its_workers_only_where_there_are_workers():
    with_workers = run_device.loader_kwargs(config.load(["trainer=gpu"]).trainer)
    assert with_workers == {"num_workers": 8, "pin_memory": True, "persistent_workers": True}
    none = run_device.loader_kwargs(config.load(["trainer.num_workers=0"]).trainer)
    assert none == {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
    loader = run_trainer.pretrain_loader(
        list(range(8)), batch_size=2, num_workers=1, pin_memory=False, persistent_workers=False
    )
    assert not loader.persistent_workers
    assert run_trainer.pretrain_loader(list(range(8)), 2, num_workers=1).persistent_workers


def test_channels_last_batch_converts_images_in_the_lists_it_is_given():
    views = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)]
    batch = [torch.arange(2), views, torch.tensor([0, 1])]
    same = run_device.channels_last_batch(batch)
    assert same is batch and batch[1] is views  # in place, as a Lightning hook needs
    assert all(v.is_contiguous(memory_format=torch.channels_last) for v in views)
    assert not views[0].is_contiguous()  # NHWC strides, not NCHW
    assert torch.equal(batch[0], torch.arange(2))  # 1-D tensors are left alone
    pair = run_device.channels_last_batch((torch.randn(1, 3, 2, 2), 5))
    assert pair[0].is_contiguous(memory_format=torch.channels_last) and pair[1] == 5


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.precision=fp8", "trainer.precision must be one of 32, 16, bf16, auto; got 'fp8'"),
        ("trainer.channels_last=maybe", "trainer.channels_last must be true or false, got 'maybe'"),
        ("trainer.pin_memory=1", "trainer.pin_memory must be true or false, got 1"),
        ("trainer.finite_check_every=0", "trainer.finite_check_every must be an integer >= 1"),
    ],
)
def test_bad_trainer_settings_are_one_line_naming_the_key_and_valid_values(override, message):
    with pytest.raises(config.ConfigError) as error:
        config.load([override])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_warm_up_from_learning_rate_0_is_warned_about_naming_the_fix():
    with pytest.warns(
        UserWarning, match=r"optim.warmup_start_lr=0 with warmup_epochs=10 under LARS: .*0\.003"
    ):
        config.load(["budget=cifar_paper", "method=emim", "optim.warmup_start_lr=0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config.load(["budget=cifar_paper", "method=emim"])
        config.load(["budget=cifar_paper", "warmup_epochs=0", "optim.warmup_start_lr=0"])
        config.load(["budget=cifar_paper", "method=wmse"])  # its script's 0, under Adam


@pytest.mark.parametrize("budget", ["cifar_paper", "imagenet100_paper"])
def test_paper_budgets_warm_up_from_solo_learns_default_start(budget):
    from solo.methods.base import BaseMethod

    parser = BaseMethod.add_model_specific_args(argparse.ArgumentParser())
    solo_default = parser.get_default("warmup_start_lr")
    assert solo_default > 0
    assert config.load([f"budget={budget}"]).optim.warmup_start_lr == solo_default


# ---- the Trainer takes its settings from device_settings -----------------------------------


def test_the_trainer_is_built_with_the_resolved_settings(tmp_path):
    cfg = config.load(["trainer.precision=bf16", "trainer.finite_check_every=7"])
    trainer = run_trainer.make_trainer(cfg, tmp_path, eval_sets=None)
    assert trainer.precision == "bf16"
    (guard,) = [c for c in trainer.callbacks if isinstance(c, run_trainer._NonFiniteLossGuard)]
    assert guard.every == 7
    assert not any(isinstance(c, run_trainer.ChannelsLast) for c in trainer.callbacks)
    assert torch.backends.cudnn.benchmark is False


def test_channels_last_callback_converts_the_model_and_each_batch():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    callback = run_trainer.ChannelsLast()
    callback.setup(None, model, "fit")
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    batch = [torch.arange(2), [torch.randn(2, 3, 5, 5)], torch.tensor([0, 1])]
    callback.on_train_batch_start(None, model, batch, 0)
    assert batch[1][0].is_contiguous(memory_format=torch.channels_last)
    val = [torch.randn(2, 3, 5, 5), torch.tensor([0, 1])]
    callback.on_validation_batch_start(None, model, val, 0)
    assert val[0].is_contiguous(memory_format=torch.channels_last)
