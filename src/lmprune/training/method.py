"""What a training method plugs into the loop, and the two plain ones: full FT and LoRA.

A method is a small object with step hooks (DESIGN.md: "a training loop with hooks at steps:
mask update, rank growth, distillation"). The loop (:mod:`lmprune.training.loop`) owns the data
order, the optimizer, the learning-rate schedule, the clock and the dev evaluations; the method
owns which parameters train, the loss, any masks, and what happens between steps.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class TrainMethod:
    """Base class: full fine-tuning (every parameter trains, loss = the task loss)."""

    name = "ft"
    #: True while the loop trains a model that recomputes activations in backward: the
    #: hooks of :meth:`forward_scope` then stay open until :meth:`release_forward`
    holds_forward: bool = False

    def setup(self, model: nn.Module, ctx: Any) -> nn.Module:
        """Prepare ``model`` before training (wrap adapters, freeze); returns the model."""
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict]:
        """Optimizer parameter groups (``lr`` is the run's peak rate; a group may set its own)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]

    def loss(self, model: nn.Module, batch: dict, step: int) -> torch.Tensor:
        """The training loss of one batch (the task loss of the active model by default)."""
        with self.forward_scope(self.active(model)):
            return model(**batch).loss

    @contextlib.contextmanager
    def forward_scope(self, *contexts) -> Iterator[None]:
        """Enter ``contexts`` (the hooks a training forward needs: masks, salience) around
        the forward. While the model recomputes its layers' activations in backward
        (:attr:`holds_forward`, set by the loop under ``train.gradient_checkpointing``:
        :mod:`lmprune.training.recompute`), the recomputed forward must run the same hooks:
        the contexts then stay open until the loop calls :meth:`release_forward` after
        backward. They close at once on an error."""
        stack = contextlib.ExitStack()
        with contextlib.ExitStack() as on_error:
            on_error.callback(stack.close)
            for context in contexts:
                stack.enter_context(context)
            yield
            on_error.pop_all()
        if self.holds_forward:
            self.__dict__.setdefault("_held_scopes", []).append(stack)
        else:
            stack.close()

    def release_forward(self) -> None:
        """Close what :meth:`forward_scope` kept open for backward (the loop calls it after
        every backward pass, also when the step failed)."""
        for stack in reversed(self.__dict__.pop("_held_scopes", [])):
            stack.close()

    def after_backward(self, model: nn.Module, step: int) -> None:
        """Gradients are in ``.grad`` here, before clipping and the optimizer step."""

    def grad_tensors(self):
        """Tensors outside the optimizer whose gradients a decision reads (APT's Fisher
        salience reads its masks'): data-parallel processes average them too."""
        return ()

    def schedule_restarts(self, total_steps: int) -> tuple[int, ...]:
        """Steps at which the optimizer starts afresh and the learning-rate warm-up/decay runs
        again over the remaining steps (CoFi: when pruning starts); none by default."""
        return ()

    def after_step(self, model: nn.Module, step: int) -> bool:
        """After the optimizer step; return True when the trainable tensors changed (the loop
        then rebuilds the optimizer, keeping the state of tensors that did not change, and
        of tensors that :meth:`take_moves` says replaced others, cut to their shape)."""
        return False

    def held_tensors(self):
        """Tensors the method keeps between steps beyond the model and the optimizer (a
        teacher, masks), for the memory the run holds (:class:`~lmprune.training.loop.LoopResult`)."""
        return ()

    def state_dict(self) -> dict:
        """What the method holds besides the model and the optimizer, for a checkpoint
        (masks, salience, a teacher, the structural changes it made)."""
        return {}

    def load_state_dict(self, model: nn.Module, state: dict) -> None:
        """Restore :meth:`state_dict` on a freshly set-up ``model``: first the model's shape
        as it was (removed units, grown ranks), since the checkpoint's tensors have it."""

    def take_moves(self):
        """The :class:`~lmprune.structures.moves.ParamMoves` of a compaction that happened in
        the last :meth:`after_step` (None: none); the loop asks once per rebuild."""
        return None

    @contextlib.contextmanager
    def active(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model as it currently computes (masks applied), for training and evaluation."""
        yield model

    def keep_ratio(self) -> float:
        """Fraction of the prunable body currently kept (1.0 for dense methods)."""
        return 1.0

    def on_evaluate(self, model: nn.Module, metric: float, step: int) -> None:
        """Called with the dev metric after each evaluation during training (APT keeps its
        best model as the distillation teacher)."""

    def finish(self, model: nn.Module) -> nn.Module:
        """The final model after training (merged adapters, pruned structures removed)."""
        return model

    def summary(self) -> dict:
        """What the report shows about the method's run (ranks, events, ...)."""
        return {}


#: LoRA target module names per family (q and v, as LoRA / APT's LoRA baselines).
LORA_TARGETS = {"bert": ["query", "value"], "roberta": ["query", "value"], "mpnet": ["q", "v"],
                "t5": ["q", "v"],
                "llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
                "mistral": ["q_proj", "v_proj"]}
#: Task-head modules that train with the adapters (new heads are randomly initialised; BERT's
#: pooler counts as part of the head, as in lmprune's parameter counts: sentence-embedding
#: checkpoints such as all-MiniLM never trained it for classification). A language-model head
#: (``lm_head``: T5 text-to-text, summarization) stays frozen, as in LoRA.
HEAD_MODULES = ["classifier", "pooler", "qa_outputs", "score"]


class LoRAMethod(TrainMethod):
    """Plain LoRA through peft (r=8, alpha=16 on q and v; the task head trains too)."""

    name = "lora"

    def __init__(self, r: int = 8, alpha: float = 16.0, family: str = "bert") -> None:
        self.r, self.alpha, self.family = r, alpha, family

    def setup(self, model: nn.Module, ctx: Any) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        heads = [m for m in HEAD_MODULES if _has_child(model, m)]
        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=0.0,
                            target_modules=LORA_TARGETS.get(self.family, ["q_proj", "v_proj"]),
                            modules_to_save=heads or None)
        return get_peft_model(model, config)

    def finish(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()


def _has_child(model: nn.Module, name: str) -> bool:
    return any(n.split(".")[-1] == name for n, _ in model.named_modules())


def unfreeze_heads(model: nn.Module) -> list[str]:
    """Make the task head trainable (after an adapter wrapper froze everything)."""
    names = []
    for name, module in model.named_modules():
        if name.split(".")[-1] in HEAD_MODULES and not any(name.startswith(n + ".")
                                                           for n in names):
            for p in module.parameters():
                p.requires_grad_(True)
            names.append(name)
    return names
