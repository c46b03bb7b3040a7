"""The report of a sweep: statistics per method, EMIM against each baseline, curves, figures.

``emim-bench report RUNS_DIR -o reports/NAME`` reads every run directory of a
sweep (``RUNS_DIR/<run_id>/``, written by :func:`emim_bench.run.pretrain.run`) and
writes into the output folder:

- ``report.md`` and a self-contained ``report.html`` (figures embedded as
  base64 PNG, inline CSS, no external files),
- ``results.csv``: one row per run (done, running, failed, partial or to do) with its
  metrics and training statistics,
- ``figures/*.png``: accuracy per method with 95% confidence intervals and the
  random-init floor, kNN accuracy against epoch and against wall-clock time,
  throughput and peak memory.

Units throughout: accuracies in percent, times in seconds, throughput in
source images per second, memory in bytes (MiB/GiB in the rendered report).
Confidence intervals are Student-t intervals over seeds,
``mean ± t(0.975, n-1) · sd / sqrt(n)``, undefined for n < 2. EMIM is compared
with each baseline by seed (paired t-test, :func:`scipy.stats.ttest_rel`).

Modules, lowest first: :mod:`.collect` (run directories to a table), :mod:`.stats`,
:mod:`.published`, :mod:`.labels`, :mod:`.figures`, :mod:`.document`, :mod:`.render` and
:mod:`.cli`. None imports torch, Lightning or solo-learn.
"""
