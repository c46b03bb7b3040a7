"""Property-based tests (hypothesis): the invariances that specify the evaluators and the loss.

Each property is drawn over random sizes, seeds, scales and maps. The examples are
derandomised (tests/conftest.py), so CI sees the same ones every time; set
HYPOTHESIS_PROFILE=thorough for many more.
"""

from __future__ import annotations

import math

import emim_bench.compat  # noqa: F401  (adapts solo-learn before it is imported below)

import torch
from helpers import random_split
from hypothesis import given
from hypothesis import strategies as st

from emim_bench.evaluate import knn_accuracy, linear_probe_accuracy, top_k_accuracy
from emim_bench.losses import gaussian_mutual_information

F64 = torch.float64
seeds = st.integers(0, 2**31 - 1)


def _well_conditioned(dim: int, gen: torch.Generator) -> torch.Tensor:
    """Random invertible (dim, dim) float64 matrix, singular values in [0.5, 2]."""
    q1, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=F64))
    q2, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=F64))
    singular = 0.5 + 1.5 * torch.rand(dim, generator=gen, dtype=F64)
    return (q1 * singular) @ q2


knn_cases = st.tuples(
    seeds,
    st.integers(1, 80),  # bank size
    st.integers(1, 30),  # queries
    st.integers(2, 12),  # feature width (at 1, every similarity is +-1: exact ties)
    st.integers(1, 12),  # classes
    st.integers(1, 50),  # k
)


@given(case=knn_cases, scale_seed=seeds)
def test_knn_ignores_the_scale_of_each_feature_row_and_the_order_of_the_bank(case, scale_seed):
    seed, n_bank, n_query, width, num_classes, k = case
    bank, bank_y, queries, query_y = random_split(seed, n_bank, n_query, width, num_classes)
    expected = knn_accuracy(bank, bank_y, queries, query_y, k=k, num_classes=num_classes)

    gen = torch.Generator().manual_seed(scale_seed)
    # Powers of two rescale exactly, so the normalised features are bit-identical.
    bank_scale = 2.0 ** torch.randint(-8, 9, (n_bank, 1), generator=gen)
    query_scale = 2.0 ** torch.randint(-8, 9, (n_query, 1), generator=gen)
    order = torch.randperm(n_bank, generator=gen)
    got = knn_accuracy(
        (bank * bank_scale)[order],
        bank_y[order],
        queries * query_scale,
        query_y,
        k=k,
        num_classes=num_classes,
    )
    assert got == expected


@given(case=knn_cases)
def test_knn_acc1_is_at_most_acc5_and_both_are_multiples_of_one_query(case):
    seed, n_bank, n_query, width, num_classes, k = case
    acc1, acc5 = knn_accuracy(*random_split(seed, n_bank, n_query, width, num_classes), k=k)
    assert 0.0 <= acc1 <= acc5 <= 100.0
    for acc in (acc1, acc5):
        hits = acc * n_query / 100.0
        assert math.isclose(hits, round(hits), abs_tol=1e-9)


@given(seed=seeds, n=st.integers(2, 60), width=st.integers(2, 12), num_classes=st.integers(1, 9))
def test_knn_with_k1_finds_each_bank_entry_itself(seed, n, width, num_classes):
    """Queried with its own bank at k = 1, every entry's nearest neighbour is itself."""
    bank, labels, _, _ = random_split(seed, n, 1, width, num_classes)
    assert knn_accuracy(bank, labels, bank, labels, k=1) == (100.0, 100.0)


@given(
    seed=seeds,
    n=st.integers(1, 40),
    num_classes=st.integers(1, 15),
    shift=st.floats(-100, 100),
    scale=st.floats(0.1, 10),
)
def test_top_k_is_invariant_to_increasing_maps_of_the_logits(seed, n, num_classes, shift, scale):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, num_classes, generator=gen, dtype=F64)
    labels = torch.randint(num_classes, (n,), generator=gen)
    acc1, acc5 = top_k_accuracy(logits, labels)
    assert top_k_accuracy(scale * logits + shift, labels) == (acc1, acc5)
    assert top_k_accuracy(logits.exp(), labels) == (acc1, acc5)
    assert acc1 <= acc5
    if num_classes <= 5:
        assert acc5 == 100.0


@given(seed=seeds, width=st.integers(1, 6), num_classes=st.integers(2, 5), scale_seed=seeds)
def test_the_probe_is_invariant_to_rescaling_a_feature_in_both_splits(
    seed, width, num_classes, scale_seed
):
    """Standardising with the training statistics removes any per-feature scale (powers of
    two, so exactly); scaling the test split alone is not removed."""
    train_x, train_y, test_x, test_y = random_split(seed, 48, 24, width, num_classes)
    gen = torch.Generator().manual_seed(scale_seed)
    scale = 2.0 ** torch.randint(-6, 7, (width,), generator=gen)
    probe = dict(num_classes=num_classes, epochs=3, batch_size=16)
    expected = linear_probe_accuracy(train_x, train_y, test_x, test_y, **probe)
    assert linear_probe_accuracy(train_x * scale, train_y, test_x * scale, test_y, **probe) == (
        expected
    )
    assert expected[0] <= expected[1]


@given(seed=seeds, width=st.integers(1, 8), n=st.integers(40, 120), map_seed=seeds)
def test_gaussian_mi_is_invariant_to_invertible_linear_maps_of_each_view(seed, width, n, map_seed):
    """Theorem 1 is a function of the joint covariance that any invertible per-view map
    leaves unchanged: exactly so without the ridge and the standardisation."""
    gen = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, width, generator=gen, dtype=F64)
    z2 = z1 @ torch.randn(width, width, generator=gen, dtype=F64) + torch.randn(
        n, width, generator=gen, dtype=F64
    )
    maps = torch.Generator().manual_seed(map_seed)
    a, b = _well_conditioned(width, maps), _well_conditioned(width, maps)
    before = gaussian_mutual_information(z1, z2, eps=0.0, standardize=False)
    after = gaussian_mutual_information(z1 @ a, z2 @ b, eps=0.0, standardize=False)
    assert math.isclose(after.item(), before.item(), rel_tol=1e-7, abs_tol=1e-9)


eps_values = st.sampled_from([1e-3, 1e-2, 0.1])


@given(seed=seeds, width=st.integers(1, 64), n=st.integers(8, 64), eps=eps_values)
def test_standardised_mi_ignores_per_dimension_scale_and_shift_and_the_row_order(
    seed, width, n, eps
):
    """With standardisation the ridge is relative, so the estimate (either form) does not
    move under a positive rescaling and shift of any dimension, or a joint row shuffle."""
    gen = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, width, generator=gen, dtype=F64)
    z2 = z1 + 0.5 * torch.randn(n, width, generator=gen, dtype=F64)
    scale = torch.exp(2 * torch.randn(2, width, generator=gen, dtype=F64))
    shift = 10 * torch.randn(2, width, generator=gen, dtype=F64)
    order = torch.randperm(n, generator=gen)
    before = gaussian_mutual_information(z1, z2, eps=eps)
    after = gaussian_mutual_information(
        (z1 * scale[0] + shift[0])[order], (z2 * scale[1] + shift[1])[order], eps=eps
    )
    assert math.isclose(after.item(), before.item(), rel_tol=1e-8, abs_tol=1e-8)
