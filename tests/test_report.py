"""alexlab-report: synthetic run folders with known effects -> verdicts, intervals, plots, CLI."""
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from alexlab.report import analyse, holm, load, paired_interval, seeds_needed
from alexlab.report.cli import main
from alexlab.report.load import ReportError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "notebooks" / "sample_results" / "demo" / "default"
EPOCHS = 12
SEEDS = range(6)


def write_run(root: Path, ablation: str, seed: int, test: float, clean: float, reach: int | None = 2,
              status: str = "completed", completed: bool = True, error: str | None = None, job: str = "") -> Path:
    """A run folder as train.py writes it. test/acc ramps up, peaks 2 pt above `test` at epoch 8
    and ends at `test`; train_clean ends at `clean`; train error drops below 25% at epoch `reach`."""
    job = job or f"ablation={ablation},seed={seed}"
    d = root / job
    d.mkdir(parents=True)
    rows = []
    for e in range(EPOCHS):
        t = test + 0.02 - 0.02 * (e - 8) / 3 if e >= 8 else (test + 0.02) * (e + 1) / 9
        c = clean * (e + 1) / EPOCHS
        train = 0.9 if reach is not None and e >= reach else 0.5
        rows.append({"epoch": e, "train/loss": 1.0, "train/acc": train, "train_clean/loss": 1.0,
                     "train_clean/acc": c, "train_clean/acc_top5": 1.0, "test/loss": 1.0, "test/acc": t,
                     "test/acc_top5": 1.0, "gap": c - t, "lr": 0.01, "epoch_time_s": 1.0, "images_per_s": 100.0})
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
    best = max(rows, key=lambda r: r["test/acc"])
    summary = {"status": status, "error": error, "name": "default", "ablation": ablation, "job": job, "seed": seed,
               "final": rows[-1], "best_test_acc": best["test/acc"], "best_epoch": best["epoch"],
               "epochs_to_train_error": None if reach is None else reach + 1, "error_threshold": 0.25}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "config.yaml").write_text(f"name: default\nablation_name: {ablation}\nseed: {seed}\n"
                                   f"trainer:\n  max_epochs: {EPOCHS}\neval:\n  error_threshold: 0.25\n")
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
PAPER_REACH = [2, 3, 2, 3, 2, 3]   # epochs to 25% error: 3, 4, ...
TANH_REACH = [8, 9, 10, 8, 9, 10]  # 9, 10, 11, ...: tanh ~2.8x slower


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    root = tmp_path / "multirun" / "demo" / "default"
    for s in SEEDS:
        write_run(root, "paper", s, PAPER_TEST[s], PAPER_CLEAN[s], PAPER_REACH[s])
        write_run(root, "no_dropout", s, DROPOUT_TEST[s], DROPOUT_CLEAN[s], PAPER_REACH[s])
        write_run(root, "no_lrn", s, LRN_TEST[s], PAPER_CLEAN[s], PAPER_REACH[s])
        write_run(root, "no_overlap", s, PAPER_TEST[s] + OVERLAP_NOISE[s], PAPER_CLEAN[s], PAPER_REACH[s])
        write_run(root, "tanh", s, PAPER_TEST[s], PAPER_CLEAN[s], TANH_REACH[s])
    return root


def claim(analysis, cid: str) -> dict:
    return analysis.claims.set_index("claim").loc[cid].to_dict()


def effect(analysis, ablation: str, metric: str) -> dict:
    fx = analysis.effects
    return fx[(fx.ablation == ablation) & (fx.metric == metric)].iloc[0].to_dict()


def t_interval(diffs):
    d = np.asarray(diffs, dtype=float)
    return stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(len(d)))


def test_known_effects_give_the_right_verdicts_and_scipy_intervals(sweep_dir):
    a = analyse(load(sweep_dir))
    assert a.per_run["ok"].all() and len(a.per_run) == 30
    assert claim(a, "dropout_gap")["verdict"] == "reproduced"
    assert claim(a, "lrn_error")["verdict"] == "contradicted"
    assert claim(a, "overlap_error")["verdict"] == "inconclusive"
    assert claim(a, "relu_speed")["verdict"] == "reproduced"
    assert claim(a, "augment_gap")["verdict"] == "not run"  # no no_augment arm in this sweep

    gap_diffs = ((DROPOUT_CLEAN - DROPOUT_TEST) - (PAPER_CLEAN - PAPER_TEST)) * 100
    row = effect(a, "no_dropout", "gap")
    assert row["n"] == 6 and row["effect"] == pytest.approx(gap_diffs.mean())
    assert (row["low"], row["high"]) == pytest.approx(t_interval(gap_diffs))
    err_diffs = ((1 - LRN_TEST) - (1 - PAPER_TEST)) * 100
    row = effect(a, "no_lrn", "test_error")
    assert (row["low"], row["high"]) == pytest.approx(t_interval(err_diffs))
    assert row["p"] == pytest.approx(stats.ttest_rel(1 - LRN_TEST, 1 - PAPER_TEST).pvalue)

    # ratio of epochs to 25% training error: t-interval of the log ratios, back-transformed
    logs = np.log((np.array(TANH_REACH) + 1) / (np.array(PAPER_REACH) + 1))
    row = effect(a, "tanh", "epochs_ratio")
    assert row["effect"] == pytest.approx(math.exp(logs.mean()))
    assert (row["low"], row["high"]) == pytest.approx(tuple(np.exp(t_interval(logs))))
    assert row["paper_mean"] == pytest.approx(np.mean(PAPER_REACH) + 1)

    # inconclusive: seeds needed is the first n whose interval would exclude 0 at this mean and sd
    c = claim(a, "overlap_error")
    d = -OVERLAP_NOISE * 100
    n = c["seeds_needed"]
    assert n > 6 and n == seeds_needed(d.mean(), d.std(ddof=1))

    # best epoch is read beside the final one, never instead of it
    row = effect(a, "no_lrn", "test_error_best")
    assert row["paper_mean"] == pytest.approx(np.mean(1 - (PAPER_TEST + 0.02)) * 100)
    assert effect(a, "no_lrn", "best_epoch")["paper_mean"] == 8


def test_holm_across_claims(sweep_dir):
    a = analyse(load(sweep_dir))
    c = a.claims
    tested = c["p"].notna()
    assert tested.sum() == 6  # the 8 claims minus the two of the absent no_augment arm
    expected = holm(c.loc[tested, "p"].to_numpy())
    assert c.loc[tested, "p_holm"].to_numpy() == pytest.approx(expected)
    assert all(c.loc[tested, "p_holm"] >= c.loc[tested, "p"])
    survives = c.set_index("claim")["survives_holm"]
    assert survives["dropout_gap"] and survives["lrn_error"] and not survives["overlap_error"]


def test_holm_and_paired_interval_by_hand():
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.01, float("nan")])[1])
    iv = paired_interval([1.0, 2.0, 4.0])
    assert (iv.low, iv.high) == pytest.approx(stats.t.interval(0.95, 2, loc=7 / 3, scale=stats.sem([1, 2, 4])))
    one = paired_interval([1.5])
    assert one.n == 1 and math.isnan(one.low) and math.isnan(one.high) and math.isnan(one.p)
    n = seeds_needed(1.0, 2.0)
    assert stats.t.ppf(0.975, n - 1) * 2 / math.sqrt(n) < 1 <= stats.t.ppf(0.975, n - 2) * 2 / math.sqrt(n - 1)
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(1.0, float("nan")) is None


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
    assert "Failed and missing trials" in md and "RuntimeError: boom" in md
    assert "ablation=no_dropout,seed=2" in md and "missing: no run folder" in md
    assert "unequal numbers of completed seeds" in md


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


def test_sweep_ledger_names_trials_that_never_got_a_folder(tmp_path):
    root = tmp_path / "sweep"
    for s in range(2):
        write_run(root, "paper", s, PAPER_TEST[s], PAPER_CLEAN[s])
        write_run(root, "no_lrn", s, LRN_TEST[s], PAPER_CLEAN[s])
    jobs = [f"ablation={a},seed={s}" for a in ("paper", "no_lrn") for s in range(3)]
    (root / "sweep_ledger.json").write_text(json.dumps({"current": jobs}))
    a = analyse(load(root))
    missing = a.problems[a.problems.problem.str.contains("sweep_ledger")]
    assert sorted(zip(missing.ablation, missing.seed)) == [("no_lrn", 2), ("paper", 2)]


def test_relu_vs_tanh_grid_uses_the_fastest_lr_per_activation(tmp_path):
    root = tmp_path / "relu_vs_tanh" / "cifar10_convnet4"
    reach = {("relu", 0.01): 2, ("relu", 0.1): 4, ("tanh", 0.01): 9, ("tanh", 0.1): 7}
    for (act, lr), r in reach.items():
        for s in range(2):
            write_run(root, "relu_vs_tanh", s, 0.6, 0.7, reach=r + s,
                      job=f"model.activation={act},optim.lr={lr},seed={s}")
    a = analyse(load(root.parent))
    assert set(a.per_run.ablation) == {"paper", "tanh"} and a.per_run.group.nunique() == 1
    used = a.per_run[a.per_run.used]
    assert sorted(zip(used.ablation, used.lr)) == [("paper", 0.01)] * 2 + [("tanh", 0.1)] * 2
    row = effect(a, "tanh", "epochs_ratio")
    expected = np.exp(np.mean(np.log([(7 + 1) / (2 + 1), (8 + 1) / (3 + 1)])))
    assert row["n"] == 2 and row["effect"] == pytest.approx(expected)
    assert any("optim.lr=0.1" in n and "`tanh`" in n for n in a.notes)
    assert a.problems.empty  # the other grid points are not failures


def test_one_seed_gives_no_interval_and_says_so(tmp_path, capsys):
    root = tmp_path / "sweep"
    write_run(root, "paper", 0, 0.8, 0.85)
    write_run(root, "no_dropout", 0, 0.7, 0.95)
    a = analyse(load(root))
    c = claim(a, "dropout_gap")
    assert c["verdict"] == "inconclusive" and c["n"] == 1
    assert math.isnan(c["low"]) and math.isnan(c["high"]) and math.isnan(c["p_holm"])
    assert effect(a, "no_dropout", "gap")["effect"] == pytest.approx(((0.95 - 0.7) - (0.85 - 0.8)) * 100)
    main([str(root), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "(1 seed, no interval)" in md and "unknown: 1 seed gives no variance" in md
    assert "only one seed pair, so no interval" in md
    assert "only one seed pair" in capsys.readouterr().out


def test_a_run_that_never_reached_the_threshold_makes_the_ratio_a_bound(tmp_path):
    """tanh seeds 0-1 never reach 25% training error in 12 epochs: they count as 13 (at least), so the
    ratio is a lower bound, which can show 'slower' (relu_speed) but never 'faster'."""
    root = tmp_path / "sweep"
    tanh_reach = [None, None, 10, 8, 9, 10]
    late = [6, None, 7, 6, 7, 6]  # no_dropout reaches later than paper: against dropout_speed, also a lower bound
    for s in SEEDS:
        write_run(root, "paper", s, PAPER_TEST[s], PAPER_CLEAN[s], PAPER_REACH[s])
        write_run(root, "tanh", s, PAPER_TEST[s], PAPER_CLEAN[s], tanh_reach[s])
        write_run(root, "no_dropout", s, PAPER_TEST[s], PAPER_CLEAN[s], late[s])
    a = analyse(load(root))
    row = effect(a, "tanh", "epochs_ratio")
    tanh_epochs = np.array([EPOCHS + 1 if r is None else r + 1 for r in tanh_reach], dtype=float)
    logs = np.log(tanh_epochs / (np.array(PAPER_REACH) + 1))
    assert row["bound"] == "lower" and row["n"] == 6
    assert row["effect"] == pytest.approx(math.exp(logs.mean()))
    assert (row["low"], row["high"]) == pytest.approx(tuple(np.exp(t_interval(logs))))
    assert "2 of 6 ablation run(s) never reached the threshold" in row["note"]
    assert claim(a, "relu_speed")["verdict"] == "reproduced"
    # without dropout it is slower here, the paper's direction reversed: a lower bound above 1 may say so
    assert effect(a, "no_dropout", "epochs_ratio")["low"] > 1
    assert claim(a, "dropout_speed")["verdict"] == "contradicted"
    main([str(root), "--out", str(tmp_path / "out")])
    assert "≥ " in (tmp_path / "out" / "report.md").read_text()


def test_a_bound_never_gives_a_verdict_beyond_itself():
    from alexlab.report.analysis import verdict
    assert verdict(+1, 1.5, 3.0, 5, 1.0, "lower") == "reproduced"      # at least 1.5x slower: slower
    assert verdict(+1, 0.3, 0.8, 5, 1.0, "lower") == "inconclusive"    # at least 0.3x: could still be > 1
    assert verdict(-1, 0.3, 0.8, 5, 1.0, "upper") == "reproduced"      # at most 0.8x: faster
    assert verdict(-1, 1.5, 3.0, 5, 1.0, "upper") == "inconclusive"
    assert verdict(+1, 0.3, 0.8, 5, 1.0, "") == "contradicted"


def test_two_seeds_with_equal_differences_give_no_interval_but_three_do(tmp_path):
    """Accuracies move in steps of one image, so two seeds can tie exactly by chance: no spread,
    no interval, inconclusive (before, float rounding made that a p of 2e-6). Three ties are a point."""
    two = paired_interval([6.95, 6.95 + 1e-13])
    assert two.n == 2 and two.sd == 0 and math.isnan(two.low) and math.isnan(two.p)
    three = paired_interval([2.0, 2.0, 2.0])
    assert (three.low, three.high, three.p) == (2.0, 2.0, 0.0)
    assert seeds_needed(6.95, 0.0) == 3

    root = tmp_path / "sweep"
    for s, (paper, ablated) in enumerate([(0.80, 0.78), (0.82, 0.80)]):  # test error +2 pt on both seeds
        write_run(root, "paper", s, paper, 0.85)
        write_run(root, "no_lrn", s, ablated, 0.85)
    a = analyse(load(root))
    c = claim(a, "lrn_error")
    assert c["verdict"] == "inconclusive" and c["n"] == 2 and math.isnan(c["p_holm"])
    assert c["effect"] == pytest.approx(2.0)
    assert any("both seed pairs gave the same difference" in w for w in a.warnings)
    main([str(root), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "(2 equal differences, no interval)" in md and "≥ 3: 2 equal differences give no spread" in md


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
    assert set(csv[csv.verdict == "not run"].claim) == {"augment_gap", "augment_error"}


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
        import yaml
        self.config = yaml.safe_load((d / "config.yaml").read_text())
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
    assert len(a.per_run) == 18 and a.per_run.ok.all()
    assert set(a.per_run.ablation) == {"paper", "tanh", "no_lrn", "no_overlap", "no_dropout", "no_augment"}
    assert (a.effects[a.effects.metric == "test_error"].n == 3).all()
    assert not list(SAMPLE.rglob("*.ckpt")) and not list(SAMPLE.rglob(".hydra"))  # kept small


@pytest.mark.slow
def test_console_script_end_to_end_on_the_sample(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "alexlab.report.cli", str(SAMPLE), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"report: {tmp_path / 'report.md'}" in proc.stdout.replace("\n", "")
    assert len(list(tmp_path.glob("report_curves_*.png"))) == 5 and (tmp_path / "report.csv").is_file()


def test_console_opens_with_each_arms_final_means(sweep_dir, tmp_path, capsys):
    main([str(sweep_dir), "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.strip("│ ").startswith("no_dropout"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[1] == str(len(SEEDS))
    assert float(cells[2]) == pytest.approx(DROPOUT_CLEAN.mean(), abs=6e-4)
    assert float(cells[3]) == pytest.approx(DROPOUT_TEST.mean(), abs=6e-4)
    assert float(cells[4]) == pytest.approx((DROPOUT_CLEAN - DROPOUT_TEST).mean(), abs=6e-4)
    assert lines.index(row) < next(i for i, line in enumerate(lines) if "dropout_gap" in line)
