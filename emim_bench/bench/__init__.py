"""Speed benchmarks: the SSL losses alone and full training steps, EMIM against the baselines.

Two measurements, on one device (cuda when available, else cpu):

1. **Loss** -- forward plus backward of each loss alone on random float32
   embeddings ``z1, z2`` of shape (N, D) with ``requires_grad``: EMIM in its
   primal and dual forms (:func:`emim_bench.losses.emim_loss_func`) and
   solo-learn's own Barlow Twins, VICReg, SimCLR and BYOL loss functions with
   their CIFAR-recipe hyperparameters. Reported as the median seconds per call
   after warm-up, over adaptive repeats.
2. **Training step** -- one full step of each solo-learn method (ResNet-18
   backbone, two views, the recipe's projector, ``training_step`` +
   backward + optimiser step (``budget=cpu``'s Adam), and BYOL's EMA update), built by
   :func:`emim_bench.methods.build_method` and run outside a Trainer.
   Reported as source images per second: a step on a batch of B images (2B
   views) counts B images. EMIM and Barlow Twins share the backbone and the
   2048-2048-2048 projector, so their ratio compares the losses in situ.

The results (timings, ratio tables, the two targets with PASS/MISS, device,
versions and the exact command) go to ``<out>/<device kind>.json`` and ``.md``.
Run it with ``make bench`` or ``emim-bench bench`` (``--help`` for options).

Modules, lowest first: :mod:`.timing`, :mod:`.loss`, :mod:`.step`, :mod:`.render`,
:mod:`.run` (options, environment, the whole benchmark) and :mod:`.cli`.
"""
