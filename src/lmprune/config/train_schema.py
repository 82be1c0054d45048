"""Config sections of ``lmprune train``: pruning while fine-tuning (APT) and its baselines.

Defaults follow the papers where they say so (the field help names the source); where a paper's
value does not fit a short offline run, the shipped configs under ``src/lmprune/configs/``
override it and say why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lmprune.config.section import Section, param

#: Methods of ``lmprune train`` (one concept each; see lmprune.training.methods).
TRAIN_METHODS: tuple[str, ...] = ("apt", "ft", "lora", "lora-prune", "mask-tuning", "cofi",
                                  "lora-prune-distill")
#: Default learning rate per method: FT as BERT/RoBERTa fine-tuning (2e-5); adapter methods
#: as LoRA on GLUE-size models (APT trains RoBERTa-base adapters at 2e-4).
DEFAULT_LR = {"ft": 2e-5, "mask-tuning": 2e-5}
ADAPTER_LR = 2e-4
APT_STRUCTURES = ("heads", "neurons", "hidden")
COFI_KINDS = ("heads", "attention", "neurons", "ffn", "hidden")


def _positive(obj: object, *names: str) -> list[str]:
    return [f"{n}: must be a positive integer, got {getattr(obj, n)}"
            for n in names if getattr(obj, n) is not None and getattr(obj, n) < 1]


@dataclass
class TrainConfig(Section):
    """The fine-tuning run: method, task, budget and optimisation."""

    method: str = param("apt", "training method: " + ", ".join(TRAIN_METHODS))
    task: str = param("foods", "dataset to fine-tune on (classification, regression, qa or "
                               "summarization kind, see `lmprune ls datasets`)")
    data_files: dict[str, str] | None = param(None, "local files per split (hub datasets only), "
                                                    "e.g. {train: t.jsonl, validation: v.jsonl}")
    sparsity: float = param(0.6, "fraction of the prunable body's parameters removed (heads, "
                                 "neurons, hidden channels; not embeddings or task heads); 0 "
                                 "for ft and lora")
    epochs: float = param(3.0, "training epochs")
    max_steps: int | None = param(None, "stop after this many optimizer steps (null: epochs)")
    batch_size: int = param(32, "training examples per optimizer step")
    lr: float | None = param(None, "peak learning rate (null: 2e-5 for ft, mask-tuning and apt "
                                   "with apt.adapter=none; 2e-4 for adapter methods)")
    weight_decay: float = param(0.0, "AdamW weight decay")
    warmup_ratio: float = param(0.06, "linear warm-up as a fraction of all steps")
    max_len: int = param(128, "tokens per input (longer ones are cut)")
    max_train_samples: int | None = param(None, "use at most this many training examples")
    max_eval_samples: int | None = param(None, "evaluate on at most this many dev examples")
    eval_split: str = param("validation", "split for the dev metric and the training curve")
    test_split: str | None = param("test", "split evaluated once at the end (null: none)")
    eval_every: int = param(50, "steps between dev evaluations (points of the training curve)")
    eval_batch_size: int = param(64, "examples per evaluation batch")
    reference: str | None = param(None, "reference for time-to-accuracy and relative accuracy: "
                                        "a run directory (its dev metric) or a number")
    init_from: str | None = param(None, "start from this fine-tuned run's saved model (lora-prune "
                                        "and lora-prune-distill: a lora run; mask-tuning: an ft "
                                        "run) instead of training it first")
    teacher: str | None = param(None, "a fine-tuned dense run or model directory used as the "
                                      "distillation teacher (cofi, lora-prune-distill)")
    lora_r: int = param(8, "LoRA rank of adapter methods (lora, cofi, lora-prune*)")
    lora_alpha: float = param(16.0, "LoRA alpha (scale alpha / r = 2)")
    mixed_precision: Literal["no", "bf16"] = param(
        "no", "training forwards under autocast: no, or bf16 (matrix products and saved "
              "activations in bfloat16, on a CPU or a GPU with bfloat16; weights, gradients "
              "and optimizer state stay in the model's dtype). The same for every method of "
              "a comparison, so memory and time ratios stay like for like")
    gradient_checkpointing: bool = param(
        False, "recompute each layer's activations in backward instead of keeping them "
               "(transformers' gradient checkpointing, non-reentrant: the same losses, less "
               "activation memory, about one more forward per step); for architectures whose "
               "transformers code has it (not MPNet). The same for every method of a "
               "comparison")
    measure: bool = param(True, "measure inference throughput, latency and memory at the end")
    measure_batch_sizes: list[int] = param([32, 128], "batch sizes of the throughput measurement")
    measure_seq_len: int = param(128, "sequence length of the throughput measurement")
    measure_seconds: float | None = param(None, "cap on timed seconds per batch size (slow CPUs)")
    save_model: bool = param(True, "save the final (pruned, merged) model in Hugging Face format")
    progress: bool = param(True, "show progress bars")
    resume: bool = param(True, "checkpoint into DIR.partial after every evaluation and resume "
                               "a killed run with the same --out from there (another config "
                               "is an error); false: start afresh (deletes DIR.partial)")

    def validate(self) -> list[str]:
        problems = _positive(self, "batch_size", "max_len", "eval_every", "eval_batch_size",
                             "max_steps", "max_train_samples", "max_eval_samples",
                             "measure_seq_len", "lora_r")
        if self.method not in TRAIN_METHODS:
            from lmprune.errors import UnknownNameError

            problems.append(f"method: {UnknownNameError('method', self.method, TRAIN_METHODS)}")
        if not 0.0 <= self.sparsity < 1.0:
            problems.append(f"sparsity: must be in [0, 1), got {self.sparsity}")
        if self.epochs <= 0:
            problems.append(f"epochs: must be > 0, got {self.epochs}")
        if self.lr is not None and self.lr <= 0:
            problems.append(f"lr: must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            problems.append(f"warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if any(b < 1 for b in self.measure_batch_sizes):
            problems.append("measure_batch_sizes: every batch size must be >= 1")
        return problems

    def learning_rate(self, apt_adapter: str = "lora", backbone_lr: float | None = None) -> float:
        """``lr``, or the method's default. APT without adapters (``apt.adapter=none``) tunes
        the whole backbone: it takes ``apt.backbone_lr`` (default FT's rate), never an adapter
        ``lr`` (1e-3 would wreck full fine-tuning, and an ablation would measure that)."""
        if self.method == "apt" and apt_adapter == "none":
            return backbone_lr if backbone_lr is not None else DEFAULT_LR["ft"]
        if self.lr is not None:
            return self.lr
        return DEFAULT_LR.get(self.method, ADAPTER_LR)


@dataclass
class APTConfig(Section):
    """APT (Zhao, Hajishirzi, Cao, ICML 2024); every component can be switched or replaced."""

    adapter: Literal["lora", "none"] = param(
        "lora", "lora: APT's masked low-rank adapters are tuned (the backbone frozen); none: no "
                "adapters, every backbone weight and the task head are tuned (full "
                "fine-tuning, FT's lr 2e-5 unless train.lr is set) while salience, EMA, "
                "schedule, budget search and distillation still prune it (rank growth does "
                "not apply and is ignored with a note)")
    backbone_lr: float | None = param(
        None, "learning rate of the backbone when apt.adapter=none (null: FT's 2e-5); "
              "train.lr is the adapters' rate and is not used then")
    r: int = param(8, "initial adapter rank (paper: 8)")
    alpha: float = param(16.0, "adapter alpha; the scale alpha / r_init = 2 stays fixed")
    targets: list[str] = param(["q", "v", "ffn_up"], "adapted linears: roles q, k, v, o, "
                                                     "ffn_up, ffn_out (T5: self and cross "
                                                     "attention; LLaMA: use [q, v]); not empty "
                                                     "(no adapters: apt.adapter=none)")
    structures: list[str] = param(["heads", "neurons"], "blocks pruned: heads, neurons, hidden "
                                                        "(hidden channels: see docs/apt.md)")
    salience: Literal["outlier", "magnitude", "fisher", "random"] = param(
        "outlier", "block salience: outlier-aware activation x gradient (APT), weight "
                   "magnitude, Fisher of the masks, or random (uniformly random blocks, the "
                   "same fraction of heads and of neurons, at the same parameter budget)")
    kurtosis: bool = param(True, "add the sqrt(kurtosis) outlier term (salience: outlier)")
    outlier_scale: Literal["matched", "raw"] = param(
        "raw", "raw: S~ + sqrt(kurtosis) as in the paper; matched: the outlier term scaled "
               "per block kind to the mean of S~ (the raw sum prunes heads first on small "
               "models; same accuracy measured, docs/apt.md)")
    ema: float = param(0.85, "EMA weight of the previous salience and adapter importance "
                             "(paper: 0.85; 0: each event uses the last step's scores)")
    schedule: Literal["cubic", "late", "gradual", "oneshot", "after", "none"] = param(
        "cubic", "target keep-ratio schedule: cubic (APT: early, adaptive), late (once at the "
                 "stop step, then training goes on), gradual (throughout training), oneshot "
                 "(at initialisation, scored on apt.calibration_batches before step 0), after "
                 "(once after the last training step, salience from the whole run's EMA; no "
                 "training after it), none")
    calibration_batches: int = param(8, "schedule oneshot: training batches scored (forward + "
                                        "backward, no optimizer step) before step 0")
    prune_start: int = param(200, "first pruning step (paper: after 200 steps)")
    prune_stop_epochs: float = param(3.0, "pruning ends after this many epochs (capped at 90% "
                                          "of training)")
    events: int = param(10, "pruning events between start and stop (paper: about 10)")
    round_to: int = param(8, "final FFN widths are multiples of this (hardware-friendly; 1: off)")
    compact: bool = param(True, "remove pruned heads, neurons and hidden channels physically "
                                "at every pruning event (and when the masks reach the last "
                                "event's targets): backbone, adapters, optimizer state and "
                                "teacher shrink and training goes on with the smaller model "
                                "(APT); false: keep them masked until the end (same losses, "
                                "full-size cost)")
    selection: Literal["event", "step"] = param(
        "event", "when the budget search runs: event (once per pruning event, masks move "
                 "monotonically to those targets) or step (APT's code: again after every step "
                 "between the first and the last event, masks move toward the latest choice "
                 "and can come back)")
    min_units: int = param(1, "heads and neurons every attention / FFN sublayer keeps (APT: "
                              "0, a sublayer and so a whole layer can be pruned away)")
    rank_growth: Literal["adaptive", "uniform", "static"] = param(
        "adaptive", "adapter ranks: top half by salience grow (APT), all grow, or static")
    growth_factor: float = param(4.0, "tuning parameters grow linearly to this multiple of the "
                                      "initial count by the last pruning event")
    max_rank: int = param(64, "rank cap of one adapter")
    growth_counts: Literal["current", "dense"] = param(
        "current", "what the tuning-parameter goal of rank growth counts: the adapters as "
                   "pruned (current: they shrink with their blocks, so ranks grow more, as "
                   "APT) or their dense dimensions (ranks grow less)")
    distill: bool = param(True, "self-distillation from a frozen teacher (apt.teacher)")
    teacher: Literal["best", "start", "separate"] = param(
        "best", "self-distillation teacher: best / start share the student's frozen backbone "
                "(tuning parameters and masks of the best dev model since pruning started, "
                "APT's self_momentum, or a copy taken when pruning starts); separate: a whole "
                "frozen copy of the model taken when pruning starts (no parameter sharing, its "
                "memory counted)")
    teacher_structure: Literal["snapshot", "student"] = param(
        "snapshot", "blocks the student prunes after the teacher was taken: snapshot (the "
                    "teacher keeps them and computes what the model computed when taken, as "
                    "APT's code, which removes them only when distillation ends; with "
                    "compaction a shared teacher then becomes a frozen copy until the next "
                    "refresh) or student (they are gone from the teacher too: nothing "
                    "full-size stays; measured worse, docs/apt.md)")
    teacher_dtype: Literal["auto", "model", "bfloat16"] = param(
        "auto", "dtype of a teacher kept as a frozen copy (apt.teacher=separate, or a snapshot "
                "teacher once the student is compacted): bfloat16 halves its memory (and its "
                "forward runs in bf16); model keeps the model's dtype; auto: bfloat16 on a GPU, "
                "the model's dtype on a CPU")
    saved_input_dtype: Literal["auto", "model", "bfloat16", "centred"] = param(
        "model", "what an adapter keeps of its input for its A's gradient (the frozen linear "
                 "keeps nothing): model keeps the model's dtype; bfloat16 halves that "
                 "activation memory (one copy per input, shared by the q and v adapters; "
                 "forward and the gradient passed on unchanged, A's gradient from the rounded "
                 "input; 0.75 points lower accuracy at base scale, docs/apt.md); centred: a "
                 "bfloat16 copy of the input minus its per-channel mean, the mean kept apart; "
                 "auto: bfloat16 on a GPU for a float32 model, model on a CPU")
    frozen_dtype: Literal["autocast", "auto", "model", "float16", "bfloat16"] = param(
        "autocast", "what the frozen backbone's linear and embedding weights are stored in "
                    "(computed in the model's dtype, cast one layer at a time; biases, norms "
                    "and trainable parameters unchanged): autocast stores the linears in "
                    "bfloat16 when training runs under train.mixed_precision=bf16 (what "
                    "autocast computes them in anyway: the products are unchanged, the "
                    "float32 weights and their per-call bfloat16 casts go; the export keeps "
                    "the rounded values) and otherwise keeps the model's dtype; model keeps "
                    "the model's dtype; float16 halves their memory and keeps 11 significant "
                    "bits, what a TF32 product rounds to anyway; bfloat16 keeps 8; auto: "
                    "float16 on a GPU for a float32 model, model on a CPU "
                    "(lmprune.tuners.frozen_storage)")
    distill_epochs: float | None = param(
        None, "how long self-distillation lasts from its start, in epochs (APT's "
              "distill_epoch); after it the loss is the task loss and the teacher is freed. "
              "null: the pruning window, until the stop step (apt.prune_stop_epochs; measured "
              "better than to the last step, docs/apt.md); a large value: to the last step")
    temperature: float = param(4.0, "prediction-distillation temperature (issue: 4; the "
                                    "authors' scripts use 2/3)")
    teacher_layers: Literal["block", "static"] = param(
        "block", "teacher layers: one random per quarter each step (APT's scripts) or the "
                 "last of each quarter")
    train_head: bool = param(True, "also train the task head (classifier) with the adapters")

    def validate(self) -> list[str]:
        problems = _positive(self, "r", "events", "round_to", "max_rank", "calibration_batches")
        if self.distill_epochs is not None and not self.distill_epochs > 0:
            problems.append(f"distill_epochs: must be > 0 (null: the pruning window), got "
                            f"{self.distill_epochs}")
        if self.min_units < 0:
            problems.append(f"min_units: must be >= 0, got {self.min_units}")
        if self.adapter == "lora" and not self.targets:
            problems.append("targets: empty, so no adapter and nothing tuned in the backbone; to "
                            "tune the backbone without adapters set apt.adapter=none")
        if self.prune_start < 0:
            problems.append(f"prune_start: must be >= 0, got {self.prune_start}")
        if self.backbone_lr is not None and self.backbone_lr <= 0:
            problems.append(f"backbone_lr: must be > 0, got {self.backbone_lr}")
        bad = [s for s in self.structures if s not in APT_STRUCTURES]
        if bad or not self.structures:
            problems.append(f"structures: {bad or 'empty'}; use some of "
                            f"{', '.join(APT_STRUCTURES)}")
        if not 0.0 <= self.ema < 1.0:
            problems.append(f"ema: must be in [0, 1), got {self.ema}")
        if self.growth_factor < 1.0:
            problems.append(f"growth_factor: must be >= 1, got {self.growth_factor}")
        if self.temperature <= 0 or self.prune_stop_epochs <= 0:
            problems.append("temperature and prune_stop_epochs: must be > 0")
        if self.max_rank < self.r:
            problems.append(f"max_rank ({self.max_rank}) must be >= r ({self.r})")
        return problems


@dataclass
class MaskSearchConfig(Section):
    """Kwon et al. (NeurIPS 2022) retraining-free pruning (lora-prune, mask-tuning)."""

    num_samples: int = param(2048, "training examples for the mask Fisher (paper: 2048)")
    rearrange: bool = param(True, "mask rearrangement with the per-layer Fisher")
    tune: bool = param(True, "layer-wise least-squares mask tuning")
    tune_samples: int = param(512, "examples for mask tuning")
    distill_epochs: float = param(2.0, "lora-prune-distill: epochs of LoRA training with "
                                       "distillation after pruning")
    round_to: int = param(8, "kept FFN widths are rounded to multiples of this, by APT's rule "
                             "(as apt.round_to; 1: off)")
    probes: int = param(3, "lora-prune / mask-tuning: times during the dense stage (evenly "
                           "spaced dev evaluations) the search prunes the current model and "
                           "the pruned model is evaluated; the point's time is the training so "
                           "far plus the search, so time to accuracy is measured along the run "
                           "(0: only the end)")

    def validate(self) -> list[str]:
        problems = _positive(self, "num_samples", "tune_samples", "round_to")
        if self.probes < 0:
            problems.append(f"probes: must be >= 0, got {self.probes}")
        if self.distill_epochs <= 0:
            problems.append("distill_epochs: must be > 0")
        return problems


@dataclass
class CoFiConfig(Section):
    """CoFi (Xia, Zhong, Chen, ACL 2022) with only LoRA and L0 parameters trained."""

    kinds: list[str] = param(list(COFI_KINDS), "gated structures: " + ", ".join(COFI_KINDS))
    droprate_init: float = param(0.5, "initial drop rate of the gates (CoFi: 0.5)")
    temperature: float = param(2.0 / 3.0, "hard-concrete temperature (CoFi: 2/3)")
    reg_lr: float = param(0.01, "constant learning rate of log-alpha and the Lagrange "
                                "multipliers, outside the main warm-up/decay schedule and "
                                "gradient clipping (CoFi's scripts: reg_learning_rate 0.01; "
                                "the multipliers ascend)")
    finetune_steps: int = param(100, "steps of fine-tuning (adapters, head, distillation) "
                                     "before the gates and the Lagrangian start; pruning then "
                                     "restarts the main optimizer and its linear schedule "
                                     "(CoFi's trainer: prepruning_finetune_steps = 100); "
                                     "capped at a third of the run")
    warmup_fraction: float = param(0.3, "target sparsity ramps linearly over this fraction of "
                                        "training, counted from the start of pruning (CoFi: "
                                        "lagrangian_warmup_epochs)")
    round_to: int = param(8, "kept FFN widths and the kept hidden size are rounded to "
                             "multiples of this, by APT's rule (as apt.round_to; 1: off)")
    fit_target: bool = param(True, "the final masks keep at most the target's parameters: "
                                   "CoFi's per-layer rule, with the kept head and neuron "
                                   "counts moved together in log-alpha order (gates that have "
                                   "not saturated, as on short schedules, otherwise keep more "
                                   "or less than the target); false: CoFi's masks as they are")
    distill_temperature: float = param(2.0, "prediction-distillation temperature (CoFi: 2)")
    pred_weight: float = param(0.1, "weight of the prediction (KL) loss (CoFi: 0.1)")
    layer_weight: float = param(0.9, "weight of the layer loss (CoFi: 0.9)")

    def validate(self) -> list[str]:
        problems = []
        bad = [k for k in self.kinds if k not in COFI_KINDS]
        if bad or not self.kinds:
            problems.append(f"kinds: {bad or 'empty'}; use some of {', '.join(COFI_KINDS)}")
        if not 0.0 < self.droprate_init < 1.0:
            problems.append("droprate_init: must be in (0, 1)")
        if self.temperature <= 0 or self.reg_lr <= 0 or self.distill_temperature <= 0:
            problems.append("temperature, reg_lr and distill_temperature: must be > 0")
        if not 0.0 <= self.warmup_fraction <= 1.0:
            problems.append("warmup_fraction: must be in [0, 1]")
        if self.finetune_steps < 0:
            problems.append(f"finetune_steps: must be >= 0, got {self.finetune_steps}")
        problems += _positive(self, "round_to")
        return problems
