"""P8 "same science": does the fast mode change what a run finds? Two sweeps of the same preset and
seeds, one per numeric mode, paired by seed: the mean difference (B - A) of the final test accuracy
and of the final gap (train_clean - test), each with its 95% paired t-interval
(alexlab.report.stats.paired_interval, what the report uses), in points; the goal is both
intervals inside +-1 pt.

    alexlab-train -m experiment=fmnist_quick 'seed=range(5)' sweep_name=p8_fp32 \\
        trainer.precision=32-true model.channels_last=false                     # A: fp32 NCHW
    alexlab-train -m experiment=fmnist_quick 'seed=range(5)' sweep_name=p8_fast    # B: auto (the fast mode)
    .venv/bin/python benchmarks/pair_modes.py multirun/p8_fp32/fmnist_quick multirun/p8_fast/fmnist_quick

Each side's mode is read from its runs' summary.json (precision_used, channels_last_used); runs
are paired by (ablation, seed), and only completed runs count. Last line: `same_science=yes|no`.
"""
from __future__ import annotations

import argparse
import sys

from alexlab.report.load import load
from alexlab.report.stats import SIGN_FLIP, paired_interval

METRICS = ("test/acc", "gap")
BOUND = 0.01  # +-1 pt


def finals(folder: str) -> tuple[dict, set]:
    """{(ablation, seed): final row} of the completed runs, and the modes they ran in."""
    runs = load(folder).runs
    runs = runs[runs["ok"]]
    rows = {(r.ablation, int(r.seed)): r.summary.get("final", {}) for r in runs.itertuples()}
    modes = {(r.summary.get("precision_used", "not recorded"), r.summary.get("channels_last_used", "not recorded"))
             for r in runs.itertuples()}
    return rows, modes


def main(argv=None) -> bool:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="sweep folder of the reference mode (fp32 NCHW)")
    p.add_argument("b", help="sweep folder of the fast mode")
    args = p.parse_args(argv)
    (rows_a, modes_a), (rows_b, modes_b) = finals(args.a), finals(args.b)
    for name, modes in (("A", modes_a), ("B", modes_b)):
        shown = "; ".join(f"precision {m[0]}, channels_last {m[1]}" for m in sorted(modes, key=str))
        print(f"{name}: {shown or 'no completed runs'}")
    if modes_a == modes_b:
        print("note: A and B ran in the same mode; the comparison below says nothing about the fast mode")
    keys = sorted(set(rows_a) & set(rows_b))
    print(f"{len(keys)} pairs (ablation, seed): {', '.join(f'{a}/{s}' for a, s in keys)}")
    inside = bool(keys)
    for metric in METRICS:
        diffs = [rows_b[k][metric] - rows_a[k][metric] for k in keys
                 if rows_a[k].get(metric) is not None and rows_b[k].get(metric) is not None]
        ci = paired_interval(diffs)
        # every difference equal: no spread, the interval is that value; fewer than 2 pairs: none (nan)
        low, high = (ci.mean, ci.mean) if ci.method == SIGN_FLIP else (ci.low, ci.high)
        ok = abs(low) <= BOUND and abs(high) <= BOUND  # False for nan
        inside &= ok
        print(f"{metric}: B - A = {ci.mean * 100:+.2f} pt over {ci.n} pairs, 95% interval "
              f"[{low * 100:+.2f}, {high * 100:+.2f}] pt ({ci.method or 'no interval'}): "
              f"{'inside' if ok else 'not inside'} +-{BOUND * 100:.0f} pt")
    print(f"same_science={'yes' if inside else 'no'}")
    return inside


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
