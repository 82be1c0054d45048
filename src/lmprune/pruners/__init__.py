"""Pruning methods: a scorer gives every unit a score, ``select`` keeps the best within a budget.

Each module here registers its method(s) in :data:`lmprune.registry.METHODS` on import; a
method is a function ``(model, structure, config: PruneConfig, calibration=None) -> Masks``.
"""
