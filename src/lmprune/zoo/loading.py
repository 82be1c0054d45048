"""``load_model``: one entry point for aliases, local directories and hub ids."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmprune.errors import LmpruneError, UnknownNameError
from lmprune.zoo import hub
from lmprune.zoo.mpnet import mpnet_dir
from lmprune.zoo.packages import MINILM, package_file
from lmprune.zoo.registry import HUB_HINT, alias_names, get_info, is_alias, is_tiny
from lmprune.zoo.smollm2 import smollm2_dir
from lmprune.zoo.tasks import auto_class, head_kwargs, resolve_task
from lmprune.zoo.tiny import build_tiny, build_tiny_tokenizer, tiny_config

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

#: model types whose position ids start after the padding index (usable positions:
#: max_position_embeddings - pad_token_id - 1), and those with relative positions (no limit).
POSITIONS_AFTER_PADDING = ("roberta", "xlm-roberta", "camembert")
RELATIVE_POSITIONS = ("t5",)


@dataclass
class LoadedModel:
    """A model with its tokenizer.

    ``path`` is what ``from_pretrained`` accepts to load the same weights again (a directory
    or a hub id); None for tiny models, which exist only in memory. ``task`` is the task
    actually used (the alias's default when none was asked for).
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    name: str
    path: str | None
    task: str = "base"


#: real offline aliases -> function returning their HF directory (converting if needed).
_REAL_DIRS: dict[str, Callable[[], Path]] = {
    "minilm-l6": lambda: package_file(MINILM, "minilm-l6"),
    "smollm2-135m": smollm2_dir,
    "mpnet-base": mpnet_dir,
}


def resolve_model_dir(name: str) -> str:
    """The HF directory of a real offline alias (building its cache if needed).

    A local directory is returned as an absolute path. Tiny aliases have no directory.
    """
    if name in _REAL_DIRS:
        return str(_REAL_DIRS[name]())
    if is_tiny(name):
        raise LmpruneError(f"{name!r} is built in memory and has no directory; save one with "
                           f"lmprune.zoo.build_tiny({name!r}).save_pretrained(DIR).")
    if os.path.isdir(name):
        return os.path.abspath(name)
    raise UnknownNameError("model", name, alias_names(), hint=HUB_HINT)


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise LmpruneError(f"unknown dtype {dtype!r}; use e.g. float32, bfloat16, float16.")
    return value


# transformers 5 invents an empty tokenizer for a directory that has none; check for files.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                    "spiece.model", "tokenizer.model")


def _has_tokenizer_files(directory: Path) -> bool:
    return any((directory / f).exists() for f in _TOKENIZER_FILES)


def _load_pretrained(source: str, task: str | None, *, what: str, num_labels: int | None,
                     dtype: torch.dtype, seed: int, **extra: Any) -> LoadedModel:
    """Load a directory or hub id with the Auto class for the task (inferred from its config)."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(source, **extra)
    except (OSError, ValueError) as e:
        raise LmpruneError(f"{what} is not a loadable Hugging Face model ({e})") from e
    task = resolve_task(config.model_type, task, what=what)
    # Task heads absent from the checkpoint are initialized randomly: seed them.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = auto_class(task).from_pretrained(
                source, dtype=dtype, **head_kwargs(task, config, num_labels), **extra)
        except (OSError, ValueError) as e:
            raise LmpruneError(f"could not load {what} for task {task!r}: {e}") from e
    tokenizer = None  # weights without a tokenizer are still prunable
    if not os.path.isdir(source) or _has_tokenizer_files(Path(source)):
        with contextlib.suppress(OSError, ValueError, TypeError):
            tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    return LoadedModel(model.eval(), tokenizer, source, source, task)


def load_model(name: str, task: str | None = None, *, num_labels: int | None = None,
               dtype: torch.dtype | str = torch.float32, seed: int = 0) -> LoadedModel:
    """Load a model by alias (see ``list_models``), local directory, or hub id ``org/name``.

    ``task`` picks the head ("base", "sequence-classification", "question-answering",
    "causal-lm", "seq2seq-lm"); None means the model's default. ``seed`` fixes every randomly
    initialized weight (all of a tiny model; the new head of a real one). ``num_labels``
    (sequence-classification) defaults to a saved head's label count, else 2.
    """
    dtype = _as_dtype(dtype)
    kw = dict(num_labels=num_labels, dtype=dtype, seed=seed)
    if is_tiny(name):
        model = build_tiny(name, task, seed=seed, num_labels=num_labels or 2).to(dtype)
        task = resolve_task(get_info(name).family, task, what=name)
        return LoadedModel(model, build_tiny_tokenizer(name), name, None, task)
    if is_alias(name):
        directory = resolve_model_dir(name)
        loaded = _load_pretrained(directory, task, what=f"model {name!r}", **kw)
        loaded.name = name
        return loaded
    if os.path.isdir(name):
        return _load_pretrained(name, task, what=f"directory {name!r}", **kw)
    if hub.looks_like_hub_id(name):
        if hub.hub_load_kwargs(name):  # in the local HF cache: try without touching the network
            try:
                return _load_pretrained(name, task, what=f"hub model {name!r}", **kw,
                                        local_files_only=True)
            except LmpruneError as e:
                if not hub.hub_reachable():
                    raise hub.offline_error(name, e.__cause__) from e
        return _load_pretrained(name, task, what=f"hub model {name!r}", **kw)
    raise UnknownNameError("model", name, alias_names(), hint=HUB_HINT)


def check_model_name(name: str, what: str = "model") -> None:
    """Raise now, before anything loads, if ``load_model(name)`` could not even start: not
    an alias, not a directory with a config.json, not a hub id ``org/name``."""
    if is_alias(name):
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LmpruneError(f"{what} {name}: not a saved model directory (no config.json); "
                               "give the directory a model was saved to")
        return
    if hub.looks_like_hub_id(name) and not path.exists():
        return
    if path.exists() or os.sep in name or name.startswith((".", "~")):
        raise LmpruneError(f"{what} {name}: no such directory (nor a model alias from "
                           "`lmprune ls models`, nor a hub id org/name)")
    raise UnknownNameError("model", name, alias_names(), hint=HUB_HINT)


def model_config(name: str) -> PretrainedConfig | None:
    """The config of a model alias, local directory or hub id, without loading any weights.

    None for a hub id whose config is not in the local Hugging Face cache (reading it would
    need the network; the load itself will tell).
    """
    from transformers import AutoConfig

    if is_tiny(name):
        return tiny_config(name)
    if is_alias(name) or os.path.isdir(name):
        source = resolve_model_dir(name)
        try:
            return AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as e:
            raise LmpruneError(f"{name!r} is not a loadable Hugging Face model ({e})") from e
    if hub.looks_like_hub_id(name):
        try:
            return AutoConfig.from_pretrained(name, local_files_only=True)
        except (OSError, ValueError):
            return None
    raise UnknownNameError("model", name, alias_names(), hint=HUB_HINT)


def max_positions(config: PretrainedConfig | None) -> int | None:
    """How many tokens one sequence may have; None when the model sets no limit (relative
    positions) or the config is unknown."""
    if config is None or config.model_type in RELATIVE_POSITIONS:
        return None
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return None
    if config.model_type in POSITIONS_AFTER_PADDING:
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    return int(limit)
