"""Prunable structures: masks, physical removal, plans, counting and Hugging Face export."""
from lmprune.structures.masks import KINDS, Masks, apply_masks, masked_norm
from lmprune.structures.removal import decide, remove, sync_config

__all__ = ["KINDS", "Masks", "apply_masks", "decide", "masked_norm", "remove", "sync_config"]
