"""The Hydra launchers a sweep can use, and the options a sweep file gives each of them.

``launcher_options`` in a sweep file takes one of two forms:

- keyed by launcher, ``{submitit_slurm: {partition: gpu, ...}, joblib: {n_jobs: 2}}``: each
  launcher gets its own options, so ``--launcher joblib`` on the command line runs with the
  joblib options of the same file;
- flat, ``{partition: gpu, ...}``: the options of the file's own ``launcher``.

Options are keyed by launcher rather than handed to whichever launcher is chosen because the
launchers share few keys: SLURM's ``partition`` or ``gpus_per_node`` mean nothing to joblib,
whose config rejects them. Every option is checked against the launcher's own config (the
plugin's dataclass), so a misspelt or misplaced option is one line naming it and the launcher
when the file is read, not a Hydra error once the sweep starts.
"""

from __future__ import annotations

import dataclasses
import importlib

# Hydra launcher plugins: the name given to hydra/launcher=NAME, and its config dataclass.
_CONFIGS = {
    "basic": "hydra._internal.core_plugins.basic_launcher:BasicLauncherConf",
    "joblib": "hydra_plugins.hydra_joblib_launcher.config:JobLibLauncherConf",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher.config:SlurmQueueConf",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher.config:LocalQueueConf",
}
LAUNCHERS = tuple(_CONFIGS)
# Launchers whose jobs outlive the command that submits them (see hydra_plugins'
# emim_bench_sweeper.nowait_launcher); basic and joblib run the jobs inside it.
DETACHABLE = ("submitit_slurm", "submitit_local")


class LauncherOptionError(ValueError):
    """Malformed ``launcher_options``; the message names the launcher and the option."""


def accepted_options(launcher: str) -> list[str]:
    """The option names the launcher's Hydra config accepts, in its config's order.

    Raises:
        KeyError: ``launcher`` is not one of :data:`LAUNCHERS`.
    """
    module, name = _CONFIGS[launcher].split(":")
    fields = dataclasses.fields(getattr(importlib.import_module(module), name))
    return [f.name for f in fields if f.name != "_target_"]


def nowait_variant(launcher: str) -> str:
    """The Hydra launcher config that submits ``launcher``'s jobs without waiting for them.

    Raises:
        LauncherOptionError: ``launcher`` runs its jobs inside the command (basic, joblib).
    """
    if launcher not in DETACHABLE:
        raise LauncherOptionError(
            f"--no-wait needs a launcher whose jobs outlive this command "
            f"({', '.join(DETACHABLE)}); {launcher} runs them inside it: run the sweep "
            "under tmux or nohup instead"
        )
    return f"{launcher}_nowait"


def options_by_launcher(raw: dict, own_launcher: str) -> dict[str, dict]:
    """``launcher_options`` of a sweep file as ``{launcher: {option: value}}``, checked.

    Args:
        raw: the file's ``launcher_options``, keyed by launcher or flat (see the module).
        own_launcher: the file's ``launcher``, which flat options belong to.

    Raises:
        LauncherOptionError: launcher names mixed with option names, a launcher's options
            that are not a mapping, or an option the launcher does not accept.
    """
    named = [key for key in raw if key in LAUNCHERS]
    if named and len(named) < len(raw):
        other = sorted(str(key) for key in raw if key not in LAUNCHERS)
        raise LauncherOptionError(
            f"launcher_options mixes launchers ({', '.join(named)}) with options "
            f"({', '.join(other)}): key every option by its launcher"
        )
    keyed = raw if named else ({own_launcher: raw} if raw else {})
    for launcher, options in keyed.items():
        if not isinstance(options, dict):
            raise LauncherOptionError(
                f"launcher_options.{launcher} must be a mapping of options, e.g. {{n_jobs: 2}}"
            )
        accepted = accepted_options(launcher)
        for option in options:
            if option not in accepted:
                raise LauncherOptionError(
                    f"launcher {launcher} has no option {option!r} "
                    f"(it accepts: {', '.join(accepted) or 'none'})"
                )
    return {launcher: dict(options) for launcher, options in keyed.items()}
