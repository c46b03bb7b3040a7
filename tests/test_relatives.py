"""Specification of EMIM's log-determinant relatives: CorInfoMax and MEC (emim_bench.losses,
emim_bench.methods), tested against their definitions."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers import assert_two_ranks_match_one_process, tiny_run

from emim_bench.losses import (
    RunningMoments,
    corinfomax_loss_func,
    initial_moments,
    mec_lambda,
    mec_lambda_warmup,
    mec_loss_func,
    taylor_logdet,
    update_moments,
)
from emim_bench.methods import MEC, CorInfoMax, build_method

F64 = torch.float64


def _views(n=32, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=gen, dtype=F64)
    return z1, z1 + 0.3 * torch.randn(n, d, generator=gen, dtype=F64)


def _no_memory(d):
    """Forgetting factors 0: the estimates are the batch's alone."""
    return dict(moments1=initial_moments(d), moments2=initial_moments(d), la_R=0.0, la_mu=0.0)


# ---- CorInfoMax ----------------------------------------------------------------------------------


def test_corinfomax_logdet_term_is_minus_the_batch_covariances_logdets_over_d():
    z1, z2 = _views()
    eps = 1e-3
    _, logdet_term, _, _ = corinfomax_loss_func(z1, z2, eps=eps, **_no_memory(6))
    expected = 0.0
    for z in (z1, z2):
        biased = torch.cov(z.T, correction=0) + eps * torch.eye(6, dtype=F64)
        expected -= torch.linalg.slogdet(biased).logabsdet / 6
    assert logdet_term.item() == pytest.approx(expected.item(), abs=1e-12)


def test_corinfomax_logdet_term_of_axis_aligned_embeddings_in_closed_form():
    # Rows +-s_j e_j: mean 0 and biased covariance diag(2 s_j^2 / N), so the term is
    # -sum_j log(2 s_j^2 / N + eps) / D for each view.
    scales = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=F64)
    z = torch.cat([torch.diag(scales), -torch.diag(scales)])  # (8, 4)
    eps = 1e-2
    _, logdet_term, mse, _ = corinfomax_loss_func(z, z, eps=eps, **_no_memory(4))
    per_view = -torch.log(2 * scales**2 / 8 + eps).sum().item() / 4
    assert logdet_term.item() == pytest.approx(2 * per_view, abs=1e-12)
    assert mse.item() == 0.0


def test_corinfomax_loss_is_alpha_times_the_mse_plus_the_logdet_term():
    z1, z2 = _views(seed=1)
    loss, logdet_term, mse, _ = corinfomax_loss_func(z1, z2, alpha=250.0, **_no_memory(6))
    assert mse.item() == pytest.approx(F.mse_loss(z1, z2).item(), abs=1e-14)
    assert loss.item() == pytest.approx(250.0 * mse.item() + logdet_term.item(), abs=1e-10)


def test_running_estimates_of_one_repeated_batch_converge_to_its_moments():
    # mean_k = (1 - la_mu^k) mean(z) in closed form; the covariance's fixed point is the
    # batch's biased covariance.
    z = _views(n=20, d=5, seed=2)[0]
    moments = initial_moments(5, r_ini=3.0)
    for _ in range(3):
        moments = update_moments(z, moments, la_R=0.3, la_mu=0.2)
    torch.testing.assert_close(moments.mean, (1 - 0.2**3) * z.mean(0), rtol=0, atol=1e-14)
    for _ in range(100):
        moments = update_moments(z, moments, la_R=0.3, la_mu=0.2)
    torch.testing.assert_close(moments.cov, torch.cov(z.T, correction=0), rtol=0, atol=1e-12)


def test_one_update_centres_the_batch_by_the_new_running_mean():
    z = torch.tensor([[1.0, 2.0], [3.0, 0.0], [2.0, 4.0]], dtype=F64)  # batch mean (2, 2)
    start = RunningMoments(torch.tensor([4.0, -2.0], dtype=F64), torch.eye(2, dtype=F64))
    moments = update_moments(z, start, la_R=0.3, la_mu=0.25)
    mean = torch.tensor([0.25 * 4 + 0.75 * 2, 0.25 * -2 + 0.75 * 2], dtype=F64)  # (2.5, 1.0)
    centred = z - mean
    expected = 0.3 * torch.eye(2, dtype=F64) + 0.7 * centred.T @ centred / 3
    torch.testing.assert_close(moments.mean, mean, rtol=0, atol=1e-15)
    torch.testing.assert_close(moments.cov, expected, rtol=0, atol=1e-14)


def test_running_covariance_weighs_the_previous_estimate_by_la_r():
    z = _views(n=20, d=5, seed=3)[0]
    start = RunningMoments(z.mean(0), 2.0 * torch.eye(5, dtype=F64))  # mean already z's
    moments = update_moments(z, start, la_R=0.25, la_mu=0.9)
    expected = 0.25 * 2.0 * torch.eye(5, dtype=F64) + 0.75 * torch.cov(z.T, correction=0)
    torch.testing.assert_close(moments.cov, expected, rtol=0, atol=1e-14)


def test_corinfomax_returns_detached_estimates_and_its_gradient_matches_finite_differences():
    z1, z2 = _views(n=12, d=3, seed=4)
    z1.requires_grad_(True)
    state = dict(moments1=initial_moments(3), moments2=initial_moments(3))
    _, _, _, (new1, new2) = corinfomax_loss_func(z1, z2, **state)
    assert not (new1.cov.requires_grad or new2.mean.requires_grad)
    assert torch.autograd.gradcheck(lambda a: corinfomax_loss_func(a, z2, **state)[0], (z1,))


def test_corinfomax_rejects_bad_arguments():
    z1, z2 = _views()
    with pytest.raises(ValueError, match="la_R and la_mu must be in"):
        corinfomax_loss_func(z1, z2, initial_moments(6), initial_moments(6), la_R=1.0)
    with pytest.raises(ValueError, match="equal shapes"):
        corinfomax_loss_func(z1, z2[:, :3], initial_moments(6), initial_moments(6))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        corinfomax_loss_func(z1, z2, initial_moments(6), initial_moments(6), eps=-1.0)


def test_a_singular_covariance_raises_naming_the_fix_or_gives_nan_unchecked():
    z = torch.zeros(8, 4, dtype=F64)  # no variance at all, and no ridge
    state = _no_memory(4)
    with pytest.raises(torch.linalg.LinAlgError, match="CorInfoMax: .*method.kwargs.eps"):
        corinfomax_loss_func(z, z, eps=0.0, **state)
    assert corinfomax_loss_func(z, z, eps=0.0, check=False, **state)[0].isnan()


# ---- MEC -----------------------------------------------------------------------------------------


def test_taylor_series_of_a_small_matrix_is_its_log_determinant():
    gen = torch.Generator().manual_seed(5)
    c = 0.1 * torch.randn(6, 6, generator=gen, dtype=F64)  # not symmetric, spectral radius < 1
    exact = torch.linalg.slogdet(torch.eye(6, dtype=F64) + c).logabsdet
    assert taylor_logdet(c, order=40).item() == pytest.approx(exact.item(), abs=1e-12)


def test_taylor_series_of_order_4_in_closed_form():
    a, m = 0.3, 5
    expected = m * (a - a**2 / 2 + a**3 / 3 - a**4 / 4)
    value = taylor_logdet(a * torch.eye(m, dtype=F64), order=4).item()
    assert value == pytest.approx(expected, abs=1e-14)


def test_mec_first_order_term_is_the_mean_cosine_of_the_cross_view_pairs():
    o1, o2 = _views(n=10, d=4, seed=6)
    t1, t2 = _views(n=10, d=4, seed=7)
    cosine = F.cosine_similarity(t1, o2).sum() + F.cosine_similarity(t2, o1).sum()
    loss = mec_loss_func(o1, o2, t1, t2, lamda=0.37, order=1)
    assert loss.item() == pytest.approx(-cosine.item() / 20, abs=1e-14)


def test_mec_loss_is_the_scaled_coding_length_of_the_cross_view_similarities():
    o1, o2 = _views(n=10, d=4, seed=8)
    t1, t2 = _views(n=10, d=4, seed=9)
    lam, n = 0.05, 10
    o1n, o2n, t1n, t2n = (F.normalize(x, dim=1) for x in (o1, o2, t1, t2))
    eye = torch.eye(n, dtype=F64)
    logdets = sum(
        torch.linalg.slogdet(eye + lam * t @ o.T).logabsdet for t, o in ((t1n, o2n), (t2n, o1n))
    )
    loss = mec_loss_func(o1, o2, t1, t2, lamda=lam, order=30)
    assert loss.item() == pytest.approx(-logdets.item() / (2 * n * lam), abs=1e-12)


def test_mec_is_invariant_to_the_embeddings_scale_and_sends_no_gradient_to_the_targets():
    o1, o2 = (o.requires_grad_(True) for o in _views(n=10, d=4, seed=10))
    t1, t2 = (t.requires_grad_(True) for t in _views(n=10, d=4, seed=11))
    loss = mec_loss_func(o1, o2, t1, t2, lamda=0.2)
    assert mec_loss_func(3 * o1, 0.5 * o2, 7 * t1, t2, lamda=0.2).item() == pytest.approx(
        loss.item(), abs=1e-14
    )
    loss.backward()
    assert t1.grad is None and t2.grad is None


def test_mec_lambda_and_its_warm_up_follow_the_authors_code():
    lam = mec_lambda(batch_size=1024, dim=2048, eps=64.0)
    assert lam == pytest.approx(1 / 32)
    assert mec_lambda_warmup(0, 11, lam) == pytest.approx(lam / 8)  # 1/lambda starts at 8/lambda
    assert 1 / mec_lambda_warmup(5, 11, lam) == pytest.approx(4.5 / lam)  # linear in 1/lambda
    assert mec_lambda_warmup(10, 11, lam) == pytest.approx(lam)
    assert mec_lambda_warmup(500, 11, lam) == lam
    assert mec_lambda_warmup(0, 0, lam) == lam  # no warm-up


def test_mec_rejects_bad_arguments():
    o1, o2 = _views(n=10, d=4)
    with pytest.raises(ValueError, match="one shape"):
        mec_loss_func(o1, o2, o1[:, :2], o2, lamda=0.1)
    with pytest.raises(ValueError, match="lamda must be > 0"):
        mec_loss_func(o1, o2, o1, o2, lamda=0.0)
    with pytest.raises(ValueError, match="eps > 0"):
        mec_lambda(64, 128, 0.0)


# ---- DDP: both losses see the global batch -------------------------------------------------------


def _corinfomax_loss(z1, z2):
    return corinfomax_loss_func(z1, z2, initial_moments(6), initial_moments(6), alpha=2.0)[0]


def _mec_loss(z1, z2):
    return mec_loss_func(z1, z2, z1.detach(), z2.detach(), lamda=0.3)


@pytest.mark.skipif(
    not dist.is_available() or "fork" not in mp.get_all_start_methods(),
    reason="needs torch.distributed (gloo) and the fork start method",
)
def test_ddp_two_ranks_match_one_process_for_corinfomax_and_mec(tmp_path):
    losses = {"corinfomax": _corinfomax_loss, "mec": _mec_loss}
    assert_two_ranks_match_one_process(losses, tmp_path)


# ---- the methods ---------------------------------------------------------------------------------


def _build(name, **own):
    """``name`` built from its config (batch 8, ResNet-18) with ``own`` kwargs replaced."""
    from emim_bench import config
    from emim_bench.run import trainer as run_trainer

    cfg = config.load([f"method={name}", "batch_size=8"])
    return build_method(name, **{**run_trainer.method_kwargs(cfg, num_classes=10), **own})


def _batch(n=8, seed=12):
    gen = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 3, 32, 32, generator=gen) for _ in range(2)]
    return torch.arange(n), views, torch.randint(10, (n,), generator=gen)


def test_corinfomax_step_updates_its_running_estimates_which_a_checkpoint_keeps():
    method = _build("corinfomax", proj_hidden_dim=16, proj_output_dim=4)
    assert isinstance(method, CorInfoMax)
    torch.testing.assert_close(method.running_cov1, torch.eye(4, dtype=F64))
    loss = method.training_step(_batch(), 0)
    assert loss.isfinite()
    assert not torch.equal(method.running_cov1, torch.eye(4, dtype=F64))
    assert method.running_cov1.dtype == F64 and not method.running_cov1.requires_grad
    state = method.state_dict()
    assert {"running_mean1", "running_cov1", "running_mean2", "running_cov2"} <= set(state)
    fresh = _build("corinfomax", proj_hidden_dim=16, proj_output_dim=4)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.running_cov2, method.running_cov2, rtol=0, atol=0)


def test_corinfomax_step_updates_each_views_estimates_from_that_views_embeddings():
    method = _build(
        "corinfomax", proj_hidden_dim=16, proj_output_dim=4, R_ini=2.0, la_R=0.3, la_mu=0.2
    )
    batch = _batch()
    method.training_step(batch, 0)
    for view, images in zip((1, 2), batch[1]):
        z = method.embed(method.encoder(images))  # the same weights: no optimizer step ran
        expected = update_moments(z, initial_moments(4, r_ini=2.0), la_R=0.3, la_mu=0.2)
        mean, cov = getattr(method, f"running_mean{view}"), getattr(method, f"running_cov{view}")
        torch.testing.assert_close(mean, expected.mean.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(cov, expected.cov.detach(), rtol=0, atol=1e-6)


def test_corinfomax_normalises_its_embeddings():
    method = _build("corinfomax", proj_hidden_dim=16, proj_output_dim=4)
    z = method.embed(torch.randn(5, method.features_dim))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))


def test_mec_builds_its_authors_architecture():
    method = _build("mec", proj_output_dim=32, pred_hidden_dim=8)
    assert isinstance(method, MEC)
    projector = method.projector
    assert projector[0].in_features == method.features_dim == projector[0].out_features
    assert isinstance(projector[-1], torch.nn.BatchNorm1d) and not projector[-1].affine
    assert (method.projector, method.momentum_projector) in method.momentum_pairs
    for online, target in zip(
        method.projector.parameters(), method.momentum_projector.parameters()
    ):
        assert torch.equal(online, target) and not target.requires_grad
    assert method.current_lambda(local_batch=8, dim=32) == pytest.approx(32 / (8 * 64.0))
    assert method.training_step(_batch(), 0).isfinite()


def test_mec_scores_each_views_prediction_against_the_other_views_momentum_projection(
    monkeypatch,
):
    import emim_bench.methods.mec as mec_module

    method = _build("mec", proj_output_dim=32, pred_hidden_dim=8)
    with torch.no_grad():  # a momentum branch that differs from the online one
        for p in method.momentum_projector.parameters():
            p.add_(0.1 * torch.randn_like(p))
    calls = []
    real = mec_module.mec_loss_func
    monkeypatch.setattr(
        mec_module, "mec_loss_func", lambda *a, **k: calls.append((a, k)) or real(*a, **k)
    )
    batch = _batch()
    method.training_step(batch, 0)
    ((args, kwargs),) = calls
    x1, x2 = batch[1]
    with torch.no_grad():
        online = [method.predictor(method.projector(method.encoder(x))) for x in (x1, x2)]
        target = [method.momentum_projector(method.momentum_encoder(x)) for x in (x1, x2)]
    for got, want in zip(args[:4], [*online, *target]):
        torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-5)
    assert args[4] == pytest.approx(mec_lambda(8, 32, 64.0)) and kwargs == {"order": 4}


def test_mec_lambda_counts_the_global_batch_and_optimizer_steps(monkeypatch):
    from types import SimpleNamespace

    method = _build("mec", proj_output_dim=32, pred_hidden_dim=8, lambda_warmup_epochs=1)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    assert method.current_lambda(local_batch=8, dim=32) == pytest.approx(mec_lambda(16, 32, 64.0))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    trainer = SimpleNamespace(num_training_batches=8, accumulate_grad_batches=2, global_step=3)
    method._trainer = trainer  # 8 batches of which every 2 make a step: warm-up of 4 steps
    lam = mec_lambda(8, 32, 64.0)
    assert method.current_lambda(8, 32) == pytest.approx(lam)
    trainer.global_step = 0
    assert method.current_lambda(8, 32) == pytest.approx(lam / 8)
    trainer.num_training_batches = float("inf")
    with pytest.raises(ValueError, match="lambda_warmup_epochs=0"):
        method.current_lambda(8, 32)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("corinfomax", {"proj_hidden_dim": 16, "proj_output_dim": 4, "la_R": 1.5}, "la_R"),
        ("corinfomax", {"proj_hidden_dim": 0, "proj_output_dim": 4}, "proj_hidden_dim"),
        (
            "corinfomax",
            {"proj_hidden_dim": 16, "proj_output_dim": 4, "check_every_n_steps": 0},
            "check_every_n_steps",
        ),
        ("mec", {"proj_output_dim": 32, "pred_hidden_dim": 8, "eps": -1.0}, "MEC: eps"),
        ("mec", {"proj_output_dim": 32, "pred_hidden_dim": 8, "order": 0}, "MEC: order"),
    ],
)
def test_bad_hyperparameters_are_named(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _build(name, **kwargs)


def test_mec_warms_lambda_up_over_its_epochs_in_a_trainer(tmp_path, cifar10_npz_path):
    from emim_bench.cli import main
    from emim_bench.run import directory as run_directory

    overrides = tiny_run(
        "mec",
        tmp_path,
        "epochs=2",
        "eval.linear_epochs=1",
        "method.kwargs.proj_output_dim=32",
        "method.kwargs.pred_hidden_dim=16",
        "method.kwargs.lambda_warmup_epochs=2",
    )
    assert main(["pretrain", *overrides]) == 0
    (run,) = (tmp_path / "default").iterdir()
    curve = run_directory.read_curve(run / run_directory.CURVE_FILE)
    lam = mec_lambda(16, 32, 64.0)
    # 4 steps per epoch, 8 steps of warm-up: 1/lambda falls linearly from 8/lambda to 1/lambda
    inverse = [8 / lam + (1 / lam - 8 / lam) * step / 7 for step in range(8)]
    expected = [sum(1 / v for v in inverse[e * 4 : (e + 1) * 4]) / 4 for e in (0, 1)]
    assert curve["train_mec_lambda"].tolist() == pytest.approx(expected, rel=1e-6)
    assert math.isfinite(curve["train_mec_loss"].iloc[-1])


def test_every_relative_is_a_method_choice_with_a_cifar_paper_setting():
    from emim_bench import config

    for name, lr in (("corinfomax", 0.25), ("mec", 0.5)):
        cfg = config.load([f"method={name}", "budget=cifar_paper"])
        assert cfg.method.name == name and cfg.method.lr == lr
        assert cfg.optim.lars is False and cfg.optim.optimizer == "sgd"
    assert config.load(["method=corinfomax", "budget=cifar_paper"]).batch_size == 512
