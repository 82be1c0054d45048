"""Pruning methods: a scorer gives every unit a score, ``select`` keeps the best within a budget.

Each module here registers its method(s) in :data:`lmprune.registry.METHODS` on import; a
method is a function ``(model, structure, run: RunConfig, calibration: Calibration | None)
-> Masks``; it reads its own section of ``run`` (``run.prune`` for the budget, ``run.taylor``,
``run.adapruner``, ...). Methods that need data get a :class:`lmprune.data.calibration.Calibration`.
"""
