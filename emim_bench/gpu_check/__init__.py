"""``emim-bench gpu-check``: what the GPU settings give, measured on a GPU in about 8 minutes.

For EMIM, SimCLR, BYOL, Barlow Twins and VICReg, a 2-epoch run of the paper recipe
(``budget=cifar_paper trainer=gpu``) on 10,000 CIFAR-10 images, timed step by step:
throughput, peak GPU memory and the data loader's share of step time; the speed benchmark
(``emim-bench bench``) in the trainer's precision and memory format; and, with two GPUs or
more, EMIM's loss at step 0 of a 2-process DDP step against one process. ``--cpu`` runs the
same path at toy sizes on the CPU (a rehearsal, not a measurement).

Modules, lowest first: :mod:`.plan` (the sizes of each mode, no torch), :mod:`.step_timer`
(the Lightning callback timing the steps), :mod:`.training` (one timed run per method),
:mod:`.ddp` (the 2-process loss check), :mod:`.render` (Markdown), :mod:`.run` (the whole
check and its files) and :mod:`.cli`.
"""
