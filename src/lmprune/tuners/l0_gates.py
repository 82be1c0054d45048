"""CoFi's L0 gates: hard-concrete masks over heads, sublayers, FFN neurons and hidden channels.

CoFi (Xia, Zhong, Chen, ACL 2022) learns one stochastic gate per prunable unit with the hard
concrete distribution of Louizos, Welling, Kingma (ICLR 2018) and ties their expected size to a
target sparsity with a Lagrangian term (Wang, Wohlwend, Lei, EMNLP 2020, "FLOP"). Gate kinds and
their names in CoFi's ``models/l0_module.py`` (princeton-nlp/CoFiPruning):

==========  ================  ==============================================================
ours        CoFi              one gate per
==========  ================  ==============================================================
heads       ``head_z``        attention head (masks the head's context vector)
attention   ``head_layer_z``  whole attention sublayer (MHA) of a layer
neurons     ``intermediate_z``  FFN intermediate neuron
ffn         ``mlp_z``         whole FFN sublayer of a layer
hidden      ``hidden_z``      residual channel, shared by every layer and the embeddings
==========  ================  ==============================================================

Defaults and where they come from (``models/l0_module.py`` at CoFi's HEAD unless noted):

* stretch limits ``(-0.1, 1.1)`` and ``epsilon = 1e-6``: line 14;
* ``temperature = 2/3`` and ``droprate_init = 0.5``: lines 20-21 (also ``args.py`` 34-35);
* log_alpha initialised ``N(mean, 0.01)``: line 164, with ``mean = log(1-p) - log(p)`` for
  neurons (line 147) and ``mean = 10`` ("certainly on") for heads, attention, ffn and hidden
  (lines 118, 123, 134, 157);
* log_alpha clamped to ``[log 1e-2, log 1e2]`` after every optimizer step: lines 173-177,
  called from ``trainer/trainer.py`` line 311 (here :meth:`L0Gates.constrain_`);
* deterministic (eval) masks follow FLOP's ``hardconcrete.py``: lines 290-305, with the
  "magical number" 0.8 of line 26;
* expected size with hidden gates: lines 215-236; the Lagrangian: lines 256-274.

Training recipe (CoFi ``trainer/trainer.py`` lines 145-166, 283-311): log_alpha and the two
multipliers get their own AdamW groups, weight decay 0, learning rate ``reg_learning_rate``
(0.1, ``args.py`` line 28) for log_alpha and its *negative* for the multipliers, so that they
are trained by gradient ascent. Here: put both in any minimizing optimizer (weight decay 0 for
the multipliers), call :meth:`Lagrangian.flip_multiplier_grads` after ``backward()`` and before
``step()``, then :meth:`L0Gates.constrain_` after ``step()``. Negating the gradient is exactly
a negative learning rate for SGD and for Adam(W) without weight decay (Adam's second moment
does not see the sign). An optimizer built with ``maximize=True`` on
:meth:`Lagrangian.ascent_parameters` is the other option.

For physical removal CoFi multiplies the weights by the deterministic mask values and then
drops the zero units (``utils/cofi_utils.py`` lines 29-32, 50-101): the kept units' values are
real (``sigmoid(0.8 * log_alpha / temperature)``), so binarize them (``binary=True``) for
``lmprune.structures.remove`` and fold the values into the weights first if they must count.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from lmprune.arch import ModelStructure, describe
from lmprune.errors import LmpruneError, UnknownNameError
from lmprune.structures.counting import head_cost, neuron_cost
from lmprune.structures.masks import Masks

GATE_KINDS = ("heads", "attention", "neurons", "ffn", "hidden")
LIMITS = (-0.1, 1.1)  # l0_module.py:14 (limit_a, limit_b): the stretch interval (gamma, zeta)
EPSILON = 1e-6  # l0_module.py:14: uniform noise range and clamp of the CDF
TEMPERATURE = 2.0 / 3.0  # l0_module.py:21 (beta in Louizos et al.)
DROPRATE_INIT = 0.5  # l0_module.py:20
CERTAINLY_ON = 10.0  # l0_module.py:118,123,134,157: initial mean log_alpha of all but neurons
INIT_STD = 1e-2  # l0_module.py:164
DETERMINISTIC_FACTOR = 0.8  # l0_module.py:26 "magical_number", from FLOP (Wang et al. 2020)
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))  # l0_module.py:173-177
_SCALAR_KINDS = ("attention", "ffn")  # one gate per site: a 0-dim mask
_FITTED_KINDS = ("heads", "neurons")  # what fit_shift moves


def hard_concrete_sample(log_alpha: torch.Tensor, temperature: float = TEMPERATURE,
                         limits: tuple[float, float] = LIMITS,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """One reparameterised hard-concrete sample per gate (Louizos et al. 2018, Eq. 10).

    ``u ~ U(eps, 1-eps)``, ``s = sigmoid((log u - log(1-u) + log_alpha) / temperature)``,
    ``z = min(1, max(0, s * (zeta - gamma) + gamma))``. The noise carries no gradient, so
    gradients of a loss on ``z`` reach ``log_alpha`` wherever ``0 < z < 1``.
    """
    u = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype,
                   device=generator.device if generator is not None else log_alpha.device)
    u = (u * (1 - 2 * EPSILON) + EPSILON).to(log_alpha.device)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / temperature)
    low, high = limits
    return (s * (high - low) + low).clamp(0.0, 1.0)


def prob_nonzero(log_alpha: torch.Tensor, temperature: float = TEMPERATURE,
                 limits: tuple[float, float] = LIMITS) -> torch.Tensor:
    """``P(z != 0) = 1 - Q(s <= 0)`` per gate (Louizos et al. 2018, Eq. 12), differentiable.

    ``Q(s <= 0) = sigmoid(temperature * log(-gamma / zeta) - log_alpha)``, clamped to
    ``[eps, 1-eps]`` as CoFi's ``cdf_qz`` does (l0_module.py:179-183).
    """
    low, high = limits
    cdf = torch.sigmoid(temperature * math.log(-low / high) - log_alpha)
    return 1.0 - cdf.clamp(EPSILON, 1.0 - EPSILON)


def deterministic_gate(log_alpha: torch.Tensor, temperature: float = TEMPERATURE,
                       limits: tuple[float, float] = LIMITS,
                       factor: float = DETERMINISTIC_FACTOR, shift: float = 0.0) -> torch.Tensor:
    """Eval-time mask of one gate group (CoFi l0_module.py:290-305, after FLOP).

    Keeps ``n - round(n - sum P(z != 0))`` units (Python's round: halves go to even), those
    with the largest ``log_alpha``, at value ``sigmoid(factor * log_alpha / temperature)``;
    the others are exactly 0. Not differentiable (a decision, not a training signal).
    ``shift`` is added to ``log_alpha`` when counting the kept units only (see
    :meth:`L0Gates.fit_shift`); 0 is CoFi's rule.
    """
    with torch.no_grad():
        size = log_alpha.numel()
        expected_nonzero = float(prob_nonzero(log_alpha + shift, temperature, limits).sum())
        num_zeros = round(size - expected_nonzero)
        values = torch.sigmoid(log_alpha.detach() * factor / temperature).clone()
        if num_zeros > 0:
            values[torch.topk(log_alpha.detach(), k=num_zeros, largest=False).indices] = 0.0
        return values


class L0Gates(nn.Module):
    """One hard-concrete gate per prunable unit of ``structure`` (CoFi's coarse and fine masks).

    ``log_alpha`` holds one 1-D parameter per kind: heads and neurons concatenated over the
    sites in ``structure`` order, one entry per attention / FFN site for the sublayer gates,
    and ``[hidden size]`` for hidden. ``costs`` gives parameters per unit at full hidden size,
    ``{"heads": {site: int}, "neurons": {site: int}}``; left out, it is estimated from the
    structure (weights only, no biases); :meth:`from_model` counts them exactly.
    ``init`` overrides the initial mean log_alpha per kind.

    With grouped-query attention a head cost covers its query rows and output columns only
    (key/value groups are not gated here), and deterministic head masks may keep unequal
    numbers of query heads per group, which physical removal refuses.
    """

    def __init__(self, structure: ModelStructure, kinds: Iterable[str] = GATE_KINDS,
                 droprate_init: float = DROPRATE_INIT, temperature: float = TEMPERATURE,
                 limits: tuple[float, float] = LIMITS, costs: dict | None = None,
                 init: dict[str, float] | None = None):
        super().__init__()
        self.kinds = _check_kinds(kinds)
        _check_hyper(droprate_init, temperature, limits)
        self.structure = structure
        self.temperature, self.limits = float(temperature), (float(limits[0]), float(limits[1]))
        self.costs = _check_costs(structure, costs if costs is not None else _estimate_costs(structure))
        self.log_alpha = nn.ParameterDict()
        means = _initial_means(droprate_init, init or {}, self.kinds)
        for kind in self.kinds:
            tensor = torch.empty(self._size(kind)).normal_(means[kind], INIT_STD)
            self.log_alpha[kind] = nn.Parameter(tensor)

    @classmethod
    def from_model(cls, model: nn.Module, kinds: Iterable[str] = GATE_KINDS, **kw) -> "L0Gates":
        """Gates for ``model`` with exact per-unit costs from :mod:`lmprune.structures.counting`."""
        structure = kw.pop("structure", None) or describe(model)
        costs = {"heads": {s.name: head_cost(model, s)["head"] for s in structure.attention},
                 "neurons": {s.name: neuron_cost(model, s) for s in structure.ffn}}
        return cls(structure, kinds, costs=costs, **kw)

    def _size(self, kind: str) -> int:
        s = self.structure
        return {"heads": sum(a.num_heads for a in s.attention), "attention": len(s.attention),
                "neurons": sum(f.width for f in s.ffn), "ffn": len(s.ffn),
                "hidden": s.hidden.size}[kind]

    def _groups(self, kind: str):
        """(site name, slice of ``log_alpha[kind]``) per group; hidden is one group."""
        if kind == "hidden":
            return [("", slice(0, self.structure.hidden.size))]
        sites = self.structure.attention if kind in ("heads", "attention") else self.structure.ffn
        groups, start = [], 0
        for site in sites:
            width = 1 if kind in _SCALAR_KINDS else (site.num_heads if kind == "heads" else site.width)
            groups.append((site.name, slice(start, start + width)))
            start += width
        return groups

    def site_log_alpha(self, kind: str) -> dict[str, torch.Tensor]:
        """``{site: log_alpha of its units}`` (detached) for ``heads`` or ``neurons``."""
        values = self.log_alpha[kind].detach()
        return {name: values[sl] for name, sl in self._groups(kind)}

    def _to_masks(self, flat: dict[str, torch.Tensor]) -> Masks:
        masks = Masks()
        for kind, values in flat.items():
            if kind == "hidden":
                masks.hidden = values
                continue
            target = getattr(masks, kind)
            for name, sl in self._groups(kind):
                target[name] = values[sl.start] if kind in _SCALAR_KINDS else values[sl]
        return masks

    def sample(self, generator: torch.Generator | None = None) -> Masks:
        """Hard-concrete samples for every gate (training; gradients reach log_alpha)."""
        return self._to_masks({k: hard_concrete_sample(p, self.temperature, self.limits, generator)
                               for k, p in self.log_alpha.items()})

    def expected_masks(self) -> Masks:
        """``P(z != 0)`` per unit as masks (differentiable)."""
        return self._to_masks(self._probs())

    def deterministic_masks(self, binary: bool = False,
                            shift: dict[str, float] | None = None) -> Masks:
        """CoFi's eval-time masks, group by group (see :func:`deterministic_gate`).

        Groups: the heads of one attention site, the neurons of one FFN site, each sublayer
        gate on its own, all hidden channels together. ``binary=True`` turns kept values into
        1 (what ``lmprune.structures.remove`` needs). ``shift`` (kind -> value) moves the
        log-alpha of a kind when its kept counts are decided (:meth:`fit_shift`).
        """
        return self._to_masks(self._deterministic(binary, shift))

    def _deterministic(self, binary: bool, shift: dict[str, float] | None = None
                       ) -> dict[str, torch.Tensor]:
        flat, shift = {}, shift or {}
        for kind, log_alpha in self.log_alpha.items():
            parts = [deterministic_gate(log_alpha[sl], self.temperature, self.limits,
                                        shift=shift.get(kind, 0.0))
                     for _, sl in self._groups(kind)]
            values = torch.cat(parts) if parts else log_alpha.detach().clone()
            flat[kind] = (values != 0).to(values.dtype) if binary else values
        return flat

    def kept_ratio(self, masks: Masks) -> float:
        """Fraction of the prunable parameters that binary ``masks`` (of the gated kinds) keep,
        by the size formula of :meth:`expected_params`."""
        flat = {}
        with torch.no_grad():
            for kind in self.log_alpha:
                if kind == "hidden":
                    flat[kind] = masks.hidden.float()
                    continue
                per_site = getattr(masks, kind)
                flat[kind] = torch.cat([per_site[name].reshape(-1).float()
                                        for name, _ in self._groups(kind)])
            return float(self._params(flat)) / self.full_params

    def deterministic_keep_ratio(self, shift: dict[str, float] | None = None,
                                 transform: Callable[[Masks], Masks] | None = None) -> float:
        """Fraction of the prunable parameters the deterministic (eval) masks keep: the size of
        the model that evaluation sees and removal produces, where :meth:`expected_sparsity` is
        the expectation over the stochastic training gates. ``transform`` changes the binary
        masks before they are counted (e.g. a width rounding applied at the end)."""
        masks = self.deterministic_masks(True, shift)
        return self.kept_ratio(transform(masks) if transform is not None else masks)

    def fit_shift(self, keep: float, transform: Callable[[Masks], Masks] | None = None,
                  span: float = 30.0) -> dict[str, float]:
        """Shifts of the heads' and neurons' log-alpha whose deterministic masks keep at most
        ``keep`` of the prunable parameters, and as close to it as one neuron allows.

        CoFi's per-group rule is unchanged; only how many units each group keeps moves, in
        log-alpha order: first heads and neurons together (the largest common shift that fits),
        then neurons alone fill what is left. Sublayer and hidden gates keep their decision.
        Gates that have not saturated (short schedules) make CoFi's deterministic masks keep
        more or less than the expectation the Lagrangian steered to the target; this makes the
        final model meet the budget. ``transform`` is applied before counting (as in
        :meth:`deterministic_keep_ratio`), so a later rounding of widths is fitted too.
        """
        def ratio(shift):
            return self.deterministic_keep_ratio(shift, transform)

        fitted = [k for k in _FITTED_KINDS if k in self.log_alpha]
        both = _largest(lambda v: ratio(dict.fromkeys(fitted, v)) <= keep, -span, span)
        shift = dict.fromkeys(fitted, both)
        if "neurons" in shift:
            low = both if ratio(shift) <= keep else -span  # a transform may keep more
            shift["neurons"] = _largest(lambda v: ratio({**shift, "neurons": v}) <= keep,
                                        low, span)
        return shift

    def _probs(self) -> dict[str, torch.Tensor]:
        return {k: prob_nonzero(p, self.temperature, self.limits) for k, p in self.log_alpha.items()}

    @property
    def full_params(self) -> int:
        """Prunable parameters of the unpruned body: every head and every FFN neuron."""
        s = self.structure
        return (sum(self.costs["heads"][a.name] * a.num_heads for a in s.attention)
                + sum(self.costs["neurons"][f.name] * f.width for f in s.ffn))

    def expected_params(self) -> torch.Tensor:
        """Expected remaining prunable parameters (CoFi's model size; l0_module.py:215-236).

        ``E = (sum_k P(hidden_k) / d) * [sum_sites P(attn) * sum_h P(head_h) * c_head
        + sum_sites P(ffn) * sum_n P(neuron_n) * c_neuron]``: a unit's parameters scale with
        the kept fraction of hidden channels. Kinds without gates count as certainly kept.
        Embeddings, norms and task heads are outside the body and not counted.
        """
        return self._params(self._probs())

    def _params(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """The size formula of :meth:`expected_params` for per-unit keep values ``p`` (flat per
        kind): probabilities give the expectation, binary masks the exact count."""
        ref = next(iter(self.log_alpha.values()))
        total = ref.new_zeros(())
        for kinds, sites, unit in ((("attention", "heads"), self.structure.attention, "heads"),
                                   (("ffn", "neurons"), self.structure.ffn, "neurons")):
            outer, inner = kinds
            groups = dict(self._groups(inner))
            for i, site in enumerate(sites):
                units = p[inner][groups[site.name]].sum() if inner in p else \
                    ref.new_tensor(float(groups[site.name].stop - groups[site.name].start))
                gate = p[outer][i] if outer in p else 1.0
                total = total + gate * units * self.costs[unit][site.name]
        if "hidden" in p:
            total = total * p["hidden"].mean()
        return total

    def expected_sparsity(self) -> torch.Tensor:
        """``1 - expected_params / full_params`` (CoFi's expected sparsity, l0_module.py:267)."""
        full = self.full_params
        if full == 0:
            raise LmpruneError("the model has no prunable heads or FFN neurons, so sparsity is "
                               "undefined; describe(model) found no attention or FFN sites")
        return 1.0 - self.expected_params() / full

    @torch.no_grad()
    def constrain_(self) -> None:
        """Clamp log_alpha to ``[log 1e-2, log 1e2]`` in place; call after each optimizer step."""
        for p in self.log_alpha.values():
            p.clamp_(*LOG_ALPHA_RANGE)


class Lagrangian(nn.Module):
    """``lambda_1 (s - t) + lambda_2 (s - t)^2`` (CoFi's Lagrangian term, after FLOP).

    Both multipliers start at 0 (l0_module.py:72-73) and are trained by gradient *ascent* while
    everything else descends: see :meth:`flip_multiplier_grads` and the module docstring.
    """

    def __init__(self):
        super().__init__()
        self.lambda_1 = nn.Parameter(torch.tensor(0.0))
        self.lambda_2 = nn.Parameter(torch.tensor(0.0))

    def forward(self, expected_sparsity: torch.Tensor, target_sparsity: float) -> torch.Tensor:
        gap = expected_sparsity - target_sparsity
        return self.lambda_1 * gap + self.lambda_2 * gap ** 2

    def ascent_parameters(self) -> list[nn.Parameter]:
        """The multipliers, for an optimizer built with ``maximize=True`` (weight decay 0)."""
        return [self.lambda_1, self.lambda_2]

    @torch.no_grad()
    def flip_multiplier_grads(self) -> None:
        """Negate the multipliers' gradients so a minimizing step does ascent on them.

        Call between ``backward()`` and ``optimizer.step()``; equivalent to CoFi's negative
        learning rate (trainer.py:157-166) for SGD and Adam(W) with weight decay 0.
        """
        for p in self.ascent_parameters():
            if p.grad is not None:
                p.grad.neg_()


def _largest(fits, low: float, high: float, iterations: int = 50) -> float:
    """The largest value in ``[low, high]`` with ``fits(value)`` for a monotone ``fits`` (true
    below a threshold); ``low`` when nothing fits."""
    if fits(high):
        return high
    if not fits(low):
        return low
    for _ in range(iterations):
        mid = (low + high) / 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def target_sparsity(step: int, warmup_steps: int, final: float, start: float = 0.0) -> float:
    """CoFi's target schedule (l0_module.py:256-258, 268-269): linear from ``start`` to ``final``.

    ``start + (final - start) * min(1, step / warmup_steps)``; ``final`` when ``warmup_steps``
    is 0. CoFi counts ``step`` from the start of pruning and uses 2 epochs of warm-up
    (``lagrangian_warmup_epochs``, args.py:37; trainer.py:183).
    """
    if step < 0 or warmup_steps < 0:
        raise LmpruneError(f"target_sparsity needs step >= 0 and warmup_steps >= 0, got "
                           f"step={step}, warmup_steps={warmup_steps}")
    for name, value in (("final", final), ("start", start)):
        if not 0.0 <= value < 1.0:
            raise LmpruneError(f"target sparsity {name}={value} must be in [0, 1): it is the "
                               "fraction of prunable parameters removed")
    if warmup_steps == 0:
        return float(final)
    return start + (final - start) * min(1.0, step / warmup_steps)


def lagrangian_loss(gates: L0Gates, lagrangian: Lagrangian, step: int, warmup_steps: int,
                    final: float, start: float = 0.0):
    """CoFi's ``lagrangian_regularization`` (l0_module.py:261-274): (loss, expected s, target t)."""
    expected = gates.expected_sparsity()
    target = target_sparsity(step, warmup_steps, final, start)
    return lagrangian(expected, target), expected, target


def _check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    if not kinds:
        raise LmpruneError(f"L0Gates needs at least one gate kind; choose from {', '.join(GATE_KINDS)}")
    for kind in kinds:
        if kind not in GATE_KINDS:
            raise UnknownNameError("gate kind", kind, GATE_KINDS)
    if len(set(kinds)) != len(kinds):
        raise LmpruneError(f"gate kinds {kinds} repeat a kind; list each kind once")
    return kinds


def _check_hyper(droprate_init: float, temperature: float, limits) -> None:
    problems = []
    if not 0.0 < droprate_init < 1.0:
        problems.append(f"droprate_init={droprate_init} must be in (0, 1) (CoFi uses 0.5)")
    if not temperature > 0:
        problems.append(f"temperature={temperature} must be > 0 (CoFi uses 2/3)")
    if len(limits) != 2 or not limits[0] < 0.0 or not limits[1] > 1.0:
        problems.append(f"limits={tuple(limits)} must be (gamma < 0, zeta > 1) so gates can be "
                        "exactly 0 and 1 (CoFi uses (-0.1, 1.1))")
    if problems:
        raise LmpruneError("invalid L0 gate settings:\n" + "\n".join(f"  - {p}" for p in problems))


def _initial_means(droprate_init: float, init: dict[str, float], kinds) -> dict[str, float]:
    unknown = sorted(set(init) - set(kinds))
    if unknown:
        raise LmpruneError(f"init gives log_alpha means for {unknown}, which are not gated here "
                           f"(kinds: {', '.join(kinds)})")
    means = {kind: CERTAINLY_ON for kind in GATE_KINDS}
    means["neurons"] = math.log(1 - droprate_init) - math.log(droprate_init)
    means.update({k: float(v) for k, v in init.items()})
    return means


def _estimate_costs(structure: ModelStructure) -> dict:
    """Weight-only parameters per head (query rows + output columns, and key/value rows
    without grouping) and per neuron (one row per input projection, one output column)."""
    d = structure.hidden.size
    heads = {a.name: (4 if a.group_size == 1 else 2) * a.head_dim * d for a in structure.attention}
    neurons = {f.name: (len(f.ins) + 1) * d for f in structure.ffn}
    return {"heads": heads, "neurons": neurons}


def _check_costs(structure: ModelStructure, costs: dict) -> dict:
    problems = []
    for unit, sites in (("heads", structure.attention), ("neurons", structure.ffn)):
        given = costs.get(unit, {})
        missing = [s.name for s in sites if s.name not in given]
        if missing:
            problems.append(f"costs[{unit!r}] lacks sites {missing}")
        problems += [f"costs[{unit!r}][{k!r}]={v} must be a number >= 0" for k, v in given.items()
                     if not isinstance(v, (int, float)) or v < 0]
    if problems:
        raise LmpruneError("invalid per-unit costs for L0Gates:\n"
                           + "\n".join(f"  - {p}" for p in problems)
                           + "\nBuild the gates with L0Gates.from_model(model) to count them.")
    return {unit: dict(costs[unit]) for unit in ("heads", "neurons")}
