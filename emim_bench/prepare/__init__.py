"""Datasets built on disk before any run: ``emim-bench prepare NAME``.

:mod:`.imagenet100` builds ``<data_root>/imagenet100/{train,val}/<wnid>/`` from an ImageNet
copy (symbolic links, or copies); :mod:`.cli` is its command. Neither imports torch,
Lightning or solo-learn.
"""
