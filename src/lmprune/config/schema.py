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
from lmprune.config.train_schema import APTConfig, CoFiConfig, MaskSearchConfig, TrainConfig

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
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = param(
        "auto", "dtype the weights are loaded in; auto: bfloat16 on a GPU, float32 on the CPU "
                "(lmprune train: float32 weights everywhere, see lmprune/device.py)")
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
    sparsity: float = param(0.2, "what to remove, in [0, 1): with budget params the share of "
                                 "non-embedding parameters, with budget units the fraction of "
                                 "the units of each kind at every site")
    structures: list[str] = param(["heads", "neurons"],
                                  "structure kinds to prune: " + ", ".join(STRUCTURES))
    layer_range: list[int] | Literal["auto"] | None = param(
        "auto", "[start, end): prune only these layers; null: all layers; auto: the method's "
                "best-known range (block-wise methods keep LLM-Pruner's first 1/8 and last "
                "1/16 of the layers, e.g. [4, 28) of 30; sublayer-ri and block-influence: all)")
    budget: Literal["params", "units"] = param(
        "params", "params: remove prune.sparsity of the non-embedding parameters (within 0.2 "
                  "points; every method compares at equal parameters); units: remove that "
                  "fraction of the units of each kind at every site")
    allocation: Literal["uniform", "global"] = param(
        "uniform", "how a params budget is spread: uniform (the same fraction at every site, "
                   "LLM-Pruner's local pruning) or global (all units ranked together by "
                   "importance per parameter)")
    head_rounding: Literal["down", "nearest"] = param(
        "down", "params budget, uniform allocation: heads removed per site (query heads per "
                "key/value group) = floor(s * heads), LLM-Pruner's rounding (down), or the "
                "nearest count (nearest); neurons make up the rest of the budget")
    round_to: int | Literal["auto"] = param(
        "auto", "kept units per site are a multiple of this (hardware-friendly widths); auto: "
                "chosen per width (FFN neurons and hidden channels: 64 from 2048 units, 32 from "
                "1024, 16 from 512, 8 from 256, else 1; heads: whatever keeps heads x head_dim a "
                "multiple of that); 1: exact counts (exported widths may be slow on GPUs)")
    seed: int = param(0, "seed for randomized methods")

    def validate(self) -> list[str]:
        problems = []
        if not 0.0 <= self.sparsity < 1.0:
            problems.append(f"sparsity: must be in [0, 1) (the fraction of units removed; "
                            f"1 would remove everything), got {self.sparsity}")
        problems += self._check_structures()
        if isinstance(self.layer_range, list):
            lr = self.layer_range
            if len(lr) != 2 or lr[0] < 0 or lr[0] >= lr[1]:
                problems.append(f"layer_range: must be [start, end) with 0 <= start < end, "
                                f"got {lr}")
        if self.round_to != "auto" and self.round_to < 1:
            problems.append(f"round_to: must be auto or an integer >= 1, got {self.round_to}")
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
class TaylorConfig(Section):
    """LLM-Pruner-style first/second-order Taylor importance (Ma et al., 2023)."""

    importance: Literal["vector", "element1", "element2", "param_second"] = param(
        "element1", "vector: |sum g*w| per row (LLM-Pruner's vectorize); element1: sum |g*w| "
                    "(param_first); element2: sum |g*w - 1/2 w*H*w| (param_mix); param_second: "
                    "sum w*H*w; H = mean squared per-sample gradient")
    aggregation: Literal["sum", "mean", "max", "prod", "last"] = param(
        "sum", "how the importances of a coupled group's tensors are combined")
    reduction: Literal["channel", "group"] = param(
        "channel", "channel: LLM-Pruner's order (per-row values, combined across tensors per "
                   "channel, then summed over a head's channels); group: per tensor over the "
                   "whole group first (vector: |sum| over the whole head)")
    mode: Literal["block", "channel", "layer"] = param(
        "block", "block: heads/kv groups and FFN neurons per layer; channel: hidden channels; "
                 "layer: whole layers")
    batch_size: int | None = param(None, "calibration samples per backward pass (null: all "
                                         "at once, as LLM-Pruner; smaller saves activation "
                                         "memory and never raises the peak)")
    buffer_fraction: float = param(0.5, "per-element fp32 buffers (H of element2, summed "
                                        "gradients under micro-batching) hold at most this "
                                        "fraction of the scored weights' bytes at once; the "
                                        "weights are streamed in chunks of layers")

    def validate(self) -> list[str]:
        problems = []
        if self.batch_size is not None and self.batch_size < 1:
            problems.append(f"batch_size: must be >= 1 or null, got {self.batch_size}")
        if not self.buffer_fraction > 0:
            problems.append(f"buffer_fraction: must be positive, got {self.buffer_fraction}")
        return problems


@dataclass
class MagnitudeConfig(Section):
    norm: int = param(2, "1 or 2: the Lp norm of a group's weights")

    def validate(self) -> list[str]:
        return [] if self.norm in (1, 2) else [f"norm: must be 1 or 2, got {self.norm}"]


@dataclass
class AdaPrunerConfig(Section):
    """AdaPruner (Kong et al., AAAI 2025): TPE search over calibration samples and metric mix."""

    trials: int = param(30, "number of search trials (each prunes with one candidate and "
                            "measures perplexity on held-out calibration text)")
    pool_size: int = param(64, "candidate calibration samples besides data.num_samples (the "
                               "pool starts with the run's own calibration samples)")
    heldout: int = param(32, "held-out samples of data.seq_len tokens for the objective (more "
                             "windows: a less noisy objective, less overfitting of the search)")
    confirm_top: int = param(5, "confirmation round: the best this many distinct trials by "
                                "the objective are scored again on adapruner.confirm fresh "
                                "windows and the best there is chosen (the search's best "
                                "objective is biased low by the selection itself); 0 or 1: "
                                "off, the trial with the best objective is chosen")
    confirm: int = param(64, "fresh calibration windows of the confirmation round (disjoint "
                             "from the pool and the held-out windows)")
    consensus: Literal["always", "compete", "off"] = param(
        "always", "prune by the consensus of the trials the confirmation round re-scores (their "
                  "mixed importances, each divided by its mean, averaged; same budget): always; "
                  "compete: only when it beats the best of them on the confirmation windows; "
                  "off: the chosen trial's masks (docs/adapruner.md, 'The consensus')")
    fine: Literal["element1", "element2", "param_second", "search"] = param(
        "search", "fine-grained metric mixed with the coarse (vector) one; search: each trial "
                  "picks one")
    scales: dict[str, list[float]] = param(
        {}, "extra alignment multipliers the search chooses from, per metric (vector, element1, "
            "element2, param_second), applied on top of the measured alignment (or on the raw "
            "metrics with align=false); {}: none. The paper's literal sets: align=false "
            "scales={vector: [1e5, 1e6, 1e7], element1: [1e-2, 1e-3], element2: [1e-4]}")
    startup_trials: int = param(5, "random trials before TPE starts modelling")
    sampler: Literal["tpe", "random"] = param("tpe", "search strategy: TPE (Bayesian) or "
                                                     "uniform random search")
    search_samples: bool = param(True, "search which calibration samples to use (false: the "
                                       "run's own data.num_samples calibration samples)")
    search_mix: bool = param(True, "search the coarse/fine balance (false: fixed equal weights "
                                   "of the aligned metrics)")
    align: bool = param(True, "align the metrics' scales before mixing (each divided by its "
                              "mean over the scored units of a kind); false: raw metrics")
    warm_start: bool = param(True, "start with the fixed baselines (each pure fine ranking and "
                                   "the pure coarse ranking on the run's own samples)")

    def validate(self) -> list[str]:
        problems = _positive(self, "trials", "pool_size", "heldout")
        if self.confirm_top < 0:
            problems.append(f"confirm_top: must be >= 0 (0 or 1: no confirmation round), "
                            f"got {self.confirm_top}")
        if self.confirm_top > 1 and self.confirm < 1:
            problems.append(f"confirm: a confirmation round (confirm_top={self.confirm_top}) "
                            f"needs at least 1 window, got {self.confirm}; or set "
                            f"confirm_top=0")
        for key, values in self.scales.items():
            if key not in ("vector", "element1", "element2", "param_second"):
                problems.append(f"scales.{key}: unknown metric (vector, element1, element2, "
                                f"param_second)")
            if not values or any(v <= 0 for v in values):
                problems.append(f"scales.{key}: must be a non-empty list of positive numbers")
        if self.startup_trials < 0:
            problems.append("startup_trials: must be >= 0")
        return problems

    def confirm_windows(self) -> int:
        """Confirmation windows the settings need (none without a confirmation round)."""
        return self.confirm if self.confirm_top > 1 else 0


@dataclass
class SublayerConfig(Section):
    """Heterogeneous sublayer pruning by relative impact (RI) of each sublayer."""

    normalize: bool = param(True, "divide RI by the sublayer's parameter count")
    progressive: bool = param(True, "recompute RI after every removal (false: rank once)")
    budget: Literal["params", "sublayers"] = param(
        "params", "params: remove until `prune.sparsity` of the non-embedding parameters is "
                  "gone; sublayers: remove that fraction of the sublayers")
    max_windows: int | None = param(None, "measure perplexity on at most this many calibration "
                                          "windows (each step costs one forward per sublayer)")
    finish: Literal["neurons", "none"] = param(
        "neurons", "how a params budget is met exactly: neurons (stop before a removal that "
                   "overshoots by more than 0.2 points, remove the rest as FFN neurons of the "
                   "remaining FFN sublayers, lowest first-order Taylor importance first); none "
                   "(stop at the first removal reaching the target: overshoots by up to one "
                   "sublayer)")
    rows_per_pass: int = param(32, "calibration windows per batched forward when measuring "
                                   "RI (several candidate sublayers per forward)")

    def validate(self) -> list[str]:
        problems = _positive(self, "rows_per_pass")
        if self.max_windows is not None and self.max_windows < 1:
            problems.append("max_windows: must be >= 1 or null")
        return problems


@dataclass
class OutputConfig(Section):
    dir: str = param("runs/latest", "directory for the run's report, plan and model")
    overwrite: bool = param(False, "replace the directory's contents if it is not empty")
    format: Literal["auto", "decilm"] = param(
        "auto", "how the pruned model is saved: auto (stock transformers when its config can "
                "express the widths, else with lmprune's remote code); decilm (the Nemotron-NAS "
                "per-layer format vLLM and llama.cpp serve; decoders whose layers fit it, else "
                "auto and the report says why)")

    def validate(self) -> list[str]:
        return [] if self.dir.strip() else ["dir: must not be empty"]


@dataclass
class EvalConfig(Section):
    perplexity: list[str] = param(["austen"], "datasets for perplexity (wikitext2, ptb; "
                                              "offline: austen, whose test split is held out)")
    seq_len: int = param(128, "window length of the perplexity protocol (LLM-Pruner reports "
                              "128; 2048 is also common)")
    max_windows: int | None = param(None, "evaluate at most this many windows (null: all)")
    zero_shot: list[str] = param(["wordnet-defs"], "lm-eval task names (boolq, piqa, hellaswag, "
                                                   "winogrande, arc_easy, arc_challenge, "
                                                   "openbookqa; offline: wordnet-defs)")
    limit: int | None = param(None, "examples per zero-shot task (null: all)")
    speed: bool = param(True, "measure generation throughput, latency and peak memory")
    batch_sizes: list[int] = param([1, 8, 32], "batch sizes for the speed measurement")
    new_tokens: int = param(32, "tokens generated per sequence in the speed measurement")
    prompt_len: int = param(64, "prompt tokens per sequence in the speed measurement")

    def validate(self) -> list[str]:
        problems = _positive(self, "seq_len", "new_tokens", "prompt_len")
        if any(b < 1 for b in self.batch_sizes):
            problems.append("batch_sizes: every batch size must be >= 1")
        for name in ("limit", "max_windows"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"{name}: must be a positive number of examples or null (all), "
                                f"got {getattr(self, name)}")
        return problems


@dataclass
class RecoveryConfig(Section):
    """LoRA recovery after pruning (LLM-Pruner's defaults)."""

    data: str = param("chat-pairs", "instruction data in Alpaca format (alpaca; offline: "
                                    "chat-pairs)")
    r: int = param(8, "LoRA rank")
    alpha: int = param(16, "LoRA alpha")
    dropout: float = param(0.05, "LoRA dropout")
    targets: list[str] = param(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                "down_proj"], "modules that get adapters")
    lr: float = param(1e-4, "learning rate")
    epochs: float = param(2.0, "epochs over the instruction data")
    batch_size: int = param(8, "sequences per optimizer step")
    max_len: int = param(256, "tokens per training sequence (longer ones are cut)")
    max_steps: int | None = param(None, "stop after this many steps (null: the epochs decide)")
    micro_batch: int = param(4, "sequences per forward/backward (gradient accumulation up to "
                                "batch_size)")
    warmup_steps: int = param(100, "linear warm-up steps (at most 10% of all steps)")
    checkpoint_every: int = param(200, "save a resumable checkpoint every this many steps")
    train_on_inputs: bool = param(False, "also train on the prompt tokens (LLM-Pruner: false)")
    template: Literal["alpaca", "plain"] = param("alpaca", "prompt template")
    max_samples: int | None = param(None, "use at most this many training examples")
    gradient_checkpointing: bool = param(
        False, "recompute each layer's activations in backward instead of keeping them "
               "(transformers' gradient checkpointing, non-reentrant): the same losses, less "
               "activation memory, each layer's forward run once more per step")

    def validate(self) -> list[str]:
        problems = _positive(self, "r", "alpha", "batch_size", "max_len", "micro_batch",
                             "checkpoint_every")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout: must be in [0, 1)")
        if self.lr <= 0 or self.epochs <= 0:
            problems.append("lr and epochs: must be positive")
        return problems


@dataclass
class RunConfig(Section):
    """Everything a pruning run needs; what `lmprune validate` checks and runs save."""

    model: ModelConfig = section(ModelConfig, "which model to prune")
    data: DataConfig = section(DataConfig, "calibration data")
    prune: PruneConfig = section(PruneConfig, "what to prune and how much")
    taylor: TaylorConfig = section(TaylorConfig, "Taylor importance (method: taylor)")
    magnitude: MagnitudeConfig = section(MagnitudeConfig, "weight magnitude (method: magnitude)")
    adapruner: AdaPrunerConfig = section(AdaPrunerConfig, "AdaPruner search (method: adapruner)")
    sublayer: SublayerConfig = section(SublayerConfig, "RI sublayer pruning (method: sublayer-ri)")
    eval: EvalConfig = section(EvalConfig, "evaluation after pruning")
    recovery: RecoveryConfig = section(RecoveryConfig, "LoRA recovery (lmprune recover)")
    train: TrainConfig = section(TrainConfig, "fine-tuning with pruning (lmprune train)")
    apt: APTConfig = section(APTConfig, "APT (train.method: apt)")
    mask_search: MaskSearchConfig = section(MaskSearchConfig, "Kwon et al. mask search "
                                            "(lora-prune, mask-tuning, lora-prune-distill)")
    cofi: CoFiConfig = section(CoFiConfig, "CoFi L0 pruning (train.method: cofi)")
    output: OutputConfig = section(OutputConfig, "where results go")
    seed: int = param(0, "global seed (torch, numpy, random)")
    device: str = param("auto", "where models run: auto (the GPU when there is one), cpu, cuda, "
                                "cuda:N, mps; with placement spread also a list of GPUs "
                                "(cuda:0,1)")
    placement: Literal["single", "spread"] = param(
        "single", "single: the whole model on `device`; spread: its layers spread over several "
                  "GPUs (every visible GPU for device auto/cuda, or the list cuda:0,1), for "
                  "models that do not fit one GPU (prune, recover, eval; lmprune train is data "
                  "parallel instead: --num-gpus)")

    def validate(self) -> list[str]:
        from lmprune.device import device_problem
        from lmprune.placement import placement_problem

        problem = device_problem(self.device)
        if problem:
            return [f"device: {problem}"]
        problem = placement_problem(self.device, self.placement)
        return [problem] if problem else []
