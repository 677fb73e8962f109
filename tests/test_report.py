"""alexlab-report: synthetic run folders with known effects -> verdicts, intervals, plots, CLI.

The statistics themselves (error rate by simulation, independent computations) are checked in
tests/test_report_stats.py.
"""
import copy
import io
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from alexlab.curves import epochs_to_error
from alexlab.report import analyse, load, seeds_needed
from alexlab.report.analysis import (CONTRADICTED, EQUIVALENT, INCONCLUSIVE, NOT_RUN, REPRODUCED, SUGGESTIVE,
                                     UNCHANGED, size_vs_paper)
from alexlab.report.claims import CLAIMS
from alexlab.report.cli import main
from alexlab.report.runs import ReportError
from alexlab.report.render import markdown, print_console, verdict_style
from alexlab.report.stats import SIGN_FLIP, SIGN_TEST, T_TEST

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "notebooks" / "sample_results" / "demo" / "default"
EPOCHS = 12
SEEDS = range(6)

# The resolved config of a `paper` run (the toggles and what the report reads), and what each arm
# changes in it, as conf/ablation/*.yaml do.
BASE_CONFIG = {"name": "default", "sweep_name": "demo", "ablation_name": "paper", "seed": 0,
               "model": {"name": "alexnet_small", "activation": "relu", "pooling": "overlapping", "norm": "lrn",
                         "dropout": 0.5, "one_column": False},
               "data": {"name": "fashion_mnist", "augment": "crop_flip_pca", "root": None},
               "optim": {"lr": 0.01}, "eval": {"error_threshold": 0.25, "ten_crop": False},
               "trainer": {"max_epochs": EPOCHS, "threads": 1}}
ARMS = {"paper": {}, "tanh": {"model": {"activation": "tanh"}}, "no_lrn": {"model": {"norm": "none"}},
        "no_overlap": {"model": {"pooling": "non_overlapping"}}, "no_dropout": {"model": {"dropout": 0.0}},
        "no_augment": {"data": {"augment": "none"}}, "no_pca": {"data": {"augment": "crop_flip"}},
        "one_column": {"model": {"one_column": True}}}


def merged(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def clean_curve(final: float, reach: float | None) -> np.ndarray:
    """train_clean/acc after each epoch: the error falls through 25% at `reach` epochs (linear between
    epochs, so epochs_to_error reads back `reach`) and ends at `final`; never below 25% if reach is None."""
    x = np.arange(1, EPOCHS + 1, dtype=float)
    if reach is None:
        return min(final, 0.74) * x / EPOCHS
    err = np.minimum(0.95, 0.25 + 0.1 * (reach - x))
    below = int(np.argmax(err < 0.25))
    err[below:] = np.linspace(err[below], 1.0 - final, EPOCHS - below)
    return 1.0 - err


def write_run(root: Path, ablation: str, seed: int, test: float, clean: float, reach: float | None = 3.5,
              status: str = "completed", completed: bool = True, error: str | None = None, job: str = "",
              config: dict | None = None, curve=None, ten_crop: float | None = None, val: float | None = None,
              num_classes: int | None = 10, trained: float | None = None) -> Path:
    """A run folder as train.py writes it. test/acc ramps up, peaks 2 pt above `test` at epoch 8 and
    ends at `test`; train_clean/acc (every epoch, eval mode) reaches 25% error at `reach` epochs and
    ends at `clean` (or follows `curve`); the as-trained train/acc (never judged) is 5 pt below it,
    or `trained` throughout. `ten_crop`: test/acc_10crop = test/acc + ten_crop; `val`: val/acc ramps
    up to `val`."""
    job = job or f"ablation={ablation},seed={seed}"
    d = root / job
    d.mkdir(parents=True)
    clean_acc = clean_curve(clean, reach) if curve is None else np.asarray(curve, dtype=float)
    rows = []
    for e in range(EPOCHS):
        t = test + 0.02 - 0.02 * (e - 8) / 3 if e >= 8 else (test + 0.02) * (e + 1) / 9
        c = float(clean_acc[e])
        row = {"epoch": e, "train/loss": 1.0, "train/acc": c - 0.05 if trained is None else trained,
               "train_clean/loss": 1.0, "train_clean/acc": c,
               "train_clean/acc_top5": 1.0, "test/loss": 1.0, "test/acc": t, "test/acc_top5": 1.0, "gap": c - t,
               "lr": 0.01, "epoch_time_s": 1.0, "images_per_s": 100.0}
        if ten_crop is not None:
            row["test/acc_10crop"] = t + ten_crop
        if val is not None:
            row["val/acc"] = val * (e + 1) / EPOCHS
        rows.append(row)
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
    best = max(rows, key=lambda r: r["test/acc"])
    reached = epochs_to_error([(r["epoch"], r["train_clean/acc"]) for r in rows], 0.25)
    summary = {"status": status, "error": error, "name": "default", "ablation": ablation, "job": job, "seed": seed,
               "final": rows[-1], "best_test_acc": best["test/acc"], "best_epoch": best["epoch"],
               "epochs_to_train_error": reached, "error_threshold": 0.25, "epochs": EPOCHS}
    if num_classes is not None:
        summary["num_classes"] = num_classes
    (d / "summary.json").write_text(json.dumps(summary))
    cfg = merged(config or BASE_CONFIG, ARMS.get(ablation, {}))
    cfg.update(ablation_name=ablation, seed=seed)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if completed:
        (d / "COMPLETED").write_text("done\n")
    return d


# Known effects (ablation - paper, per seed): noise is fixed so the verdicts are certain.
RNG = np.random.default_rng(0)
PAPER_TEST = 0.80 + 0.01 * RNG.standard_normal(len(SEEDS))
PAPER_CLEAN = PAPER_TEST + 0.05 + 0.005 * RNG.standard_normal(len(SEEDS))
DROPOUT_TEST = PAPER_TEST - 0.02 + 0.004 * RNG.standard_normal(len(SEEDS))      # error +2 pt
DROPOUT_CLEAN = PAPER_CLEAN + 0.08 + 0.004 * RNG.standard_normal(len(SEEDS))    # gap +10 pt
LRN_TEST = PAPER_TEST + 0.03 + 0.004 * RNG.standard_normal(len(SEEDS))          # error -3 pt: against the paper
OVERLAP_NOISE = np.array([0.004, -0.006, 0.005, -0.003, 0.002, -0.001])          # mean ~0: inconclusive
PAPER_REACH = np.array([2.5, 3.3, 2.7, 3.1, 2.4, 3.6])      # epochs to 25% eval-mode training error
TANH_REACH = np.array([8.2, 9.5, 7.1, 8.8, 6.3, 10.4])      # ~2.9x slower
DROPOUT_REACH = np.array([1.6, 2.1, 1.7, 1.8, 1.5, 2.2])    # without dropout ~0.6x the epochs


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    root = tmp_path / "multirun" / "demo" / "default"
    for s in SEEDS:
        write_run(root, "paper", s, PAPER_TEST[s], PAPER_CLEAN[s], PAPER_REACH[s])
        write_run(root, "no_dropout", s, DROPOUT_TEST[s], DROPOUT_CLEAN[s], DROPOUT_REACH[s])
        write_run(root, "no_lrn", s, LRN_TEST[s], PAPER_CLEAN[s], PAPER_REACH[s])
        write_run(root, "no_overlap", s, PAPER_TEST[s] + OVERLAP_NOISE[s], PAPER_CLEAN[s], PAPER_REACH[s])
        write_run(root, "tanh", s, PAPER_TEST[s], PAPER_CLEAN[s], TANH_REACH[s])
    return root


def report_md(analysis) -> str:
    """report.md's text as `alexlab-report` writes it, without drawing the plots (slow)."""
    return markdown(analysis, {}, Path("."))


def console_text(analysis) -> str:
    from rich.console import Console
    console = Console(record=True, width=200, file=io.StringIO())
    print_console(analysis, console=console)
    return console.export_text()


def arms_row(console: str, arm: str) -> list[str]:
    """The cells of one arm's row in the console's arms table (the first table printed)."""
    row = next(line for line in console.splitlines() if line.strip("│ ").startswith(arm + " "))
    return [c.strip() for c in row.strip("│").split("│")]


def claim(analysis, cid: str) -> dict:
    return analysis.claims.set_index("claim").loc[cid].to_dict()


def effect(analysis, ablation: str, metric: str) -> dict:
    fx = analysis.effects
    return fx[(fx.ablation == ablation) & (fx.metric == metric)].iloc[0].to_dict()


def t_interval(diffs):
    d = np.asarray(diffs, dtype=float)
    return stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(len(d)))


def test_known_effects_give_the_right_verdicts_and_scipy_intervals(sweep_dir):
    """overlap's effect is ~0 with +-0.6 pt of noise: within the claim's delta of 1 pt that is 'no effect
    larger than +-1 pt'; asked for +-0.2 pt, the same data are inconclusive."""
    assert claim(analyse(load(sweep_dir)), "overlap_error")["verdict"] == f"{EQUIVALENT}1 pt"
    a = analyse(load(sweep_dir), deltas={"overlap_error": 0.2})
    assert a.per_run["ok"].all() and len(a.per_run) == 30
    assert claim(a, "dropout_gap")["verdict"] == REPRODUCED
    assert claim(a, "lrn_error")["verdict"] == CONTRADICTED
    assert claim(a, "overlap_error")["verdict"] == INCONCLUSIVE
    assert claim(a, "relu_speed")["verdict"] == REPRODUCED
    assert claim(a, "dropout_speed")["verdict"] == REPRODUCED
    assert claim(a, "augment_gap")["verdict"] == NOT_RUN  # no no_augment arm in this sweep

    gap_diffs = ((DROPOUT_CLEAN - DROPOUT_TEST) - (PAPER_CLEAN - PAPER_TEST)) * 100
    row = effect(a, "no_dropout", "gap")
    assert row["n"] == 6 and row["effect"] == pytest.approx(gap_diffs.mean())
    assert (row["low"], row["high"]) == pytest.approx(t_interval(gap_diffs))
    err_diffs = ((1 - LRN_TEST) - (1 - PAPER_TEST)) * 100
    row = effect(a, "no_lrn", "test_error")
    assert (row["low"], row["high"]) == pytest.approx(t_interval(err_diffs))
    assert row["p"] == pytest.approx(stats.ttest_rel(1 - LRN_TEST, 1 - PAPER_TEST).pvalue)
    assert row["method"] == T_TEST

    # ratio of epochs to 25% training error: t-interval of the log ratios, back-transformed
    logs = np.log(TANH_REACH / PAPER_REACH)
    row = effect(a, "tanh", "epochs_ratio")
    assert row["effect"] == pytest.approx(math.exp(logs.mean()))
    assert (row["low"], row["high"]) == pytest.approx(tuple(np.exp(t_interval(logs))))
    assert row["p"] == pytest.approx(stats.ttest_rel(np.log(TANH_REACH), np.log(PAPER_REACH)).pvalue)
    assert row["paper_mean"] == pytest.approx(PAPER_REACH.mean())

    # inconclusive: seeds needed is the first n whose interval would exclude 0 at this mean and sd
    c = claim(a, "overlap_error")
    d = -OVERLAP_NOISE * 100
    n = c["seeds_needed"]
    assert n > 6 and n == seeds_needed(d.mean(), d.std(ddof=1))

    # best epoch is read beside the final one, never instead of it
    row = effect(a, "no_lrn", "test_error_best")
    assert row["paper_mean"] == pytest.approx(np.mean(1 - (PAPER_TEST + 0.02)) * 100)
    assert effect(a, "no_lrn", "best_epoch")["paper_mean"] == 8


def test_speed_claims_read_fractional_epochs_from_the_eval_mode_training_error_not_train_acc(tmp_path):
    """train/acc (as trained, depressed by dropout and augmentation) is 0.5 in every run here and
    would never reach 75%; the report reads train_clean/acc, interpolated between epochs."""
    root = tmp_path / "sweep"
    for s, (p, t) in enumerate([(2.5, 7.25), (3.4, 8.6), (2.2, 6.9)]):
        write_run(root, "paper", s, 0.8, 0.85, reach=p, trained=0.5)
        write_run(root, "tanh", s, 0.8, 0.85, reach=t, trained=0.5)
    a = analyse(load(root))
    runs = a.per_run.set_index(["ablation", "seed"])
    assert runs.loc[("paper", 0), "epochs_to_error"] == pytest.approx(2.5)
    assert runs.loc[("tanh", 1), "epochs_to_error"] == pytest.approx(8.6)
    assert runs["censored_at"].isna().all()
    row = effect(a, "tanh", "epochs_ratio")
    assert row["effect"] == pytest.approx(math.exp(np.mean(np.log([7.25 / 2.5, 8.6 / 3.4, 6.9 / 2.2]))))
    assert row["method"] == T_TEST and row["bound"] == ""


def test_holm_family_is_each_groups_claims_difference_and_equivalence_tests_each_claim_once(sweep_dir):
    a = analyse(load(sweep_dir))
    c = a.claims
    tested = c["p"].notna()
    assert tested.sum() == 6  # relu_speed, lrn, overlap x2, dropout x2; absent arms have no p
    assert c.loc[tested, "p_equiv"].notna().all()
    from alexlab.report import holm
    raw = np.concatenate([c.loc[tested, "p"], c.loc[tested, "p_equiv"]])
    both = holm(raw, units=list(c.loc[tested, "claim"]) * 2)
    assert c.loc[tested, "p_holm"].to_numpy() == pytest.approx(both[:6])
    assert c.loc[tested, "p_equiv_holm"].to_numpy() == pytest.approx(both[6:])
    # each claim counts once: the smallest of the 12 p-values is multiplied by 6 claims, not by 12
    smallest = np.nanargmin(raw)
    assert both[smallest] == pytest.approx(min(1.0, 6 * raw[smallest]))
    assert all(c.loc[tested, "p_holm"] >= c.loc[tested, "p"])
    survives = c.set_index("claim")["survives_holm"]
    assert survives["dropout_gap"] and survives["lrn_error"] and not survives["overlap_error"]


def test_a_claim_significant_only_before_holm_is_suggestive_and_never_bold(tmp_path):
    """Three seeds, four claims with p < 0.05 each before correction: only the strongest survives
    Holm; the others read 'suggestive, not significant after correction', not 'reproduced'."""
    root = tmp_path / "sweep"
    lrn = [0.018, 0.025, 0.030]        # +2.4 pt: p ~ 0.02 alone
    overlap = [0.015, 0.025, 0.021]    # +2.0 pt: p ~ 0.02 alone
    drop_gap = [0.050, 0.051, 0.0505]  # +5 pt, very regular: survives
    for s in range(3):
        write_run(root, "paper", s, 0.80, 0.85, reach=3.0 + s / 10)
        write_run(root, "no_lrn", s, 0.80 - lrn[s], 0.85, reach=3.0 + s / 10)
        write_run(root, "no_overlap", s, 0.80 - overlap[s], 0.85 - overlap[s], reach=3.0 + s / 10)
        write_run(root, "no_dropout", s, 0.80, 0.85 + drop_gap[s], reach=3.0 + s / 10)
    a = analyse(load(root))
    c = a.claims.set_index("claim")
    for cid in ("lrn_error", "overlap_error"):
        assert c.loc[cid, "p"] < 0.05 <= c.loc[cid, "p_holm"]  # the premise of this test
        assert c.loc[cid, "verdict"] == f"{SUGGESTIVE} (in the paper's direction)"
    assert c.loc["dropout_gap", "p_holm"] < 0.05 and c.loc["dropout_gap", "verdict"] == REPRODUCED
    md = report_md(a)
    assert "**reproduced**" in md and "**suggestive" not in md
    assert f"| {SUGGESTIVE} (in the paper's direction) |" in md
    assert f"{SUGGESTIVE} (in the paper's direction)" in console_text(a)
    assert verdict_style(REPRODUCED).startswith("bold") and verdict_style(CONTRADICTED).startswith("bold")
    for word in (f"{SUGGESTIVE} (against the paper)", INCONCLUSIVE, UNCHANGED, NOT_RUN):
        assert "bold" not in verdict_style(word)


def test_failed_and_missing_trials_are_named_and_the_rest_reported(tmp_path):
    root = tmp_path / "sweep"
    for s in range(3):
        write_run(root, "paper", s, PAPER_TEST[s], PAPER_CLEAN[s])
    write_run(root, "no_dropout", 0, DROPOUT_TEST[0], DROPOUT_CLEAN[0])
    write_run(root, "no_dropout", 1, DROPOUT_TEST[1], DROPOUT_CLEAN[1])
    write_run(root, "no_dropout", 2, 0.1, 0.1, status="failed", completed=False, error="RuntimeError: boom")
    write_run(root, "tanh", 0, 0.7, 0.8, status="running", completed=False)   # killed mid-run
    write_run(root, "tanh", 2, 0.7, 0.8)
    write_run(root, "no_lrn", 0, 0.7, 0.8, status="completed", completed=False)  # no COMPLETED marker
    hydra_only = root / "ablation=no_lrn,seed=1" / ".hydra"  # died before run() wrote anything
    hydra_only.mkdir(parents=True)
    (hydra_only / "config.yaml").write_text("name: default\nablation_name: no_lrn\nseed: 1\n")

    a = analyse(load(root))
    problems = {(p.ablation, int(p.seed)): p.problem for p in a.problems.itertuples()}
    assert problems[("no_dropout", 2)].startswith("failed: RuntimeError: boom")
    assert problems[("tanh", 0)].startswith("running")
    assert problems[("tanh", 1)].startswith("missing")
    assert "no COMPLETED marker" in problems[("no_lrn", 0)]
    assert problems[("no_lrn", 1)] == "no summary.json"
    assert problems[("no_lrn", 2)].startswith("missing")
    row = effect(a, "no_dropout", "gap")
    assert row["n"] == 2 and math.isfinite(row["low"])  # the two completed seeds are still reported
    assert any("unequal numbers of completed seeds" in w for w in a.warnings)

    out = tmp_path / "out"
    main([str(root), "--out", str(out)])
    md = (out / "report.md").read_text()
    assert "Failed, diverged and missing trials" in md and "RuntimeError: boom" in md
    assert "ablation=no_dropout,seed=2" in md and "missing: no run folder" in md
    assert "unequal numbers of completed seeds" in md


def test_diverged_and_collapsed_runs_are_counted_and_said_beside_the_verdict(tmp_path):
    """Whether an arm trains at all is an effect of the trick: tanh diverges in 2 of 5 seeds and
    collapses (never above 1.5 x chance) in 1, paper in none. The collapsed run stays in the pairs;
    the diverged ones cannot (no final metrics) but are counted."""
    root = tmp_path / "sweep"
    for s in range(5):
        write_run(root, "paper", s, 0.80 + s / 500, 0.85, reach=3.0 + s / 7)
        write_run(root, "no_lrn", s, 0.79 + s / 400, 0.85, reach=3.0 + s / 7)
    for s in (0, 1):
        write_run(root, "tanh", s, 0.70, 0.80, reach=8.0 + s / 3)
    write_run(root, "tanh", 2, 0.10, 0.12, curve=np.full(EPOCHS, 0.12))           # collapsed: 0.12 <= 0.15
    for s in (3, 4):
        write_run(root, "tanh", s, 0.1, 0.1, status="diverged", completed=False, error="loss is nan")
    a = analyse(load(root))
    arms = a.arms.set_index("ablation")
    assert (arms.loc["tanh", ["runs", "completed", "diverged", "collapsed"]] == [5, 3, 2, 1]).all()
    assert (arms.loc["paper", ["runs", "diverged", "collapsed"]] == [5, 0, 0]).all()
    assert effect(a, "tanh", "test_error")["n"] == 3  # the collapsed run is a result and stays in
    c = claim(a, "relu_speed")
    assert c["caveat"] == "tanh diverged 2 of 5 (paper 0 of 5); tanh collapsed 1 of 5 (paper 0 of 5)"
    assert claim(a, "lrn_error")["caveat"] == ""
    md = report_md(a)
    assert "⚠ tanh diverged 2 of 5 (paper 0 of 5)" in md
    assert "| `tanh` | 3 of 5 | 2 of 5 | 1 of 5 |" in md
    out = console_text(a)
    assert arms_row(out, "tanh")[1:4] == ["3", "2 of 5", "1 of 5"] and "⚠ tanh diverged 2 of 5" in out


def test_num_classes_from_the_summary_sets_the_collapse_line(tmp_path):
    root = tmp_path / "sweep"
    write_run(root, "paper", 0, 0.5, 0.12, curve=np.full(EPOCHS, 0.12), num_classes=100)  # 0.12 > 1.5/100
    write_run(root, "paper", 1, 0.5, 0.12, curve=np.full(EPOCHS, 0.12), num_classes=None)  # default 10 classes
    runs = analyse(load(root)).per_run.set_index("seed")
    assert not runs.loc[0, "collapsed"] and runs.loc[1, "collapsed"]


def test_an_arm_that_changes_nothing_gets_no_verdict_and_stays_out_of_the_holm_family(tmp_path):
    """model=convnet4 has no dropout, so ablation=no_dropout equals paper (its folders differ only in
    ablation_name and a result-neutral key): named, not compared, not counted in the family."""
    root = tmp_path / "sweep"
    convnet = merged(BASE_CONFIG, {"model": {"name": "convnet4", "dropout": 0.0}})
    for s in range(3):
        write_run(root, "paper", s, 0.80 + s / 100, 0.85, config=convnet)
        write_run(root, "no_dropout", s, 0.80 + s / 100, 0.85,
                  config=merged(convnet, {"trainer": {"threads": 2}, "data": {"root": "/elsewhere"}}))
        write_run(root, "no_lrn", s, 0.78 + s / 90, 0.85, config=convnet)
    a = analyse(load(root))
    assert a.unchanged == [(a.per_run.group.iloc[0], "no_dropout")]
    for cid in ("dropout_gap", "dropout_speed"):
        c = claim(a, cid)
        assert c["verdict"] == UNCHANGED and math.isnan(c["p"]) and math.isnan(c["p_holm"])
    assert "no_dropout" not in set(a.effects.ablation)
    lrn = claim(a, "lrn_error")
    assert a.claims["p"].notna().sum() == 1 and lrn["p_holm"] == pytest.approx(lrn["p"])  # a family of one
    said = "no_dropout changes nothing in this group (same resolved settings as paper)"
    md = report_md(a)
    assert said in md and said in console_text(a)
    assert "+0.00 [+0.00, +0.00]" not in md and f"| {UNCHANGED} |" in md


def test_experiments_in_one_folder_are_compared_separately(tmp_path):
    for name, shift in (("fmnist_quick", 0.0), ("cifar10", 0.05)):
        for s in range(2):
            write_run(tmp_path / "demo" / name, "paper", s, PAPER_TEST[s], PAPER_CLEAN[s])
            write_run(tmp_path / "demo" / name, "no_lrn", s, LRN_TEST[s] - shift, PAPER_CLEAN[s])
        for summary in (tmp_path / "demo" / name).glob("*/summary.json"):
            summary.write_text(summary.read_text().replace('"name": "default"', f'"name": "{name}"'))
    a = analyse(load(tmp_path / "demo"))
    fx = a.effects[a.effects.metric == "test_error"].set_index("group")
    assert sorted(fx.index) == ["cifar10", "fmnist_quick"] and (fx.n == 2).all()
    assert fx.loc["cifar10", "effect"] == pytest.approx(fx.loc["fmnist_quick", "effect"] + 5)
    lrn = a.claims[a.claims.claim == "lrn_error"]
    assert (lrn["p_holm"].to_numpy() == pytest.approx(lrn["p"].to_numpy()))  # one claim per group: its own family


def test_sweep_ledger_names_trials_that_never_got_a_folder(tmp_path):
    root = tmp_path / "sweep"
    for s in range(2):
        write_run(root, "paper", s, PAPER_TEST[s], PAPER_CLEAN[s])
        write_run(root, "no_lrn", s, LRN_TEST[s], PAPER_CLEAN[s])
    jobs = [f"ablation={a},seed={s}" for a in ("paper", "no_lrn") for s in range(3)]
    (root / "sweep_ledger.json").write_text(json.dumps({"current": jobs}))
    a = analyse(load(root))
    missing = a.problems[a.problems.problem.str.contains("sweep_ledger")]
    # no folder, so no config to tell the arm from: named by the ledger's job, never parsed into an arm
    assert sorted(missing.run) == ["ablation=no_lrn,seed=2", "ablation=paper,seed=2"]
    assert set(missing.ablation) == {"–"}


RELU_TANH = merged(BASE_CONFIG, {"ablation_name": "relu_vs_tanh", "model": {"name": "convnet4", "dropout": 0.0,
                                                                          "norm": "none"}})


def grid_run(root, act, lr, s, **kw):
    cfg = merged(RELU_TANH, {"model": {"activation": act}, "optim": {"lr": lr}})
    return write_run(root, "relu_vs_tanh", s, kw.pop("test", 0.6), kw.pop("clean", 0.8), config=cfg,
                     job=f"model.activation={act},optim.lr={lr},seed={s}", **kw)


def test_relu_vs_tanh_grid_uses_the_fastest_lr_per_activation(tmp_path):
    root = tmp_path / "relu_vs_tanh" / "cifar10_convnet4"
    reach = {("relu", 0.01): 2.5, ("relu", 0.1): 4.5, ("tanh", 0.01): 9.5, ("tanh", 0.1): 7.5}
    for (act, lr), r in reach.items():
        for s in range(2):
            grid_run(root, act, lr, s, reach=r + s)
    grid_run(root, "tanh", 0.3, 0, status="diverged", completed=False)  # too high: counts as never reached
    grid_run(root, "tanh", 0.3, 1, reach=4.0)  # alone the fastest; with the diverged seed (13) not
    a = analyse(load(root.parent))
    assert set(a.per_run.ablation) == {"paper", "tanh"} and a.per_run.group.nunique() == 1
    used = a.per_run[a.per_run.used]
    assert sorted(zip(used.ablation, used.lr)) == [("paper", 0.01)] * 2 + [("tanh", 0.1)] * 2
    row = effect(a, "tanh", "epochs_ratio")
    expected = np.exp(np.mean(np.log([7.5 / 2.5, 8.5 / 3.5])))
    assert row["n"] == 2 and row["effect"] == pytest.approx(expected)
    assert any("optim.lr=0.1" in n and "`tanh`" in n for n in a.notes)
    assert (a.problems.problem.str.startswith("diverged")).sum() == 1  # the other grid points are not failures
    assert a.arms.set_index("ablation").loc["tanh", "diverged"] == 0  # a diverged lr that was not chosen


@pytest.mark.parametrize("with_val", [False, True])
def test_lr_grid_ties_are_broken_on_training_or_validation_error_never_test_error(tmp_path, with_val):
    """Every tanh lr never reaches the threshold (a tie). lr 0.1 has the lower TEST error, lr 0.01
    the lower train_clean (or validation) error: the choice must not look at the test set."""
    root = tmp_path / "relu_vs_tanh" / "cifar10_convnet4"
    for s in range(2):
        grid_run(root, "relu", 0.01, s, reach=2.5)
        grid_run(root, "tanh", 0.01, s, reach=None, test=0.55, clean=0.70, val=0.72 if with_val else None)
        grid_run(root, "tanh", 0.1, s, reach=None, test=0.65, clean=0.60 if with_val else 0.50,
                 val=0.50 if with_val else None)
    a = analyse(load(root.parent))
    used = a.per_run[a.per_run.used & (a.per_run.ablation == "tanh")]
    assert set(used.lr) == {0.01}
    tiebreak = "validation error" if with_val else "final train_clean error"
    assert any(f"ties broken by {tiebreak}" in n for n in a.notes)


def test_one_seed_gives_no_interval_and_says_so(tmp_path):
    root = tmp_path / "sweep"
    write_run(root, "paper", 0, 0.8, 0.85)
    write_run(root, "no_dropout", 0, 0.7, 0.95)
    a = analyse(load(root))
    c = claim(a, "dropout_gap")
    assert c["verdict"] == INCONCLUSIVE and c["n"] == 1
    assert math.isnan(c["low"]) and math.isnan(c["high"]) and math.isnan(c["p_holm"])
    assert effect(a, "no_dropout", "gap")["effect"] == pytest.approx(((0.95 - 0.7) - (0.85 - 0.8)) * 100)
    md = report_md(a)
    assert "(1 seed, no interval)" in md and "unknown: 1 seed gives no variance" in md
    assert "only one seed pair, so no interval" in md
    assert "only one seed pair" in console_text(a)


def test_censored_epochs_use_an_exact_sign_test_not_a_t_test_on_stand_in_values(tmp_path):
    """Five tanh runs never reach 25% training error in 12 epochs: they are censored, not 'reached at
    13'. The sign test on five pairs, all slower, gives p = 2 / 2^5 = 0.0625 (binomtest), so no finding:
    before, a t-test on the stand-in 13s gave p ~ 0.001. The ratio is a lower bound with no interval."""
    root = tmp_path / "sweep"
    for s in range(5):
        write_run(root, "paper", s, 0.8, 0.85, reach=PAPER_REACH[s])
        write_run(root, "tanh", s, 0.8, 0.85, reach=None)
    a = analyse(load(root))
    row = effect(a, "tanh", "epochs_ratio")
    assert row["method"] == SIGN_TEST and row["bound"] == "lower" and row["ordered"] == 5
    assert row["p"] == pytest.approx(stats.binomtest(5, 5).pvalue) and row["p"] > 0.05
    assert math.isnan(row["low"]) and math.isnan(row["high"])
    assert row["effect"] == pytest.approx(math.exp(np.mean(np.log(EPOCHS / PAPER_REACH[:5]))))
    c = claim(a, "relu_speed")
    assert c["verdict"] == INCONCLUSIVE
    assert "5 arm and 0 paper run(s)" in row["note"] and "5 arm slower, 0 faster" in row["note"]
    md = report_md(a)
    assert "≥ " in md and "(a lower bound; no interval)" in md and "exact sign test (censored runs)" in md


def test_mixed_censoring_counts_only_pairs_whose_order_is_known(tmp_path):
    """Seeds 0-1: tanh censored (slower than paper, known). Seed 2: both censored (unknown). Seeds
    3-7: both reached, tanh slower in 4 and faster in 1. Without dropout: faster in 6 of 6."""
    root = tmp_path / "sweep"
    tanh = [None, None, None, 9.0, 8.0, 7.0, 9.5, 2.0]
    paper = [3.0, 3.5, None, 3.2, 2.8, 3.1, 3.3, 3.0]
    for s in range(8):
        write_run(root, "paper", s, 0.8, 0.85, reach=paper[s])
        write_run(root, "tanh", s, 0.8, 0.85, reach=tanh[s])
    a = analyse(load(root))
    row = effect(a, "tanh", "epochs_ratio")
    assert row["n"] == 8 and row["ordered"] == 7 and row["bound"] == "none"
    assert row["p"] == pytest.approx(stats.binomtest(6, 7).pvalue)
    assert "3 arm and 1 paper run(s)" in row["note"] and "6 arm slower, 1 faster" in row["note"]


def test_equal_differences_give_no_interval_and_the_exact_sign_flip_p_never_zero(tmp_path):
    """Accuracies move in steps of one image, so seeds can tie exactly. Two or three equal differences
    have no spread: no interval, p = 2^(1-n) (0.5, 0.25), never the p = 0 of a zero-width t-interval."""
    root = tmp_path / "sweep"
    for s, (paper, ablated) in enumerate([(0.80, 0.78), (0.82, 0.80), (0.81, 0.79)]):  # test error +2 pt each
        write_run(root, "paper", s, paper, 0.85)
        write_run(root, "no_lrn", s, ablated, 0.85)
        if s < 2:
            write_run(root, "no_overlap", s, ablated, 0.85)
    a = analyse(load(root))
    three, two = claim(a, "lrn_error"), claim(a, "overlap_error")
    assert three["effect"] == pytest.approx(2.0) and three["n"] == 3
    assert three["p"] == pytest.approx(0.25) and three["method"] == SIGN_FLIP
    assert two["p"] == pytest.approx(0.5) and two["n"] == 2
    for c in (three, two):
        assert c["verdict"] == INCONCLUSIVE and math.isnan(c["low"]) and math.isnan(c["high"])
        assert c["p_holm"] >= c["p"]  # they are in the family
    assert any("all 3 seed pairs gave the same difference" in w for w in a.warnings)
    md = report_md(a)
    assert "(3 equal differences, no interval)" in md and "(2 equal differences, no interval)" in md
    assert "exact sign-flip (all differences equal)" in md and "[+2.00, +2.00]" not in md


def test_paper_figure_against_our_interval():
    lrn = next(c for c in CLAIMS if c.id == "lrn_error")            # paper +1.4 pt, direction +1
    speed = next(c for c in CLAIMS if c.id == "dropout_speed")      # paper 0.5x, direction -1

    def row(low, high, effect=math.nan, bound=""):
        return {"low": low, "high": high, "effect": effect, "bound": bound}

    def text(c, r, null):
        return size_vs_paper(c, r, null)[1]
    assert text(lrn, row(0.5, 2.0), 0.0).startswith("paper's figure (1.4) inside our interval (same size)")
    assert text(lrn, row(0.2, 0.9), 0.0).startswith("ours smaller")
    assert text(lrn, row(-0.5, 0.9), 0.0).startswith("ours smaller")
    assert text(lrn, row(2.0, 3.0), 0.0).startswith("ours larger")
    assert text(lrn, row(-3.0, -1.0), 0.0).startswith("ours points the other way")
    assert text(speed, row(0.3, 0.45), 1.0).startswith("ours larger")    # even fewer epochs
    assert text(speed, row(0.55, 0.8), 1.0).startswith("ours smaller")
    assert text(speed, row(0.4, 0.7), 1.0).startswith("paper's figure (0.5) inside")
    assert text(speed, row(math.nan, math.nan, 0.4, "upper"), 1.0).startswith("ours at least as large")
    assert text(speed, row(math.nan, math.nan, 0.7, "upper"), 1.0).startswith("cannot say")
    assert text(speed, row(math.nan, math.nan, 0.4, "lower"), 1.0).startswith("cannot say")
    assert text(speed, row(math.nan, math.nan, 0.7, "none"), 1.0).startswith("cannot say")
    assert text(lrn, row(math.nan, math.nan, 2.0), 0.0).startswith("no interval")
    words = next(c for c in CLAIMS if c.id == "dropout_gap")
    assert size_vs_paper(words, row(0.5, 2.0), 0.0) == ("", "")


def test_each_verdict_says_where_the_paper_figure_lies(sweep_dir):
    a = analyse(load(sweep_dir))
    assert claim(a, "relu_speed")["vs_paper"].startswith("ours smaller than the paper's 6")  # ~2.9x [.., ..] < 6
    assert claim(a, "dropout_speed")["vs_paper_kind"] == "smaller"  # 0.62x [0.60, 0.64]: closer to 1 than 0.5
    assert claim(a, "dropout_gap")["vs_paper"] == ""  # the paper gives words only
    assert "ours smaller than the paper's 6" in report_md(a)
    assert "smaller" in console_text(a)


def test_new_claims_pca_two_columns_and_ten_patches(tmp_path):
    root = tmp_path / "sweep"
    gain = [0.012, 0.018, 0.015, 0.010]  # 10 patches beat one view by ~1.4 pt in every paper run
    for s in range(4):
        write_run(root, "paper", s, 0.80 + s / 200, 0.85, ten_crop=gain[s])
        write_run(root, "no_pca", s, 0.79 + s / 180, 0.85)
        write_run(root, "one_column", s, 0.78 + s / 210, 0.85)
        write_run(root, "no_augment", s, 0.77 + s / 190, 0.95)
    a = analyse(load(root))
    c = a.claims.set_index("claim")
    assert c.loc["pca_error", "ablation"] == "no_pca" and c.loc["pca_error", "paper_value"] == 1.0
    assert c.loc["columns_error", "ablation"] == "one_column" and c.loc["columns_error", "paper_value"] == 1.7
    assert c.loc["pca_error", "n"] == 4 and c.loc["columns_error", "n"] == 4
    assert pd.isna(c.loc["augment_error", "paper_value"]) and c.loc["augment_error", "vs_paper"] == ""
    ten = claim(a, "ten_crop_error")
    single = np.array([1 - (0.80 + s / 200) for s in range(4)])
    patches = single - np.array(gain)
    assert ten["effect"] == pytest.approx(np.mean(gain) * 100) and ten["n"] == 4
    assert ten["p"] == pytest.approx(stats.ttest_rel(single, patches).pvalue)
    assert ten["paper_value"] == 1.5 and ten["vs_paper"]
    assert "layers-11pct" in c.loc["lrn_error", "paper"]
    main([str(root), "--out", str(tmp_path / "out")])  # the plots draw the new arms and the within-run effect
    md = (tmp_path / "out" / "report.md").read_text()
    assert "no PCA lighting, crops and flips kept (Section 4.1)" in md
    assert "one column with half the kernels" in md and "Within the `paper` runs" in md
    assert "](report_curves_no_pca.png)" in md and "](report_forest.png)" in md
    assert "effect single view − 10 patches [95% CI] | runs |" in md


def test_ten_patch_claim_not_run_without_ten_crop_readings(sweep_dir):
    a = analyse(load(sweep_dir))
    assert claim(a, "ten_crop_error")["verdict"] == NOT_RUN


def test_cli_writes_report_csv_and_plots_and_prints_the_path(sweep_dir, tmp_path, capsys):
    out = tmp_path / "out"
    main([str(sweep_dir.parent), "--out", str(out)])  # a folder holding the run folders one level down
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed.replace("\n", "")
    assert "dropout_gap" in printed and "reproduced" in printed
    md = (out / "report.md").read_text()
    assert "Holm" in md and "paired t-interval" in md and "final epoch" in md
    assert "scipy.stats.t" in md
    for png in ("report_forest.png", "report_curves_no_dropout.png", "report_curves_no_lrn.png",
                "report_curves_no_overlap.png", "report_curves_tanh.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"]({png})" in md
    csv = pd.read_csv(out / "report.csv")
    gap = csv[(csv.ablation == "no_dropout") & (csv.metric == "gap")].iloc[0]
    assert gap["verdict"] == "reproduced" and gap["claim"] == "dropout_gap"
    run = {"paper", "no_dropout", "no_lrn", "no_overlap", "tanh"}  # the fixture's arms; no paper run logged 10 patches
    assert set(csv[csv.verdict == "not run"].claim) == {c.id for c in CLAIMS if c.ablation not in run} | {"ten_crop_error"}
    assert {"augment_gap", "pca_error", "columns_error", "bn_error"} < set(csv[csv.verdict == "not run"].claim)


def test_default_out_is_the_sweep_folder(sweep_dir, capsys):
    main([str(sweep_dir)])
    assert (sweep_dir / "report.md").is_file() and (sweep_dir / "report_forest.png").is_file()
    assert len(load(sweep_dir).runs) == 30  # the report's own files are not mistaken for runs


@pytest.mark.parametrize("make, needle", [
    (lambda p: p / "does_not_exist", "no such folder"),
    (lambda p: p, "no run folders found"),
    (lambda p: Path("wandb:only/two"), "expected wandb:<entity>/<project>/<group>"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, needle):
    with pytest.raises(SystemExit) as exc:
        main([str(make(tmp_path))])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alexlab: error:") and needle in err and "\n" not in err


class FakeRun:
    def __init__(self, d: Path, state="finished"):
        self.config = yaml.safe_load((d / "config.yaml").read_text())
        # what train.py adds to the W&B config: differs between runs that compute the same thing
        self.config.update(git_sha=f"sha-{d.name}", run_dir=str(d), num_parameters=1000)
        self.name, self.id, self.state, self.url = d.name, "id-" + d.name, state, ""
        self.job_type = self.config["ablation_name"]
        self.summary_metrics = {"test/acc": 0.5}  # W&B's summary: last values, no alexlab status
        self._rows = pd.read_csv(d / "metrics.csv").to_dict("records")

    def scan_history(self):  # each epoch logged in two calls, as W&B keeps rows of separate log() calls
        for r in self._rows:
            train = {k: v for k, v in r.items() if not k.startswith("test/")}
            yield {"_step": 2 * r["epoch"], "_runtime": 1.0, **train}
            yield {"_step": 2 * r["epoch"] + 1, "epoch": r["epoch"], **{k: v for k, v in r.items() if k not in train}}


def fake_wandb(monkeypatch, runs, calls):
    class Api:
        def __init__(self, timeout=None):
            pass

        def runs(self, path, filters=None):
            calls.append((path, filters))
            return iter(runs)

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=Api))


def test_wandb_source_reads_the_same_frames_as_the_folder(sweep_dir, tmp_path, monkeypatch, capsys):
    runs = [FakeRun(d) for d in sorted(sweep_dir.iterdir())]
    runs.append(FakeRun(sweep_dir / "ablation=tanh,seed=0", state="crashed"))
    runs[-1].name = "ablation=tanh,seed=0-crashed-copy"
    calls = []
    fake_wandb(monkeypatch, runs, calls)
    out = tmp_path / "wb"
    main(["wandb:ent/proj/demo", "--out", str(out)])
    assert calls == [("ent/proj", {"group": "demo"})]
    assert (out / "report.md").is_file() and (out / "report_forest.png").is_file()

    from_wandb = analyse(load("wandb:ent/proj/demo"))
    from_folder = analyse(load(sweep_dir))
    assert (~from_wandb.per_run.ok).sum() == 1 and "crashed" in from_wandb.problems.problem.iloc[0]
    cols = ["group", "ablation", "metric", "n", "effect", "low", "high", "p"]
    pd.testing.assert_frame_equal(from_wandb.effects[cols], from_folder.effects[cols])
    assert list(from_wandb.claims.verdict) == list(from_folder.claims.verdict)


def test_wandb_configs_show_an_arm_that_changes_nothing(tmp_path, monkeypatch):
    root = tmp_path / "sweep"
    convnet = merged(BASE_CONFIG, {"model": {"dropout": 0.0}})
    for s in range(2):
        write_run(root, "paper", s, 0.80 + s / 100, 0.85, config=convnet)
        write_run(root, "no_dropout", s, 0.80 + s / 100, 0.85, config=convnet)
    fake_wandb(monkeypatch, [FakeRun(d) for d in sorted(root.iterdir())], [])
    a = analyse(load("wandb:ent/proj/demo"))
    assert [arm for _, arm in a.unchanged] == ["no_dropout"]


def test_wandb_errors_are_one_line(monkeypatch, capsys):
    class Api:
        def __init__(self, timeout=None):
            raise RuntimeError("could not find an API key\nmore details")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=Api))
    with pytest.raises(SystemExit) as exc:
        main(["wandb:ent/proj/demo"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "could not find an API key" in err and "\n" not in err
    fake_wandb(monkeypatch, [], [])
    with pytest.raises(ReportError, match="no runs in group 'demo'"):
        load("wandb:ent/proj/demo")


def test_committed_sample_is_a_real_complete_sweep():
    a = analyse(load(SAMPLE))
    demo = ["paper", "tanh", "no_lrn", "no_overlap", "no_dropout", "no_augment", "no_pca"]  # sweep=one_at_a_time's arms
    assert len(a.per_run) == 3 * len(demo) and a.per_run.ok.all()
    assert set(a.per_run.ablation) == set(demo) and not a.unchanged  # every arm changes the net it ran on
    assert (a.effects[a.effects.metric == "test_error"].n == 3).all()
    assert not list(SAMPLE.rglob("*.ckpt")) and not list(SAMPLE.rglob(".hydra"))  # kept small


@pytest.mark.slow
def test_console_script_end_to_end_on_the_sample(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "alexlab.report.cli", str(SAMPLE), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"report: {tmp_path / 'report.md'}" in proc.stdout.replace("\n", "")
    arms = {"tanh", "no_lrn", "no_overlap", "no_dropout", "no_augment", "no_pca"}  # every compared arm: its curves
    assert {p.name for p in tmp_path.glob("report_curves_*.png")} == {f"report_curves_{a}.png" for a in arms}
    assert (tmp_path / "report.csv").is_file()


def test_console_opens_with_each_arms_final_means(sweep_dir):
    text = console_text(analyse(load(sweep_dir)))
    lines = text.splitlines()
    cells = arms_row(text, "no_dropout")
    row = next(line for line in lines if line.strip("│ ").startswith("no_dropout"))
    assert cells[1:4] == [str(len(SEEDS)), f"0 of {len(SEEDS)}", f"0 of {len(SEEDS)}"]
    assert float(cells[4]) == pytest.approx(DROPOUT_CLEAN.mean(), abs=6e-4)
    assert float(cells[5]) == pytest.approx(DROPOUT_TEST.mean(), abs=6e-4)
    assert float(cells[6]) == pytest.approx((DROPOUT_CLEAN - DROPOUT_TEST).mean(), abs=6e-4)
    assert lines.index(row) < next(i for i, line in enumerate(lines) if "dropout_gap" in line)
