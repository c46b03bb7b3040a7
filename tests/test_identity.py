"""A run's identity: its id and folder are a pure function of what it computes."""

from __future__ import annotations

from pathlib import Path

import pytest

from emim_bench import config
from emim_bench.run import identity as run_identity

REPO = Path(__file__).resolve().parents[1]


def test_run_dir_is_a_pure_function_of_the_config(tmp_path):
    a = config.load(["method=emim", f"runs_root={tmp_path}"])
    b = config.load(["method=emim", f"runs_root={tmp_path / 'elsewhere'}", "progress_bar=true"])
    c = config.load(["method=emim", f"runs_root={tmp_path}", "seed=1"])
    d = config.load(["method=emim", f"runs_root={tmp_path}", "method.kwargs.eps=0.1"])
    assert run_identity.run_id(a) == run_identity.run_id(b)
    assert run_identity.run_id(c).startswith("emim-cifar10-resnet18-s1-")
    assert len({run_identity.run_id(x) for x in (a, c, d)}) == 3


def test_the_ids_of_earlier_runs_stay_valid():
    """Ids of runs committed reports were made from: a config key added later at its
    default (data.val_size=null) must not change them."""
    ids = {
        "emim-cifar10-resnet18-s0-8ac206cd": ["method=emim", "budget=cpu"],
        "simclr-cifar10-resnet18-s2-491f95a5": [
            "method=simclr",
            "budget=cpu",
            "data.train_size=5000",
            "seed=2",
        ],
    }
    for expected, overrides in ids.items():
        assert run_identity.run_id(config.load(overrides)) == expected
    with_val = config.load(["method=emim", "budget=cpu", "data.val_size=5000"])
    assert run_identity.run_id(with_val) != "emim-cifar10-resnet18-s0-8ac206cd"


def test_where_and_how_verbosely_a_run_is_logged_leave_its_id_alone(tmp_path):
    base = ["method=emim", "budget=cpu"]
    expected = run_identity.run_id(config.load(base))
    for extra in (
        f"runs_root={tmp_path}",
        "sweep=other",
        f"data_root={tmp_path}",
        "data.download=true",
        "progress_bar=false",
        "trainer.log_every_n_steps=1",
    ):
        assert run_identity.run_id(config.load([*base, extra])) == expected, extra
    for changed in ("seed=1", "batch_size=32", "data.train_size=100", "method.lr=0.01"):
        assert run_identity.run_id(config.load([*base, changed])) != expected, changed
    assert run_identity.run_dir(config.load([*base, f"runs_root={tmp_path}"])) == (
        tmp_path / "default" / expected
    )


def test_the_id_is_a_function_of_resolved_values_and_needs_only_the_naming_keys():
    from omegaconf import OmegaConf

    base = ["method=emim", "budget=cpu"]
    literal = config.load([*base, "epochs=64"])
    interpolated = config.load([*base, "epochs=${batch_size}"])  # batch_size is 64
    assert run_identity.run_id(interpolated) == run_identity.run_id(literal)
    # A config holding none of the logging keys, nor data.val_size, still has an id.
    minimal = OmegaConf.create(
        {"method": {"name": "emim"}, "data": {"name": "cifar10"}, "backbone": {"name": "r18"}}
    )
    minimal.seed = 3
    assert run_identity.run_id(minimal).startswith("emim-cifar10-r18-s3-")


# Runs of a committed report that its sweep no longer plans, mapped to the run planned in
# their place: the report keeps them, since its other runs are not redone for one changed
# default.
_REPORTED_BUT_NO_LONGER_PLANNED = {
    "zoo_cpu": {
        # BYOL trained at lr 4e-3 before budget_method/cpu_byol.yaml set 1e-3; the zoo now
        # plans the demo's BYOL run in its place.
        "byol-cifar10-resnet18-s0-524e2730": "byol-cifar10-resnet18-s0-bee647fa",
    },
}


_COMMITTED_REPORTS = sorted(p.parent.name for p in (REPO / "reports").glob("*/results.csv"))


def test_the_committed_reports_are_found():
    assert {"cpu_demo", "cifar10_cpu_budget", "zoo_cpu"} <= set(_COMMITTED_REPORTS)


@pytest.mark.parametrize("sweep", _COMMITTED_REPORTS)
def test_a_committed_report_shows_the_runs_its_sweep_plans(sweep, tmp_path):
    """``reports/<sweep>/results.csv`` lists, apart from runs it marks stale, exactly the
    runs ``sweeps/<sweep>.yaml`` plans today: a changed default, sweep file or identity rule
    that would leave a committed report unreproducible fails here."""
    import pandas as pd

    from emim_bench.sweep.file import load_sweep
    from emim_bench.sweep.plan import plan

    table = pd.read_csv(REPO / "reports" / sweep / "results.csv")
    reported = set(table.loc[table["status"] != "stale", "run_id"])
    for old, new in _REPORTED_BUT_NO_LONGER_PLANNED.get(sweep, {}).items():
        assert old in reported and new not in reported
        reported = reported - {old} | {new}
    planned = plan(load_sweep(REPO / "sweeps" / f"{sweep}.yaml"), [f"runs_root={tmp_path}"])
    assert {run.run_id for run in planned} == reported


def test_device_settings_at_the_cpu_defaults_leave_the_id_alone_and_others_change_it():
    base = ["method=emim", "budget=cpu"]
    expected = "emim-cifar10-resnet18-s0-8ac206cd"  # made before the keys existed
    cpu_defaults = [
        "trainer.channels_last=false",
        "trainer.cudnn_benchmark=false",
        "trainer.persistent_workers=true",
        "trainer.pin_memory=false",
        "trainer.finite_check_every=1",
    ]
    assert run_identity.run_id(config.load([*base, *cpu_defaults])) == expected
    # How batches reach the device and how often the loss is checked: the same numbers.
    for same in ("trainer.pin_memory=true", "trainer.finite_check_every=50"):
        assert run_identity.run_id(config.load([*base, same])) == expected, same
    # Other kernels, or loader workers drawing other augmentations: other numbers.
    changed = {
        run_identity.run_id(config.load([*base, other]))
        for other in (
            "trainer.channels_last=true",
            "trainer.cudnn_benchmark=true",
            "trainer.persistent_workers=false",
        )
    }
    assert len(changed) == 3 and expected not in changed


def test_a_config_written_before_the_device_settings_has_the_id_it_had():
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(config.load(["method=emim", "budget=cpu"]), resolve=True)
    for key in ("channels_last", "cudnn_benchmark", "persistent_workers", "pin_memory"):
        del cfg["trainer"][key]
    del cfg["trainer"]["finite_check_every"]
    old = OmegaConf.create(cfg)
    assert run_identity.run_id(old) == "emim-cifar10-resnet18-s0-8ac206cd"
    config.check_values(old)  # and it is still a valid config (emim-bench evaluate reads it)
