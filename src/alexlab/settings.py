"""Which settings decide what a run computes, and how two resolved configs differ.

One list serves the changed-settings check of a rerun (train.py), the check that an ablation
arm changes something (the sweep launcher) and the report's reading of old run folders.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

# Settings that may differ without changing what a run computes: where it runs and writes, how
# fast, how it is shown.
RESULT_NEUTRAL = ("hydra", "paths", "logger", "launcher", "sweep_name", "data.root", "data.download",
                  "data.num_workers", "data.on_device", "model.compile", "model.channels_last", "trainer.threads",
                  "trainer.progress_bar", "trainer.fresh", "trainer.accelerator", "trainer.devices",
                  "trainer.benchmark")
# ... of which these still name a run's folder: they change float rounding (another memory layout,
# compiled kernels, cuDNN's algorithm choice), so two runs differing in them are two results.
NAMED_IN_FOLDER = ("model.compile", "model.channels_last", "trainer.benchmark")


def flatten(node, prefix: str = "") -> dict:
    """{'model': {'lrn': True}} -> {'model.lrn': True} (lists stay values)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return out


def ignored(key: str, keys: Iterable[str]) -> bool:
    """True when `key` is one of `keys` or lies below one of them ('hydra.run.dir' below 'hydra')."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def differences(before: dict, after: dict, ignore: Iterable[str] = RESULT_NEUTRAL) -> dict[str, tuple]:
    """{key: (before, after)} for every flattened key whose value differs, outside `ignore`. A key
    only one side has counts as a difference (its value on the other side is None)."""
    a, b = flatten(before), flatten(after)
    ignore = tuple(ignore)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if not ignored(k, ignore) and a.get(k) != b.get(k)}


_MISSING = object()


def get(node, key: str, default=_MISSING):
    """node['a']['b'] for key 'a.b' in a dict, a DictConfig or a dataclass, or a flat 'a.b' key
    (W&B run configs can be either). Without a default, a missing key raises KeyError."""
    if isinstance(node, dict) and key in node:
        return node[key]
    for part in key.split("."):
        try:
            node = node[part] if hasattr(node, "__getitem__") and not isinstance(node, (str, bytes)) \
                else getattr(node, part)
        except (KeyError, AttributeError, TypeError):
            if default is _MISSING:
                raise KeyError(key) from None
            return default
    return node


def cache_root() -> Path:
    """Where alexlab keeps what it can rebuild (downloaded data sets, pixel statistics, the LRN
    kernel): $ALEXLAB_CACHE_DIR, else $XDG_CACHE_HOME/alexlab, else ~/.cache/alexlab. One place per
    user, whatever folder a command runs in (paths.data defaults to <cache root>/data)."""
    explicit = os.environ.get("ALEXLAB_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alexlab"
