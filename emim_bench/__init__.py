"""emim-bench: EMIM (explicit mutual-information maximisation) inside solo-learn.

Importing the package adapts solo-learn 1.0.2 to the pinned torch/Lightning
stack (:mod:`emim_bench.compat`).
"""

__version__ = "0.1.0"

from emim_bench import compat as _compat

_compat.apply()

