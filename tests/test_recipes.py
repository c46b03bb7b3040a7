"""solo-learn's recipes as data: every value of a paper-budget run is the script's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from emim_bench import config, data, recipes

RECIPES = sorted(
    (setting, path.stem)
    for setting in recipes.PAPER_SETTINGS.values()
    for path in (recipes.RECIPE_DIR / setting).glob("*.yaml")
)
BUDGET_OF = {setting: budget for budget, setting in recipes.PAPER_SETTINGS.items()}
REFERENCE = Path(__file__).parents[2] / "shared" / "REFERENCE.md"
SCRIPT_NAMES = {"barlow_twins": "barlow"}


def test_the_four_baselines_have_both_recipes():
    for setting in ("cifar", "imagenet100"):
        for method in ("barlow_twins", "byol", "simclr", "vicreg"):
            assert (setting, method) in RECIPES


@pytest.mark.parametrize(("setting", "method"), RECIPES)
def test_a_paper_budget_config_equals_the_recipe_key_by_key(setting, method):
    cfg = config.load([f"budget={BUDGET_OF[setting]}", f"method={method}"])
    expected = recipes.expected_config(setting, method)
    for key, value in expected.items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == value, f"{key}: config {got!r}, recipe {value!r}"


@pytest.mark.parametrize(("setting", "method"), RECIPES)
def test_the_budget_method_files_are_written_from_the_recipes(setting, method):
    budget = BUDGET_OF[setting]
    path = recipes.budget_method_path(budget, method)
    assert path.read_text() == recipes.budget_method_text(budget, method), (
        f"{path} is stale: run `python -m emim_bench.recipes`"
    )


def test_every_path_composes_the_recipe_as_pretrain_does():
    # Sweeps and --multirun compose with Hydra directly; config.load adds only checks.
    overrides = ["budget=cifar_paper", "method=vicreg", "epochs=2"]
    assert config._compose(overrides) == config.load(overrides)
    assert config._compose(overrides).optim.classifier_lr == 0.3  # the recipe's, not ours


@pytest.mark.parametrize(("setting", "method"), RECIPES)
def test_every_flag_of_a_script_is_taken_or_named_as_a_difference(setting, method):
    flags = recipes.load_flags(setting, method)
    accounted = (
        set(recipes.SHARED_FLAGS)
        | recipes.method_own_flags(method)
        | set(recipes.AUGMENTATION_FLAGS)
        | set(recipes.NAMED_DIFFERENCES)
    )
    assert set(flags) - {recipes.METHOD_FLAG} <= accounted
    assert flags[recipes.METHOD_FLAG] == method


def test_flags_a_script_omits_take_solo_learns_defaults():
    # Barlow Twins' CIFAR script sets no classifier_lr or lamb: solo-learn's 0.3 and 0.0051.
    cfg = config.load(["budget=cifar_paper", "method=barlow_twins"])
    defaults = recipes.solo_defaults("barlow_twins")
    assert cfg.optim.classifier_lr == defaults["classifier_lr"] == 0.3
    assert cfg.method.kwargs.lamb == defaults["lamb"] == 0.0051
    # and the values that differ from our CIFAR method configs (REFERENCE: "things a quick
    # reading gets wrong")
    simclr = config.load(["budget=cifar_paper", "method=simclr"])
    assert simclr.method.weight_decay == 1e-5
    assert all(view["gaussian_prob"] == 0.0 for view in simclr.method.augmentation)
    byol = config.load(["budget=imagenet100_paper", "method=byol"])
    assert byol.method.kwargs.pred_hidden_dim == 8192 and byol.batch_size == 128
    assert [view["gaussian_prob"] for view in byol.method.augmentation] == [1.0, 0.1]


def test_the_users_overrides_win_over_the_recipe():
    cfg = config.load(
        ["budget=cifar_paper", "method=simclr", "method.lr=0.1", "method.augmentation=symmetric"]
    )
    assert cfg.method.lr == 0.1 and cfg.method.augmentation == "symmetric"
    assert cfg.method.weight_decay == 1e-5  # the rest of the recipe still applies
    vit = config.load(["budget=cifar_paper", "method=simclr", "backbone=vit_tiny"])
    assert vit.backbone.encoder == "vit_tiny"  # a chosen backbone is the user's


def test_other_budgets_and_methods_without_a_recipe_are_untouched():
    assert config.load(["method=simclr"]).method.augmentation == "vicreg"  # budget=cpu: ours
    emim = config.load(["budget=cifar_paper", "method=emim"])
    ours = OmegaConf.load(config.CONFIG_DIR / "method" / "emim.yaml")
    assert emim.method.augmentation == ours.augmentation and emim.method.lr == ours.lr


@pytest.mark.skipif(not REFERENCE.is_file(), reason="../shared/REFERENCE.md not beside the repo")
@pytest.mark.parametrize(("setting", "method"), RECIPES)
def test_recipe_files_hold_the_scripts_flags_as_the_reference_lists_them(setting, method):
    text = REFERENCE.read_text()
    heading = "### cifar" if setting == "cifar" else "### imagenet-100"
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    script = SCRIPT_NAMES.get(method, method)
    line = re.search(rf"^- {script}: (.*)$", section, re.M).group(1)
    listed = dict(kv.split("=", 1) for kv in line.split())
    flags = recipes.load_flags(setting, method)
    assert set(flags) == set(listed)
    for flag, text_value in listed.items():
        values = [True if v == "on" else v for v in text_value.split(",")]
        values = [v if isinstance(v, bool) or not _is_number(v) else float(v) for v in values]
        ours = flags[flag] if isinstance(flags[flag], list) else [flags[flag]]
        assert ours == values, f"{flag}: recipe {flags[flag]!r}, reference {text_value!r}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_a_recipes_views_build_the_augmentation_and_bad_views_are_named():
    views = config.load(["budget=cifar_paper", "method=byol"]).method.augmentation
    pair = data.pretrain_transform("cifar10", views, 32)
    assert len(pair.transforms) == 2  # one transform per view: the views differ
    with pytest.raises(ValueError, match="two views with the keys"):
        data.augmentation_views([{"brightness": 0.4}])
    with pytest.raises(ValueError, match="unknown augmentation preset 'nope'"):
        data.augmentation_views("nope")


@pytest.mark.skipif(not REFERENCE.is_file(), reason="../shared/REFERENCE.md not beside the repo")
def test_published_numbers_are_solo_learn_1_0_2s_for_every_method_it_published():
    from emim_bench.report.published import PUBLISHED_ONLINE_ACC1

    text = REFERENCE.read_text()
    cifar = text.split("CIFAR (ResNet-18, 1000 epochs", 1)[1].split("ImageNet-100 (", 1)[0]
    imagenet = text.split("ImageNet-100 (ResNet-18, 400 epochs", 1)[1].split("\n\n(", 1)[0]
    rows = re.findall(r"^\| ([^|]+?) \| ([\d.]+) / [\d.]+ \| ([\d.]+) / [\d.]+ \|$", cifar, re.M)
    online = re.findall(r"^\| ([^|]+?) \| ([\d.]+) \| [\d.]+ \|$", imagenet, re.M)
    assert len(rows) == len(online) == 12
    key = {
        "Barlow Twins": "barlow_twins",
        "DeepCluster V2": "deepclusterv2",
        "MoCo V2+": "mocov2plus",
        "W-MSE": "wmse",
    }  # the others: lower case
    name = lambda shown: key.get(shown, shown.lower())  # noqa: E731
    assert PUBLISHED_ONLINE_ACC1[("cifar10", "resnet18", 1000)] == {
        name(r[0]): float(r[1]) for r in rows
    }
    assert PUBLISHED_ONLINE_ACC1[("cifar100", "resnet18", 1000)] == {
        name(r[0]): float(r[2]) for r in rows
    }
    assert PUBLISHED_ONLINE_ACC1[("imagenet100", "resnet18", 400)] == {
        name(r[0]): float(r[1]) for r in online
    }
