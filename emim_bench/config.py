"""The Hydra config tree in ``method_configs/``: choices, validation, composition."""

from __future__ import annotations

import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

CONFIG_DIR = Path(__file__).resolve().parents[1] / "method_configs"
CONFIG_NAME = "config"
GROUPS = ("method", "data", "backbone", "trainer", "budget")
_GROUP_OVERRIDE = re.compile(r"^[+~]*(?P<group>\w+)=(?P<choice>[^,\s]*)$")


class ConfigError(ValueError):
    """A bad config choice, key or value; the message is one line that names the fix."""


def choices(group: str) -> list[str]:
    """The options of a config group, e.g. ``choices("method")`` -> ["barlow_twins", ...]."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def check_overrides(overrides: list[str]) -> None:
    """Reject an unknown choice of a config group before Hydra runs.

    Raises:
        ConfigError: e.g. "unknown method 'simclrr'; choose one of [...]".
    """
    for override in overrides:
        match = _GROUP_OVERRIDE.match(override)
        if match and match["group"] in GROUPS and match["choice"] not in choices(match["group"]):
            raise ConfigError(
                f"unknown {match['group']} {match['choice']!r}; "
                f"choose one of {choices(match['group'])}"
            )


def load(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``method_configs/config.yaml`` with Hydra command-line overrides.

    Raises:
        ConfigError: unknown group choice, unknown key or malformed override/YAML.
    """
    overrides = list(overrides or [])
    check_overrides(overrides)
    # Inside a Hydra job (a sweep's launcher) Hydra is already initialised: step aside, then back.
    global_hydra = GlobalHydra.instance()
    outer = global_hydra.hydra if global_hydra.is_initialized() else None
    global_hydra.clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name=CONFIG_NAME, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_one_line(error)) from None
    finally:
        if outer is not None:
            global_hydra.clear()
            global_hydra.initialize(outer)


def _one_line(error: Exception) -> str:
    text = str(error).strip()
    key = re.search(r"Could not override '([^']+)'|Key '([^']+)' is not in struct", text)
    if key:
        return (
            f"unknown config key '{key[1]}' (list the keys with `emim-bench pretrain --cfg "
            f"job`; add a new key with +{key[1]}=...)"
        )
    first_line = text.splitlines()[0]
    if "override_grammar" in text or "Error parsing override" in text:
        return f"malformed override: {first_line} (syntax: KEY=VALUE, GROUP=CHOICE, +NEW_KEY=VALUE)"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
