"""Kwon et al.'s layer-wise mask tuning by linear least squares, and folding it into weights.

Kwon, Kim, Mahoney, Hassoun, Keutzer, Gholami, "A Fast Post-Training Pruning Framework for
Transformers" (NeurIPS 2022), Section 4, "Mask Tuning" (reference code ``prune/rescale.py``,
read for facts only). After the search, the kept heads and neurons of every sublayer get real
scales that make the pruned sublayer's output match the unpruned one's:

    sublayer output  = residual + bias + sum_u m_u * W_u h_u        (u: kept heads or neurons)
    min_m  sum_tokens || teacher output - student output ||^2

The output is linear in the mask values ``m``, so this is a linear least-squares problem in
as many unknowns as kept units; it is solved through its normal equations ``A m = b`` with
``A_uv = sum <W_u h_u, W_v h_v>``. Sublayers are tuned in order (per layer: attention, then
FFN); the teacher's activations come from the dense model (or ``teacher`` masks: Kwon's code
uses a less pruned teacher, searched at ``sqrt(constraint)``), the student's from the masks
tuned so far, so each sublayer also corrects the drift of the ones before it.

Solver: Kwon solve for the deviation from the current mask, ``d = m - m0``, with LSMR
(CuPy, ``damp=1``) on the normal equations, i.e. ``min ||A d - (b - A m0)||^2 + damp^2 ||d||^2``
(``utils/linalg.py``); this computes the same regularised solution with
``torch.linalg.lstsq`` on the stacked system. Kwon abandon tuning if a scale leaves
[-10, 10]; here a sublayer keeps its previous values when a scale leaves ``max_scale``, the
solve is not finite, or the reconstruction error would not drop, and tuning goes on.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from lmprune.arch import AttentionSite, FFNSite, ModelStructure, describe
from lmprune.errors import LmpruneError, MaskError
from lmprune.pruners._mask_search import frozen_eval, take_samples
from lmprune.structures.masks import Masks, apply_masks

#: Kwon's LSMR damping and scale range (reference ``utils/linalg.py``, ``prune/rescale.py``).
DEFAULT_DAMPING = 1.0
DEFAULT_MAX_SCALE = 10.0
_TOKEN_CHUNK = 2 ** 22  # elements per chunk of per-head contributions


class _Stop(Exception):
    """Raised by a hook once the site's activations are captured: the rest of the forward
    pass is not needed."""


@dataclass
class NormalEquations:
    """``A = sum C^T C``, ``b = sum C^T y``, ``y^T y`` of one sublayer's least squares, where
    ``C``'s columns are the kept units' output contributions and ``y`` the target."""

    kept: torch.Tensor  # indices of the kept units
    ata: torch.Tensor  # [k, k], float64
    atb: torch.Tensor  # [k], float64
    btb: float = 0.0

    def error(self, x: torch.Tensor) -> float:
        """``||y - C x||^2`` summed over tokens, for kept-unit values ``x``."""
        x = x.to(self.ata)
        return float(x @ self.ata @ x - 2 * self.atb @ x) + self.btb


def _ordered_sites(structure: ModelStructure) -> list[AttentionSite | FFNSite]:
    sites = []
    for layer in structure.layers:
        sites += [structure.attention_site(n) for n in layer.attention]
        sites += [structure.ffn_site(n) for n in layer.ffn]
    return sites


def _paths(site) -> tuple[str, int, str]:
    """(output projection, unit size, masks field) of a site."""
    if isinstance(site, AttentionSite):
        return site.o, site.head_dim, "heads"
    return site.out, 1, "neurons"


def _capture(model: nn.Module, site, masks: Masks, batch: dict, structure) -> dict:
    """Run ``model`` under ``masks`` up to ``site``; return the projection's unmasked input
    ``h``, the residual entering the sublayer and the sublayer's output before any norm."""
    get = model.get_submodule
    out_path = _paths(site)[0]
    got, handles = {}, []

    def grab_input(module, args):
        got["h"] = args[0]

    def grab_output(module, args, out):
        got["o"] = out
        if site.post_norm is None:
            raise _Stop

    def grab_sum(module, args):
        got["sum"] = args[0]
        raise _Stop

    def grab_residual(module, args):
        got["residual"] = args[0]

    if site.post_norm is None and site.norm is None:
        raise LmpruneError(f"{site.name}: no norm around the sublayer to read its residual from")
    handles.append(get(out_path).register_forward_pre_hook(grab_input, prepend=True))
    handles.append(get(out_path).register_forward_hook(grab_output))
    if site.post_norm is not None:  # post-norm (BERT): norm(o + residual)
        handles.append(get(site.post_norm).register_forward_pre_hook(grab_sum))
    else:  # pre-norm (T5, LLaMA): residual + o(...), the residual is the norm's input
        handles.append(get(site.norm).register_forward_pre_hook(grab_residual))
    try:
        with apply_masks(model, masks, structure):
            model(**batch)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if "o" not in got:
        raise LmpruneError(f"{site.name}: the forward pass never reached {out_path}")
    if site.post_norm is not None:
        return {"h": got["h"], "residual": got["sum"] - got["o"], "output": got["sum"]}
    return {"h": got["h"], "residual": got["residual"], "output": got["residual"] + got["o"]}


def _token_mask(site, batch: dict, shape) -> torch.Tensor | None:
    key = "decoder_attention_mask" if site.layer.startswith("decoder") else "attention_mask"
    mask = batch.get(key)
    if mask is None or tuple(mask.shape) != tuple(shape[:2]):
        return None
    return mask.reshape(-1) != 0


def _tokens(x: torch.Tensor, keep) -> torch.Tensor:
    x = x.reshape(-1, x.shape[-1])
    return x if keep is None else x[keep]


def _accumulate(eq: NormalEquations, h, weight, unit: int, target) -> None:
    """Add one batch's ``C^T C``, ``C^T y`` and ``y^T y`` (float64) to ``eq``.

    Neurons (``unit == 1``) use Kwon's identity ``C^T C = (H^T H) * (W^T W)`` (elementwise),
    which never materialises ``C``; heads build ``C`` in chunks of tokens.
    """
    n, d = h.shape[0], weight.shape[0]
    hk = h.view(n, -1, unit)[:, eq.kept].double()
    wk = weight.view(d, -1, unit)[:, eq.kept].double()
    target = target.double()
    if unit == 1:
        hk, wk = hk[..., 0], wk[..., 0]
        eq.ata += (hk.T @ hk) * (wk.T @ wk)
        eq.atb += (hk * (target @ wk)).sum(0)
    else:
        step = max(1, _TOKEN_CHUNK // max(1, len(eq.kept) * d))
        for start in range(0, n, step):
            c = torch.einsum("nkj,dkj->nkd", hk[start:start + step], wk)
            eq.ata += torch.einsum("nkd,nld->kl", c, c)
            eq.atb += torch.einsum("nkd,nd->k", c, target[start:start + step])
    eq.btb += float(target.pow(2).sum())


def normal_equations(model: nn.Module, site, student: Masks, data: list[dict],
                     structure: ModelStructure, teacher: Masks | None = None) -> NormalEquations:
    """Least squares of one sublayer: teacher output vs the student's kept-unit contributions."""
    out_path, unit, field = _paths(site)
    projection = model.get_submodule(out_path)
    values = getattr(student, field)[site.name]
    kept = torch.nonzero(values != 0).flatten().to(projection.weight.device)
    k = len(kept)
    opts = dict(dtype=torch.float64, device=projection.weight.device)
    eq = NormalEquations(kept, torch.zeros(k, k, **opts), torch.zeros(k, **opts))
    bias = projection.bias if projection.bias is not None else 0.0
    device = projection.weight.device
    with torch.no_grad():
        for batch in data:
            batch = {key: v.to(device) if torch.is_tensor(v) else v for key, v in batch.items()}
            want = _capture(model, site, teacher or Masks(), batch, structure)
            have = _capture(model, site, student, batch, structure)
            keep = _token_mask(site, batch, have["h"].shape)
            target = _tokens(want["output"] - have["residual"] - bias, keep)
            _accumulate(eq, _tokens(have["h"], keep), projection.weight, unit, target)
    return eq


def solve_scales(eq: NormalEquations, x0: torch.Tensor,
                 damping: float = DEFAULT_DAMPING) -> torch.Tensor:
    """``x0 + d`` with ``d = argmin ||A d - (b - A x0)||^2 + damping^2 ||d||^2`` (Kwon's LSMR
    problem, solved exactly; ``damping = 0`` gives the minimum-norm least-squares solution)."""
    a, x0 = eq.ata, x0.to(eq.ata)
    r = eq.atb - a @ x0
    if damping > 0:
        eye = damping * torch.eye(len(r), dtype=a.dtype, device=a.device)
        lhs, rhs = torch.cat([a, eye]), torch.cat([r, torch.zeros_like(r)])
        d = torch.linalg.lstsq(lhs.cpu(), rhs.cpu()[:, None]).solution[:, 0]
    else:
        d = torch.linalg.lstsq(a.cpu(), r.cpu()[:, None], driver="gelsd").solution[:, 0]
    return x0 + d.to(x0)


def _check_kinds(masks: Masks) -> None:
    extra = sorted({kind for kind, _, _ in masks.items() if kind not in ("heads", "neurons")})
    if extra:
        raise MaskError(f"mask tuning scales head and neuron masks only (Kwon's mask tuning); "
                        f"these masks also hold {', '.join(extra)}")


def tune_masks(model: nn.Module, masks: Masks, batches: Iterable[dict],
               structure: ModelStructure | None = None, max_samples: int = 512,
               progress: bool = False, damping: float = DEFAULT_DAMPING,
               max_scale: float = DEFAULT_MAX_SCALE, teacher: Masks | None = None) -> Masks:
    """Kwon's mask tuning: real-valued scales for the kept heads and neurons (pruned stay 0).

    Sublayers are tuned one at a time in forward order; a sublayer keeps its previous values
    unless the new ones are finite, within ``[-max_scale, max_scale]`` and lower its
    reconstruction error. Returns new :class:`Masks`; ``masks`` and the model are unchanged.
    """
    structure = structure or describe(model)
    masks.validate(structure)
    _check_kinds(masks)
    tuned = Masks(heads={k: v.detach().float().clone() for k, v in masks.heads.items()},
                  neurons={k: v.detach().float().clone() for k, v in masks.neurons.items()})
    data = list(take_samples(batches, max_samples))
    sites = [s for s in _ordered_sites(structure) if s.name in getattr(tuned, _paths(s)[2])]
    with frozen_eval(model):
        for site in tqdm(sites, desc="mask tuning", disable=not progress):
            values = getattr(tuned, _paths(site)[2])[site.name]
            eq = normal_equations(model, site, tuned, data, structure, teacher)
            if len(eq.kept) == 0:
                continue
            x0 = values[eq.kept.cpu()].double()
            x = solve_scales(eq, x0, damping)
            if bool(torch.isfinite(x).all()) and float(x.abs().max()) <= max_scale \
                    and eq.error(x) < eq.error(x0):
                values[eq.kept.cpu()] = x.float().cpu()
    return tuned


def site_reconstruction_error(model: nn.Module, masks: Masks, batches: Iterable[dict], site: str,
                              structure: ModelStructure | None = None, max_samples: int = 512,
                              teacher: Masks | None = None) -> float:
    """``sum_tokens ||teacher output - student output||^2`` of one sublayer (by site name)."""
    structure = structure or describe(model)
    _check_kinds(masks)
    found = [s for s in _ordered_sites(structure) if s.name == site]
    if not found:
        raise MaskError(f"no attention or FFN site named {site!r}")
    field = _paths(found[0])[2]
    full = Masks(heads=dict(masks.heads), neurons=dict(masks.neurons))
    if site not in getattr(full, field):  # unmasked site: every unit kept with value 1
        size = found[0].num_heads if field == "heads" else found[0].width
        getattr(full, field)[site] = torch.ones(size)
    data = list(take_samples(batches, max_samples))
    with frozen_eval(model):
        eq = normal_equations(model, found[0], full, data, structure, teacher)
    values = getattr(full, field)[site]
    return eq.error(values[eq.kept.cpu()].double())


def fold_masks(model: nn.Module, masks: Masks, structure: ModelStructure | None = None) -> Masks:
    """Multiply real head / neuron scales into the output projections' input columns (in
    place) and return binary masks, ready for :func:`lmprune.structures.remove`.

    A head's scale multiplies its ``head_dim`` columns of the attention output projection, a
    neuron's scale its column of the FFN output projection; zeros stay masked (and removable).
    """
    structure = structure or describe(model)
    masks.validate(structure)
    binary = Masks(**{kind: dict(getattr(masks, kind)) for kind in
                      ("kv_groups", "attention", "ffn", "layers")}, hidden=masks.hidden)
    if not binary.is_binary():
        raise MaskError("fold_masks folds head and neuron scales only; the other masks must be "
                        "binary (0/1)")
    with torch.no_grad():
        for field, sites in (("heads", structure.attention), ("neurons", structure.ffn)):
            for site in sites:
                values = getattr(masks, field).get(site.name)
                if values is None:
                    continue
                out_path, unit, _ = _paths(site)
                weight = model.get_submodule(out_path).weight
                factor = torch.where(values != 0, values, torch.ones_like(values)).to(weight)
                view = weight.view(weight.shape[0], -1, unit)
                view.mul_(factor[None, :, None])
                getattr(binary, field)[site.name] = (values != 0).float()
    return binary
