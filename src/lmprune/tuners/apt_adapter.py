"""The APT adapter: a masked LoRA on a frozen linear whose rank can grow during training.

APT (Zhao, Hajishirzi, Cao, ICML 2024), Eq. 2: for a frozen weight ``W`` (d_out x d_in),

    H_apt(X) = m_o ∘ (W + s · B A) X ∘ m_i

with ``A`` (r x d_in), ``B`` (d_out x r), ``s = alpha / r_init`` and binary (or relaxed) masks
``m_i`` over the input (hidden) channels and ``m_o`` over the output units (the heads of an
attention projection, one mask value per head expanded over ``head_dim``; the neurons of an
FFN up projection). The bias of ``W`` is part of ``W X`` and is masked by ``m_o`` too, which
is what physically removing those output rows computes.

Rank growth (APT §4.3) appends rows to ``A`` and zero columns to ``B``: the product ``B A``,
hence the output, is unchanged at growth, and the scale ``s`` stays ``alpha / r_init`` (it is
*not* recomputed with the new rank).

``APTLinear`` exposes ``weight``, ``bias``, ``in_features`` and ``out_features`` of its frozen
base linear, so :func:`lmprune.arch.describe` and the counting functions that read a module's
``.weight`` keep working on a wrapped model. Counting that walks ``nn.Linear`` modules
(``count_flops``) counts the base linear once and leaves the adapter out; physical removal
(``lmprune.structures.remove``) expects plain linears: merge first (:func:`merge_apt`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from lmprune.errors import LmpruneError
from lmprune.tuners.saved_input import adapter_product


class APTLinear(nn.Module):
    """``m_o ∘ (W + s·B·A) X ∘ m_i`` around a frozen ``nn.Linear`` (APT Eq. 2).

    ``lora_A`` starts as LoRA's (Kaiming-uniform, a=√5), ``lora_B`` at zero, so a fresh adapter
    computes exactly the base linear. Masks are optional (None: no-op) and set with
    :meth:`set_masks`; they are stored as non-persistent buffers holding the caller's tensor
    itself, so a mask that requires grad receives gradients through this module.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise LmpruneError(f"APTLinear wraps an nn.Linear, got {type(base).__name__}; "
                               "pass the linear module itself (e.g. a q_proj).")
        _check_rank(r, "r")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r_init = int(r)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.r_init  # s: fixed for the adapter's lifetime
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=weight.dtype,
                                               device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=weight.dtype,
                                               device=weight.device))
        _init_a(self.lora_A.data, generator)
        self.out_group = 1
        # what A's gradient keeps of the input (lmprune.tuners.saved_input; apt.saved_input_dtype)
        self.saved_input = "model"
        self.register_buffer("in_mask", None, persistent=False)
        self.register_buffer("out_mask", None, persistent=False)

    # --- what describe()/counting read from a linear --------------------------------------
    @property
    def weight(self) -> nn.Parameter:
        return self.base.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]

    # --- masks ---------------------------------------------------------------------------
    def set_masks(self, in_mask: torch.Tensor | None = None, out_mask: torch.Tensor | None = None,
                  out_group: int = 1) -> None:
        """Set ``m_i`` (d_in values) and ``m_o`` (d_out / out_group values; None clears one).

        ``out_group`` is the number of consecutive output units one ``out_mask`` value covers:
        ``head_dim`` for a per-head mask on a q/k/v projection, 1 for FFN neurons. The mask is
        expanded in forward, so a per-head mask that requires grad gets per-head gradients.
        """
        if in_mask is not None and in_mask.shape != (self.in_features,):
            raise LmpruneError(f"in_mask must have shape ({self.in_features},), got "
                               f"{tuple(in_mask.shape)}; it masks the input (hidden) channels.")
        if out_mask is not None and (out_mask.dim() != 1
                                     or out_mask.numel() * out_group != self.out_features):
            raise LmpruneError(
                f"out_mask of shape {tuple(out_mask.shape)} with out_group={out_group} does not "
                f"cover {self.out_features} output units; pass one value per head with "
                "out_group=head_dim, or one value per output unit with out_group=1.")
        # Written into _buffers directly: plain attribute assignment would register a mask that
        # is an nn.Parameter (owned by a mask learner elsewhere) as this module's parameter.
        self._buffers["in_mask"], self._buffers["out_mask"] = in_mask, out_mask
        self.out_group = int(out_group)

    def expanded_out_mask(self) -> torch.Tensor | None:
        """``m_o`` over all d_out output units (None when unset)."""
        if self.out_mask is None or self.out_group == 1:
            return self.out_mask
        return self.out_mask.repeat_interleave(self.out_group)

    # --- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """APT Eq. 2: ``m_o ∘ (W x_m + b + s · B (A x_m))`` with ``x_m = x ∘ m_i``."""
        if self.in_mask is not None:
            x = x * self.in_mask.to(x.dtype)
        y = self.base(x)
        lora = nn.functional.linear(adapter_product(x, self.lora_A, self.saved_input),
                                    self.lora_B)
        y = torch.add(y, lora, alpha=self.scaling)  # y + s * lora, one kernel
        out_mask = self.expanded_out_mask()
        if out_mask is not None:
            y = y * out_mask.to(y.dtype)
        return y

    # --- compaction (physical removal while training) ------------------------------------
    def lmprune_slice(self, slicer, rows: torch.Tensor | None = None,
                      cols: torch.Tensor | None = None) -> None:
        """Keep output units ``rows`` and input channels ``cols`` (APT prunes the adapter with
        its block): the base linear's rows/columns, the same rows of ``B`` and columns of
        ``A``, and the matching mask entries. Called by physical removal through ``slicer``
        (:class:`lmprune.structures.removal.Slicer`), which records every replaced tensor."""
        if rows is not None:
            slicer.linear(self.base, rows=rows)
            slicer.param(self, "lora_B", 0, rows)
            if self.out_mask is not None:
                units = rows.reshape(-1, self.out_group)[:, 0] // self.out_group
                self._buffers["out_mask"] = self.out_mask[units.to(self.out_mask.device)]
        if cols is not None:
            slicer.linear(self.base, cols=cols)
            slicer.param(self, "lora_A", 1, cols)
            if self.in_mask is not None:
                self._buffers["in_mask"] = self.in_mask[cols.to(self.in_mask.device)]

    # --- rank growth and merge -----------------------------------------------------------
    def grow_rank(self, new_rank: int, generator: torch.Generator | None = None,
                  columns: torch.Tensor | None = None) -> list[nn.Parameter]:
        """Grow the rank to ``new_rank``: new rows of A random, new columns of B zero (APT §4.3).

        ``B A`` and the output are unchanged; ``scaling`` stays ``alpha / r_init``. The old
        values are kept. ``columns`` (optional): the input channels that are still alive in a
        model whose pruned channels are masked, not removed; the new rows are drawn over those
        only (zero elsewhere), exactly as over the columns of the compacted adapter. Returns
        the new ``[lora_A, lora_B]`` parameters (new objects: rebuild the optimizer's
        parameter groups and drop their old state).
        """
        _check_rank(new_rank, "new_rank")
        if new_rank < self.rank:
            raise LmpruneError(f"cannot grow rank {self.rank} down to {new_rank}; rank growth "
                               "only adds rows to A and columns to B.")
        grow = new_rank - self.rank
        old_a, old_b = self.lora_A.data, self.lora_B.data
        new_rows = torch.zeros(grow, old_a.shape[1], dtype=old_a.dtype, device=old_a.device)
        if columns is None:
            _init_a(new_rows, generator)
        else:
            drawn = torch.empty(grow, len(columns), dtype=old_a.dtype, device=old_a.device)
            _init_a(drawn, generator)
            new_rows[:, columns.to(old_a.device)] = drawn
        new_cols = torch.zeros(old_b.shape[0], grow, dtype=old_b.dtype, device=old_b.device)
        trainable = self.lora_A.requires_grad
        self.lora_A = nn.Parameter(torch.cat([old_a, new_rows], 0), requires_grad=trainable)
        self.lora_B = nn.Parameter(torch.cat([old_b, new_cols], 1), requires_grad=trainable)
        return [self.lora_A, self.lora_B]

    def delta_weight(self) -> torch.Tensor:
        """``s · B A`` (d_out x d_in), the adapter's update of W."""
        return self.scaling * (self.lora_B @ self.lora_A)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding ``W + s·B·A`` and the base bias (copies), in the
        adapter's dtype (the model's, also when ``W`` is stored in 16 bits:
        :mod:`lmprune.tuners.frozen_storage`).

        Masks are *not* folded in: structure removal applies them elsewhere. So
        ``merged(x * m_i) * m_o == self(x)``. The merged parameters keep the base's
        ``requires_grad`` flags (frozen).
        """
        base = self.base
        delta = self.delta_weight()  # in the adapter's dtype, the model's
        merged = torch.nn.utils.skip_init(  # no random initialisation: both are overwritten
            nn.Linear, base.in_features, base.out_features, bias=base.bias is not None,
            device=base.weight.device, dtype=delta.dtype)
        merged.weight.copy_(base.weight.to(delta.dtype) + delta)
        merged.weight.requires_grad_(base.weight.requires_grad)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
            merged.bias.requires_grad_(base.bias.requires_grad)
        return merged

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, r_init={self.r_init}, alpha={self.alpha:g}, "
                f"scaling={self.scaling:g}")


def _check_rank(r: int, name: str) -> None:
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise LmpruneError(f"{name} must be a positive integer (the LoRA rank), got {r!r}.")


def _init_a(tensor: torch.Tensor, generator: torch.Generator | None) -> None:
    """LoRA's initialisation of A: Kaiming-uniform with a=√5 (nn.Linear's default).

    A generator on another device than ``tensor`` (a CPU generator for a CUDA adapter) draws
    on its own device and the values are copied, so a seed gives the same A everywhere.
    """
    if generator is None or generator.device == tensor.device:
        nn.init.kaiming_uniform_(tensor, a=math.sqrt(5), generator=generator)
        return
    values = torch.empty(tensor.shape, dtype=tensor.dtype, device=generator.device)
    nn.init.kaiming_uniform_(values, a=math.sqrt(5), generator=generator)
    with torch.no_grad():
        tensor.copy_(values)


# --- model-level helpers -----------------------------------------------------------------

# Default targets per family (keyed by ``describe(model).family``), as APT adapts them:
# "q"/"v": the query/value projections of every attention site (T5: self and cross);
# "ffn_up": the FFN input projection that produces the neurons (see _FFN_UP).
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("q", "v", "ffn_up"),
    "t5": ("q", "v", "ffn_up"),
    "llama": ("q", "v"),
}
# Which of FFNSite.ins is the "up" projection: BERT (intermediate.dense,); T5 (wi,) or
# (wi_0, wi_1), wi_0 taken as APT's; LLaMA (gate_proj, up_proj) -> up_proj.
_FFN_UP = {"bert": 0, "t5": 0, "llama": -1}
ROLES = ("q", "k", "v", "o", "ffn_up", "ffn_out")


def target_paths(model: nn.Module, targets: list[str] | tuple[str, ...] | None = None
                 ) -> list[str]:
    """Module paths to wrap: roles (``ROLES``) resolved through ``describe``, or explicit paths.

    A target that is not a role name is taken as a dotted module path and must name a linear.
    """
    from lmprune.arch import describe

    structure = describe(model)
    family = structure.family
    targets = DEFAULT_TARGETS[family] if targets is None else tuple(targets)
    paths: list[str] = []
    for target in targets:
        if target in ("q", "k", "v", "o"):
            paths += [getattr(site, target) for site in structure.attention]
        elif target == "ffn_up":
            paths += [site.ins[_FFN_UP[family]] for site in structure.ffn]
        elif target == "ffn_out":
            paths += [site.out for site in structure.ffn]
        else:
            paths.append(target)
    return list(dict.fromkeys(paths))


def apply_apt(model: nn.Module, targets: list[str] | tuple[str, ...] | None = None,
              r: int = 8, alpha: float = 16.0, freeze_base: bool = True,
              generator: torch.Generator | None = None) -> dict[str, APTLinear]:
    """Wrap the target linears of a stock HF model in :class:`APTLinear`, in place.

    ``targets``: None for the family's ``DEFAULT_TARGETS``, else role names from ``ROLES``
    and/or module paths. Each wrapped module keeps its path (the parent's attribute is
    replaced), so hooks registered by path on other modules (``apply_masks`` on o/down
    projections) are unaffected and ``describe(model)`` still works. With ``freeze_base``
    every parameter of the model except the adapters' is frozen (re-enable a task head's
    ``requires_grad`` yourself if it should train). Returns ``{path: APTLinear}``.
    """
    modules = {path: _get(model, path) for path in target_paths(model, targets)}
    for path, module in modules.items():  # check every target before changing the model
        if isinstance(module, APTLinear):
            raise LmpruneError(f"{path!r} already holds an APT adapter; apply_apt once per model "
                               "(merge_apt first to start over).")
        if not isinstance(module, nn.Linear):
            raise LmpruneError(f"APT target {path!r} is a {type(module).__name__}, not a linear; "
                               f"use a role ({', '.join(ROLES)}) or a path to an nn.Linear.")
    wrapped: dict[str, APTLinear] = {}
    for path, module in modules.items():
        adapter = APTLinear(module, r=r, alpha=alpha, generator=generator)
        _set(model, path, adapter)
        wrapped[path] = adapter
    if freeze_base:
        adapter_ids = {id(p) for a in wrapped.values() for p in (a.lora_A, a.lora_B)}
        for p in model.parameters():
            if id(p) not in adapter_ids:
                p.requires_grad_(False)
    return wrapped


def merge_apt(model: nn.Module) -> dict[str, nn.Linear]:
    """Replace every :class:`APTLinear` by its merged plain linear (masks not folded in)."""
    merged = {}
    for path, module in apt_modules(model).items():
        merged[path] = module.merge()
        _set(model, path, merged[path])
    return merged


def apt_modules(model: nn.Module) -> dict[str, APTLinear]:
    """``{path: APTLinear}`` for every adapter in ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, APTLinear)}


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` of every parameter that requires grad (what the optimizer gets)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def adapter_parameter_count(model: nn.Module) -> int:
    """Number of adapter parameters: Σ (d_in + d_out) · rank over all APT adapters."""
    return sum(m.lora_A.numel() + m.lora_B.numel() for m in apt_modules(model).values())


def _get(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise LmpruneError(f"no module {path!r} in the model; APT targets are roles "
                           f"({', '.join(ROLES)}) or module paths from model.named_modules().")


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(_get(model, parent_path) if parent_path else model, name, module)
