"""EMIM as a solo-learn method (registered by :func:`emim_bench.methods.register`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import emim_bench.compat  # noqa: F401  (adapts solo-learn and Lightning before they load)

import torch
import torch.distributed as dist
from solo.methods.base import BaseMethod
from torch import nn

from emim_bench.losses import emim_loss_func, mi_ceiling_nats
from emim_bench.methods.checks import require_positive_integers
from emim_bench.metrics import effective_rank


class EMIM(BaseMethod):
    """Explicit mutual-information maximisation (Chang, Liu, Guo, Wen, arXiv 2409.04747).

    The backbone and the online linear probe come from solo-learn's
    ``BaseMethod``; EMIM adds a projector shaped like Barlow Twins'
    (Linear-BN-ReLU, Linear-BN-ReLU, Linear) and minimises
    :func:`emim_bench.losses.emim_loss_func` between the two views' embeddings.
    The online classifier sees detached backbone features, so the backbone is
    trained by the EMIM loss alone.

    Logged every step (and averaged per epoch): ``train_emim_loss`` (the loss,
    nats) and ``train_mi_nats`` (the Theorem-1 estimate, nats); every
    ``check_every_n_steps`` steps ``train_effective_rank`` (RankMe of the first
    view's embeddings, a collapse diagnostic between 1 and ``proj_output_dim``).
    With standardisation and
    eps > 0 also ``train_mi_ceiling_nats``, the most the estimate can reach at
    this global batch size, D and eps (:func:`emim_bench.losses.mi_ceiling_nats`),
    and ``train_mi_ceiling_ratio``, the estimate over it (near 1: saturated).

    Args:
        proj_hidden_dim: width of the projector's two hidden layers.
        proj_output_dim: embedding dimension D.
        eps: ridge added to each covariance (see the loss); > 0 unless N > 2D.
        standardize: standardise each embedding dimension over the batch
            before the covariances are formed.
        check_every_n_steps: every this many steps the loss reads its Cholesky
            status on the host (raising at once on a failure) and the effective
            rank is computed. Both make a GPU wait for the host, so GPU configs
            do it every 50 steps; in between, a failed factorisation gives a NaN
            loss, which the trainer's non-finite-loss guard reports.
        **kwargs: solo-learn ``BaseMethod`` arguments (encoder, optimizer, lr, ...).

    Raises:
        ValueError: a non-positive width or ``check_every_n_steps``, or a negative ``eps``.
    """

    def __init__(
        self,
        proj_hidden_dim: int,
        proj_output_dim: int,
        eps: float = 1e-2,
        standardize: bool = True,
        check_every_n_steps: int = 1,
        **kwargs,
    ):
        self.validate_hparams(proj_hidden_dim, proj_output_dim, eps, check_every_n_steps)
        super().__init__(**kwargs)
        self.eps = float(eps)
        self.standardize = bool(standardize)
        self.check_every_n_steps = int(check_every_n_steps)
        self._steps_outside_trainer = 0  # the step count when no Trainer keeps one (benchmarks)
        self.projector = nn.Sequential(
            nn.Linear(self.features_dim, proj_hidden_dim),
            nn.BatchNorm1d(proj_hidden_dim),
            nn.ReLU(),
            nn.Linear(proj_hidden_dim, proj_hidden_dim),
            nn.BatchNorm1d(proj_hidden_dim),
            nn.ReLU(),
            nn.Linear(proj_hidden_dim, proj_output_dim),
        )

    @staticmethod
    def validate_hparams(
        proj_hidden_dim: int, proj_output_dim: int, eps: float, check_every_n_steps: int = 1
    ) -> None:
        """Check EMIM's own hyperparameters; raise ValueError naming the bad one."""
        require_positive_integers(
            "EMIM",
            proj_hidden_dim=proj_hidden_dim,
            proj_output_dim=proj_output_dim,
            check_every_n_steps=check_every_n_steps,
        )
        if not eps >= 0:
            raise ValueError(f"EMIM: eps must be >= 0 (1e-2 is the default), got {eps!r}")

    @staticmethod
    def add_model_specific_args(parent_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add EMIM's arguments to solo-learn's pretraining parser (``--method emim``).

        Defaults: a 2048-2048-128 projector and eps = 1e-2 -- the setting of our
        first CIFAR-10 and Fashion-MNIST checks, where EMIM trained without
        collapse; standardisation on (see the loss for why).
        """
        parent_parser = super(EMIM, EMIM).add_model_specific_args(parent_parser)
        parser = parent_parser.add_argument_group("emim")
        parser.add_argument("--proj_hidden_dim", type=int, default=2048)
        parser.add_argument("--proj_output_dim", type=int, default=128)
        parser.add_argument("--eps", type=float, default=1e-2)
        parser.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True)
        parser.add_argument("--check_every_n_steps", type=int, default=1)
        return parent_parser

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        """solo-learn's parameter groups (backbone, online classifier) plus the projector."""
        return super().learnable_params + [
            {"name": "projector", "params": self.projector.parameters()}
        ]

    def forward(self, X: torch.Tensor, *args, **kwargs) -> dict[str, Any]:
        """solo-learn's output dict (``feats``, ``logits``) plus the embeddings ``z`` (N, D)."""
        out = super().forward(X, *args, **kwargs)
        return {**out, "z": self.projector(out["feats"])}

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        """EMIM loss between the two views plus the online classifier's cross-entropy.

        Args:
            batch: ``(indexes, [view1, view2], targets)`` with views (N, 3, H, W).

        Returns:
            Scalar tensor: EMIM loss + online classifier loss.
        """
        out = super().training_step(batch, batch_idx)
        feats1, feats2 = out["feats"][:2]
        z1, z2 = self.projector(feats1), self.projector(feats2)  # (N, D) each
        check = self._step_index() % self.check_every_n_steps == 0
        emim_loss = emim_loss_func(z1, z2, eps=self.eps, standardize=self.standardize, check=check)
        metrics = {"train_emim_loss": emim_loss, "train_mi_nats": -emim_loss.detach()}
        if check:
            metrics["train_effective_rank"] = effective_rank(z1).float()
        if self.standardize and self.eps > 0:
            world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
            ceiling = mi_ceiling_nats(len(z1) * world, z1.shape[1], z2.shape[1], self.eps)
            metrics["train_mi_ceiling_nats"] = ceiling
            metrics["train_mi_ceiling_ratio"] = -emim_loss.detach() / ceiling
        self.log_dict(metrics, on_epoch=True, sync_dist=True)
        return emim_loss + out["loss"]

    def _step_index(self) -> int:
        """The index of this training step: the Trainer's global step, or outside a Trainer
        (whose global step stays 0) the number of earlier calls, so that a benchmark's steps
        check as often as a Trainer's do."""
        if self._trainer is not None:
            return self.global_step
        self._steps_outside_trainer += 1
        return self._steps_outside_trainer - 1
