"""Helpers shared by several test files (importable: pytest puts tests/ on the path)."""

from __future__ import annotations

from pathlib import Path

import torch


def random_split(seed, n_bank=60, n_query=40, width=8, num_classes=7):
    """Gaussian bank and queries with uniform random labels: float32 (n_bank, width),
    int64 (n_bank,), float32 (n_query, width), int64 (n_query,). Continuous, so exact ties
    have probability zero."""
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n_bank, width, generator=gen),
        torch.randint(num_classes, (n_bank,), generator=gen),
        torch.randn(n_query, width, generator=gen),
        torch.randint(num_classes, (n_query,), generator=gen),
    )


class TwoViewLinear(torch.nn.Module):
    """One forward for both views, as Lightning calls a DDP-wrapped training_step once:
    (N, 8) views in, (N, 6) embeddings out."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 6)

    def forward(self, x1, x2):
        return self.linear(x1), self.linear(x2)


def _ddp_worker(rank, world_size, port, x1, x2, state, losses, out_dir):
    import os

    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        rows = slice(rank * len(x1) // world_size, (rank + 1) * len(x1) // world_size)
        results = {}
        for name, loss_of in losses.items():
            model = TwoViewLinear().double()
            model.load_state_dict(state)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            loss = loss_of(*ddp(x1[rows], x2[rows]))
            loss.backward()
            results[name] = (loss.detach(), {k: p.grad for k, p in model.named_parameters()})
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def assert_two_ranks_match_one_process(losses, tmp_path, seed=18, tol=1e-6):
    """Each ``losses[name](z1, z2)`` on 2 gloo DDP processes holding half of a 16-row float64
    batch each equals, in value and parameter gradients, one process holding the whole batch.

    float64 end to end, so that ``tol`` is far above summation-order noise and far below the
    1/world_size error of a gather whose backward does not all-reduce. Needs the fork start
    method (the loss callables are not pickled).
    """
    import time

    import pytest
    import torch.multiprocessing as mp

    from emim_bench.gpu_check.ddp import _free_port

    gen = torch.Generator().manual_seed(seed)
    x1 = torch.randn(16, 8, generator=gen, dtype=torch.float64)
    x2 = x1 + 0.5 * torch.randn(16, 8, generator=gen, dtype=torch.float64)
    torch.manual_seed(0)
    model = TwoViewLinear().double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = mp.start_processes(
        _ddp_worker,
        args=(2, _free_port(), x1, x2, state, losses, str(tmp_path)),
        nprocs=2,
        join=False,
        start_method="fork",
    )
    deadline = time.monotonic() + 60
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP workers did not finish within 60 s")
    for name, loss_of in losses.items():
        model.zero_grad()
        loss = loss_of(*model(x1, x2))
        loss.backward()
        for rank in range(2):
            ddp_loss, ddp_grads = torch.load(tmp_path / f"rank{rank}.pt")[name]
            assert abs(ddp_loss - loss.detach()) < tol, (name, rank)
            for param, p in model.named_parameters():
                assert (ddp_grads[param] - p.grad).abs().max() < tol, (name, rank, param)


# ---- seconds-long runs on real CIFAR-10 images -----------------------------------------------

SMALL = {
    "emim": ["method.kwargs.proj_hidden_dim=64", "method.kwargs.proj_output_dim=32"],
    "simclr": ["method.kwargs.proj_hidden_dim=64", "method.kwargs.proj_output_dim=32"],
    "byol": [
        "method.kwargs.proj_hidden_dim=64",
        "method.kwargs.proj_output_dim=32",
        "method.kwargs.pred_hidden_dim=64",
    ],
    "barlow_twins": ["method.kwargs.proj_hidden_dim=64", "method.kwargs.proj_output_dim=32"],
    "vicreg": ["method.kwargs.proj_hidden_dim=64", "method.kwargs.proj_output_dim=32"],
    "random": [],
}
# The rest of solo-learn 1.0.2's zoo, with queues, prototypes and whitening cut to batch 16.
_PROJ = ["method.kwargs.proj_hidden_dim=64", "method.kwargs.proj_output_dim=32"]
_PRED = ["method.kwargs.pred_hidden_dim=64"]
ZOO = {
    "deepclusterv2": [*_PROJ, "method.kwargs.num_prototypes=[16,16]"],
    "dino": [*_PROJ, "method.kwargs.num_prototypes=64"],
    "mocov2plus": [*_PROJ, "method.kwargs.queue_size=64"],
    "nnbyol": [*_PROJ, *_PRED, "method.kwargs.queue_size=64"],
    "nnclr": [*_PROJ, *_PRED, "method.kwargs.queue_size=64"],
    "nnsiam": [*_PROJ, *_PRED, "method.kwargs.queue_size=64"],
    "ressl": [*_PROJ, "method.kwargs.queue_size=64"],
    "simsiam": [*_PROJ, *_PRED],
    "swav": [*_PROJ, "method.kwargs.num_prototypes=16", "method.kwargs.queue_size=32"],
    "wmse": [
        "method.kwargs.proj_hidden_dim=64",
        "method.kwargs.proj_output_dim=8",
        "method.kwargs.whitening_size=16",
    ],
}
# EMIM's log-determinant relatives (ours).
RELATIVES = {"corinfomax": _PROJ, "mec": [*_PROJ, *_PRED]}
SMALL.update(ZOO, **RELATIVES)


def tiny_run(method: str, runs_root: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long CPU run on a real CIFAR-10 subset."""
    return [
        f"method={method}",
        f"runs_root={runs_root}",
        "progress_bar=false",
        "trainer.num_workers=0",
        "data.train_size=64",
        "data.test_size=100",
        "batch_size=16",
        "epochs=1",
        "eval.linear_epochs=5",
        *SMALL[method],
        *extra,
    ]
