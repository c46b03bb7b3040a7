"""CorInfoMax as a solo-learn method (registered by :func:`emim_bench.methods.register`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from solo.methods.base import BaseMethod
from torch import nn

from emim_bench.losses import RunningMoments, corinfomax_loss_func, initial_moments
from emim_bench.methods.checks import require_positive_integers


class CorInfoMax(BaseMethod):
    """CorInfoMax (Ozsoy, Hamdan, Arik, Yuret, Erdogan, NeurIPS 2022): the MSE between the two
    views' embeddings minus the log-determinants of each view's running covariance
    (:func:`emim_bench.losses.corinfomax_loss_func`).

    The projector is the authors' (serdarozsoy/corinfomax-ssl ``model_base_resnet.py``):
    Linear-ReLU, Linear-ReLU, then a Linear without bias, no BatchNorm; its output is
    L2-normalised when ``normalize`` (every published recipe). The running means and
    covariances are buffers, so a checkpoint resumes them and every DDP rank (which
    computes them from the gathered global batch) holds the same ones.

    Logged every step (averaged per epoch): ``train_corinfomax_loss``,
    ``train_logdet_term`` (minus the summed log-determinants over D, nats per dimension) and
    ``train_sim_loss`` (the MSE).

    Args:
        proj_hidden_dim: width of the projector's two hidden layers.
        proj_output_dim: embedding dimension D.
        normalize: L2-normalise the embeddings before the loss.
        alpha: weight of the MSE (the paper's alpha).
        R_ini: the running covariances start at ``R_ini * I``.
        la_R, la_mu: forgetting factors of the covariance and mean estimates, in [0, 1).
        eps: ridge added to each covariance before its log-determinant.
        check_every_n_steps: every this many steps a failed factorisation raises at once
            (a host synchronisation); in between it gives a NaN loss.
        **kwargs: solo-learn ``BaseMethod`` arguments.

    Raises:
        ValueError: a non-positive width, alpha, R_ini or check_every_n_steps, a forgetting
            factor outside
            [0, 1), or a negative eps.
    """

    def __init__(
        self,
        proj_hidden_dim: int,
        proj_output_dim: int,
        normalize: bool = True,
        alpha: float = 250.0,
        R_ini: float = 1.0,
        la_R: float = 0.01,
        la_mu: float = 0.01,
        eps: float = 1e-8,
        check_every_n_steps: int = 1,
        **kwargs,
    ):
        self.validate_hparams(
            proj_hidden_dim, proj_output_dim, alpha, R_ini, la_R, la_mu, eps, check_every_n_steps
        )
        super().__init__(**kwargs)
        self.normalize, self.alpha = bool(normalize), float(alpha)
        self.la_R, self.la_mu, self.eps = float(la_R), float(la_mu), float(eps)
        self.check_every_n_steps = int(check_every_n_steps)
        self.projector = nn.Sequential(
            nn.Linear(self.features_dim, proj_hidden_dim),
            nn.ReLU(),
            nn.Linear(proj_hidden_dim, proj_hidden_dim),
            nn.ReLU(),
            nn.Linear(proj_hidden_dim, proj_output_dim, bias=False),
        )
        for view in (1, 2):
            start = initial_moments(proj_output_dim, R_ini)
            self.register_buffer(f"running_mean{view}", start.mean)
            self.register_buffer(f"running_cov{view}", start.cov)

    @staticmethod
    def validate_hparams(
        proj_hidden_dim, proj_output_dim, alpha, R_ini, la_R, la_mu, eps, check_every_n_steps=1
    ) -> None:
        """Check CorInfoMax's own hyperparameters; raise ValueError naming the bad one."""
        require_positive_integers(
            "CorInfoMax",
            proj_hidden_dim=proj_hidden_dim,
            proj_output_dim=proj_output_dim,
            check_every_n_steps=check_every_n_steps,
        )
        for name, value in (("alpha", alpha), ("R_ini", R_ini)):
            if not value > 0:
                raise ValueError(f"CorInfoMax: {name} must be > 0, got {value!r}")
        for name, value in (("la_R", la_R), ("la_mu", la_mu)):
            if not 0 <= value < 1:
                raise ValueError(
                    f"CorInfoMax: {name} must be in [0, 1) (recipe: 0.01), got {value!r}"
                )
        if not eps >= 0:
            raise ValueError(f"CorInfoMax: eps must be >= 0 (recipe: 1e-8), got {eps!r}")

    @staticmethod
    def add_model_specific_args(parent_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add CorInfoMax's arguments to solo-learn's parser; defaults are the authors' CIFAR-10
        command (serdarozsoy/corinfomax-ssl README)."""
        parent_parser = super(CorInfoMax, CorInfoMax).add_model_specific_args(parent_parser)
        parser = parent_parser.add_argument_group("corinfomax")
        parser.add_argument("--proj_hidden_dim", type=int, default=2048)
        parser.add_argument("--proj_output_dim", type=int, default=64)
        parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True)
        parser.add_argument("--alpha", type=float, default=250.0)
        parser.add_argument("--R_ini", type=float, default=1.0)
        parser.add_argument("--la_R", type=float, default=0.01)
        parser.add_argument("--la_mu", type=float, default=0.01)
        parser.add_argument("--eps", type=float, default=1e-8)
        parser.add_argument("--check_every_n_steps", type=int, default=1)
        return parent_parser

    @property
    def learnable_params(self) -> list[dict[str, Any]]:
        """solo-learn's parameter groups (backbone, online classifier) plus the projector."""
        return super().learnable_params + [
            {"name": "projector", "params": self.projector.parameters()}
        ]

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """The projector's output for backbone features (N, F), L2-normalised when configured."""
        z = self.projector(feats)
        return F.normalize(z, dim=1) if self.normalize else z

    def forward(self, X: torch.Tensor, *args, **kwargs) -> dict[str, Any]:
        """solo-learn's output dict (``feats``, ``logits``) plus the embeddings ``z`` (N, D)."""
        out = super().forward(X, *args, **kwargs)
        return {**out, "z": self.embed(out["feats"])}

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        """CorInfoMax loss between the two views plus the online classifier's cross-entropy;
        updates the running estimates."""
        out = super().training_step(batch, batch_idx)
        z1, z2 = (self.embed(feats) for feats in out["feats"][:2])  # (N, D) each
        check = self.global_step % self.check_every_n_steps == 0
        loss, logdet_term, mse, (new1, new2) = corinfomax_loss_func(
            z1,
            z2,
            RunningMoments(self.running_mean1, self.running_cov1),
            RunningMoments(self.running_mean2, self.running_cov2),
            la_R=self.la_R,
            la_mu=self.la_mu,
            eps=self.eps,
            alpha=self.alpha,
            check=check,
        )
        for view, moments in ((1, new1), (2, new2)):
            getattr(self, f"running_mean{view}").copy_(moments.mean)
            getattr(self, f"running_cov{view}").copy_(moments.cov)
        metrics = {
            "train_corinfomax_loss": loss,
            "train_logdet_term": logdet_term.detach(),
            "train_sim_loss": mse.detach(),
        }
        self.log_dict(metrics, on_epoch=True, sync_dist=True)
        return loss + out["loss"]
