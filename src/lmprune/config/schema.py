"""The configuration of a pruning run: ``RunConfig`` and its sections.

To extend: add a field with ``param(default, "help")`` to a section (validate it in that
section's ``validate()``), or add a new ``@dataclass`` section subclassing :class:`Section`
and a ``section(NewConfig, "help")`` field on :class:`RunConfig`. The loader, overrides,
``lmprune validate`` and the YAML dump pick it up with no other change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lmprune.config.section import Section, param, section

#: Structure kinds a pruner may remove (see DESIGN.md, "a group is the unit of pruning").
STRUCTURES: tuple[str, ...] = ("heads", "kv_groups", "neurons", "hidden", "attention", "ffn",
                               "layers")


def _positive(obj: object, *names: str) -> list[str]:
    return [f"{n}: must be a positive integer, got {getattr(obj, n)}"
            for n in names if getattr(obj, n) < 1]


@dataclass
class ModelConfig(Section):
    name: str = param("tiny-llama", "model alias from `lmprune ls models`, a hub id, or a "
                                    "local directory")
    task: str | None = param(None, "task head to load (e.g. causal-lm, sequence-classification); "
                                   "null: the model's default task")
    dtype: Literal["float32", "bfloat16", "float16"] = param(
        "float32", "dtype the weights are loaded in")
    num_labels: int = param(2, "number of labels of a classification head")

    def validate(self) -> list[str]:
        problems = []
        if not self.name.strip():
            problems.append("name: must not be empty")
        return problems + _positive(self, "num_labels")


@dataclass
class DataConfig(Section):
    calibration: str = param("austen", "dataset for calibration / importance scores, from "
                                       "`lmprune ls datasets`")
    split: str = param("train", "dataset split the samples are drawn from")
    num_samples: int = param(10, "number of calibration samples")
    seq_len: int = param(128, "tokens per calibration sample")
    seed: int = param(0, "seed for drawing the samples")

    def validate(self) -> list[str]:
        return _positive(self, "num_samples", "seq_len")


@dataclass
class PruneConfig(Section):
    method: str = param("random", "pruning method, from `lmprune ls methods`")
    sparsity: float = param(0.2, "fraction of the prunable units to remove, in [0, 1)")
    structures: list[str] = param(["heads", "neurons"],
                                  "structure kinds to prune: " + ", ".join(STRUCTURES))
    layer_range: list[int] | None = param(None, "[start, end): prune only these layers "
                                                "(null: all layers)")
    round_to: int = param(1, "keep a multiple of this many units per group kind (hardware-"
                             "friendly shapes)")
    seed: int = param(0, "seed for randomized methods")

    def validate(self) -> list[str]:
        problems = []
        if not 0.0 <= self.sparsity < 1.0:
            problems.append(f"sparsity: must be in [0, 1) (the fraction of units removed; "
                            f"1 would remove everything), got {self.sparsity}")
        problems += self._check_structures()
        if self.layer_range is not None:
            lr = self.layer_range
            if len(lr) != 2 or lr[0] < 0 or lr[0] >= lr[1]:
                problems.append(f"layer_range: must be [start, end) with 0 <= start < end, "
                                f"got {lr}")
        if self.round_to < 1:
            problems.append(f"round_to: must be >= 1, got {self.round_to}")
        problems += self._check_method()
        return problems

    def _check_structures(self) -> list[str]:
        from lmprune.errors import UnknownNameError

        problems = []
        if not self.structures:
            problems.append(f"structures: must name at least one of {', '.join(STRUCTURES)}")
        for i, s in enumerate(self.structures):
            if s not in STRUCTURES:
                problems.append(f"structures[{i}]: {UnknownNameError('structure', s, STRUCTURES)}")
        dupes = sorted({s for s in self.structures if self.structures.count(s) > 1})
        if dupes:
            problems.append(f"structures: listed more than once: {', '.join(dupes)}")
        return problems

    def _check_method(self) -> list[str]:
        # Looked up at call time so that tests can swap the registry.
        from lmprune import registry
        from lmprune.errors import UnknownNameError

        methods = registry.load_builtin_methods()
        if len(methods) and self.method not in methods:
            error = UnknownNameError("method", self.method, methods.names(), methods.hint)
            return [f"method: {error}"]
        return []


@dataclass
class OutputConfig(Section):
    dir: str = param("runs/latest", "directory for the run's report, plan and model")
    overwrite: bool = param(False, "replace the directory's contents if it is not empty")

    def validate(self) -> list[str]:
        return [] if self.dir.strip() else ["dir: must not be empty"]


@dataclass
class RunConfig(Section):
    """Everything a pruning run needs; what `lmprune validate` checks and runs save."""

    model: ModelConfig = section(ModelConfig, "which model to prune")
    data: DataConfig = section(DataConfig, "calibration data")
    prune: PruneConfig = section(PruneConfig, "what to prune and how much")
    output: OutputConfig = section(OutputConfig, "where results go")
    seed: int = param(0, "global seed (torch, numpy, random)")
