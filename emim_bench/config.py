"""The Hydra config tree in ``method_configs/``: choices, validation, composition."""

from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
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
        ConfigError: unknown group choice, unknown key, malformed override/YAML,
            or a value of the wrong type or range (:func:`check_values`).
    """
    overrides = list(overrides or [])
    check_overrides(overrides)
    cfg = _compose(overrides)
    check_values(cfg)
    return cfg


# Groups whose choice may change under an existing checkpoint (evaluation on another dataset,
# the backbone it was trained with, another device); method and budget define the training.
SWAPPABLE_GROUPS = ("data", "backbone", "trainer")


def load_onto(base: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """``overrides`` applied to an already composed config, e.g. a run's ``config.yaml``.

    ``GROUP=CHOICE`` replaces that group's node by ``method_configs/GROUP/CHOICE.yaml`` (for
    :data:`SWAPPABLE_GROUPS`); ``KEY=VALUE`` sets an existing key (Hydra's override syntax).

    Raises:
        ConfigError: an unknown choice or key, a group that cannot change for a trained
            model (``method``, ``budget``), a malformed override, a value out of range.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    overrides = list(overrides or [])
    check_overrides(overrides)
    cfg = OmegaConf.create(OmegaConf.to_container(base, resolve=True))
    OmegaConf.set_struct(cfg, True)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise ConfigError(_one_line(error)) from None
    for override in parsed:
        key, value = override.key_or_group, override.value()
        if key in SWAPPABLE_GROUPS:
            with open_dict(cfg):
                cfg[key] = OmegaConf.load(CONFIG_DIR / key / f"{value}.yaml")
        elif key in GROUPS:
            raise ConfigError(
                f"{key}= cannot change for a trained model; only data=, backbone= and trainer= can"
            )
        else:
            try:
                OmegaConf.update(cfg, key, value, merge=False)
            except OmegaConfBaseException:
                raise ConfigError(f"unknown config key '{key}'") from None
    check_values(cfg)
    return cfg


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir  # not at the top: `--help` needs no Hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

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


# Keys whose value must be an integer of at least the given minimum (None allowed where marked).
_INTEGERS = {
    "epochs": (1, False),
    "batch_size": (2, False),  # batch statistics (BatchNorm, covariances) need two samples
    "seed": (0, False),
    "warmup_epochs": (0, False),
    "knn_every_n_epochs": (0, False),
    "diagnostics_batch": (0, False),
    "data.crop_size": (1, False),
    "data.train_size": (1, True),
    "data.test_size": (1, True),
    "data.val_size": (1, True),
    "eval.linear_epochs": (1, False),
    "eval.batch_size": (1, False),
    "trainer.num_workers": (0, False),
    "trainer.log_every_n_steps": (1, False),
}


def check_values(cfg: DictConfig) -> None:
    """Reject values of the wrong type or range before any data or model is touched.

    Raises:
        ConfigError: e.g. "epochs must be an integer >= 1, got 'abc'".
    """
    for key, (minimum, optional) in _INTEGERS.items():
        value = OmegaConf.select(cfg, key)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    _check_trainer(cfg.trainer)
    _check_warmup(cfg)
    if cfg.trainer.sync_batchnorm and cfg.trainer.accelerator == "cpu":
        raise ConfigError(
            "trainer.sync_batchnorm needs GPUs (torch's SyncBatchNorm has no CPU kernel); "
            "add trainer.sync_batchnorm=false to run DDP on CPU"
        )
    if cfg.logger not in ("csv", "tensorboard", "wandb"):
        raise ConfigError(f"logger must be csv, tensorboard or wandb, got {cfg.logger!r}")
    if cfg.logger == "wandb" and importlib.util.find_spec("wandb") is None:
        raise ConfigError("logger=wandb needs the wandb package: pip install wandb")
    knn_k = OmegaConf.select(cfg, "eval.knn_k")
    if not knn_k or not all(isinstance(k, int) and k >= 1 for k in knn_k):
        raise ConfigError(f"eval.knn_k must be a list of integers >= 1, got {knn_k!r}")
    if cfg.backbone.encoder == "timm":
        from emim_bench.backbones import check_model

        try:
            check_model(cfg.backbone.name)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if cfg.method.name == "emim":
        from emim_bench.methods import EMIM

        kwargs = cfg.method.kwargs
        try:
            EMIM.validate_hparams(
                kwargs.proj_hidden_dim,
                kwargs.proj_output_dim,
                kwargs.eps,
                kwargs.get("check_every_n_steps", 1),
            )
        except (ValueError, TypeError) as error:
            raise ConfigError(f"method.kwargs: {error}") from None


def _check_warmup(cfg: DictConfig) -> None:
    """Warn about a warm-up under LARS that starts at learning rate 0.

    solo-learn 1.0.2's ``warmup_cosine`` schedule is stepped once per epoch, so epoch 0 runs
    at ``optim.warmup_start_lr``. At 0 nothing trains in epoch 0, the SGD momentum buffer
    gathers gradients meanwhile, and solo's LARS clipping (``new_lr / group["lr"]``) divides
    by 0 and leaves them unscaled: the first step of epoch 1 applies them all at once (on a
    GPU, VICReg's loss went from 45 to 7e4 there, at every precision). Two of solo-learn's
    own scripts start from 0 (DeepCluster V2, W-MSE), so this warns rather than refuses.
    """
    if (
        cfg.optim.scheduler == "warmup_cosine"
        and cfg.optim.lars
        and cfg.warmup_epochs > 0
        and not cfg.optim.warmup_start_lr > 0
    ):
        warnings.warn(
            f"optim.warmup_start_lr={cfg.optim.warmup_start_lr} with warmup_epochs="
            f"{cfg.warmup_epochs} under LARS: epoch 0 trains at learning rate 0 (solo-learn steps "
            "the warm-up per epoch) and the first step of epoch 1 can diverge; "
            "solo-learn's default start is 0.003",
            UserWarning,
            stacklevel=2,
        )


# Device settings of the trainer added after runs were made: a run's config.yaml from before
# may lack them (they then take trainer=cpu's values, which compute what those runs computed).
_TRAINER_SWITCHES = ("pin_memory", "persistent_workers", "channels_last", "cudnn_benchmark")
_PRECISIONS = (32, 16, "bf16", "auto")


def _check_trainer(trainer: DictConfig) -> None:
    """The trainer's precision, device switches and finite-loss check interval.

    Raises:
        ConfigError: e.g. "trainer.precision must be one of 32, 16, bf16, auto; got 'fp8'".
    """
    precision = trainer.get("precision")
    if isinstance(precision, bool) or str(precision) not in {str(p) for p in _PRECISIONS}:
        raise ConfigError(f"trainer.precision must be one of 32, 16, bf16, auto; got {precision!r}")
    for key in _TRAINER_SWITCHES:
        if key in trainer and not isinstance(trainer[key], bool):
            raise ConfigError(f"trainer.{key} must be true or false, got {trainer[key]!r}")
    every = trainer.get("finite_check_every", 1)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"trainer.finite_check_every must be an integer >= 1, got {every!r}")


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
