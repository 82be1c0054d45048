"""What each method's ablatable components are, as data: one table per method.

A :class:`Component` has a canonical name, aliases (free-text phrasings plans use), what
REMOVE means (one sentence) and the config overrides that do it, and its REPLACE
alternatives (:class:`Option`), each with aliases, a one-sentence meaning and overrides.
Everything maps onto fields of the existing recipes' configs (``lmprune train`` for APT and
the Kwon baseline, ``lmprune prune`` for the post-training methods); nothing in a method
knows that an ablation is running. ``lmprune ls components`` prints these tables and
docs/ablation.md shows them.

To register a component: add a ``Component(...)`` to its method's table (the overrides must
name existing config fields; a test loads every override against the schema).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lmprune.errors import UnknownNameError


@dataclass(frozen=True)
class Option:
    """A REPLACE alternative: what runs instead of the component."""

    name: str
    overrides: tuple[str, ...]
    meaning: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Component:
    name: str
    short: str  # names its variants' run directories: <short>-remove, <short>-<option>
    aliases: tuple[str, ...]
    remove: tuple[str, ...] | None  # overrides of REMOVE; None: cannot be removed
    remove_meaning: str
    replacements: tuple[Option, ...] = ()

    def option(self, name: str) -> Option:
        for option in self.replacements:
            if option.name == name:
                return option
        raise UnknownNameError(f"replacement of {self.name}", name,
                               [o.name for o in self.replacements])


@dataclass(frozen=True)
class MethodTable:
    """One method's components, and how its runs are made from the existing recipes."""

    name: str
    recipe: str  # "train" (lmprune train) or "prune" (lmprune prune)
    method_override: str  # forces the method on whatever base config is used
    base: str  # shipped base config on a GPU
    base_cpu: str  # shipped base config without one (the cut-down demo schedule)
    seed_fields: tuple[str, ...]  # config fields set to the seed of each repeat
    description: str
    components: tuple[Component, ...] = field(default=())

    def component(self, name: str) -> Component:
        for component in self.components:
            if component.name == name:
                return component
        raise UnknownNameError(f"{self.name} component", name,
                               [c.name for c in self.components])


_TRAIN_SEEDS = ("seed",)
# post-training pruning is deterministic given its calibration draw: a seed redraws it
_PRUNE_SEEDS = ("seed", "data.seed", "prune.seed")

APT = MethodTable(
    "apt", "train", "train.method=apt", "ablate-apt", "ablate-apt-cpu", _TRAIN_SEEDS,
    "APT: adaptive pruning and tuning while fine-tuning (lmprune train --method apt)",
    (
        Component(
            "apt adapter", "adapter",
            ("apt adapter", "adapter", "apt adapters", "masked low rank adapter",
             "low rank adapter", "lora adapter", "tuning adapter", "parameter efficient tuning"),
            ("apt.adapter=none",),
            "no adapters: the backbone itself is fine-tuned (full fine-tuning) while APT's "
            "salience, schedule, budget and distillation still prune it"),
        Component(
            "outlier-aware salience", "salience",
            ("outlier aware salience", "outlier aware salience scoring", "salience scoring",
             "salience", "outlier salience", "kurtosis", "outlier term",
             "outlier aware importance", "importance scoring", "pruning criterion"),
            ("apt.kurtosis=false",),
            "plain activation x gradient salience, without the sqrt(kurtosis) outlier term",
            (Option("random", ("apt.salience=random",),
                    "blocks drawn uniformly at random at the same parameter budget",
                    ("random scoring", "random salience", "random importance",
                     "random selection", "uniform random scoring")),
             Option("magnitude", ("apt.salience=magnitude",),
                    "weight magnitude of each block",
                    ("magnitude scoring", "magnitude based scoring", "weight magnitude",
                     "magnitude based salience", "l1 norm", "weight norm")),
             Option("gradient", ("apt.salience=fisher",),
                    "mask-gradient Fisher information of each block",
                    ("gradient based scoring", "gradient scoring", "gradient based salience",
                     "fisher", "fisher information", "mask gradient",
                     "first order taylor")))),
        Component(
            "self-distillation", "distill",
            ("self distillation", "self knowledge distillation", "knowledge distillation",
             "distillation", "distillation loss", "self distillation loss"),
            ("apt.distill=false",),
            "no distillation: the task loss alone trains the pruned model"),
        Component(
            "parameter sharing in self-distillation", "teacher-sharing",
            ("parameter sharing in self distillation", "parameter sharing",
             "shared teacher", "teacher student parameter sharing",
             "shared parameters between teacher and student", "shared backbone teacher",
             "weight sharing in distillation"),
            ("apt.teacher=separate",),
            "the teacher is a whole frozen copy of the model taken when pruning starts (no "
            "parameters shared with the student; its memory counted)"),
        Component(
            "adaptive tuning", "rank-growth",
            ("adaptive tuning", "dynamic rank adjustment", "dynamic rank adjustment in apt "
             "adapter", "adaptive rank", "rank growth", "adaptive rank growth",
             "dynamic parameter addition", "dynamic parameter addition in salient layers",
             "adaptive parameter allocation", "dynamic rank", "rank increase",
             "adaptive adapter growth", "rank adaptation"),
            ("apt.rank_growth=static",),
            "adapter ranks stay at their initial value (no tuning parameters are added)",
            (Option("static", ("apt.rank_growth=static",),
                    "adapter ranks stay at their initial value",
                    ("static parameter allocation", "static rank", "fixed rank",
                     "no rank growth", "constant rank", "static allocation")),
             Option("uniform", ("apt.rank_growth=uniform",),
                    "every adapter grows by the same rank at each event, not only the "
                    "salient half",
                    ("uniform parameter addition", "uniform rank growth", "uniform growth",
                     "uniform allocation", "grow all adapters equally")))),
        Component(
            "early-stage pruning", "schedule",
            ("early stage pruning", "early pruning", "adaptive pruning", "pruning schedule",
             "adaptive pruning schedule", "early stage adaptive pruning", "cubic schedule",
             "cubic pruning schedule"),
            ("apt.schedule=after",),
            "no pruning during tuning: one pruning event when tuning ends",
            (Option("late", ("apt.schedule=late",),
                    "the keep ratio stays 1 until the end of the pruning window, then drops",
                    ("late pruning", "late stage pruning", "prune late", "delayed pruning")),
             Option("gradual", ("apt.schedule=gradual",),
                    "the keep ratio falls linearly throughout training",
                    ("gradual pruning", "gradual pruning throughout training",
                     "linear schedule", "pruning throughout training", "linear pruning")),
             Option("one-shot", ("apt.schedule=oneshot",),
                    "pruned once at initialisation, scored on calibration batches before "
                    "step 0",
                    ("one shot pruning", "one shot pruning at initialization",
                     "pruning at initialization", "prune at initialization",
                     "prune before training", "oneshot")),
             Option("after", ("apt.schedule=after",),
                    "one pruning event when tuning ends",
                    ("prune after training", "pruning after tuning", "post training pruning",
                     "prune after fine tuning", "post hoc pruning")))),
        Component(
            "salience ema", "ema",
            ("ema of salience", "ema of salience scores", "salience ema",
             "exponential moving average", "exponential moving average of salience",
             "moving average",
             "moving average of salience", "salience smoothing", "ema"),
            ("apt.ema=0",),
            "each pruning event uses the current salience only (no exponential moving "
            "average with earlier ones)"),
        Component(
            "hidden-dimension pruning", "hidden",
            ("hidden dimension pruning", "hidden channel pruning", "hidden state pruning",
             "pruning hidden dimensions", "hidden size pruning", "hidden dimension"),
            ("apt.structures=[heads,neurons]",),
            "only heads and FFN neurons are pruned, not hidden channels (identical to the "
            "reference unless the base config prunes hidden channels)"),
        Component(
            "APT as a whole", "apt",
            ("adaptive pruning and tuning", "apt pipeline", "apt framework",
             "pruning while tuning", "apt pruning and tuning"),
            None,
            "",
            (Option("lora + prune", ("train.method=lora-prune",),
                    "LoRA fine-tuning, then Kwon et al.'s mask search at the same sparsity",
                    ("lora prune", "lora then prune", "lora plus pruning",
                     "lora with kwon mask search", "two stage pruning", "prune after lora")),
             Option("lora + prune + distill", ("train.method=lora-prune-distill",),
                    "LoRA, Kwon pruning, then LoRA distilled from the dense LoRA model",
                    ("lora prune distill", "lora prune and distill",
                     "lora plus pruning plus distillation")))),
    ))

LORA_PRUNE = MethodTable(
    "lora-prune", "train", "train.method=lora-prune", "ablate-apt", "ablate-apt-cpu",
    _TRAIN_SEEDS,
    "LoRA, then Kwon et al.'s retraining-free mask search (lmprune train --method lora-prune)",
    (
        Component(
            "mask rearrangement", "rearrange",
            ("mask rearrangement", "rearrangement", "fisher based mask rearrangement",
             "layer wise mask rearrangement"),
            ("mask_search.rearrange=false",),
            "the searched mask is used as found, without per-layer rearrangement"),
        Component(
            "mask tuning", "mask-tuning",
            ("mask tuning", "mask value tuning", "least squares mask tuning",
             "layer wise reconstruction", "layer wise mask tuning"),
            ("mask_search.tune=false",),
            "kept units keep mask value 1 (no layer-wise least-squares rescaling)"),
    ))

SUBLAYER_RI = MethodTable(
    "sublayer-ri", "prune", "prune.method=sublayer-ri", "ablate-llm", "ablate-llm-cpu",
    _PRUNE_SEEDS,
    "heterogeneous sublayer pruning by relative impact (lmprune prune --method sublayer-ri)",
    (
        Component(
            "normalization in RI", "ri-normalization",
            ("normalization in ri metric", "normalization step in ri metric",
             "ri normalization", "normalized ri", "normalization", "parameter normalization",
             "normalization by parameter count", "per parameter normalization"),
            ("sublayer.normalize=false",),
            "raw relative impact (perplexity change), not divided by the sublayer's "
            "parameter count"),
        Component(
            "progressive search", "progressive",
            ("progressive search", "progressive search strategy", "progressive pruning",
             "iterative search", "progressive removal", "recomputed ri",
             "iterative ri recomputation"),
            ("sublayer.progressive=false",),
            "RI is computed once and sublayers are removed in that order (one-shot)",
            (Option("one-shot", ("sublayer.progressive=false",),
                    "RI computed once, sublayers removed in that order",
                    ("one shot pruning", "one shot", "one shot search", "single pass",
                     "one shot ranking", "oneshot")),)),
        Component(
            "parameter budget", "budget",
            ("parameter budget", "parameter based budget", "budget in parameters"),
            None,
            "",
            (Option("sublayer count", ("sublayer.budget=sublayers",),
                    "remove a fraction of the sublayers instead of the parameters",
                    ("sublayer count budget", "number of sublayers", "sublayer budget",
                     "count budget")),)),
    ))

ADAPRUNER = MethodTable(
    "adapruner", "prune", "prune.method=adapruner", "ablate-llm", "ablate-llm-cpu",
    _PRUNE_SEEDS,
    "AdaPruner: TPE search over calibration samples and importance mix (lmprune prune "
    "--method adapruner)",
    (
        Component(
            "calibration sample search", "sample-search",
            ("calibration sample search", "calibration data search", "sample search",
             "calibration sample selection", "adaptive calibration", "search over calibration "
             "samples", "calibration subset search"),
            ("adapruner.search_samples=false",),
            "one fixed random draw of data.num_samples calibration samples from the pool"),
        Component(
            "coarse/fine alpha mix", "mix",
            ("coarse fine alpha mix", "coarse fine mix", "alpha mix", "importance mix",
             "metric mix", "mixing coefficients", "coarse and fine grained importance mix",
             "balance coefficients", "alpha"),
            ("adapruner.search_mix=false",),
            "fixed equal weights of the aligned coarse and fine metrics instead of searched "
            "ones"),
        Component(
            "fine-grained metric", "fine-metric",
            ("fine grained metric", "fine grained importance", "fine metric",
             "element wise importance choice"),
            None,
            "",
            (Option("element1", ("adapruner.fine=element1",),
                    "the first-order element-wise Taylor metric, fixed",
                    ("first order element wise", "element1", "first order taylor",
                     "element wise first order")),
             Option("element2", ("adapruner.fine=element2",),
                    "the second-order element-wise Taylor metric, fixed",
                    ("second order element wise", "element2", "second order taylor",
                     "element wise second order")))),
        Component(
            "alignment factors", "alignment",
            ("alignment factors", "estimation metric alignment", "alignment",
             "metric alignment factors", "scale alignment", "alignment scales"),
            ("adapruner.align=false",),
            "the raw coarse and fine metrics are mixed, without the alignment factors"),
        Component(
            "confirmation round", "confirm",
            ("confirmation round", "confirmation", "re validation", "revalidation",
             "top k confirmation", "fresh held out confirmation", "winner's curse correction"),
            ("adapruner.confirm_top=0",),
            "the trial with the best search objective is kept, without scoring the best "
            "trials again on fresh windows"),
        Component(
            "consensus of the top trials", "consensus",
            ("consensus", "consensus of the top trials", "ensemble of the best trials",
             "score averaging", "bagged importance", "top trial consensus"),
            ("adapruner.consensus=off",),
            "the chosen trial's own masks instead of the consensus of the re-scored trials",
            (Option("compete", ("adapruner.consensus=compete",),
                    "the consensus only when it beats the best trial on the confirmation "
                    "windows", ("compete", "competing consensus", "consensus if better")),)),
        Component(
            "warm start", "warm-start",
            ("warm start", "baseline trials", "taylor warm start", "warm started search"),
            ("adapruner.warm_start=false",),
            "the search starts from random trials instead of the fixed Taylor baselines"),
        Component(
            "TPE search", "tpe",
            ("tpe", "tpe search", "bayesian search", "bayesian optimization",
             "tree structured parzen estimator", "search algorithm", "hyperparameter search",
             "optuna search", "adaptive search"),
            ("adapruner.search_samples=false", "adapruner.search_mix=false"),
            "no search: one fixed random draw of calibration samples and equal weights of "
            "the aligned metrics",
            (Option("random search", ("adapruner.sampler=random",),
                    "uniform random search with the same number of trials",
                    ("random search", "random sampling", "random sampler",
                     "uniform random search")),)),
    ))

TAYLOR = MethodTable(
    "taylor", "prune", "prune.method=taylor", "ablate-llm", "ablate-llm-cpu", _PRUNE_SEEDS,
    "LLM-Pruner's Taylor importance (lmprune prune --method taylor)",
    (
        Component(
            "importance metric", "importance",
            ("importance metric", "taylor importance", "importance estimation",
             "importance criterion", "taylor expansion importance"),
            None,
            "",
            (Option("vector", ("taylor.importance=vector",),
                    "vector-wise |sum g*w| per group",
                    ("vector wise", "vector wise importance", "coarse grained", "vector")),
             Option("element1", ("taylor.importance=element1",),
                    "element-wise first order sum |g*w|",
                    ("element wise first order", "first order", "element1",
                     "first order element wise")),
             Option("element2", ("taylor.importance=element2",),
                    "element-wise second order with the Hessian diagonal",
                    ("element wise second order", "second order", "element2", "hessian",
                     "second order element wise")))),
        Component(
            "importance aggregation", "aggregation",
            ("importance aggregation", "aggregation", "group aggregation"),
            None,
            "",
            tuple(Option(name, (f"taylor.aggregation={name}",), meaning, aliases)
                  for name, meaning, aliases in (
                      ("sum", "summed over a group's tensors", ("summation",)),
                      ("mean", "averaged over a group's tensors", ("average",)),
                      ("max", "the largest of a group's tensors", ("maximum",)),
                      ("prod", "the product over a group's tensors", ("product",)),
                      ("last", "the last tensor of the group only", ("last only",))))),
    ))

#: Every method whose components an ablation plan may name, by name.
METHOD_TABLES: dict[str, MethodTable] = {t.name: t for t in (APT, LORA_PRUNE, SUBLAYER_RI,
                                                             ADAPRUNER, TAYLOR)}


def method_table(name: str) -> MethodTable:
    try:
        return METHOD_TABLES[name]
    except KeyError:
        raise UnknownNameError("ablation method", name, METHOD_TABLES,
                               hint="`lmprune ls components` lists each method's components."
                               ) from None


def component_rows() -> list[dict]:
    """One row per (method, component, action): what ``lmprune ls components`` prints."""
    rows = []
    for table in METHOD_TABLES.values():
        for c in table.components:
            base = {"method": table.name, "component": c.name, "aliases": list(c.aliases)}
            if c.remove is not None:
                rows.append({**base, "action": "REMOVE", "overrides": list(c.remove),
                             "meaning": c.remove_meaning})
            for o in c.replacements:
                rows.append({**base, "action": f"REPLACE -> {o.name}",
                             "overrides": list(o.overrides), "meaning": o.meaning,
                             "replacement_aliases": list(o.aliases)})
    return rows
