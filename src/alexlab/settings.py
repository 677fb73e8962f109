"""Which settings decide what a run computes, and how two resolved configs differ.

One list serves the changed-settings check of a rerun (train.py), the check that an ablation
arm changes something (the sweep launcher) and the report's reading of old run folders.
"""
from __future__ import annotations

from typing import Iterable

# Settings that may differ without changing what a run computes: where it runs and writes, how
# fast, how it is shown.
RESULT_NEUTRAL = ("hydra", "paths", "logger", "launcher", "sweep_name", "data.root", "data.download",
                  "data.num_workers", "data.on_device", "model.compile", "model.channels_last", "trainer.threads",
                  "trainer.progress_bar", "trainer.fresh", "trainer.accelerator", "trainer.devices",
                  "trainer.benchmark")


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
