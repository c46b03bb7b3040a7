"""Specification of the weighted kNN classifier (emim_bench.evaluate.knn_accuracy)."""

from __future__ import annotations

import math

import emim_bench.compat  # noqa: F401  (adapts solo-learn before it is imported below)

import pytest
import torch
from helpers import random_split
from solo.utils.knn import WeightedKNNClassifier

from emim_bench.evaluate import knn_accuracy

T = 0.07


def reference_knn(train_x, train_y, test_x, test_y, k, temperature=T, num_classes=None):
    """The classifier written out as plain Python loops over float64 numbers."""

    def unit(rows):
        out = []
        for row in rows.double().tolist():
            norm = math.sqrt(sum(v * v for v in row))
            out.append([v / norm for v in row])
        return out

    bank, queries = unit(train_x), unit(test_x)
    bank_labels, query_labels = train_y.tolist(), test_y.tolist()
    if num_classes is None:
        num_classes = max(bank_labels + query_labels) + 1
    hits1 = hits5 = 0
    for query, label in zip(queries, query_labels):
        sims = [(sum(a * b for a, b in zip(query, row)), i) for i, row in enumerate(bank)]
        nearest = sorted(sims, key=lambda s: (-s[0], s[1]))[:k]
        scores = {}
        for sim, i in nearest:
            scores[bank_labels[i]] = scores.get(bank_labels[i], 0.0) + math.exp(sim / temperature)
        ranking = sorted(range(num_classes), key=lambda c: (-scores.get(c, 0.0), c))
        hits1 += ranking[0] == label
        hits5 += label in ranking[: min(5, num_classes)] and scores.get(label, 0.0) > 0
    return 100.0 * hits1 / len(queries), 100.0 * hits5 / len(queries)


def on_circle(degrees, radius=1.0):
    """2-D features at the given angles (degrees), all at ``radius``."""
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 20, 100])  # 100 > the bank's 60 entries
def test_agrees_with_a_brute_force_loop(seed, k):
    split = random_split(seed)
    expected = reference_knn(*split, k=k)
    assert knn_accuracy(*split, k=k, temperature=T) == expected
    assert all(isinstance(acc, float) for acc in knn_accuracy(*split, k=k))


def test_brute_force_loop_gives_known_values_on_the_circle():
    bank = on_circle([0, 10, -10, 120, 130, 110, 240, 250, 230])
    bank_y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    queries = on_circle([3, 123, 52, 200, 297])
    query_y = torch.tensor([0, 1, 1, 2, 1])
    assert reference_knn(bank, bank_y, queries, query_y, k=3) == (60.0, 80.0)


def test_a_class_without_votes_is_never_a_top5_hit():
    # 20 bank entries of class 3 at (1, 0) and 5 of class 0 at (-1, 0); classes 1 and 2
    # exist (num_classes=4) but have no bank entry. With k=20:
    # query (1, 0), label 0: all 20 votes go to class 3; class 0 scores 0  -> miss, miss
    #   (solo-learn ranks the zero-score classes 0, 1, 2 right after 3 and counts a top-5 hit)
    # query (1, 0), label 3: class 3 wins                                   -> hit, hit
    # query (-1, 0), label 0: 5 votes of weight e^(1/T) for class 0 against 15 of
    #   weight e^(-1/T) for class 3                                          -> hit, hit
    # query (-1, 0), label 3: class 3 is second with a positive score       -> miss, hit
    bank = torch.tensor([[1.0, 0.0]] * 20 + [[-1.0, 0.0]] * 5)
    bank_y = torch.tensor([3] * 20 + [0] * 5)
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    query_y = torch.tensor([0, 3, 0, 3])
    assert knn_accuracy(bank, bank_y, queries, query_y, k=20, num_classes=4) == (50.0, 75.0)
    assert knn_accuracy(bank, bank_y, queries[:1], query_y[:1], k=20) == (0.0, 0.0)


def test_queries_may_lack_classes_that_the_bank_has():
    # Bank: classes 0..9, three entries each around angle 36c degrees; queries only 0..4.
    centres = [36 * c for c in range(10)]
    bank = on_circle([c + d for c in centres for d in (-2, 0, 3)])
    bank_y = torch.arange(10).repeat_interleave(3)
    # Queries of classes 0..4 at their own centres, and one of class 4 at class 6's centre.
    queries = on_circle([0, 36, 72, 108, 144, 216])
    query_y = torch.tensor([0, 1, 2, 3, 4, 4])
    # k=3: the last query gets three votes for class 6 and none for class 4.
    assert knn_accuracy(bank, bank_y, queries, query_y, k=3) == (500 / 6, 500 / 6)
    # k=30 (the whole bank): class 4 (72 degrees away) ranks 4th, behind 6, then 5 and 7.
    assert knn_accuracy(bank, bank_y, queries, query_y, k=30) == (500 / 6, 100.0)
    # Classes 10..14 have no entries at all; they change nothing.
    assert knn_accuracy(bank, bank_y, queries, query_y, k=30, num_classes=15) == (500 / 6, 100.0)

    split = random_split(3, num_classes=10)
    keep = split[3] < 5
    split = (*split[:2], split[2][keep], split[3][keep])
    assert int(split[3].max()) == 4 and int(split[1].max()) == 9
    for k in (1, 5, 20):
        assert knn_accuracy(*split, k=k) == reference_knn(*split, k=k)
        assert knn_accuracy(*split, k=k, num_classes=12) == reference_knn(*split, k, T, 12)


@pytest.mark.parametrize("k", [5, 20])
def test_invariances(k):
    train_x, train_y, test_x, test_y = random_split(4, n_bank=200, n_query=50, width=16)
    expected = knn_accuracy(train_x, train_y, test_x, test_y, k=k)
    assert expected == reference_knn(train_x, train_y, test_x, test_y, k=k)

    gen = torch.Generator().manual_seed(5)
    scale_train = (3 * torch.randn(len(train_x), 1, generator=gen)).exp()
    scale_test = (3 * torch.randn(len(test_x), 1, generator=gen)).exp()
    rescaled = (train_x * scale_train, train_y, test_x * scale_test, test_y)
    assert knn_accuracy(*rescaled, k=k) == expected

    order = torch.randperm(len(train_x), generator=gen)
    assert knn_accuracy(train_x[order], train_y[order], test_x, test_y, k=k) == expected

    for budget in (1, 12 * 200 * 7, 2**40):  # one query, seven queries, all queries a chunk
        split = (train_x, train_y, test_x, test_y)
        assert knn_accuracy(*split, k=k, max_chunk_bytes=budget) == expected


def test_rescaled_copies_in_the_bank_are_exact_ties_at_any_chunk_size():
    # Bank rows 2i and 2i+1 point the same way (small integers times 1..11, exact in
    # float32) and carry classes 0 and 1. Their similarities to any query are equal, so
    # with k=1 the lower index, class 0, must win every time. Plain float32 arithmetic
    # misses this for about 7% of these queries, and by a different count per chunk size.
    gen = torch.Generator().manual_seed(7)
    directions = torch.randint(-20, 21, (100, 16), generator=gen).float()
    scales = torch.randint(1, 12, (200, 1), generator=gen).float()
    bank, bank_y = directions.repeat_interleave(2, 0) * scales, torch.tensor([0, 1] * 100)
    queries, query_y = torch.randn(300, 16, generator=gen), torch.zeros(300, dtype=torch.long)
    for budget in (1, 12 * 200 * 7, 2**40):
        result = knn_accuracy(bank, bank_y, queries, query_y, k=1, max_chunk_bytes=budget)
        assert result == (100.0, 100.0)


def test_known_values_on_the_circle():
    # Three classes, three bank entries each, on circles of different radii.
    bank = torch.cat(
        [
            on_circle([0, 10, -10], radius=1.0),
            on_circle([120, 130, 110], radius=2.0),
            on_circle([240, 250, 230], radius=0.5),
        ]
    )
    bank_y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    queries = on_circle([3, 123, 52, 200, 297], radius=3.0)
    query_y = torch.tensor([0, 1, 1, 2, 1])
    # k=1: the queries at 52 and 297 degrees have neighbours at 10 (class 0) and 250 (class 2).
    assert knn_accuracy(bank, bank_y, queries, query_y, k=1) == (60.0, 60.0)
    # k=3: at 52 degrees the neighbours are 10, 0 (class 0) and 110 (class 1): class 1 is
    # second, a top-5 hit; at 297 degrees they are 250, 350 and 240: class 1 has no vote.
    assert knn_accuracy(bank, bank_y, queries, query_y, k=3) == (60.0, 80.0)
    # k=9: every class gets votes, so every label is among the top 3 (= min(5, 3)) classes.
    assert knn_accuracy(bank, bank_y, queries, query_y, k=9) == (60.0, 100.0)


def test_ties_go_to_the_lower_bank_index_and_the_lower_class():
    # Four identical bank entries; k=2 takes the first two (classes 2 and 1): equal
    # scores, so class 1 ranks first.
    bank = torch.ones(4, 3)
    bank_y = torch.tensor([2, 1, 0, 0])
    query = torch.ones(1, 3)
    assert knn_accuracy(bank, bank_y, query, torch.tensor([1]), k=2) == (100.0, 100.0)
    assert knn_accuracy(bank, bank_y, query, torch.tensor([2]), k=2) == (0.0, 100.0)
    assert knn_accuracy(bank, bank_y, query, torch.tensor([0]), k=2) == (0.0, 0.0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [1, 5, 20, 50])
def test_acc1_equals_solo_learns_classifier(seed, k):
    gen = torch.Generator().manual_seed(seed)
    train_x, test_x = torch.randn(300, 32, generator=gen), torch.randn(100, 32, generator=gen)
    train_y = torch.randint(10, (300,), generator=gen)
    test_y = torch.arange(100) % 10  # every class among the queries, as solo-learn needs
    solo = WeightedKNNClassifier(k=k, T=T, distance_fx="cosine")
    solo.update(
        train_features=torch.nn.functional.normalize(train_x, dim=1),
        train_targets=train_y,
        test_features=torch.nn.functional.normalize(test_x, dim=1),
        test_targets=test_y,
    )
    solo_acc1, _ = solo.compute()
    acc1, _ = knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=T)
    assert acc1 == float(solo_acc1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_device_of_the_bank_with_the_same_result():
    split = random_split(6, n_bank=500, n_query=200, width=32, num_classes=10)
    on_gpu = (split[0].cuda(), split[1].cuda(), split[2], split[3])
    for k in (1, 20, 200):
        assert knn_accuracy(*on_gpu, k=k) == knn_accuracy(*split, k=k)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(test_y=torch.tensor([0, 5])), r"test_labels holds label 5.*num_classes=3"),
        (dict(train_y=torch.tensor([0, 1, 3])), r"train_labels holds label 3.*num_classes=3"),
        (dict(test_y=torch.tensor([0, -1])), r"test_labels holds the negative label -1"),
        (dict(test_x=torch.ones(2, 3)), r"feature widths differ.*has 2.*has 3"),
        (dict(train_x=torch.ones(3)), r"train_features must be 2-D"),
        (dict(test_x=torch.ones(0, 2), test_y=torch.ones(0).long()), r"query set is empty"),
        (dict(train_x=torch.ones(0, 2), train_y=torch.ones(0).long()), r"bank is empty"),
        (dict(test_y=torch.tensor([0, 1, 2])), r"test_labels has 3 entries for 2 feature rows"),
        (dict(train_y=torch.tensor([0.0, 1.0, 2.0])), r"train_labels must be a 1-D integer"),
        (dict(k=0), r"k must be >= 1"),
        (dict(temperature=0.0), r"temperature must be > 0"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(change, message):
    args = dict(
        train_x=torch.eye(3, 2),
        train_y=torch.tensor([0, 1, 2]),
        test_x=torch.eye(2),
        test_y=torch.tensor([0, 1]),
        k=2,
        temperature=T,
    )
    args.update(change)
    with pytest.raises(ValueError, match=message):
        knn_accuracy(
            args["train_x"],
            args["train_y"],
            args["test_x"],
            args["test_y"],
            k=args["k"],
            temperature=args["temperature"],
            num_classes=3,
        )
