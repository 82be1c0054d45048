"""Which parameter replaced which, and how: the record physical removal leaves behind.

Removal (:func:`lmprune.structures.removal.remove`) replaces every sliced tensor by a new,
smaller ``nn.Parameter``. Anything keyed by the old parameter, or shaped like it, must follow:
an optimizer's state (AdamW's moments), a frozen copy of the tuning parameters (APT's
teacher), a gradient. :class:`ParamMoves` records, for each new parameter, the parameter it
came from and the ``index_select`` steps that turn a tensor of the old shape into one of the
new shape, so all of them follow with :meth:`ParamMoves.slice`.

Slicing twice in one removal (a q projection loses rows with its heads and columns with the
hidden channels) composes: the record maps the final parameter to the original one with both
steps. A parameter that was not sliced but replaced (a skipped sublayer's constant bias) has
no steps. A parameter that vanished with its module has no successor.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


class ParamMoves:
    """``new parameter -> (old parameter, [(dim, kept index), ...])`` for one removal."""

    def __init__(self) -> None:
        # id(new) -> (old, new, steps); holding both keeps their ids from being reused
        self._by_new: dict[int, tuple[nn.Parameter, nn.Parameter, list[tuple[int, torch.Tensor]]]] = {}

    def record(self, old: nn.Parameter, new: nn.Parameter, dim: int | None = None,
               index: torch.Tensor | None = None) -> None:
        """``new`` replaces ``old``; it holds ``old.index_select(dim, index)`` (no step: a copy)."""
        root, steps = old, []
        if id(old) in self._by_new:  # ``old`` is itself the product of an earlier step
            root, _, steps = self._by_new.pop(id(old))
        if dim is not None:
            steps = [*steps, (int(dim), index.detach().to("cpu", torch.long))]
        self._by_new[id(new)] = (root, new, steps)

    def __len__(self) -> int:
        return len(self._by_new)

    def __iter__(self) -> Iterator[tuple[nn.Parameter, nn.Parameter, list]]:
        return iter(self._by_new.values())

    def source(self, new: nn.Parameter) -> nn.Parameter | None:
        """The parameter ``new`` replaced (None: ``new`` is not the product of this removal)."""
        entry = self._by_new.get(id(new))
        return entry[0] if entry is not None and entry[1] is new else None

    def successors(self) -> dict[int, nn.Parameter]:
        """``id(old) -> new`` for every recorded move."""
        return {id(old): new for old, new, _ in self._by_new.values()}

    def slice(self, new: nn.Parameter, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (shaped like ``new``'s source) cut the way the source was cut into ``new``.

        Dimensions the steps do not touch may differ in size (a teacher's frozen adapter of
        a smaller rank follows its student's adapter)."""
        _, _, steps = self._by_new[id(new)]
        for dim, index in steps:
            tensor = tensor.index_select(dim, index.to(tensor.device))
        return tensor.clone() if not steps else tensor

    def carry_optimizer_state(self, old_state: dict, optimizer: torch.optim.Optimizer) -> int:
        """Give each new parameter of ``optimizer`` the sliced state its source had in
        ``old_state`` (an optimizer's ``state``: parameter -> {name: tensor or number}).
        Tensors shaped like the parameter (AdamW's ``exp_avg``, ``exp_avg_sq``) are sliced,
        scalars (``step``) copied. Returns how many parameters got a state."""
        carried = 0
        for group in optimizer.param_groups:
            for p in group["params"]:
                old = self.source(p)
                if old is None or old not in old_state:
                    continue
                optimizer.state[p] = {
                    k: (self.slice(p, v) if torch.is_tensor(v) and v.dim() > 0 and
                        v.shape == old.shape else v)
                    for k, v in old_state[old].items()}
                carried += 1
        return carried
