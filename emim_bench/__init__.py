"""emim-bench: EMIM (explicit mutual-information maximisation) inside solo-learn.

Importing the package adapts solo-learn 1.0.2 to the pinned torch/Lightning
stack (:mod:`emim_bench.compat`) and registers the EMIM method in
``solo.methods.METHODS["emim"]`` (:mod:`emim_bench.methods`).
"""

__version__ = "0.1.0"

from emim_bench import compat as _compat

_compat.apply()

from emim_bench.methods import register as _register_emim  # noqa: E402 (after the compat layer)

_register_emim()
