"""The names and the order a report gives its methods and their variants."""

from __future__ import annotations

import pytest

from emim_bench.report.labels import (
    HEADLINE_METRICS,
    METRIC_LABELS,
    base_method,
    method_label,
    method_order,
)


@pytest.mark.parametrize(
    ("group", "base"),
    [
        ("emim D=64 eps=1e-2", "emim"),
        ("random", "random"),
        ("barlow_twins lr=4e-3", "barlow_twins"),
    ],
)
def test_base_method_is_the_registry_name_before_the_settings(group, base):
    assert base_method(group) == base


@pytest.mark.parametrize(
    ("group", "label"),
    [
        ("emim D=64 eps=1e-2", "EMIM D=64 eps=1e-2"),
        ("barlow_twins", "Barlow Twins"),
        ("random", "random init"),
        ("vicreg aug=vicreg", "VICReg aug=vicreg"),
        ("nope x=1", "nope x=1"),
    ],
)
def test_method_label_names_the_method_and_keeps_its_settings(group, label):
    assert method_label(group) == label


def test_emim_first_baselines_alphabetically_floor_last_variants_by_value():
    groups = [
        "random",
        "vicreg",
        "emim D=128",
        "emim D=32",
        "byol",
        "emim D=1024",
        "barlow_twins",
        "emim D=32",  # a duplicate is listed once
    ]
    assert method_order(groups) == [
        "emim D=32",
        "emim D=128",
        "emim D=1024",
        "barlow_twins",
        "byol",
        "vicreg",
        "random",
    ]


def test_variants_numbers_before_words_then_words_alphabetically_key_by_key():
    groups = ["simclr aug=vicreg", "simclr aug=symmetric", "simclr aug=2", "simclr"]
    assert method_order(groups) == [
        "simclr",
        "simclr aug=2",
        "simclr aug=symmetric",
        "simclr aug=vicreg",
    ]
    # the first setting decides before the second; numbers compare by value, not as text
    two_keys = ["emim D=64 eps=1e-1", "emim D=64 eps=1e-3", "emim D=8 eps=1"]
    assert method_order(two_keys) == ["emim D=8 eps=1", "emim D=64 eps=1e-3", "emim D=64 eps=1e-1"]


def test_every_headline_metric_has_a_label():
    assert set(METRIC_LABELS) == set(HEADLINE_METRICS)
