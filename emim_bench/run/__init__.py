"""One run: its identity, its directory, its Trainer and callbacks, its evaluation, results.json.

Modules, lowest first: :mod:`.identity` and :mod:`.directory` (no torch), :mod:`.evaluation`,
:mod:`.trainer`, :mod:`.results`, :mod:`.pretrain` (the orchestration) and :mod:`.cli`.
"""
