"""Save pruned models so that stock transformers can load them; load them back.

Two formats, chosen automatically by :func:`save_pretrained`:

* **stock**: when the model's config, with its new widths, rebuilds exactly this model
  (same widths in every layer, no removed sublayer, no derived attribute that changed), the
  directory is a plain Hugging Face checkpoint: ``AutoModel*.from_pretrained(path)``.
* **remote code**: otherwise (per-layer widths, removed sublayers, BERT heads, a pruned T5
  hidden size...), the directory also holds ``lmprune_pruned.py`` (structures/hf_code.py) and
  ``config.auto_map`` points at it: ``AutoModel*.from_pretrained(path, trust_remote_code=True)``
  works without lmprune installed, and :func:`load_pretrained` works without that flag.
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers
from torch import nn

from lmprune.errors import LmpruneError
from lmprune.structures import hf_code
from lmprune.structures.alignment import warn_if_unaligned
from lmprune.structures.hf_code import Skipped
from lmprune.structures.saving import (  # noqa: F401 (SaveResult, atomic_directory: API)
    SaveResult, atomic_directory, write_companions)

REMOTE_FILE = "lmprune_pruned.py"
log = logging.getLogger(__name__)
# Attributes that stock __init__ derives from the config and forward relies on.
WATCHED_ATTRS = ("head_dim", "attention_head_size", "all_head_size", "num_attention_heads",
                 "num_key_value_groups", "num_heads", "n_heads", "inner_dim", "key_value_proj_dim",
                 "scaling", "model_dim", "normalized_shape", "lmprune_kept_heads")
AUTO_CLASSES = {
    "AutoModel": "MODEL_MAPPING_NAMES",
    "AutoModelForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForQuestionAnswering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "AutoModelForSeq2SeqLM": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForMaskedLM": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "AutoModelForTokenClassification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
}


def stock_class(model: nn.Module) -> type:
    """The stock transformers class behind ``model`` (skipping lmprune's Pruned* subclasses)."""
    for cls in type(model).__mro__:
        if getattr(transformers, cls.__name__, None) is cls:
            return cls
    raise LmpruneError(f"{type(model).__name__} is not a transformers model class")


def _clean_config(config):
    config = copy.deepcopy(config)
    for key in ("lmprune_structure", "auto_map"):
        if hasattr(config, key):
            delattr(config, key)
    return config


def _build_meta(cls: type, config) -> nn.Module:
    with torch.device("meta"):
        return cls(config)


def structure_diff(model: nn.Module, reference: nn.Module) -> dict:
    """What ``hf_code.restructure`` must change in ``reference`` to obtain ``model``."""
    ref_params = {name: p.shape for name, p in reference.named_parameters(remove_duplicate=False)}
    params, skips, attrs = {}, {}, {}
    skipped_prefixes = []
    for name, module in model.named_modules():
        if isinstance(module, Skipped):
            skips[name] = dict(module.options)
            skipped_prefixes.append(name + ".")
    for name, p in model.named_parameters(remove_duplicate=False):
        if any(name.startswith(prefix) for prefix in skipped_prefixes):
            continue
        if name in ref_params and tuple(ref_params[name]) != tuple(p.shape):
            params[name] = list(p.shape)
    ref_modules = dict(reference.named_modules())
    for name, module in model.named_modules():
        ref = ref_modules.get(name)
        if ref is None or isinstance(module, Skipped) or any(name.startswith(s) for s in skipped_prefixes):
            continue
        changed = {k: _jsonable(getattr(module, k)) for k in WATCHED_ATTRS
                   if hasattr(module, k) and getattr(module, k) != getattr(ref, k, None)}
        if changed:
            attrs[name] = changed
    return {"params": params, "skips": skips, "attrs": attrs}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _stock_config_valid(config) -> bool:
    try:
        if hasattr(config, "validate"):
            config.validate()
        return True
    except Exception:  # transformers raises several error types from its validators
        return False


def _remote_spec(model: nn.Module) -> dict | None:
    """None when the stock config rebuilds ``model`` exactly, else the restructure spec."""
    cls, config = stock_class(model), _clean_config(model.config)
    try:
        stock = _build_meta(cls, config)
    except (ValueError, TypeError):  # the new widths break a stock __init__ check
        stock = None
    if stock is not None and not any(structure_diff(model, stock).values()) \
            and _stock_config_valid(config):
        return None
    init = dict(getattr(model.config, "lmprune_original", None) or {})
    init_config = copy.deepcopy(config)
    for key, value in init.items():
        setattr(init_config, key, value)
    spec = structure_diff(model, _build_meta(cls, init_config))
    spec["init"] = init
    spec["config"] = {key: getattr(config, key) for key in init}
    return spec


def _auto_map(model_type: str) -> dict[str, str]:
    from transformers.models.auto import modeling_auto

    mapping = {}
    for auto_name, table_name in AUTO_CLASSES.items():
        class_name = getattr(modeling_auto, table_name, {}).get(model_type)
        if class_name and hasattr(transformers, class_name):
            mapping[auto_name] = f"{REMOTE_FILE[:-3]}.Pruned{class_name}"
    return mapping


def save_pretrained(model: nn.Module, path, *, tokenizer=None, plan=None,
                    overwrite: bool = False, copy_files: Sequence[Path] = ()) -> SaveResult:
    """Save ``model`` (pruned or dense) as a Hugging Face directory, atomically.

    Everything is written to a temporary directory beside ``path`` and moved into place at the
    end, so a failure leaves ``path`` untouched. ``copy_files`` are copied in as they are
    (e.g. a tokenizer's files), before ``path`` is replaced: they may come from ``path``.
    """
    path = Path(path)
    with atomic_directory(path, overwrite) as tmp:
        result = _write(model, tmp)
        write_companions(tmp, tokenizer, plan, copy_files)
        result.unaligned = warn_if_unaligned(model, f"the model saved to {path}")
    result.path = path
    return result


def _write(model, tmp: Path) -> SaveResult:
    spec = _remote_spec(model)
    config = model.config
    saved = {k: getattr(config, k) for k in ("lmprune_structure", "auto_map") if hasattr(config, k)}
    for key in saved:
        delattr(config, key)
    if spec is not None:
        config.lmprune_structure = spec
        config.auto_map = _auto_map(config.model_type)
        for key, value in spec["init"].items():  # config.json holds the stock-valid widths
            setattr(config, key, value)
    architectures = getattr(config, "architectures", None)
    try:
        model.save_pretrained(tmp)
        # a reloaded pruned model is a Pruned* subclass: record the stock class it extends
        _rewrite_architectures(tmp, stock_class(model).__name__)
    finally:
        config.architectures = architectures
        for key, value in (spec or {}).get("config", {}).items():
            setattr(config, key, value)
        for key in ("lmprune_structure", "auto_map"):
            if hasattr(config, key):
                delattr(config, key)
        for key, value in saved.items():
            setattr(config, key, value)
    if spec is not None:
        shutil.copyfile(hf_code.__file__, tmp / REMOTE_FILE)
    if spec is None:
        return SaveResult(tmp, "stock", "AutoModel*.from_pretrained(path)")
    return SaveResult(tmp, "remote-code",
                      "AutoModel*.from_pretrained(path, trust_remote_code=True) or lmprune.load_pretrained(path)")


def _rewrite_architectures(directory: Path, name: str) -> None:
    config_file = directory / "config.json"
    data = json.loads(config_file.read_text())
    if data.get("architectures") != [name]:
        data["architectures"] = [name]
        config_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def has_outdated_code(path) -> bool:
    """Whether a remote-code directory ships another version of ``hf_code.py`` than this one."""
    shipped = Path(path) / REMOTE_FILE
    return shipped.is_file() and shipped.read_bytes() != Path(hf_code.__file__).read_bytes()


def load_pretrained(path, *, auto_class: str | None = None, **kwargs) -> nn.Module:
    """Load a directory written by :func:`save_pretrained` (no ``trust_remote_code`` needed).

    ``auto_class`` (e.g. ``"AutoModelForQuestionAnswering"``) picks another head than the
    saved architecture's.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise LmpruneError(f"{path} is not a saved model directory (no config.json)")
    config = json.loads(config_file.read_text())
    if config.get("lmprune_format") == "decilm":
        from lmprune.structures.decilm import load_decilm

        return load_decilm(path, **kwargs)
    architecture = (config.get("architectures") or [None])[0]
    if auto_class is not None:
        from transformers.models.auto import modeling_auto

        table = getattr(modeling_auto, AUTO_CLASSES[auto_class])
        architecture = table.get(config["model_type"])
    if architecture is None or not hasattr(transformers, architecture):
        raise LmpruneError(f"{path}: cannot tell which model class to load ({architecture!r})")
    if config.get("lmprune_structure"):
        if has_outdated_code(path):
            log.warning("%s/%s differs from this lmprune's code (this load uses the current "
                        "code, but trust_remote_code=True loads run the old copy, which may have "
                        "bugs fixed since, e.g. wrong cached decoding on transformers >= 5.24); "
                        "re-save it with `lmprune cp %s NEW_DIR`", path, REMOTE_FILE, path)
        cls = hf_code.pruned_class(architecture)
    else:
        cls = getattr(transformers, architecture)
    model = cls.from_pretrained(path, **kwargs)
    return model.eval()
