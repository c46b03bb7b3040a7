"""MEC as a solo-learn method (registered by :func:`emim_bench.methods.register`)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from solo.methods.base import BaseMomentumMethod
from solo.utils.momentum import initialize_momentum_params
from torch import nn

from emim_bench.losses import mec_lambda, mec_lambda_warmup, mec_loss_func
from emim_bench.methods.checks import require_positive_integers


def _mec_projector(features_dim: int, hidden_dim: int, output_dim: int) -> nn.Sequential:
    """MEC's 3-layer projector (xinliu20/MEC ``mec/builder.py``): two Linear(no bias)-BN-ReLU
    layers, a Linear, and a BatchNorm without affine parameters on the output."""
    return nn.Sequential(
        nn.Linear(features_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, output_dim, bias=False),  # its bias would be cancelled by the BN
        nn.BatchNorm1d(output_dim, affine=False),
    )


class MEC(BaseMomentumMethod):
    """Maximum Entropy Coding (Liu, Wang, Liu, Wang, Chen, NeurIPS 2022): the predictions of
    one view against the momentum encoder's projections of the other, scored by the coding
    length log det(I + lambda * similarities) of the global batch
    (:func:`emim_bench.losses.mec_loss_func`).

    Architecture of the authors' code (xinliu20/MEC): a SimSiam-style projector and
    predictor on the online branch, a momentum (teacher) copy of backbone and projector
    whose momentum follows solo-learn's cosine schedule from ``base_tau_momentum`` to
    ``final_tau_momentum`` (MEC: 0.996 to 1). lambda = d / (m * eps) for global batch m
    and embedding width d; over the first ``lambda_warmup_epochs`` epochs 1/lambda falls
    linearly from 8/lambda (its authors' guard for the Taylor series' convergence: with
    lambda * m = d / eps = 32 at its defaults, the series can still diverge if the
    embeddings collapse).

    Logged: ``train_mec_loss`` and ``train_mec_lambda``.

    Args:
        proj_hidden_dim: width of the projector's hidden layers (MEC: the backbone's
            feature width; ``None`` takes it).
        proj_output_dim: embedding width d (MEC: 2048).
        pred_hidden_dim: width of the predictor's hidden layer (MEC: 512).
        eps: MEC's ``--eps`` (the paper's eps^2), 64.
        order: terms of the Taylor series (MEC: 4).
        lambda_warmup_epochs: epochs of lambda's warm-up (MEC: 10).
        **kwargs: solo-learn ``BaseMomentumMethod`` arguments (``base_tau_momentum``, ...).

    Raises:
        ValueError: a non-positive width, eps or order, or a negative warm-up.
    """

    def __init__(
        self,
        proj_output_dim: int,
        pred_hidden_dim: int,
        proj_hidden_dim: int | None = None,
        eps: float = 64.0,
        order: int = 4,
        lambda_warmup_epochs: int = 10,
        **kwargs,
    ):
        super().__init__(**kwargs)
        hidden = self.features_dim if proj_hidden_dim is None else proj_hidden_dim
        self.validate_hparams(
            hidden, proj_output_dim, pred_hidden_dim, eps, order, lambda_warmup_epochs
        )
        self.eps, self.order = float(eps), int(order)
        self.lambda_warmup_epochs = int(lambda_warmup_epochs)
        self.projector = _mec_projector(self.features_dim, hidden, proj_output_dim)
        self.momentum_projector = _mec_projector(self.features_dim, hidden, proj_output_dim)
        initialize_momentum_params(self.projector, self.momentum_projector)
        self.predictor = nn.Sequential(
            nn.Linear(proj_output_dim, pred_hidden_dim, bias=False),
            nn.BatchNorm1d(pred_hidden_dim),
            nn.ReLU(),
            nn.Linear(pred_hidden_dim, proj_output_dim),
        )

    @staticmethod
    def validate_hparams(proj_hidden_dim, proj_output_dim, pred_hidden_dim, eps, order, warmup):
        """Check MEC's own hyperparameters; raise ValueError naming the bad one."""
        require_positive_integers(
            "MEC",
            proj_hidden_dim=proj_hidden_dim,
            proj_output_dim=proj_output_dim,
            pred_hidden_dim=pred_hidden_dim,
            order=order,
        )
        if not eps > 0:
            raise ValueError(f"MEC: eps must be > 0 (its code: 64), got {eps!r}")
        if int(warmup) != warmup or warmup < 0:
            raise ValueError(f"MEC: lambda_warmup_epochs must be >= 0, got {warmup!r}")

    @staticmethod
    def add_model_specific_args(parent_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add MEC's arguments to solo-learn's parser; defaults are the authors' code's."""
        parent_parser = super(MEC, MEC).add_model_specific_args(parent_parser)
        parser = parent_parser.add_argument_group("mec")
        parser.add_argument("--proj_hidden_dim", type=int, default=None)
        parser.add_argument("--proj_output_dim", type=int, default=2048)
        parser.add_argument("--pred_hidden_dim", type=int, default=512)
        parser.add_argument("--eps", type=float, default=64.0)
        parser.add_argument("--order", type=int, default=4)
        parser.add_argument("--lambda_warmup_epochs", type=int, default=10)
        return parent_parser

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        """solo-learn's parameter groups plus the projector and the predictor."""
        return super().learnable_params + [
            {"name": "projector", "params": self.projector.parameters()},
            {"name": "predictor", "params": self.predictor.parameters()},
        ]

    @property
    def momentum_pairs(self) -> list[tuple[Any, Any]]:
        """solo-learn's (backbone, momentum backbone) pair plus the projectors."""
        return super().momentum_pairs + [(self.projector, self.momentum_projector)]

    def forward(self, X: torch.Tensor, *args, **kwargs) -> dict[str, Any]:
        """solo-learn's output dict plus the projections ``z`` and predictions ``p`` (N, d)."""
        out = super().forward(X, *args, **kwargs)
        z = self.projector(out["feats"])
        return {**out, "z": z, "p": self.predictor(z)}

    def current_lambda(self, local_batch: int, dim: int) -> float:
        """lambda at this step: :func:`~emim_bench.losses.mec_lambda` of the global batch,
        warmed up over ``lambda_warmup_epochs`` epochs of the Trainer, counted in optimizer
        steps (outside a Trainer, where no epoch length is known, the final value).

        Raises:
            ValueError: in a Trainer whose training loader has no length.
        """
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        lamda = mec_lambda(local_batch * world, dim, self.eps)
        if self._trainer is None:
            return lamda
        batches = self.trainer.num_training_batches
        if not math.isfinite(batches):
            raise ValueError(
                "MEC: lambda's warm-up needs the epoch length, and the training loader has "
                "none; use a loader with a length or method.kwargs.lambda_warmup_epochs=0"
            )
        steps_per_epoch = max(int(batches) // self.trainer.accumulate_grad_batches, 1)
        warmup_steps = self.lambda_warmup_epochs * steps_per_epoch
        return mec_lambda_warmup(self.global_step, warmup_steps, lamda)

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        """MEC loss between each view's prediction and the other view's momentum projection,
        plus the online classifier's cross-entropy."""
        out = super().training_step(batch, batch_idx)
        p1, p2 = (self.predictor(self.projector(f)) for f in out["feats"][:2])  # (N, d) each
        with torch.no_grad():
            t1, t2 = (self.momentum_projector(f) for f in out["momentum_feats"][:2])
        lamda = self.current_lambda(len(p1), p1.shape[1])
        loss = mec_loss_func(p1, p2, t1, t2, lamda, order=self.order)
        # float32 for the log: under bf16 the loss itself has about 3 significant digits
        metrics = {"train_mec_loss": loss.detach().float(), "train_mec_lambda": lamda}
        self.log_dict(metrics, on_epoch=True, sync_dist=True)
        return loss + out["loss"]
