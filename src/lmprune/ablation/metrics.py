"""Metric phrases of a plan -> quantities the recipes measure -> numbers from metrics.json.

A plan says "task performance, training time, memory footprint"; each phrase is matched
(:mod:`.matching`) to a :class:`MetricPhrase`, which names per recipe the
:class:`Quantity` objects that answer it. A quantity reads one run's ``metrics.json`` and
returns one or more columns (one per batch size, per dataset, ...). A phrase the registry
does not know is an error; a phrase a recipe cannot answer (perplexity of a classifier) is
an error that says why; both are raised before anything runs.

Train runs (``lmprune train``, APT and baselines):

- task performance -> dev (and test) task metric
- training time -> training seconds (dev evaluations excluded); training efficiency adds
  optimizer steps per second
- convergence speed -> seconds and optimizer steps until a model at the run's final sparsity
  first reaches 97% of the reference row's best dev score (mean over the reference's seeds)
- inference time / speed / speedup -> forward throughput and latency, each divided by the
  dense model's measured in the same process, per measured batch size
- memory usage / footprint / training memory usage -> peak training memory
  (``torch.cuda.max_memory_allocated`` on GPU; process RSS on CPU, labelled)

Prune runs (``lmprune prune``, post-training methods): task performance -> zero-shot accuracy
(acc_norm where the task has it); perplexity -> held-out perplexity per dataset; training
time / efficiency -> seconds of the pruning step (scoring + search; there is no training);
inference -> generation throughput and per-token latency vs dense; memory usage / footprint
-> peak memory of the pruning step and of generation at the largest batch size; training
memory usage -> peak memory of the pruning step. Every row also shows the parameters kept
(train) or removed (prune), so budget differences between variants are visible.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from lmprune.ablation.matching import Candidate, Matcher
from lmprune.errors import LmpruneError
from lmprune.evaluation.efficiency import at_final_sparsity, batch_results, relative

FRACTION = 0.97


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    fmt: str  # format spec of one number, e.g. ".4f", ".1%"
    higher_is_better: bool | None


@dataclass
class Context:
    """What a quantity needs beyond one run: the reference row's best dev score."""

    reference_best: float | None = None


Extract = Callable[[dict, Context], list[tuple[Column, float | None]]]


@dataclass(frozen=True)
class Quantity:
    key: str
    description: str  # shown in dry runs and results.md
    extract: Extract
    requires: Callable[[object], str | None] = lambda run: None  # a problem with the config


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _get(data, *path):
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


#: column label of process-RSS memory (lmprune.evaluation.memory CPU_KIND / CPU_NOW_KIND)
RSS_LABEL = "CPU RSS"


def memory_label(kind: str) -> str:
    """The short label of a memory kind (lmprune.evaluation.memory) in a column header."""
    from lmprune.evaluation.memory import MODEL_CPU_KIND

    if not kind:
        return "?"
    if "cuda" in kind:
        return "GPU"
    return "CPU, tensor sizes" if kind == MODEL_CPU_KIND else RSS_LABEL


def _memory_label(entry) -> str:
    return memory_label((entry or {}).get("kind", ""))


# ---------------------------------------------------------------------------- train recipe

def _task(m: dict, _: Context):
    name = m.get("metric_name", "metric")
    out = [(Column("dev", f"dev {name}", ".4f", True), _num(m.get("metric")))]
    test = m.get("test_metrics")
    if isinstance(test, dict) and name in test:
        out.append((Column("test", f"test {name}", ".4f", True), _num(test[name])))
    return out


def _train_seconds(m: dict, _: Context):
    return [(Column("train_s", "train time (s)", ".1f", False), _num(m.get("train_seconds")))]


def _steps_per_second(m: dict, _: Context):
    steps, seconds = _num(m.get("steps")), _num(m.get("train_seconds"))
    value = steps / seconds if steps and seconds else None
    return [(Column("steps_per_s", "optimizer steps/s", ".2f", True), value)]


def first_reaching(curve: list[dict], target: float) -> dict | None:
    """The earliest curve point (by seconds) at the final sparsity with metric >= target."""
    points = [p for p in at_final_sparsity(curve) if _num(p.get("metric")) is not None]
    for point in sorted(points, key=lambda p: (p["seconds"], p.get("step", 0))):
        if point["metric"] >= target - 1e-9 * abs(target):
            return point
    return None


def best_dev(metrics: dict) -> float | None:
    """A run's best dev score among curve points at its final sparsity."""
    values = [_num(p.get("metric")) for p in at_final_sparsity(metrics.get("curve") or [])]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _convergence(m: dict, ctx: Context):
    seconds = steps = None
    if ctx.reference_best is not None:
        point = first_reaching(m.get("curve") or [], FRACTION * ctx.reference_best)
        if point is not None:
            seconds, steps = _num(point.get("seconds")), _num(point.get("step"))
    return [(Column("conv_s", "time to 97% of ref best (s)", ".1f", False), seconds),
            (Column("conv_steps", "steps to 97% of ref best", ".0f", False), steps)]


def _speed_ratios(pruned: dict[int, dict], dense: dict[int, dict], rate: tuple[str, str],
                  latency: tuple[str, str]):
    """Per measured batch size: (key, label) ``rate`` and ``latency`` over the dense model's."""
    out = []
    for b in sorted(pruned):
        d = dense.get(b, {})
        out.append((Column(f"speedup_bs{b}", f"{rate[1]} vs dense, batch {b}", ".2f", True),
                    relative(pruned[b].get(rate[0]), d.get(rate[0]))))
        out.append((Column(f"latency_bs{b}", f"{latency[1]} vs dense, batch {b}", ".2f", False),
                    relative(pruned[b].get(latency[0]), d.get(latency[0]))))
    return out


def _train_inference(m: dict, _: Context):
    return _speed_ratios(batch_results(m.get("inference")), batch_results(m.get("dense_inference")),
                         ("samples_per_s", "throughput"), ("latency_ms", "latency"))


def _train_memory(m: dict, _: Context):
    entry = _get(m, "memory", "train")
    return [(Column("train_mem_mb", f"peak train memory (MB, {_memory_label(entry)})", ".0f",
                    False), _num((entry or {}).get("mb")))]


def _kept(m: dict, _: Context):
    return [(Column("kept", "kept body params", ".1%", None), _num(m.get("kept_params_ratio")))]


def _needs_measure(run) -> str | None:
    return None if run.train.measure else "needs train.measure=true"


# ---------------------------------------------------------------------------- prune recipe

def _zero_shot(m: dict, _: Context):
    out = []
    for task, result in sorted((_get(m, "after", "zero_shot") or {}).items()):
        key = "acc_norm" if "acc_norm" in result else "acc"
        out.append((Column(f"zs_{task}", f"{task} {key}", ".3f", True), _num(result.get(key))))
    return out


def _perplexity(m: dict, _: Context):
    return [(Column(f"ppl_{name}", f"perplexity {name}", ".2f", False),
             _num(result.get("perplexity")))
            for name, result in sorted((_get(m, "after", "perplexity") or {}).items())]


def _prune_seconds(m: dict, _: Context):
    return [(Column("prune_s", "pruning time (s)", ".1f", False),
             _num(_get(m, "seconds", "prune")))]


def _speed_by_batch(side) -> dict[int, dict]:
    return {int(r["batch_size"]): r for r in (side or {}).get("speed") or []}


def _prune_inference(m: dict, _: Context):
    return _speed_ratios(_speed_by_batch(m.get("after")), _speed_by_batch(m.get("before")),
                         ("tokens_per_s", "tokens/s"), ("ms_per_token", "ms/token"))


def _generation_memory(m: dict, _: Context):
    speed = _speed_by_batch(m.get("after"))
    if not speed:
        return []
    b = max(speed)
    kind = memory_label(speed[b].get("memory_kind", ""))
    return [(Column("gen_mem_mb", f"peak generation memory, batch {b} (MB, {kind})", ".0f",
                    False), _num(speed[b].get("peak_memory_mb")))]


def _prune_memory(m: dict, _: Context):
    entry = _get(m, "memory", "prune")
    return [(Column("prune_mem_mb", f"peak pruning memory (MB, {_memory_label(entry)})",
                    ".0f", False), _num((entry or {}).get("mb")))]


def _removed(m: dict, _: Context):
    return [(Column("removed", "non-embedding params removed", ".1%", None),
             _num(_get(m, "params_removed_fraction", "body")))]


def _needs(field: str, what: str) -> Callable[[object], str | None]:
    def check(run) -> str | None:
        return None if getattr(run.eval, field) else f"needs {what}"
    return check


Q = Quantity
QUANTITIES: dict[str, dict[str, Quantity]] = {
    "train": {q.key: q for q in (
        Q("kept", "kept_params_ratio: body parameters kept", _kept),
        Q("task", "dev metric (metrics.json `metric`) and test metric", _task),
        Q("train_time", "train_seconds: training clock, evaluations excluded", _train_seconds),
        Q("step_throughput", "steps / train_seconds", _steps_per_second),
        Q("convergence", "seconds and steps of the first curve point at the final sparsity "
                         "reaching 97% of the reference's best dev score", _convergence),
        Q("inference", "forward throughput and latency / the dense model's, per batch size",
          _train_inference, _needs_measure),
        Q("train_memory", "memory.train: peak training memory", _train_memory))},
    "prune": {q.key: q for q in (
        Q("removed", "params_removed_fraction.body: non-embedding parameters removed",
          _removed),
        Q("zero_shot", "after.zero_shot: accuracy per task", _zero_shot,
          _needs("zero_shot", "eval.zero_shot (a task list)")),
        Q("perplexity", "after.perplexity: held-out perplexity per dataset", _perplexity,
          _needs("perplexity", "eval.perplexity (a dataset list)")),
        Q("prune_time", "seconds.prune: scoring and search", _prune_seconds),
        Q("inference", "generation tokens/s and ms/token / the dense model's, per batch size",
          _prune_inference, _needs("speed", "eval.speed=true")),
        Q("prune_memory", "memory.prune: peak memory of the pruning step", _prune_memory),
        Q("gen_memory", "peak generation memory at the largest batch size",
          _generation_memory, _needs("speed", "eval.speed=true")))},
}
#: Shown on every row whatever the plan asks: budgets must be visibly equal.
ALWAYS = {"train": "kept", "prune": "removed"}


@dataclass(frozen=True)
class MetricPhrase:
    name: str
    aliases: tuple[str, ...]
    train: tuple[str, ...] | str  # quantity keys, or why the recipe cannot measure it
    prune: tuple[str, ...] | str


NO_CURVE = "post-training pruning has no training curve to converge on"
NO_PPL = "fine-tuning runs report their task metric, not perplexity"
METRIC_PHRASES = (
    MetricPhrase("task performance",
                 ("task performance", "accuracy", "task accuracy", "performance",
                  "dev accuracy", "test accuracy", "f1", "f1 score", "exact match", "score",
                  "downstream performance", "zero shot accuracy", "glue score", "quality",
                  "model quality", "effectiveness", "rouge", "final accuracy"),
                 ("task",), ("zero_shot",)),
    MetricPhrase("training time",
                 ("training time", "train time", "wall time", "fine tuning time",
                  "training cost", "pruning time", "time cost", "runtime",
                  "wall clock time", "compute time"),
                 ("train_time",), ("prune_time",)),
    MetricPhrase("training efficiency",
                 ("training efficiency", "training throughput", "training speed",
                  "steps per second", "tuning efficiency"),
                 ("train_time", "step_throughput"), ("prune_time",)),
    MetricPhrase("convergence speed",
                 ("convergence speed", "convergence", "time to accuracy", "steps to converge",
                  "convergence rate", "time to convergence", "speed of convergence"),
                 ("convergence",), NO_CURVE),
    MetricPhrase("inference time",
                 ("inference time", "inference latency", "latency", "inference cost"),
                 ("inference",), ("inference",)),
    MetricPhrase("inference speed",
                 ("inference speed", "inference throughput", "throughput", "speedup",
                  "speed up", "inference efficiency", "inference speedup",
                  "generation speed", "tokens per second"),
                 ("inference",), ("inference",)),
    MetricPhrase("memory usage",
                 ("memory usage", "memory footprint", "memory consumption", "peak memory",
                  "memory", "gpu memory", "memory cost", "memory efficiency"),
                 ("train_memory",), ("prune_memory", "gen_memory")),
    MetricPhrase("training memory usage",
                 ("training memory usage", "training memory", "train memory",
                  "training memory footprint", "peak training memory",
                  "fine tuning memory"),
                 ("train_memory",), ("prune_memory",)),
    MetricPhrase("perplexity",
                 ("perplexity", "ppl", "held out perplexity", "language modeling perplexity",
                  "wikitext perplexity"),
                 NO_PPL, ("perplexity",)),
    MetricPhrase("model size",
                 ("model size", "parameter count", "number of parameters", "parameters",
                  "sparsity", "compression ratio", "kept parameters", "pruned parameters"),
                 (), ()),
)
PHRASES = {p.name: p for p in METRIC_PHRASES}
MATCHER = Matcher([Candidate(p.name, p.name, p.aliases) for p in METRIC_PHRASES], "metric")


def quantities_for(phrase: MetricPhrase, recipe: str) -> tuple[str, ...]:
    answer = getattr(phrase, recipe)
    if isinstance(answer, str):
        raise LmpruneError(f"metric {phrase.name!r} is not measured by {recipe} runs: "
                           f"{answer}")
    return answer


def extract(metrics: dict, recipe: str, keys: list[str], ctx: Context
            ) -> list[tuple[str, Column, float | None]]:
    """``(quantity, column, value)`` of ``keys`` (after the always-shown one) for one run."""
    table = QUANTITIES[recipe]
    out = []
    for key in [ALWAYS[recipe], *[k for k in keys if k != ALWAYS[recipe]]]:
        out += [(key, column, value) for column, value in table[key].extract(metrics, ctx)]
    return out


def reference_best(reference_runs: list[dict]) -> float | None:
    """Mean over the reference's seeds of each run's best dev score (train runs)."""
    values = [v for v in (best_dev(m) for m in reference_runs) if v is not None]
    return statistics.fmean(values) if values else None
