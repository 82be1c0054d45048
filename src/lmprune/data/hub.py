"""Load a table-described benchmark from the Hugging Face Hub or from local files, normalized.

Without network, ``datasets`` retries a dead hub for ~25 s before failing. We probe the hub's
host first (one TCP connect, 3 s) and fail at once with a message that says how to proceed
(``data_files=``, or ``HF_HUB_OFFLINE=1`` for an already cached copy). In offline mode, or
behind a proxy (where a direct connect proves nothing), we skip the probe and let ``datasets``
answer, wrapping its error the same way.
"""
from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlparse

import datasets

from lmprune.data.hub_tables import HubSpec
from lmprune.data.local_files import DataFiles, builder_for, files_for_split, read_files
from lmprune.data.normalizers import coerce_row
from lmprune.data.schema import features_for
from lmprune.errors import LmpruneError

PROBE_TIMEOUT_S = 3.0
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_offline_mode() -> bool:
    """Whether the user asked ``datasets``/``huggingface_hub`` to stay offline (cache only)."""
    return bool(datasets.config.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One TCP connect to the hub endpoint; True when a proxy is configured (cannot tell)."""
    if any(os.environ.get(v) for v in PROXY_VARS):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def local_example(spec: HubSpec) -> str:
    """How the fix looks for this dataset: a call and the raw columns the file must have."""
    formats = "csv, json, jsonl, parquet" + (" or txt" if spec.kind == "text" else "")
    return (
        f"pass local files instead, e.g. load_dataset({spec.name!r}, data_files={{'train': "
        f"'train.jsonl', 'validation': 'dev.jsonl'}}) ({formats}) with the hub's columns: "
        f"{', '.join(dict.fromkeys(spec.columns.values()))}"
    )


def _hub_error(spec: HubSpec, reason: str) -> LmpruneError:
    where = spec.path + (f" (config {spec.config})" if spec.config else "")
    return LmpruneError(
        f"could not load dataset {spec.name!r} from the Hugging Face Hub ({where}): {reason}. "
        f"Hub datasets need network; {local_example(spec)}. If it was downloaded before, set "
        f"HF_HUB_OFFLINE=1 to use the cached copy. Offline bundled datasets: see "
        f"lmprune.data.list_datasets() (offline=True)."
    )


def read_hub(spec: HubSpec, split: str) -> datasets.Dataset:
    """The raw split from the hub (or the local ``datasets`` cache in offline mode)."""
    if not hub_offline_mode() and not hub_reachable():
        raise _hub_error(spec, "the hub is not reachable from this machine")
    try:
        return datasets.load_dataset(spec.path, spec.config, split=split, revision=spec.revision)
    except Exception as e:  # ConnectionError, hub HTTP errors, a renamed split, ...
        reason = f"{type(e).__name__}: {e}"
        if hub_offline_mode():
            reason += " (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set and no cached copy was found)"
        raise _hub_error(spec, reason) from e


def read_local(spec: HubSpec, split: str, data_files: DataFiles) -> tuple[datasets.Dataset, dict[str, str]]:
    """The raw split from local files, and the role -> raw-column map that fits them.

    Plain text files have a single ``text`` column whatever the hub calls it (PTB: ``sentence``).
    """
    files = files_for_split(data_files, split, spec.name)
    builder = builder_for(files)
    if builder == "text" and spec.kind != "text":
        raise LmpruneError(
            f"{files[0]!r} is plain text, but {spec.name!r} is a {spec.kind} dataset that needs "
            f"columns {', '.join(spec.columns.values())}: use csv, json, jsonl or parquet"
        )
    ds = read_files(files, builder)
    if spec.prepare_local is not None:
        ds = spec.prepare_local(ds)
    columns = {"text": "text"} if builder == "text" else dict(spec.columns)
    missing = [raw for raw in columns.values() if raw not in ds.column_names]
    if missing:
        raise LmpruneError(
            f"local file(s) {files} for {spec.name!r} lack column(s) {', '.join(missing)}; found "
            f"{', '.join(ds.column_names)}. Local files use the hub's raw column names: "
            f"{', '.join(columns.values())}."
        )
    return ds, columns


def normalize(ds: datasets.Dataset, spec: HubSpec, columns: dict[str, str]) -> datasets.Dataset:
    """Map raw rows to the normalized schema of ``spec.kind`` (only normalized columns remain)."""

    def row_fn(row: dict[str, Any]) -> dict[str, Any]:
        picked = {role: row[raw] for role, raw in columns.items()}
        shaped = spec.normalize(picked) if spec.normalize else picked
        return coerce_row(spec.kind, shaped, spec.labels)

    features = features_for(spec.kind, labels=spec.labels, pair=spec.has_pair)
    return ds.map(row_fn, remove_columns=ds.column_names, features=features, desc=f"normalize {spec.name}")


def resolve_split(spec: HubSpec, split: str) -> str:
    """The hub split for ``split`` (aliases applied), or an error listing the valid ones."""
    split = spec.split_aliases.get(split, split)
    if split not in spec.splits:
        aliases = "".join(f"; {a!r} means {t!r}" for a, t in spec.split_aliases.items())
        raise LmpruneError(
            f"dataset {spec.name!r} has no split {split!r}. Valid splits: "
            f"{', '.join(spec.splits)}{aliases}. (With data_files=, any split name you give works.)"
        )
    return split


def load_hub_dataset(spec: HubSpec, split: str, data_files: DataFiles | None) -> datasets.Dataset:
    """Load ``split`` of a table-described dataset, from local files when given, else the hub."""
    if data_files is not None:
        ds, columns = read_local(spec, split, data_files)
    else:
        ds, columns = read_hub(spec, resolve_split(spec, split)), dict(spec.columns)
    return normalize(ds, spec, columns)
