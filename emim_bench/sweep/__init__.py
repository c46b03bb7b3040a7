"""Sweeps: a YAML grid of runs, its plan, and its launch through Hydra's multirun launchers.

A sweep file (``sweeps/NAME.yaml``)::

    name: smoke
    overrides: [budget=cpu, data.train_size=64]   # shared by every run
    grid:                                         # cartesian product
      method: [emim, simclr]
      seed: [0, 1]
    launcher: basic        # basic (sequential) | joblib (local parallel) | submitit_slurm
    launcher_options:      # per launcher (or flat: the options of `launcher`)
      joblib: {n_jobs: 2}
      submitit_slurm: {partition: gpu, gpus_per_node: 1, timeout_min: 600}
    notes: |               # optional paragraphs, printed in the report under "Sweep notes"
      Why a method sits where it does, what was measured before choosing a setting.

Every run is an ordinary ``emim-bench pretrain`` run, so its directory and its
state (done, failed, partial, to do) follow from its config alone: running a
sweep again skips what is done and resumes what is partial. Only runs that
are not done are handed to the launcher, one Hydra job each.

Modules, lowest first: :mod:`.launchers` (the launchers and their options), :mod:`.file`
(the sweep file), :mod:`.plan` (its runs and their states), :mod:`.devices` (a GPU per
joblib job), :mod:`.launch` (Hydra) and :mod:`.cli`.
"""
