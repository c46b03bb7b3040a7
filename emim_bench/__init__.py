"""emim-bench: EMIM (explicit mutual-information maximisation) inside solo-learn.

Importing the package imports nothing heavy: the modules that use solo-learn import
:mod:`emim_bench.compat` first, which adapts solo-learn 1.0.2 to the pinned torch and
Lightning, and :mod:`emim_bench.methods` registers EMIM in ``solo.methods.METHODS``.
"""

__version__ = "0.1.0"
