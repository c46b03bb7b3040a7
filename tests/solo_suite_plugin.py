"""pytest plugin: run solo-learn 1.0.2's own test suite under emim-bench's compat layer.

solo-learn's wheel installs its tests as a top-level package named ``tests``
in site-packages. ``tests/test_solo_learn_suite.py`` runs part of it in a
separate pytest process with ``-p solo_suite_plugin --pyargs tests.methods
...``; loading this plugin imports ``emim_bench.compat`` before pytest imports
any of solo-learn's test modules, so solo-learn runs there as it runs inside
emim-bench.

The plugin also adapts solo-learn's *test code*, and only it:

- its tests build ``Trainer(checkpoint_callback=False)``, an argument that
  Lightning 1.5 renamed to ``enable_checkpointing`` and 1.7 removed.
  solo-learn's library never passes it, so the translation lives here, for
  the duration of this pytest process, rather than in ``emim_bench.compat``
  for every program that imports emim-bench;
- collection is checked to hold only files of the installed package, so that a
  ``tests`` folder elsewhere on ``sys.path`` (emim-bench's own, for one) can
  never be run in its place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import emim_bench.compat  # noqa: F401  (adapts solo-learn before its tests import it)

import pytest
import solo
from pytorch_lightning import Trainer

SOLO_TESTS = Path(solo.__file__).resolve().parents[1] / "tests"


def accept_checkpoint_callback(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``Trainer.__init__`` so that Lightning 1.4's ``checkpoint_callback=<bool>`` works.

    ``checkpoint_callback`` is passed on as ``enable_checkpointing``, its
    Lightning >= 1.5 name (same meaning: whether the Trainer adds a
    ``ModelCheckpoint`` callback); every other argument is passed unchanged.

    Raises:
        TypeError: both ``checkpoint_callback`` and ``enable_checkpointing``
            are given.
    """

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if "checkpoint_callback" in kwargs:
            if "enable_checkpointing" in kwargs:
                raise TypeError(
                    "give either checkpoint_callback (Lightning 1.4) or enable_checkpointing, "
                    "not both"
                )
            kwargs["enable_checkpointing"] = kwargs.pop("checkpoint_callback")
        init(self, *args, **kwargs)

    return __init__


def pytest_configure(config: pytest.Config) -> None:
    Trainer.__init__ = accept_checkpoint_callback(Trainer.__init__)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    strangers = sorted(
        {str(item.path) for item in items if not item.path.resolve().is_relative_to(SOLO_TESTS)}
    )
    if strangers:
        raise pytest.UsageError(
            f"solo_suite_plugin runs only solo-learn's installed tests ({SOLO_TESTS}); "
            f"collected also: {strangers}"
        )
