"""Which arm each run is, and which design each group of runs forms, read from the runs' resolved
configs (config.yaml, or the W&B run config); folder names are never parsed.

conf/ablation/*.yaml is the one list of arms: each file sets `ablation_name` and the toggle values it
changes relative to the paper arm. The toggles are the keys those files set; the paper's level of
each is the schema's default (alexlab.config, which states the paper's values).

- A **group** is the runs that may be compared: same resolved config apart from the toggles, the
  seed, `ablation_name` and the result-neutral keys (settings.RESULT_NEUTRAL). Figure 1's protocol
  (an activation x lr grid, sweep=relu_vs_tanh) also pools the lrs: the report picks one per arm.
- The group's **reference** is the toggle values of its `ablation_name: paper` runs when they agree;
  otherwise each toggle's constant value in the group, or the paper's level where the group varies it.
- A run's **arm** is the ablation file(s) whose settings its toggles match relative to the reference
  (`tanh`, `no_lrn+no_dropout`), `paper` when none differs, or `<key>=<value>` for a level no file
  sets (`model.dropout=0.25`). A run with the reference's toggles that names another arm in
  `ablation_name` is that arm, one that changes nothing here (the analysis names it so).
- The **design**: one toggle varied = levels; several, each run changing one = one-at-a-time; runs
  changing several toggles, each at two levels, whose cells estimate every main effect and two-factor
  interaction = a factorial (full or a fraction); the Figure 1 grid; else one-at-a-time on the runs
  that change one toggle, the rest *custom* (named, not compared).
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..config import Config, conf_dir
from ..settings import RESULT_NEUTRAL, flatten, get, ignored
from .claims import TRICKS

REFERENCE = "paper"      # the arm every other arm is compared with
LR, ACTIVATION = "optim.lr", "model.activation"

# the designs a group can form
ONE_AT_A_TIME = "one-at-a-time"
LEVELS = "levels"
FACTORIAL = "factorial"
FIGURE1 = "Figure 1 (activation x lr grid)"
REFERENCE_ONLY = "reference only"
PAIRWISE = (ONE_AT_A_TIME, LEVELS, FIGURE1, REFERENCE_ONLY)   # each arm against the reference, by seed


def read_arms(folder: Path) -> dict[str, dict]:
    """{arm: {toggle key: value}} from the ablation files, in the report's order of arms (TRICKS)."""
    arms = {}
    for path in sorted(folder.glob("*.yaml")):
        content = yaml.safe_load(path.read_text()) or {}
        name = content.get("ablation_name", path.stem)
        arms[name] = {k: v for k, v in flatten(content).items() if k not in ("ablation_name", "defaults")}
    order = [REFERENCE, *TRICKS]
    return dict(sorted(arms.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


ARMS = read_arms(Path(conf_dir()) / "ablation")
TOGGLES = tuple(dict.fromkeys(k for settings in ARMS.values() for k in settings))
PAPER_LEVELS = {k: get(Config(), k) for k in TOGGLES}
SETTING_IGNORES = (*TOGGLES, "seed", "ablation_name", *RESULT_NEUTRAL)


def single_toggle_arms() -> dict[tuple[str, object], str]:
    """(toggle key, value) -> the arm whose file sets just that: ('model.norm', 'none') -> 'no_lrn'."""
    return {next(iter(s.items())): name for name, s in ARMS.items() if len(s) == 1}


def frozen(d: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in d.items()))


def same(a, b) -> bool:
    """Toggle values equal: 0 == 0.0, but a bool equals only the same bool (True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def level_text(key: str, value) -> str:
    return f"{key}={str(value).lower() if isinstance(value, bool) else value}"


def toggles_of(config: dict) -> dict | None:
    """The run's toggle values, or None when its config holds none (no config.yaml)."""
    flat = flatten(config) if isinstance(config, dict) else {}
    return {k: flat.get(k) for k in TOGGLES} if any(k in flat for k in TOGGLES) else None


def setting_of(config: dict) -> dict:
    """What must agree for two runs to be compared: the resolved config without the toggles, the
    seed, ablation_name and result-neutral keys."""
    return {k: v for k, v in flatten(config).items() if not ignored(k, SETTING_IGNORES)}


def reference_of(toggles: list[dict], names: list[str]) -> dict:
    papers = {frozen(t) for t, n in zip(toggles, names) if n == REFERENCE}
    if len(papers) == 1:
        return next(t for t, n in zip(toggles, names) if n == REFERENCE)
    reference = {}
    for key in TOGGLES:
        values = {repr(t.get(key)) for t in toggles}
        reference[key] = toggles[0].get(key) if len(values) == 1 else PAPER_LEVELS[key]
    return reference


def changes_of(toggles: dict, reference: dict) -> dict:
    return {k: toggles.get(k) for k in TOGGLES if not same(toggles.get(k), reference.get(k))}


def arm_name(changes: dict, recorded: str | None) -> str:
    """The ablation files whose settings these changes are ('tanh+no_lrn'), else key=value parts."""
    if not changes:
        return recorded if recorded in ARMS and recorded != REFERENCE and ARMS[recorded] else REFERENCE
    left, names = dict(changes), []
    for name, settings in sorted(ARMS.items(), key=lambda kv: -len(kv[1])):
        if settings and all(k in left and same(left[k], v) for k, v in settings.items()):
            names.append(name)
            for k in settings:
                del left[k]
    order = list(ARMS)
    parts = sorted(names, key=order.index) + [level_text(k, v) for k, v in left.items()]
    return "+".join(parts)


def factorial_factors(cells: list[dict]) -> list[str] | None:
    """The toggles of a two-level factorial whose distinct cells (changes from the reference)
    estimate every main effect and two-factor interaction; None when they do not."""
    factors = [k for k in TOGGLES if any(k in c for c in cells)]
    if len(factors) < 2:
        return None
    for k in factors:  # two levels: the reference's and one other
        if len({repr(c[k]) for c in cells if k in c}) != 1:
            return None
    x = coded(pd.DataFrame({"changes": cells}), factors)
    model = model_matrix(x)
    return factors if np.linalg.matrix_rank(model) == model.shape[1] else None


def coded(runs: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """+1 where the run's toggle is at its non-reference level (the trick removed), -1 at the reference's."""
    return pd.DataFrame({k: [1.0 if k in c else -1.0 for c in runs["changes"]] for k in factors}, index=runs.index)


def model_matrix(x: pd.DataFrame) -> np.ndarray:
    """Intercept, main effects and every two-factor interaction of +-1 columns."""
    columns = [np.ones(len(x))] + [x[k].to_numpy() for k in x]
    columns += [x[a].to_numpy() * x[b].to_numpy() for a, b in itertools.combinations(x.columns, 2)]
    return np.column_stack(columns)


def factorial_name(factors: list[str], cells: int) -> str:
    k = len(factors)
    if cells == 2 ** k:
        return f"full factorial 2^{k}"
    p = k - math.log2(cells) if cells else math.nan
    if float(p).is_integer():
        return f"fractional factorial 2^({k}-{int(p)})"
    return f"factorial ({cells} of {2 ** k} cells)"


def classify(changes: list[dict], figure1: bool) -> tuple[str, str, list[str]]:
    """(design, its description, factors) from the changes of a group's runs."""
    cells = {frozen(c): c for c in changes}.values()
    varied = [k for k in TOGGLES if any(k in c for c in cells)]
    if figure1:
        return FIGURE1, FIGURE1, []
    if not varied:
        return REFERENCE_ONLY, REFERENCE_ONLY, []
    if all(len(c) <= 1 for c in cells):
        return (LEVELS, f"levels of {varied[0]}", []) if len(varied) == 1 else (ONE_AT_A_TIME, ONE_AT_A_TIME, [])
    factors = factorial_factors(list(cells))
    if factors:
        return FACTORIAL, factorial_name(factors, len(cells)), factors
    single = [k for k in TOGGLES if any(len(c) == 1 and k in c for c in cells)]
    kind = LEVELS if len(single) == 1 else ONE_AT_A_TIME
    return kind, f"{kind} (runs changing several toggles outside any design: custom, not compared)", []


def label_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Add group, ablation (the arm), design, design_text, factors, toggles, changes, custom and lr."""
    runs = runs.copy()
    toggles = [toggles_of(c) for c in runs["config"]]
    settings = [setting_of(c) if t is not None else None for c, t in zip(runs["config"], toggles)]
    keys, grid = group_keys(toggles, settings)
    new = {column: [default] * len(runs) for column, default in
           (("design", ""), ("design_text", ""), ("custom", False), ("lr", None))}
    new["changes"] = [{} for _ in range(len(runs))]
    new["factors"] = [[] for _ in range(len(runs))]
    arms = list(runs["ablation"])
    members: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            members.setdefault(key, []).append(i)
    for key, rows in members.items():
        reference = reference_of([toggles[i] for i in rows], [arms[i] for i in rows])
        changes = [changes_of(toggles[i], reference) for i in rows]
        design, text, factors = classify(changes, grid[rows[0]])
        for i, c in zip(rows, changes):
            arm = arm_name(c, arms[i])
            new["changes"][i], new["factors"][i] = c, list(factors)
            new["design"][i], new["design_text"][i] = design, text
            new["custom"][i] = design in PAIRWISE and len(c) > 1 and arm not in ARMS
            new["lr"][i] = float(flatten(runs["config"].iloc[i])[LR]) if grid[i] else None
            arms[i] = arm
    for column, values in new.items():
        runs[column] = values
    runs["toggles"] = toggles
    runs["ablation"] = arms
    label_settings = [None if s is None else {k: v for k, v in s.items() if not (g and k == LR)}
                      for s, g in zip(settings, grid)]
    runs["group"] = group_labels(list(runs["name"]), label_settings, keys)
    return runs


def group_keys(toggles: list, settings: list) -> tuple[list, list[bool]]:
    """Each run's group key and whether its group is Figure 1's grid. Runs that differ in optim.lr
    share a group only when it varies nothing but the activation (the paper tuned lr per net; the
    report then picks one lr per arm); otherwise lr, like any other setting, splits groups."""
    loose = [None if s is None else frozen({k: v for k, v in s.items() if k != LR}) for s in settings]
    keys, grid = [], []
    for i, s in enumerate(settings):
        if s is None:
            keys.append(None)
            grid.append(False)
            continue
        peers = [j for j, other in enumerate(loose) if other == loose[i]]
        lrs = {repr(settings[j].get(LR)) for j in peers}
        varied = {k for k in TOGGLES if len({repr(toggles[j].get(k)) for j in peers}) > 1}
        is_grid = len(lrs) > 1 and varied == {ACTIVATION}
        keys.append(("grid", loose[i]) if is_grid else ("one", frozen(s)))
        grid.append(is_grid)
    return keys, grid


def group_labels(names: list[str], settings: list, keys: list) -> list[str]:
    """'<experiment name>' and, when one name holds several groups, the settings that tell them apart
    ('fmnist_quick [optim.lr=0.01]'). A run without a config joins its name's group if there is one."""
    by_name: dict[str, dict] = {}
    for name, key, s in zip(names, keys, settings):
        if key is not None:
            by_name.setdefault(name, {})[key] = s
    labels = []
    for name, key, s in zip(names, keys, settings):
        groups = by_name.get(name, {})
        if key is None:
            labels.append(name if len(groups) <= 1 else f"{name} (no config)")
        elif len(groups) == 1:
            labels.append(name)
        else:
            varying = sorted(k for k in set().union(*groups.values())
                             if len({repr(g.get(k)) for g in groups.values()}) > 1)
            labels.append(f"{name} [" + ",".join(level_text(k, s.get(k)) for k in varying) + "]")
    return labels
