"""APT's outlier-aware salience of heads and FFN neurons (Zhao, Hajishirzi, Cao, ICML 2024).

Definitions (paper Sec. 4.2, "outlier-aware salience scoring"; checked against the authors'
code, ``ROIM1998/APT``: ``prune/scorer.py`` (``BackwardRunningHiddenStatesSalienceScorer`` and
its LLaMA/T5 subclasses: ``cache_mha_states``/``calculate_mha_score``/``_gather_score``) and
``utils/minus_utils.py::kurtosis``):

* activation-gradient salience of a block with activation ``H`` (the input of the output
  projection: a head's context vector, an FFN neuron's intermediate activation)::

      S~(c) = (sum_{b,t} |dL/dH[b,t,c]|) * (sum_{b,t} |H[b,t,c]|)          per channel c
      S~(head) = sum_{c in head} S~(c)

  i.e. the product is taken per channel and *then* summed over ``head_dim`` (the repo's
  ``(mha_states * grad.abs().sum(0).sum(0)).view(-1, head_size).sum(1)``), not the product of
  two head-level sums.
* outlier term: ``O_j = W[:, j] * mean_{b,t} X[b,t,j]`` (the repo uses the *mean* activation
  over batch and tokens; entries of a head are its ``d_out x head_dim`` block), and the block's
  score is ``S^ = S~ + sqrt(max(Kurt(O), 0))`` — *added*, unnormalised — where the repo's
  ``Kurt`` is the **excess** (Fisher) kurtosis, clamped at 0 before the square root.
* hidden (residual) channel ``i``: the same product per channel of every output projection's
  *output* (and its gradient), summed over projections, plus
  ``sqrt(max(Kurt_excess(O[i, :]), 0))`` summed over projections (``calculate_mha_score`` /
  ``cache_ffn_states``, ``all_hidden_scores`` / ``all_hidden_kurtosis``).
* the score kept for pruning is an EMA, ``S(t) = beta * S(t-1) + (1 - beta) * S^(t)`` with
  ``beta = 0.85`` (the repo's ``beta_1``).

Deviations (see each function): :func:`kurtosis` uses population moments (the repo divides
by the unbiased std; the two differ by ``((n-1)/n)^2``, < 0.1% for n >= 4096 entries); the
head outlier term groups the entries of each head (the repo's
``permute(1, 2, 0).reshape(-1, num_heads)`` interleaves heads, which we read as a bug);
:class:`SalienceEMA` initialises with the first update unless ``zero_init=True`` (the repo
starts from 0, which scales every score by the same factor and so never changes a ranking).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from lmprune.arch import ModelStructure, describe
from lmprune.errors import LmpruneError
from lmprune.pruners.selection import Scores

BETA = 0.85
#: per weight tensor: (its version, (the power sums of its alive rows, their count per column))
_POWER_SUMS: WeakIdKeyDictionary = WeakIdKeyDictionary()
#: How the outlier term is added: ``raw`` (the paper's S~ + sqrt(kurtosis)) or ``matched``
#: (the term rescaled per block kind so its mean equals the mean S~ of that kind; see
#: :class:`SalienceCollector`).
OUTLIER_SCALES = ("raw", "matched")


def _real(x: Tensor) -> Tensor:
    """``x`` detached, in float32 at least (float64 stays float64: exact comparisons in tests)."""
    return x.detach().to(torch.promote_types(x.dtype, torch.float32))


def _times(t: Tensor, factor: float) -> Tensor:
    """``t * factor``, without a kernel launch for the usual factor 1 (exactly ``t`` then)."""
    return t if factor == 1.0 else t * factor


def _group_sum(x: Tensor, group_size: int) -> Tensor:
    if x.shape[-1] % group_size:
        raise LmpruneError(f"{x.shape[-1]} channels do not split into groups of {group_size}")
    return x.reshape(*x.shape[:-1], -1, group_size).sum(-1)


def activation_salience(h: Tensor, grad: Tensor, group_size: int = 1) -> Tensor:
    """APT's S~ per unit: ``(sum |dL/dH|) * (sum |H|)`` over every leading (batch, token) dim,
    per channel, then summed over the ``group_size`` channels of a unit (``head_dim`` for
    heads, 1 for neurons). ``h`` and ``grad`` are ``[..., channels]``."""
    if h.shape != grad.shape:
        raise LmpruneError(f"activation {tuple(h.shape)} and gradient {tuple(grad.shape)} differ")
    dims = tuple(range(h.dim() - 1))
    per_channel = _real(grad).abs().sum(dims) * _real(h).abs().sum(dims)
    return _group_sum(per_channel, group_size)


def kurtosis(x: Tensor, dim: int | tuple[int, ...] = -1, excess: bool = False) -> Tensor:
    """Pearson kurtosis ``m4 / m2^2`` with population moments (3 for a Gaussian; ``excess=True``
    subtracts 3, Fisher's definition, which APT's code uses). Zero variance gives 0 (Pearson)
    or -3 (excess), mirroring the repo's nan -> 0 z-scores."""
    x = _real(x)
    centered = x - x.mean(dim, keepdim=True)
    m2 = centered.pow(2).mean(dim)
    m4 = centered.pow(4).mean(dim)
    kurt = torch.where(m2 > 0, m4 / m2.clamp_min(torch.finfo(x.dtype).tiny).pow(2),
                       torch.zeros_like(m2))
    return kurt - 3.0 if excess else kurt


def outlier_term(weight_cols: Tensor, act: Tensor, group_size: int = 1) -> Tensor:
    """APT's outlier term ``sqrt(max(Kurt_excess(O), 0))`` per unit, with
    ``O[:, c] = W[:, c] * mean_{b,t} X[b,t,c]``; a unit's entries are its ``d_out x group_size``
    block. ``weight_cols`` is ``[d_out, channels]`` (an output projection's weight), ``act``
    ``[..., channels]``. For a neuron (group 1) ``O`` is a scaled column, so the term is the
    column's own kurtosis whenever the mean activation is non-zero."""
    return outlier_from_mean(weight_cols, _real(act).reshape(-1, act.shape[-1]).mean(0),
                             group_size)


def outlier_from_mean(weight_cols: Tensor, mean_act: Tensor, group_size: int = 1) -> Tensor:
    """:func:`outlier_term` from the mean activation per channel (what processes that each
    saw part of a batch can agree on: sums and counts add up)."""
    out = _real(weight_cols) * mean_act.to(weight_cols.device)  # [d_out, channels]
    if out.shape[1] % group_size:
        raise LmpruneError(f"{out.shape[1]} channels do not split into groups of {group_size}")
    blocks = out.reshape(out.shape[0], -1, group_size).transpose(0, 1).reshape(
        out.shape[1] // group_size, -1)
    return kurtosis(blocks, dim=1, excess=True).clamp_min(0).sqrt()


def column_power_sums(weight_cols: Tensor) -> Tensor:
    """``[4, channels]`` float64: the sums over rows of ``W[:, c] ** k`` for ``k = 1..4``, what
    :func:`outlier_from_power_sums` needs of a weight (computed once per weight version)."""
    w = _real(weight_cols)  # powers in the weight's precision (float32 at least), sums in
    # float64: one weight-sized temporary at a time, not a float64 copy and its powers
    return torch.stack([w.pow(k).sum(0, dtype=torch.float64) for k in range(1, 5)])


def outlier_from_power_sums(sums: Tensor, rows: Tensor, mean_act: Tensor,
                            group_size: int = 1) -> Tensor:
    """:func:`outlier_from_mean` from the weight's :func:`column_power_sums` (one call for the
    columns of many projections side by side: ``rows`` is the row count of each column's
    projection): the block ``O`` of a unit has entries ``W[r, c] * m_c``, so its raw moments
    are ``sum_c m_c^k S_k(c) / N`` and the excess kurtosis follows from them, with no
    weight-sized temporary. Float64, so the raw-moment formula loses nothing that matters
    against the centred one (both give the same term to float32 precision)."""
    m = mean_act.detach().to(device=sums.device, dtype=torch.float64)
    k = torch.arange(1, 5, device=sums.device, dtype=torch.float64).unsqueeze(1)
    if m.numel() % group_size:
        raise LmpruneError(f"{m.numel()} channels do not split into groups of {group_size}")
    per_unit = (m.unsqueeze(0).pow(k) * sums).reshape(4, -1, group_size).sum(-1)
    n = rows.to(device=sums.device, dtype=torch.float64).reshape(-1, group_size)[:, 0]
    e1, e2, e3, e4 = per_unit / (n * group_size)
    var = e2 - e1 * e1
    m4 = e4 - 4 * e1 * e3 + 6 * e1 * e1 * e2 - 3 * e1 ** 4
    kurt = torch.where(var > 0, m4 / var.clamp_min(torch.finfo(torch.float64).tiny) ** 2,
                       torch.zeros_like(var))
    return (kurt - 3.0).clamp_min(0).sqrt().to(torch.float32)


def hidden_outlier_term(weight_cols: Tensor, act: Tensor) -> Tensor:
    """Per hidden channel ``i`` of one output projection: ``sqrt(max(Kurt_excess(O[i, :]), 0))``
    with ``O`` as in :func:`outlier_term` (the repo's ``kurtosis(activation.permute(1, 0))``
    for FFNs; summed over every projection for the hidden score)."""
    return hidden_outlier_from_mean(weight_cols,
                                    _real(act).reshape(-1, act.shape[-1]).mean(0))


def hidden_outlier_from_mean(weight_cols: Tensor, mean_act: Tensor) -> Tensor:
    """:func:`hidden_outlier_term` from the mean activation per channel."""
    out = _real(weight_cols) * mean_act.to(weight_cols.device)
    return kurtosis(out, dim=1, excess=True).clamp_min(0).sqrt()


def apt_salience(h: Tensor, grad: Tensor, weight_cols: Tensor, use_kurtosis: bool = True,
                 group_size: int = 1) -> Tensor:
    """APT's per-step block score ``S^ = S~ + sqrt(max(Kurt(O), 0))`` (outlier term optional)."""
    score = activation_salience(h, grad, group_size)
    if use_kurtosis:
        score = score + outlier_term(weight_cols, h, group_size)
    return score


# -- replacements for ablations (random: pruners.apt_budget.proportional_random_salience) --

def magnitude_salience(weight_groups: Tensor, p: float = 1.0) -> Tensor:
    """Lp norm of each unit's weights; ``weight_groups`` is ``[units, ...]``."""
    return _real(weight_groups).reshape(weight_groups.shape[0], -1).norm(p=p, dim=1)


def fisher_salience(grad: Tensor, group_size: int = 1) -> Tensor:
    """Squared gradient summed over leading dims and a unit's channels. With per-example mask
    gradients ``[batch, units]`` this is the empirical Fisher of the masks (APT's
    ``compute_fisher_info``)."""
    g2 = _real(grad).pow(2)
    return _group_sum(g2.reshape(-1, g2.shape[-1]).sum(0), group_size)


class SalienceEMA:
    """``S(t) = beta * S(t-1) + (1 - beta) * S^(t)`` per key (APT, beta = 0.85).

    The first update of a key stores ``S^`` itself (``zero_init=False``) or
    ``(1 - beta) * S^`` (``zero_init=True``, the authors' code, which starts from 0).
    """

    def __init__(self, beta: float = BETA, zero_init: bool = False) -> None:
        if not 0.0 <= beta < 1.0:
            raise LmpruneError(f"EMA beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.zero_init = zero_init
        self.value: dict[str, Tensor] = {}

    def update(self, scores: dict[str, Tensor]) -> None:
        """``beta * old + (1 - beta) * score`` per key (a new key starts at its score, or at
        ``(1 - beta) * score`` with ``zero_init``); keys of one device and dtype are updated
        by PyTorch's fused multi-tensor kernels, two launches for all of them."""
        fresh = {key: _real(score) for key, score in scores.items()}
        known = [key for key in fresh if key in self.value]
        for key in fresh.keys() - set(known):
            score = fresh[key]
            self.value[key] = (1.0 - self.beta) * score if self.zero_init else score.clone()
        if not known:
            return
        olds, news = [self.value[k] for k in known], [fresh[k] for k in known]
        if len({(t.device, t.dtype) for t in olds + news}) == 1:
            mixed = torch._foreach_mul(olds, self.beta)
            torch._foreach_add_(mixed, torch._foreach_mul(news, 1.0 - self.beta))
        else:
            mixed = [self.beta * o + (1.0 - self.beta) * n for o, n in zip(olds, news)]
        self.value.update(zip(known, mixed, strict=True))


class SalienceCollector:
    """Hooks on every attention ``o`` and FFN ``out`` projection that score heads and neurons
    from their input ``H`` and its gradient during ``loss.backward()``.

    Use as a context manager around forward *and* backward; ``scores()`` then returns a
    :class:`Scores` with ``heads[site]`` and ``neurons[site]`` (sum over every forward/backward
    pass inside the block; sites without a backward score 0). Forward passes without grad are
    ignored. With ``hidden=True``, ``scores().hidden`` is the residual-channel salience: the sum
    over every ``o``/``out`` projection of ``activation_salience(output, dL/doutput)`` (plus
    :func:`hidden_outlier_term`), as the repo does; the repo also adds the encoder's final
    output, which we leave out. Key/value-group salience is not collected.

    ``outlier_scale="matched"`` multiplies the outlier term of each block kind by
    ``mean(S~) / mean(sqrt(kurtosis))`` over that kind's blocks in this collection. S~ is in
    loss units and the kurtosis term is unitless, so their raw sum depends on the loss scale
    and batch size; because blocks of different kinds are compared by salience *per
    parameter*, an O(1) term added to every FFN neuron (cost 2d) and every head (cost 4d^2/n)
    inflates neurons relative to heads by the cost ratio. Measured on minilm-l6/foods: the raw
    sum made the median neuron 5x denser than the median head (without it the two are within
    1.5x), and APT pruned 66 of 72 heads by its third event. Matching keeps the ranking
    *within* a kind that the outlier term gives and leaves the comparison *across* kinds to S~.
    (The factor is computed as a ratio of sums, which equals the ratio of means and does not
    depend on how many zero-scored blocks are counted.)

    ``alive`` (optional :class:`~lmprune.structures.masks.Masks`, non-zero = alive): in a model
    whose pruned blocks are masked rather than removed, the outlier terms are computed as in
    the model with those blocks removed: a head's or neuron's block ``O`` spans the alive
    hidden rows only, a hidden channel's spans the alive heads' and neurons' columns only,
    and dead hidden channels score 0. Without it every row and column counts.
    """

    def __init__(self, model: nn.Module, structure: ModelStructure | None = None,
                 use_kurtosis: bool = True, hidden: bool = False,
                 outlier_scale: str = "raw", alive=None, processes=None) -> None:
        if outlier_scale not in OUTLIER_SCALES:
            raise LmpruneError(f"unknown outlier_scale {outlier_scale!r}; use one of "
                               f"{', '.join(OUTLIER_SCALES)}")
        self.model = model
        self.structure = structure if structure is not None else describe(model)
        self.use_kurtosis = use_kurtosis
        self.hidden = hidden
        self.outlier_scale = outlier_scale
        self.alive = alive
        self._handles: list = []
        self._scores: dict[tuple[str, str], Tensor] = {}
        self._outliers: dict[tuple[str, str], Tensor] = {}
        # data parallel (lmprune.training.distributed.DataParallel, active): each process sees
        # some rows, so the factors are kept per forward call and summed over the processes
        # before the products (_settle); one process computes them at once
        self.processes = processes if processes is not None and processes.active else None
        self._calls: list[dict] = []

    def _alive_rows(self, weight: Tensor) -> Tensor:
        """The output projection's rows in alive hidden channels (all rows without ``alive``)."""
        hidden = None if self.alive is None else self.alive.hidden
        if hidden is None:
            return weight
        return weight[torch.nonzero(hidden != 0).flatten().to(weight.device)]

    def _alive_cols(self, kind: str, site: str, group_size: int) -> Tensor | None:
        """Input channels of the alive heads / neurons of ``site`` (None: all)."""
        table = None if self.alive is None else getattr(self.alive, kind).get(site)
        if table is None:
            return None
        return torch.nonzero((table != 0).repeat_interleave(group_size)).flatten()

    def _hook(self, kind: str, site: str, group_size: int):
        def pre_hook(module: nn.Module, inputs: tuple) -> None:
            h = inputs[0]
            if torch.is_grad_enabled() and h.requires_grad:
                self._defer((kind, site), h, h, group_size,
                            module.weight if self.use_kurtosis else None)
        return pre_hook

    def _hidden_hook(self, cols: Tensor | None):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if torch.is_grad_enabled() and output.requires_grad:
                self._defer(("hidden", ""), output, inputs[0], 0,
                            module.weight if self.use_kurtosis else None, cols)
        return hook

    def _defer(self, key: tuple[str, str], scored: Tensor, act: Tensor, group_size: int,
               weight: Tensor | None, cols: Tensor | None = None) -> None:
        """Keep one forward call's factors, per channel: ``sum |scored|`` and, for the
        outlier term, the sum of ``act`` over its rows (``scored`` is the block input for
        heads and neurons, the projection's output for the hidden score; ``act`` its input).
        The gradient's factor arrives in backward; the scores, and the outlier term from the
        weight and the mean activation, are formed after it (:meth:`_settle`). Only
        reductions run here, so no activation-sized temporary is made while the forward pass
        holds every activation (the step's memory peak). ``group_size`` 0 marks the hidden
        score; ``cols``: its alive input channels."""
        dtype = torch.promote_types(scored.dtype, torch.float32)
        dims = tuple(range(scored.dim() - 1))
        counts = 0.0 if getattr(self.processes, "idle", False) else 1.0  # a stand-in row
        with torch.no_grad():
            call = {"key": key, "group": group_size, "cols": cols,
                    "a": _times(torch.linalg.vector_norm(scored.detach(), 1, dims, dtype=dtype),
                                counts),
                    # the weight as it is now; it is not updated before _settle (same step)
                    "w": None if weight is None else weight.detach(), "p": weight}
            if weight is not None:
                call["s"] = _times(act.detach().sum(tuple(range(act.dim() - 1)), dtype=dtype),
                                   counts)
                rows = act[..., 0].numel() * counts
                call["n"] = rows if self.processes is None else torch.tensor(
                    [rows], dtype=dtype, device=act.device)
        self._calls.append(call)

        def on_grad(grad: Tensor) -> None:
            call["g"] = torch.linalg.vector_norm(grad.detach(), 1, dims, dtype=dtype)

        scored.register_hook(on_grad)

    def _settle(self) -> None:
        """Form the scores of the calls whose gradient arrived, as one process would from
        the whole batch: ``(sum |g|) * (sum |h|)`` per channel and the outlier term from
        the mean activation ``sum h / rows``. In a data-parallel run the factors are first
        summed over the processes (the gradients divided by the process count, as the
        averaged gradients are)."""
        calls = [c for c in self._calls if "g" in c]
        self._calls = []
        if not calls:
            return
        names = ("a", "g", "s") if self.processes is None else ("a", "g", "s", "n")
        parts = [c[k] for c in calls for k in names if k in c]
        world = 1
        if self.processes is not None:
            parts, world = self.processes.sum(parts), self.processes.world
        it, blocks = iter(parts), []
        for call in calls:
            got = {k: next(it) for k in names if k in call}
            got.setdefault("n", call.get("n"))
            key, group = call["key"], call["group"]
            prod = (got["g"] if world == 1 else got["g"] / world) * got["a"]
            score = prod if group == 0 else _group_sum(prod, group)
            self._scores[key] = score if key not in self._scores else self._scores[key] + score
            if call["w"] is not None and group:
                blocks.append((key, group, call["p"], got["s"] / got["n"]))
            elif call["w"] is not None:
                self._outliers[key] = self._outliers.get(key, 0) + self._outlier(
                    call, got["s"] / got["n"])
            # the gradient hook keeps the call for as long as the autograd graph lives: let go
            # of its tensors (the weight above all: a compaction may have replaced it)
            call.clear()
        self._block_outliers(blocks)

    def _block_outliers(self, blocks: list[tuple]) -> None:
        """The outlier terms of heads and neurons, ``(key, group, weight, mean activation)``
        per call: for each group size, one computation over every projection's columns side
        by side, from power sums of the weights kept while the weights do not change
        (:func:`outlier_from_power_sums`): a few small kernels per step, not a dozen
        weight-sized ones per projection."""
        by_group: dict[int, list] = {}
        for block in blocks:
            by_group.setdefault(block[1], []).append(block)
        for group, items in by_group.items():
            sums = [self._power_sums(weight) for _, _, weight, _ in items]
            device = sums[0][0].device
            means = torch.cat([mean.to(device) for *_, mean in items])
            terms = outlier_from_power_sums(torch.cat([s for s, _ in sums], 1),
                                            torch.cat([n for _, n in sums]), means, group)
            widths = [s.shape[1] // group for s, _ in sums]
            for (key, *_), term in zip(items, terms.split(widths), strict=True):
                self._outliers[key] = self._outliers.get(key, 0) + term

    def _power_sums(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """``column_power_sums`` of the weight's alive rows and the row count per column
        (float64), kept per weight until it or the alive hidden channels change."""
        hidden = None if self.alive is None else self.alive.hidden
        version = (weight._version, None if hidden is None else (id(hidden), hidden._version))
        kept = _POWER_SUMS.get(weight)
        if kept is None or kept[0] != version:
            rows = self._alive_rows(weight)
            sums = column_power_sums(rows)
            kept = (version, (sums, torch.full((sums.shape[1],), float(rows.shape[0]),
                                               dtype=torch.float64, device=sums.device)))
            _POWER_SUMS[weight] = kept
        return kept[1]

    def _outlier(self, call: dict, mean: Tensor) -> Tensor:
        """The hidden outlier term of one call from its mean activation per input channel."""
        weight = call["w"]
        cols = call["cols"]
        if cols is not None:
            weight, mean = weight[:, cols.to(weight.device)], mean[cols.to(mean.device)]
        outlier = hidden_outlier_from_mean(weight, mean)
        if self.alive is not None and self.alive.hidden is not None:
            outlier = outlier * (self.alive.hidden != 0).to(outlier)
        return outlier

    def __enter__(self) -> SalienceCollector:
        self._scores, self._outliers, self._calls = {}, {}, []
        for site in self.structure.attention:
            module = self.model.get_submodule(site.o)
            self._handles.append(module.register_forward_pre_hook(
                self._hook("heads", site.name, site.head_dim)))
        for site in self.structure.ffn:
            module = self.model.get_submodule(site.out)
            self._handles.append(module.register_forward_pre_hook(
                self._hook("neurons", site.name, 1)))
        if self.hidden:
            sites = [(s.o, self._alive_cols("heads", s.name, s.head_dim))
                     for s in self.structure.attention]
            sites += [(s.out, self._alive_cols("neurons", s.name, 1)) for s in self.structure.ffn]
            for path, cols in sites:
                self._handles.append(
                    self.model.get_submodule(path).register_forward_hook(self._hidden_hook(cols)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _combined(self) -> dict[tuple[str, str], Tensor]:
        """S~ plus the outlier term, scaled per block kind as ``outlier_scale`` says."""
        self._settle()
        out = dict(self._scores)
        for kind in ("heads", "neurons", "hidden"):
            keys = [k for k in self._outliers if k[0] == kind and k in self._scores]
            if not keys:
                continue
            factor = 1.0
            if self.outlier_scale == "matched":
                act = torch.cat([self._scores[k].reshape(-1) for k in keys]).sum()
                kurt = torch.cat([self._outliers[k].reshape(-1) for k in keys]).sum()
                factor = float(act / kurt) if kurt > 0 else 0.0
            for k in keys:
                out[k] = self._scores[k] + factor * self._outliers[k]
        return out

    def scores(self) -> Scores:
        combined = self._combined()
        out = Scores()
        for site in self.structure.attention:
            out.heads[site.name] = combined.get(("heads", site.name),
                                                torch.zeros(site.num_heads))
        for site in self.structure.ffn:
            out.neurons[site.name] = combined.get(("neurons", site.name),
                                                  torch.zeros(site.width))
        if self.hidden:
            out.hidden = combined.get(("hidden", ""), torch.zeros(self.structure.hidden.size))
        return out

    def as_dict(self) -> dict[str, Tensor]:
        """Flat ``{"heads/<site>": ..., "neurons/<site>": ...}``, ready for :class:`SalienceEMA`."""
        s = self.scores()
        flat = {**{f"heads/{k}": v for k, v in s.heads.items()},
                **{f"neurons/{k}": v for k, v in s.neurons.items()}}
        if s.hidden is not None:
            flat["hidden"] = s.hidden
        return flat


@contextmanager
def collect_salience(model: nn.Module, use_kurtosis: bool = True,
                     hidden: bool = False) -> Iterator[SalienceCollector]:
    """``with collect_salience(model) as c: loss.backward()`` shorthand."""
    with SalienceCollector(model, use_kurtosis=use_kurtosis, hidden=hidden) as collector:
        yield collector


__all__ = ["BETA", "SalienceCollector", "SalienceEMA", "activation_salience", "apt_salience",
           "collect_salience", "fisher_salience", "hidden_outlier_term", "kurtosis",
           "magnitude_salience", "outlier_term"]
