"""The sweep file: read, validated, and expanded into each run's overrides (no torch)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from emim_bench import config
from emim_bench.sweep.launchers import LAUNCHERS, LauncherOptionError, options_by_launcher

# Seeds from here on are kept for selection sweeps, so that no setting is chosen with a seed
# a report then shows.
SELECTION_SEEDS_FROM = 100


class SweepError(ValueError):
    """A malformed sweep file; the message names the file, the key and the fix."""


@dataclass
class Sweep:
    """A parsed sweep file."""

    name: str
    overrides: list[str]
    grids: list[dict[str, list]]  # a grid, or several whose runs are pooled
    launcher: str = "basic"
    launcher_options: dict[str, dict] = field(default_factory=dict)  # {launcher: {option: value}}
    notes: str = ""
    selection: bool = False
    path: Path | None = None

    def options_for(self, launcher: str) -> dict:
        """The file's ``launcher_options`` for ``launcher`` ({} when it gives none)."""
        return dict(self.launcher_options.get(launcher, {}))


def read_sweep(path: str | Path) -> Sweep:
    """Read a sweep file and check its structure (keys, types, launcher), not its configs.

    Raises:
        SweepError: missing file, malformed YAML, missing or mistyped keys, unknown
            launcher, launcher options a launcher does not accept
            (:func:`~emim_bench.sweep.launchers.options_by_launcher`).
    """
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepError(f"{path}: malformed YAML: {' '.join(str(error).split())}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping with keys name, overrides, grid, launcher")
    known = {"name", "overrides", "grid", "launcher", "launcher_options", "notes", "selection"}
    unknown = set(raw) - known
    if unknown:
        raise SweepError(f"{path}: unknown keys {sorted(unknown)}")
    name = raw.get("name") or path.stem
    grid = raw.get("grid") or {}
    overrides = raw.get("overrides") or []
    grids = grid if isinstance(grid, list) else [grid]
    for grid in grids:
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise SweepError(
                f"{path}: grid must map config keys to non-empty lists of values (or be a "
                "list of such maps, one per one-factor ablation)"
            )
    if not isinstance(overrides, list):
        raise SweepError(f"{path}: overrides must be a list of KEY=VALUE strings")
    notes = raw.get("notes") or ""
    if not isinstance(notes, str):
        raise SweepError(f"{path}: notes must be text (paragraphs), e.g. notes: |")
    if not isinstance(raw.get("launcher_options") or {}, dict):
        raise SweepError(f"{path}: launcher_options must be a mapping, e.g. {{n_jobs: 2}}")
    if "/" in str(name) or str(name).startswith("."):
        raise SweepError(f"{path}: name must be a plain folder name, got {name!r}")
    for grid in grids:
        for key, values in grid.items():
            if len({str(v) for v in values}) < len(values):
                raise SweepError(f"{path}: grid.{key} lists a value twice: {values}")
    if not isinstance(raw.get("selection", False), bool):
        raise SweepError(f"{path}: selection must be true or false")
    launcher = raw.get("launcher", "basic")
    if launcher not in LAUNCHERS:
        raise SweepError(f"{path}: unknown launcher {launcher!r}; choose one of {list(LAUNCHERS)}")
    try:
        launcher_options = options_by_launcher(raw.get("launcher_options") or {}, launcher)
    except LauncherOptionError as error:
        raise SweepError(f"{path}: {error}") from None
    sweep = Sweep(
        name=str(name),
        overrides=[str(o) for o in overrides],
        grids=[{str(k): list(v) for k, v in grid.items()} for grid in grids],
        launcher=launcher,
        launcher_options=launcher_options,
        notes=notes.strip(),
        selection=raw.get("selection", False),
        path=path,
    )
    return sweep


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file and check that every run of its grid composes into a valid config,
    and that it keeps selection apart from reporting: a ``selection: true`` sweep scores a
    validation split (``data.val_size``) with seeds >= :data:`SELECTION_SEEDS_FROM`; any
    other sweep scores the test split with seeds below it.

    Raises:
        SweepError: as :func:`read_sweep`, a grid point or override that does not
            compose (an unknown method, dataset or config key, a value out of range), or a
            run that breaks the rule above.
    """
    sweep = read_sweep(path)
    try:
        for point in grid_points(sweep):
            _check_protocol(sweep, config.load(run_overrides(sweep, point)))
    except config.ConfigError as error:
        raise SweepError(f"{sweep.path}: {error}") from None
    return sweep


def _check_protocol(sweep: Sweep, cfg) -> None:
    if sweep.selection:
        if not cfg.data.val_size:
            raise SweepError(
                f"{sweep.path}: a selection sweep must score a validation split, not the "
                "test split: add data.val_size=N (e.g. 5000) to its overrides"
            )
        if cfg.seed < SELECTION_SEEDS_FROM:
            raise SweepError(
                f"{sweep.path}: seed {cfg.seed} is a reported seed; a selection sweep uses "
                f"seeds from {SELECTION_SEEDS_FROM} on (e.g. seed: [100, 101])"
            )
    else:
        if cfg.data.val_size:
            raise SweepError(
                f"{sweep.path}: data.val_size scores a validation split: mark the sweep "
                "selection: true, or remove data.val_size to report test accuracy"
            )
        if cfg.seed >= SELECTION_SEEDS_FROM:
            raise SweepError(
                f"{sweep.path}: seed {cfg.seed} is kept for selection sweeps (seeds from "
                f"{SELECTION_SEEDS_FROM} on); a reported sweep uses seeds below it"
            )


def grid_points(sweep: Sweep) -> list[dict]:
    """Each grid's cartesian product, one ``{key: value}`` dict per run, in file order (a
    point that two grids both hold comes once)."""
    points = []
    for grid in sweep.grids:
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            if point not in points:
                points.append(point)
    return points


def grid_keys(sweep: Sweep) -> list[str]:
    """The keys any grid varies, in file order."""
    return list(dict.fromkeys(key for grid in sweep.grids for key in grid))


def run_overrides(sweep: Sweep, point: dict, extra: list[str] = ()) -> list[str]:
    """The overrides of one run: the file's shared ones, the sweep name, ``extra`` (from the
    command line), then its grid point."""
    return [
        *sweep.overrides,
        f"sweep={sweep.name}",
        *extra,
        *(f"{k}={override_value(v)}" for k, v in point.items()),
    ]


def override_value(value) -> str:
    """A Python value as a Hydra override value."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    return str(value)
