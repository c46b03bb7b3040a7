"""Each adaptation in emim_bench.compat is needed: without it, the test's scenario breaks."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from pytorch_lightning import Trainer
from solo.methods import DINO, SimCLR
from solo.methods.base import BaseMomentumMethod
from solo.utils.whitening import Whitening2d

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


# solo-learn's DINO head uses torch.nn.utils.weight_norm, which torch 2.x deprecates.
_DINO_HEAD_WARNING = "ignore:.*weight_norm.*:FutureWarning"


def _tiny_dino(tiny_kwargs, clip_grad: float) -> DINO:
    """A DINO on the tiny ResNet-18 of ``tiny_kwargs`` with a 64-prototype head."""
    kwargs = tiny_kwargs("byol")  # the momentum-method kwargs; DINO has no predictor
    del kwargs["pred_hidden_dim"]
    return DINO(
        **kwargs,
        num_prototypes=64,
        use_bn_in_head=False,
        norm_last_layer=True,
        clip_grad=clip_grad,
        freeze_last_layer=0,
        student_temperature=0.1,
        teacher_temperature=0.04,
        warmup_teacher_temperature=0.04,
        warmup_teacher_temperature_epochs=0,
    )


def _backward_on_random_images(model: DINO) -> None:
    torch.manual_seed(0)
    out = model(torch.randn(4, 3, 32, 32))
    (out["p"].pow(2).sum() + out["logits"].pow(2).sum()).backward()


def _grad_norms(params) -> torch.Tensor:
    return torch.stack([p.grad.norm() for p in params if p.grad is not None])


def _attach_trainer(model, **trainer_kwargs) -> None:
    model.trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )


@pytest.mark.filterwarnings(_DINO_HEAD_WARNING)
def test_dino_reaches_lightnings_gradient_clipping_which_clips_to_the_total_norm(
    tiny_kwargs, monkeypatch
):
    model = _tiny_dino(tiny_kwargs, clip_grad=0.0)
    _attach_trainer(model, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _backward_on_random_images(model)
    assert _grad_norms(model.parameters()).norm() > 5.0

    # What Lightning 1.9's precision plugin calls after every backward pass.
    model.configure_gradient_clipping(
        optimizer, 0, gradient_clip_val=0.5, gradient_clip_algorithm="norm"
    )
    assert _grad_norms(model.parameters()).norm().item() == pytest.approx(0.5, rel=1e-4)

    monkeypatch.setattr(DINO, "clip_gradients", DINO.clip_gradients.__wrapped__)
    with pytest.raises(TypeError, match="gradient_clip_val"):
        model.configure_gradient_clipping(
            optimizer, 0, gradient_clip_val=0.5, gradient_clip_algorithm="norm"
        )


@pytest.mark.filterwarnings(_DINO_HEAD_WARNING)
def test_dino_clip_grad_still_clips_each_backbone_parameter_to_the_norm(tiny_kwargs):
    model = _tiny_dino(tiny_kwargs, clip_grad=0.0)
    _attach_trainer(model)
    _backward_on_random_images(model)
    before = _grad_norms(model.encoder.parameters())
    clip = model.clip_grad = before.median().item()  # half the gradients above, half below

    model.on_after_backward()  # DINO's hook: self.clip_gradients(self.clip_grad)

    after = _grad_norms(model.encoder.parameters())
    torch.testing.assert_close(after, torch.clamp(before, max=clip), rtol=1e-4, atol=0)


def _whitened_by_definition(x: np.ndarray, eps: float) -> np.ndarray:
    """W-MSE's whitening written out: centred X times L^-T, where L L^T = (1-eps) C + eps I."""
    centred = x - x.mean(axis=0)
    shrunk = (1 - eps) * np.cov(centred, rowvar=False) + eps * np.eye(x.shape[1])
    lower = np.linalg.cholesky(shrunk)  # lower triangular, shrunk = L L^T
    return np.linalg.solve(lower, centred.T).T


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_wmse_whitening_matches_its_definition(eps):
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(8, 8, generator=generator, dtype=torch.float64)
    x = torch.randn(256, 8, generator=generator, dtype=torch.float64) @ mixing + 5.0

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.triangular_solve would warn: deprecated
        whitened = Whitening2d(output_dim=8, eps=eps)(x)

    assert whitened.shape == (256, 8) and whitened.dtype == torch.float64
    np.testing.assert_allclose(whitened.numpy(), _whitened_by_definition(x.numpy(), eps), atol=1e-9)
    if eps == 0.0:
        # Identity covariance; and Cholesky (not ZCA) whitening: the first coordinate is
        # only standardised.
        np.testing.assert_allclose(torch.cov(whitened.T).numpy(), np.eye(8), atol=1e-9)
        centred = x[:, 0] - x[:, 0].mean()
        np.testing.assert_allclose(whitened[:, 0].numpy(), (centred / centred.std()).numpy())


def test_wmse_whitening_fails_without_cholesky_patch(monkeypatch):
    monkeypatch.setattr(Whitening2d, "forward", Whitening2d.forward.__wrapped__)
    with pytest.raises(RuntimeError, match="torch.cholesky"):
        Whitening2d(output_dim=4)(torch.randn(16, 4))


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
