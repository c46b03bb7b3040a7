"""Checks of a method's own hyperparameters, shared by our methods."""

from __future__ import annotations


def require_positive_integers(method: str, **values) -> None:
    """Raise ValueError naming the first of ``values`` that is not a positive integer.

    Example: ``require_positive_integers("EMIM", proj_output_dim=0)`` raises
    ``EMIM: proj_output_dim must be a positive integer, got 0``.
    """
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{method}: {name} must be a positive integer, got {value!r}")
