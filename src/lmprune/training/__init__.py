"""Training-time pieces: APT's self-distillation losses and teacher swapping (``distill``)."""
from lmprune.training.distill import (
    TASK_TYPES,
    LayerTransform,
    distill_weights,
    layer_distillation,
    match_layers,
    mu,
    prediction_distillation,
    snapshot_adapters,
    teacher_layers,
    teacher_mode,
    total_loss,
)

__all__ = [
    "TASK_TYPES", "LayerTransform", "distill_weights", "layer_distillation", "match_layers", "mu",
    "prediction_distillation", "snapshot_adapters", "teacher_layers", "teacher_mode", "total_loss",
]
