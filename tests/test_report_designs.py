"""alexlab-report on every sweep design, from synthetic run folders with known effects: arms read
from resolved configs, levels (paired by seed, dose-response), full and half factorials (main effects
and interactions checked against numpy least squares + scipy t), "no effect larger than +-delta", and
the seed plan (checked against statsmodels' power and the printed command run by hand)."""
import itertools
import json
import math
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hydra import initialize_config_dir
from scipy import stats
from statsmodels.stats.power import TTestPower

from alexlab.report import analyse, load
from alexlab.report.analysis import EQUIVALENT, INCONCLUSIVE, REPRODUCED, level_summary
from alexlab.report.cli import main
from alexlab.report.designs import ARMS, FACTORIAL, LEVELS, ONE_AT_A_TIME, PAPER_LEVELS, TOGGLES
from alexlab.report.render import markdown
from conftest import CONF
from test_report import BASE_CONFIG, console_text, merged, write_run
from test_sweeps import jobs_of

SEEDS = range(6)
# the five tricks of the factorials, each as (key, paper level, level without it, arm)
TRICKS5 = [("model.activation", "relu", "tanh", "tanh"),
           ("model.pooling", "overlapping", "non_overlapping", "no_overlap"),
           ("model.norm", "lrn", "none", "no_lrn"),
           ("model.dropout", 0.5, 0.0, "no_dropout"),
           ("data.augment", "crop_flip_pca", "none", "no_augment")]


def config_with(settings: dict, ablation_name: str) -> dict:
    """BASE_CONFIG with dotted toggle settings applied, as a sweep's resolved config.yaml holds it."""
    nested: dict = {}
    for key, value in settings.items():
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = value
    return merged(merged(BASE_CONFIG, nested), {"ablation_name": ablation_name, "sweep_name": ablation_name})


def write_cell(root: Path, job: str, seed: int, settings: dict, name: str, error_pt: float, gap_pt: float,
               reach: float = 3.5) -> Path:
    """One run whose final test error and gap (pt) are given; its folder name is `job` (never read)."""
    test = 1.0 - error_pt / 100
    return write_run(root, name, seed, test, test + gap_pt / 100, reach=reach, job=job,
                     config=config_with(settings, name))


def report_md(analysis) -> str:
    return markdown(analysis, {}, Path("."))


# ------------------------------------------------------------------------------------------- arms
def test_the_arm_table_is_the_ablation_folder_and_the_paper_levels_the_schema_defaults():
    files = {p.stem for p in (CONF / "ablation").glob("*.yaml")}
    assert set(ARMS) == files and ARMS["paper"] == {}
    for name in files:
        content = yaml.safe_load((CONF / "ablation" / f"{name}.yaml").read_text())
        assert ARMS[name] == {f"{s}.{k}": v for s, block in content.items() if isinstance(block, dict)
                              for k, v in block.items()}
    assert set(TOGGLES) == {k for s in ARMS.values() for k in s}
    # the schema's defaults are the paper's net (Sections 3-4): two 4096-wide hidden FC layers, three 3x3 convs
    assert PAPER_LEVELS == {"model.activation": "relu", "model.pooling": "overlapping", "model.norm": "lrn",
                            "model.dropout": 0.5, "data.augment": "crop_flip_pca", "model.one_column": False,
                            "model.pool_type": "max", "model.fc_layers": 2, "model.fc_width": 4096,
                            "model.conv_depth": 3}


def test_arms_come_from_resolved_configs_not_from_folder_names(tmp_path):
    """Folders named by a hash (config.job_name shortens long names) and a misleading name: the arm
    is whatever the config's toggles say, relative to the group's paper run."""
    root = tmp_path / "sweep"
    for s in range(3):
        write_run(root, "paper", s, 0.80 + s / 100, 0.85, job=f"x~{s}a1b2c3")
        write_run(root, "no_lrn", s, 0.78 + s / 100, 0.85, job=f"ablation=tanh,seed={s}~d4e5f6")  # a lying name
    a = analyse(load(root))
    assert sorted(set(a.per_run.ablation)) == ["no_lrn", "paper"]
    assert set(a.per_run.design) == {LEVELS} and set(a.per_run.design_text) == {"levels of model.norm"}
    assert a.claims.set_index("claim").loc["lrn_error", "n"] == 3


def test_a_run_changing_two_toggles_in_a_one_at_a_time_group_is_custom_and_not_compared(tmp_path):
    """Three single-trick arms and one run with two tricks removed: 5 cells cannot separate 3 main
    effects and 3 interactions, so no factorial; the odd run is named and left out."""
    root = tmp_path / "sweep"
    for s in range(3):
        write_run(root, "paper", s, 0.80 + s / 100, 0.85)
        write_run(root, "no_lrn", s, 0.79 + s / 100, 0.85)
        write_run(root, "tanh", s, 0.78 + s / 100, 0.85)
        write_run(root, "no_overlap", s, 0.78 + s / 90, 0.85)
    both = merged(BASE_CONFIG, {"model": {"norm": "none", "activation": "tanh"}})
    write_run(root, "paper", 7, 0.7, 0.8, job="by_hand", config=both)
    a = analyse(load(root))
    assert set(a.per_run.design) == {ONE_AT_A_TIME}
    hand = a.per_run.set_index("run").loc["by_hand"]
    assert hand["custom"] and hand["ablation"] == "tanh+no_lrn"
    assert "tanh+no_lrn" not in set(a.effects.ablation) and {"tanh", "no_lrn", "no_overlap"} <= set(a.effects.ablation)
    assert any("custom" in w and "tanh+no_lrn" in w for w in a.warnings)


def test_four_cells_of_two_toggles_are_a_two_by_two_factorial(tmp_path):
    root = tmp_path / "sweep"
    for s in range(3):
        for arm, x in (("paper", {}), ("no_lrn", {"model.norm": "none"}), ("tanh", {"model.activation": "tanh"}),
                       ("both", {"model.norm": "none", "model.activation": "tanh"})):
            write_cell(root, f"{arm}{s}", s, x, "paper", 20 + s + len(x), 5.0 + s / 10)
    a = analyse(load(root))
    assert set(a.per_run.design_text) == {"full factorial 2^2"}
    assert set(a.terms.term) == {"tanh", "no_lrn", "tanh × no_lrn"}


def test_the_norm_by_dropout_factorial_answers_the_interaction_claims_with_the_models_term(tmp_path):
    """sweep=norm_dropout's 2 x 2 cells: removing dropout widens the gap by 4 pt under LRN and by 1 pt
    under batchnorm, so the interaction (4 b) is -3 pt; test error has no interaction. The claims read
    the interaction term (never batchnorm's or no_dropout's own effect), with the model's interval."""
    root, rng = tmp_path / "sweep", np.random.default_rng(3)
    for s in range(6):
        for x in ({}, {"model.norm": "batchnorm"}, {"model.dropout": 0.0},
                  {"model.norm": "batchnorm", "model.dropout": 0.0}):
            bn, no_dropout = "model.norm" in x, "model.dropout" in x
            gap = 5.0 + s / 5 + no_dropout * (1.0 if bn else 4.0) + rng.normal(0, 0.3)
            write_cell(root, f"{len(x)}{bn}{s}", s, x, "paper", 20.0 + 2 * no_dropout + rng.normal(0, 0.3), gap)
    a = analyse(load(root))
    assert set(a.per_run.design_text) == {"full factorial 2^2"}
    claims = a.claims.set_index("claim")
    gap, error = claims.loc["bn_dropout_gap"], claims.loc["bn_dropout_error"]
    assert {gap["term"], error["term"]} <= {"batchnorm × no_dropout", "no_dropout × batchnorm"}
    term = a.terms[(a.terms.metric == "gap") & (a.terms.kind == "interaction")].iloc[0]
    assert gap["effect"] == pytest.approx(term["estimate"]) and gap["low"] < -3.0 < gap["high"]
    assert gap["verdict"] == REPRODUCED and error["low"] < 0 < error["high"]
    assert claims.loc["bn_error", "term"] == "batchnorm"  # the main effect answers the one-arm claim


# ------------------------------------------------------------------------------------------ levels
DROPOUT_LEVELS = [0.0, 0.25, 0.5, 0.75]
SEED_ERROR = np.array([3.0, -2.0, 1.0, -3.0, 2.0, 0.0])     # pt, shared by every level of a seed: pairing removes it
SEED_GAP = np.array([-1.5, 2.0, 0.5, 1.0, -2.0, 0.0])
GAP_SLOPE, ERROR_SLOPE = -12.0, -2.0                          # pt per unit of dropout p


def dropout_truth(p: float, s: int, rng) -> tuple[float, float, float]:
    error = 20.0 + ERROR_SLOPE * p + SEED_ERROR[s] + 0.15 * rng.standard_normal()
    gap = 10.0 + GAP_SLOPE * p + SEED_GAP[s] + 0.15 * rng.standard_normal()
    return error, gap, 3.0 + 2.0 * p + 0.05 * rng.standard_normal()


@pytest.fixture
def dropout_sweep(tmp_path) -> tuple[Path, dict]:
    """sweep=dropout: p in {0, 0.25, 0.5, 0.75} x 6 seeds, gap falling linearly with p."""
    root, rng, truth = tmp_path / "multirun" / "dropout" / "fmnist_quick", np.random.default_rng(1), {}
    for p in DROPOUT_LEVELS:
        for s in SEEDS:
            error, gap, reach = truth[(p, s)] = dropout_truth(p, s, rng)
            write_cell(root, f"model.dropout={p},seed={s}", s, {"model.dropout": p}, "dropout", error, gap, reach)
    return root, truth


def test_levels_are_compared_with_the_papers_level_paired_by_seed(dropout_sweep):
    root, truth = dropout_sweep
    a = analyse(load(root))
    assert set(a.per_run.design) == {LEVELS}
    assert set(a.per_run.ablation) == {"paper", "no_dropout", "model.dropout=0.25", "model.dropout=0.75"}
    fx = a.effects.set_index(["ablation", "metric"])
    for arm, p in (("no_dropout", 0.0), ("model.dropout=0.25", 0.25), ("model.dropout=0.75", 0.75)):
        level = np.array([truth[(p, s)][1] for s in SEEDS])
        paper = np.array([truth[(0.5, s)][1] for s in SEEDS])
        row = fx.loc[(arm, "gap")]
        assert row["effect"] == pytest.approx((level - paper).mean(), abs=1e-6)
        ci = stats.t.interval(0.95, len(SEEDS) - 1, loc=(level - paper).mean(), scale=stats.sem(level - paper))
        assert (row["low"], row["high"]) == pytest.approx(ci, abs=1e-6)
        assert row["p"] == pytest.approx(stats.ttest_rel(level, paper).pvalue, rel=1e-6)
        # paired: the seed effects (+-2 pt) cancel, so the interval is far narrower than an unpaired one
        assert row["high"] - row["low"] < 0.5 * np.diff(stats.ttest_ind(level, paper).confidence_interval())[0]
    assert fx.loc[("no_dropout", "gap"), "low"] > 0  # the truth is +6 pt
    c = a.claims.set_index("claim")
    assert c.loc["dropout_gap", "design"] == LEVELS and c.loc["dropout_gap", "verdict"] == REPRODUCED
    assert c.loc["dropout_speed", "verdict"] == REPRODUCED  # 3 + 2p epochs: 3 vs 4, ratio 0.75
    assert c.loc["lrn_error", "verdict"] == "not run"


def test_the_dose_response_reads_the_known_slope_with_t_intervals_per_level(dropout_sweep, tmp_path):
    root, truth = dropout_sweep
    a = analyse(load(root))
    summary = level_summary(a, a.per_run.group.iloc[0])
    assert list(summary.level) == DROPOUT_LEVELS and list(summary.reference) == [False, False, True, False]
    for r in summary.itertuples():
        gaps = np.array([truth[(r.level, s)][1] for s in SEEDS])
        assert r.gap == pytest.approx(gaps.mean(), abs=1e-6) and r.seeds == len(SEEDS)
        assert (r.gap_low, r.gap_high) == pytest.approx(
            stats.t.interval(0.95, len(gaps) - 1, loc=gaps.mean(), scale=stats.sem(gaps)), abs=1e-6)
    slope = np.polyfit(summary.level.astype(float), summary.gap, 1)[0]
    assert slope == pytest.approx(GAP_SLOPE, abs=0.5)
    out = tmp_path / "out"
    main([str(root), "--out", str(out)])
    md = (out / "report.md").read_text()
    assert (out / "report_dose_model.dropout.png").read_bytes()[:4] == b"\x89PNG"
    assert "](report_dose_model.dropout.png)" in md and "## Levels of one toggle" in md
    assert "| 0.5 (paper) | `paper` |" in md and "levels of model.dropout" in md
    assert "design: default: levels of model.dropout" in console_text(a)


def test_augmentation_levels_answer_the_augmentation_and_pca_claims(tmp_path):
    root = tmp_path / "augment"
    for s in range(4):
        levels = (("none", 18.0, 14.0), ("crop_flip", 19.5, 6.0), ("crop_flip_pca", 20.0 + s / 10, 5.0))
        for level, error, gap in levels:
            write_cell(root, f"data.augment={level},seed={s}", s, {"data.augment": level}, "augment",
                       error + 0.3 * math.sin(s + len(level)), gap + 0.2 * math.cos(s * len(level)))
    a = analyse(load(root))
    c = a.claims.set_index("claim")
    assert set(a.per_run.ablation) == {"paper", "no_augment", "no_pca"}
    for cid in ("augment_gap", "augment_error", "pca_error"):
        assert c.loc[cid, "design"] == LEVELS and c.loc[cid, "n"] == 4
    assert c.loc["augment_gap", "verdict"] == REPRODUCED and c.loc["augment_error", "effect"] < 0
    assert list(level_summary(a, a.per_run.group.iloc[0]).level) == ["none", "crop_flip", "crop_flip_pca"]


# --------------------------------------------------------------------------------------- factorials
# Known model (pt; x = +1 where the trick is removed): main effect = 2 b, interaction = 4 b
GAP_B = {"no_dropout": 1.5, "no_augment": 3.0, ("no_dropout", "no_augment"): 0.75}    # +3, +6 pt; interaction +3 pt
ERROR_B = {"tanh": 1.0, "no_augment": -1.5, ("tanh", "no_overlap"): -0.5}              # no_lrn: 0 (no effect)
LOG_TIME_B = {"tanh": 0.35, "no_dropout": -0.12}                                        # ratios e^0.7, e^-0.24


def value(b: dict, x: dict) -> float:
    return sum(v * (x[k] if isinstance(k, str) else x[k[0]] * x[k[1]]) for k, v in b.items())


def factorial_cells(half: bool) -> list[dict]:
    """x per cell (+1 removed, -1 paper level); the half fraction: I = ABCDE with +1 = the paper's level."""
    cells = []
    for signs in itertools.product((-1, 1), repeat=5):
        if half and np.prod([-s for s in signs]) != 1:
            continue
        cells.append(dict(zip([t[3] for t in TRICKS5], signs)))
    return cells


def write_factorial(root: Path, half: bool, seeds=(0, 1), noise: float = 0.3, rng_seed: int = 5) -> list[dict]:
    rng, rows = np.random.default_rng(rng_seed), []
    name = "factorial_half" if half else "factorial"
    for s in seeds:
        block = rng.normal(0, 1.0)      # a seed shifts every cell: the block factor absorbs it
        for i, x in enumerate(factorial_cells(half)):
            settings = {key: (off if x[arm] > 0 else on) for key, on, off, arm in TRICKS5}
            error = 20 + value(ERROR_B, x) + block + noise * rng.standard_normal()
            gap = 8 + value(GAP_B, x) + 0.5 * block + noise * rng.standard_normal()
            reach = 3.0 * math.exp(value(LOG_TIME_B, x) + 0.03 * rng.standard_normal())
            write_cell(root, f"run{s}-{i:02d}", s, settings, name, error, gap, reach)
            rows.append({**x, "seed": s, "test_error": error, "gap": gap, "log_time": math.log(reach)})
    return rows


def numpy_fit(rows: list[dict], metric: str, blocks: bool):
    """Independent OLS: numpy least squares and scipy's t, with the same coding and terms."""
    frame = pd.DataFrame(rows)
    arms = [t[3] for t in TRICKS5]
    cols = [np.ones(len(frame))] + [frame[a].to_numpy(float) for a in arms]
    cols += [(frame[a] * frame[b]).to_numpy(float) for a, b in itertools.combinations(arms, 2)]
    names = [frozenset([a]) for a in arms] + [frozenset(pair) for pair in itertools.combinations(arms, 2)]
    if blocks:
        cols += [(frame["seed"] == s).to_numpy(float) for s in sorted(frame["seed"].unique())[1:]]
    x, y = np.column_stack(cols), frame[metric].to_numpy(float)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    df = len(y) - x.shape[1]
    sigma2 = np.sum((y - x @ beta) ** 2) / df
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(x.T @ x)))
    t = stats.t.ppf(0.975, df)
    out = {}
    for j, name in enumerate(names, start=1):
        scale = 2.0 if len(name) == 1 else 4.0
        out[name] = (scale * beta[j], scale * (beta[j] - t * se[j]), scale * (beta[j] + t * se[j]),
                     2 * stats.t.sf(abs(beta[j] / se[j]), df))
    return out


def truth_of(term: str, b: dict) -> float:
    """The known effect of a term: 2 b for a main effect, 4 b for an interaction (either order)."""
    parts = term.split(" × ")
    if len(parts) == 1:
        return 2.0 * b.get(parts[0], 0.0)
    return 4.0 * (b.get(tuple(parts), 0.0) + b.get(tuple(reversed(parts)), 0.0))


@pytest.mark.parametrize("half", [False, True], ids=["full 2^5", "half 2^(5-1)"])
def test_factorial_main_effects_and_interactions_match_numpy_and_cover_the_truth(tmp_path, half):
    root = tmp_path / ("factorial_half" if half else "factorial") / "fmnist_quick"
    rows = write_factorial(root, half)
    a = analyse(load(root))
    assert set(a.per_run.design) == {FACTORIAL}
    assert set(a.per_run.design_text) == {"fractional factorial 2^(5-1)" if half else "full factorial 2^5"}
    terms = a.terms
    assert len(terms) == 3 * 15 and terms.blocked.all() and (terms.seeds == 2).all()
    assert (terms.df == (32 if half else 64) - 16 - 1).all()
    covered = []
    for metric, b, column in (("gap", GAP_B, "gap"), ("test_error", ERROR_B, "test_error"),
                              ("epochs_ratio", LOG_TIME_B, "log_time")):
        expected = numpy_fit(rows, column, blocks=True)
        for r in terms[terms.metric == metric].itertuples():
            est, low, high, p = expected[frozenset(r.term.split(" × "))]
            shown = (lambda v: math.exp(v)) if metric == "epochs_ratio" else (lambda v: v)
            assert (r.estimate, r.low, r.high) == pytest.approx((shown(est), shown(low), shown(high)), abs=1e-6)
            assert r.p == pytest.approx(p, rel=1e-6, abs=1e-12)
            covered.append(low <= truth_of(r.term, b) <= high)
    assert np.mean(covered) >= 0.85  # 95% intervals: ~2 of 45 miss by chance (test_factorial_intervals_cover...)
    gap = terms[terms.metric == "gap"].set_index("term")
    for term, truth in (("no_dropout", 3.0), ("no_augment", 6.0), ("no_dropout × no_augment", 3.0)):
        assert gap.loc[term, "low"] <= truth <= gap.loc[term, "high"], term
    assert gap.loc["no_dropout", "survives_holm"] and gap.loc["no_dropout × no_augment", "survives_holm"]
    c = a.claims.set_index("claim")
    for cid in ("dropout_gap", "augment_gap", "relu_speed"):
        assert c.loc[cid, "design"] == FACTORIAL and c.loc[cid, "verdict"] == REPRODUCED, cid
    assert c.loc["lrn_error", "term"] == "no_lrn" and c.loc["lrn_error", "verdict"] == f"{EQUIVALENT}1 pt"
    assert c.loc["augment_error", "verdict"] == "contradicted"  # -3 pt: the runs without it err less
    # one family: every term of every metric (45), with the claims' equivalence tests counted in their term's unit
    from alexlab.report.stats import holm
    family = terms[terms.group == terms.group.iloc[0]]
    answered = a.claims[a.claims.term != ""]
    adjusted = holm(np.concatenate([family.p, answered.p_equiv]),
                    units=list(zip(family.term, family.metric)) + list(zip(answered.term, answered.metric)))
    assert family.p_holm.to_numpy() == pytest.approx(adjusted[:len(family)])


def simulated_runs(rng, cells: list[dict], seeds: int) -> pd.DataFrame:
    """What fit_terms reads for one group, without run folders: the known gap model plus noise."""
    rows = []
    for s in range(seeds):
        block = rng.normal(0, 1.0)
        for x in cells:
            gap = 8 + value(GAP_B, x) + block + 0.3 * rng.standard_normal()
            rows.append({"seed": s, "changes": {k: "off" for k, v in x.items() if v > 0}, "gap": gap / 100,
                         "test_error": 0.2, "epochs_to_error": 3.0, "censored_at": math.nan, "group": "g",
                         "design_text": "sim"})
    frame = pd.DataFrame(rows)
    frame["changes"] = [{key: off for key, on, off, arm in TRICKS5 if arm in c} for c in frame["changes"]]
    return frame


@pytest.mark.parametrize("half", [False, True], ids=["full 2^5", "half 2^(5-1)"])
def test_factorial_intervals_cover_a_known_main_effect_and_interaction_95_percent_of_the_time(half):
    """400 simulated data sets through the report's own fit (statsmodels, seed blocks): each 95% interval of
    the known main effect (+6 pt), the known interaction (+3 pt) and a null term covers its truth in
    95% +- 3 Monte-Carlo standard errors of them."""
    from alexlab.report.factorial import fit_terms
    rng, cells, sets = np.random.default_rng(2026), factorial_cells(half), 400
    factors = [key for key, *_ in TRICKS5]
    hits = {"no_augment": 0, "no_dropout × no_augment": 0, "tanh × no_lrn": 0}
    for _ in range(sets):
        rows = {r["term"]: r for r in fit_terms(simulated_runs(rng, cells, 2), factors, "gap", 0.95)}
        for term in hits:
            truth = truth_of(term, GAP_B)
            hits[term] += rows[term]["low"] <= truth <= rows[term]["high"]
    margin = 3 * math.sqrt(0.95 * 0.05 / sets)
    for term, n in hits.items():
        assert abs(n / sets - 0.95) <= margin, (term, n / sets)


def test_the_factorial_report_explains_main_effects_and_draws_them(tmp_path):
    root = tmp_path / "factorial_half" / "fmnist_quick"
    write_factorial(root, half=True)
    out = tmp_path / "out"
    main([str(root), "--out", str(out)])
    md = (out / "report.md").read_text()
    assert "averaged over the settings of the other tricks" in md and "*from the paper net*" in md
    assert "seeds as a block factor (2 seeds)" in md and "fractional factorial 2^(5-1)" in md
    assert "`no_dropout × no_augment`" in md and "`no_dropout` (main effect)" in md
    assert (out / "report_factorial.png").read_bytes()[:4] == b"\x89PNG" and "](report_factorial.png)" in md
    csv = pd.read_csv(out / "report_factorial.csv")
    assert len(csv) == 45 and {"term", "estimate", "low", "high", "p", "p_holm"} <= set(csv.columns)
    claims = pd.read_csv(out / "report.csv").dropna(subset=["term"]).set_index("claim")
    assert claims.loc["dropout_gap", "term"] == "no_dropout" and claims.loc["dropout_gap", "verdict"] == REPRODUCED


def test_one_seed_of_the_half_fraction_has_no_degrees_of_freedom_left(tmp_path):
    root = tmp_path / "factorial_half" / "fmnist_quick"
    write_factorial(root, half=True, seeds=(0,))
    a = analyse(load(root))
    assert not a.terms.blocked.any() and a.terms.p.isna().all()
    assert a.terms.note.str.contains("no residual degrees of freedom").all()
    assert set(a.claims.loc[a.claims.design == FACTORIAL, "verdict"]) == {INCONCLUSIVE}


def test_the_half_fraction_cells_are_exactly_the_resolution_v_half_of_the_ablation_values():
    """conf/cell/*.yaml: 16 files, each setting all five toggles, at the paper's level or at the value
    of the trick's ablation file; the removed tricks, in an even number, name the file."""
    cells = {}
    for path in sorted((CONF / "cell").glob("*.yaml")):
        content = yaml.safe_load(path.read_text())
        flat = {f"{s}.{k}": v for s, block in content.items() for k, v in block.items()}
        assert set(flat) == {t[0] for t in TRICKS5}, path.name
        removed = []
        for key, on, off, arm in TRICKS5:
            assert flat[key] in (on, off) and ARMS[arm] == {key: off} and PAPER_LEVELS[key] == on
            if flat[key] == off:
                removed.append(arm)
        assert path.stem == ("+".join(removed) or "paper")
        cells[path.stem] = tuple(1 if t[3] in removed else -1 for t in TRICKS5)
    assert len(cells) == 16 and all(np.prod([-x for x in signs]) == 1 for signs in cells.values())
    x = np.array(list(cells.values()), dtype=float)
    model = np.column_stack([np.ones(16), x] + [x[:, i] * x[:, j] for i, j in itertools.combinations(range(5), 2)])
    assert np.allclose(model.T @ model, 16 * np.eye(16))  # resolution V: mains and 2FIs orthogonal, none aliased
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        jobs = jobs_of(["sweep=factorial_half", "experiment=fmnist_quick"])
    assert len(jobs) == 32 and {j for job in jobs for j in job if j.startswith("cell=")} == {f"cell={c}" for c in cells}


# ------------------------------------------------------------------------------------------ equivalence
def test_a_true_zero_with_enough_seeds_is_no_effect_larger_than_delta_and_twice_delta_is_not(tmp_path):
    root, rng = tmp_path / "sweep", np.random.default_rng(11)
    for s in range(12):
        base = 20 + 2 * rng.standard_normal()
        write_cell(root, f"a{s}", s, {}, "paper", base, 5.0 + s / 20)
        write_cell(root, f"b{s}", s, {"model.norm": "none"}, "no_lrn", base + 0.4 * rng.standard_normal(), 5.0 + s / 20)
        write_cell(root, f"c{s}", s, {"model.pooling": "non_overlapping"}, "no_overlap",
                   base + 2.0 + 0.4 * rng.standard_normal(), 5.0 + s / 20)
    a = analyse(load(root))
    c = a.claims.set_index("claim")
    assert c.loc["lrn_error", "verdict"] == f"{EQUIVALENT}1 pt" and c.loc["lrn_error", "equivalent"]
    assert c.loc["overlap_error", "verdict"] == REPRODUCED and not c.loc["overlap_error", "equivalent"]
    # TOST p as statsmodels computes it, on the per-seed differences
    from statsmodels.stats.weightstats import ttost_paired
    runs = a.per_run.set_index(["ablation", "seed"])["test_error"] * 100
    diff_p = ttost_paired(runs["no_lrn"].sort_index().to_numpy(), runs["paper"].sort_index().to_numpy(), -1.0, 1.0)[0]
    assert c.loc["lrn_error", "p_equiv"] == pytest.approx(diff_p, rel=1e-6)
    md = report_md(a)
    assert f"**{EQUIVALENT}1 pt**" in md and "±1 pt: TOST p" in md
    # a smaller delta, given on the command line, is not shown by the same data
    narrow = analyse(load(root), deltas={"lrn_error": 0.1})
    assert narrow.claims.set_index("claim").loc["lrn_error", "verdict"] == INCONCLUSIVE


def test_a_ratio_claim_tests_equivalence_on_the_log_scale(tmp_path):
    root = tmp_path / "sweep"
    for s in range(10):
        reach = 3.0 + s / 10
        write_run(root, "paper", s, 0.8, 0.85, reach=reach)
        write_run(root, "tanh", s, 0.8, 0.85, reach=reach * (1.0 + 0.03 * (-1) ** s))
    c = analyse(load(root)).claims.set_index("claim").loc["relu_speed"]
    logs = np.log([(1.0 + 0.03 * (-1) ** s) for s in range(10)])
    se = logs.std(ddof=1) / math.sqrt(10)
    bound = math.log(1.25)
    expected = max(stats.t.sf((logs.mean() + bound) / se, 9), stats.t.cdf((logs.mean() - bound) / se, 9))
    assert c["p_equiv"] == pytest.approx(expected) and c["verdict"] == f"{EQUIVALENT}1.25×"


@pytest.mark.parametrize("option, needle", [
    ("nosuch=1", "no claim 'nosuch'; claims: relu_speed"),
    ("lrn_error=abc", "--delta lrn_error=abc is not valid; give a positive number of percentage points"),
    ("lrn_error=-1", "give a positive number of percentage points"),
    ("relu_speed=0.8", "--delta relu_speed=0.8 is not valid; give a ratio > 1"),
    ("relu_speed", "--delta relu_speed: expected <claim>=<value>"),
])
def test_bad_delta_is_one_line_and_exit_2(tmp_path, capsys, option, needle):
    root = tmp_path / "sweep"
    write_run(root, "paper", 0, 0.8, 0.85)
    with pytest.raises(SystemExit) as exc:
        main([str(root), "--delta", option])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("alexlab: error:") and needle in err and "\n" not in err


# ------------------------------------------------------------------------------------------------ plan
def write_multirun(root: Path, task: list[str], hydra: tuple = ("hydra.mode=MULTIRUN",)) -> None:
    """The part of Hydra's multirun.yaml the plan reads: the sweep's own overrides."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"hydra": list(hydra),
                                                                                 "task": list(task)}}}))


def small_sweep(root: Path, seeds) -> None:
    """paper, no_lrn (+0.8 pt test error, sd ~0.6) and no_dropout (+4 pt gap, sd ~1) over `seeds`."""
    for s in seeds:
        rng = np.random.default_rng(100 + s)
        base = 20 + rng.normal(0, 2)
        write_cell(root, f"ablation=paper,seed={s}", s, {}, "paper", base, 5.0)
        lrn_error = base + 0.8 + rng.normal(0, 0.6)
        write_cell(root, f"ablation=no_lrn,seed={s}", s, {"model.norm": "none"}, "no_lrn", lrn_error, 5.0)
        write_cell(root, f"ablation=no_dropout,seed={s}", s, {"model.dropout": 0.0}, "no_dropout", base,
                   9.0 + rng.normal(0, 1.0))


def statsmodels_seeds(effect: float, sd: float, alpha: float) -> int:
    """Fewest seeds (from 2) with 80% power by statsmodels' one-sample (paired) t power."""
    return next(n for n in range(2, 10_000) if TTestPower().power(effect_size=effect / sd, nobs=n, alpha=alpha) >= 0.8)


@pytest.fixture
def planned_sweep(tmp_path, capsys):
    root = tmp_path / "multirun" / "one_at_a_time" / "fmnist_quick"
    small_sweep(root, range(3))
    write_multirun(root, ["sweep=one_at_a_time", "experiment=fmnist_quick", "seed=0,1,2", "trainer.threads=1"])
    main([str(root), "--plan"])
    return root, capsys.readouterr().out


def test_the_plan_matches_statsmodels_power_and_prints_the_exact_command(planned_sweep):
    root, printed = planned_sweep
    plan = json.loads((root / "plans" / "plan-1.json").read_text())
    a = analyse(load(root))
    judged = a.claims[a.claims.p.notna()]
    m = len(judged)    # lrn_error, overlap? no: lrn_error, dropout_gap, dropout_speed
    assert m == 3 and {r["family"] for r in plan["comparisons"]} == {m}
    for r in plan["comparisons"]:
        row = judged.set_index("claim").loc[r["claim"]]
        assert r["alpha"] == pytest.approx(0.05 / m)
        if row["method"] != "paired t":
            assert r["seeds_for_delta"] is None and r["why"]
            continue
        diffs = a.per_run.pivot_table(index="seed", columns="ablation", values=row["metric"]) * 100
        sd = (diffs[row["ablation"]] - diffs["paper"]).std(ddof=1)
        assert r["sd"] == pytest.approx(sd)
        assert r["seeds_for_delta"] == statsmodels_seeds(r["delta"], sd, 0.05 / m)
        assert r["seeds_for_observed"] == statsmodels_seeds(abs(row["effect"]), sd, 0.05 / m)
    target = max(r["seeds_for_delta"] for r in plan["comparisons"] if r["seeds_for_delta"])
    assert plan["seeds_present"] == [0, 1, 2] and plan["target_seeds"] == list(range(target))
    command = (f"alexlab-train -m sweep=one_at_a_time experiment=fmnist_quick 'seed=range(0,{target})' "
               "trainer.threads=1")
    assert plan["command"] == command and command in printed
    assert str(root / "plans" / "plan-1.json") in printed.replace("\n", "")
    assert shlex.split(command)[4] == f"seed=range(0,{target})"  # one argument to the shell
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # what Hydra makes of it: every arm x seed
        jobs = jobs_of(shlex.split(command)[2:])
    seeds = {j for job in jobs for j in job if j.startswith("seed=")}
    assert seeds == {f"seed={s}" for s in range(target)} and len(jobs) == 7 * target


def test_the_extended_sweeps_report_names_which_seeds_each_plan_added_and_warns_beyond_it(planned_sweep, tmp_path):
    root, _ = planned_sweep
    target = json.loads((root / "plans" / "plan-1.json").read_text())["target_seeds"]
    small_sweep(root, range(3, len(target) + 1))        # the plan's seeds, and one more than planned
    a = analyse(load(root))
    origin = a.per_run.groupby("seed")["plan"].first()
    assert set(origin[[0, 1, 2]]) == {"initial"} and set(origin[range(3, len(target))]) == {"plan 1"}
    assert origin[len(target)] == "beyond the plans"
    assert any(f"seed(s) {len(target)} lie outside plan 1's target" in w for w in a.warnings)
    main([str(root), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Seeds and plans" in md and "- plan 1: seeds 3–" in md and "- initial: seeds 0–2" in md
    assert "| from | run folder |" in md and "more seeds than planned were run" in md


def test_a_second_plan_is_numbered_and_its_seeds_told_apart_from_the_first(planned_sweep, capsys):
    root, _ = planned_sweep
    first = json.loads((root / "plans" / "plan-1.json").read_text())["target_seeds"]
    small_sweep(root, range(3, len(first)))
    main([str(root), "--plan", "--delta", "lrn_error=0.3", "--max-seeds", "200"])
    capsys.readouterr()
    second = json.loads((root / "plans" / "plan-2.json").read_text())
    assert second["plan"] == 2 and second["seeds_present"] == first and second["deltas"]["lrn_error"] == 0.3
    small_sweep(root, second["new_seeds"])
    origin = analyse(load(root)).per_run.groupby("seed")["plan"].first()
    assert set(origin[first[3:]]) == {"plan 1"} and set(origin[second["new_seeds"]]) == {"plan 2"}


def test_the_command_keeps_explicit_seeds_when_they_are_not_a_range(tmp_path):
    from alexlab.report.plan import extend_command
    write_multirun(tmp_path, ["+seed=5,7", "experiment=cifar10", "sweep=lrn"], ("hydra.mode=MULTIRUN",
                                                                                "hydra.sweep.dir=/data/sweeps/lrn"))
    assert extend_command(tmp_path, [5, 7, 0, 1]) == ("alexlab-train -m seed=5,7,0,1 experiment=cifar10 sweep=lrn "
                                                      "hydra.sweep.dir=/data/sweeps/lrn")


def test_the_factorial_plan_gives_80_percent_power_in_a_simulation(tmp_path, capsys):
    """The plan's seeds for a factorial main effect of delta, checked by simulating the design at that
    many seeds (numpy least squares, seed blocks): about 80% of data sets reject at alpha / m."""
    root = tmp_path / "factorial_half" / "fmnist_quick"
    write_factorial(root, half=True, noise=3.0)
    write_multirun(root, ["sweep=factorial_half", "experiment=fmnist_quick"])
    main([str(root), "--plan", "--max-seeds", "50"])
    plan = json.loads((root / "plans" / "plan-1.json").read_text())
    row = next(r for r in plan["comparisons"] if r["claim"] == "lrn_error")
    assert row["family"] == 45 and row["design"] == FACTORIAL
    n, alpha, sigma, delta = row["seeds_for_delta"], row["alpha"], row["sd"], row["delta"]
    assert 2 <= n <= 50

    def rejection_rate(seeds: int, rng) -> float:
        cells = np.array([[x[t[3]] for t in TRICKS5] for x in factorial_cells(True)], dtype=float)
        design = np.tile(cells, (seeds, 1))
        model = np.column_stack([np.ones(len(design)), design]
                                + [design[:, i] * design[:, j] for i, j in itertools.combinations(range(5), 2)]
                                + [np.repeat(np.arange(seeds) == s, 16).astype(float) for s in range(1, seeds)])
        y = (delta / 2) * design[:, 2] + sigma * rng.standard_normal((4000, len(design)))   # no_lrn main = delta
        beta = np.linalg.lstsq(model, y.T, rcond=None)[0]
        df = len(design) - model.shape[1]
        sigma2 = ((y.T - model @ beta) ** 2).sum(axis=0) / df
        se = np.sqrt(sigma2 * np.linalg.inv(model.T @ model)[3, 3])
        return float((2 * stats.t.sf(np.abs(beta[3] / se), df) < alpha).mean())

    rng = np.random.default_rng(3)
    assert 0.76 <= rejection_rate(n, rng) <= 0.86
    assert rejection_rate(n - 1, rng) < 0.8 if n > 2 else True


@pytest.mark.parametrize("make, needle", [
    (lambda root: None, "--plan needs one sweep folder"),
    (lambda root: write_multirun(root / "other", []), "holds 2 multirun.yaml"),
])
def test_plan_without_exactly_one_multirun_file_is_one_line(tmp_path, capsys, make, needle):
    root = tmp_path / "sweep"
    small_sweep(root, range(3))
    write_multirun(root / "x", []) if "2" in needle else None
    make(root)
    with pytest.raises(SystemExit) as exc:
        main([str(root), "--plan"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and needle in err and "\n" not in err and not list(root.rglob("plan-*.json"))


def test_a_plan_beyond_max_seeds_writes_nothing_and_says_which_claim_needs_the_fewest(tmp_path, capsys):
    root = tmp_path / "sweep"
    small_sweep(root, range(3))
    write_multirun(root, ["sweep=one_at_a_time"])
    main([str(root), "--plan", "--max-seeds", "3", "--delta", "dropout_gap=0.1"])
    printed = " ".join(capsys.readouterr().out.split())
    assert "every comparison needs more than --max-seeds 3 seeds" in printed and "no plan written" in printed
    assert not (root / "plans").exists()


def test_plan_refuses_a_wandb_source_in_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["wandb:ent/proj/group", "--plan"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "--plan needs the sweep folder" in err and "\n" not in err


def test_a_factorial_with_tied_runs_gives_no_interval_and_never_p_zero(tmp_path):
    """Every run at the same error (e.g. all at chance): the model fits exactly, t is undefined, so no
    interval and no p (a p of 0 would be a finding out of nothing); a diverged run is named."""
    root = tmp_path / "factorial"
    for s in (0, 1):
        for i, x in enumerate(factorial_cells(half=True)):
            settings = {key: (off if x[arm] > 0 else on) for key, on, off, arm in TRICKS5}
            write_cell(root, f"r{s}-{i}", s, settings, "factorial_half", 90.0, 0.0)
    write_run(root, "factorial_half", 2, 0.1, 0.1, status="diverged", completed=False, job="lost",
              config=config_with({key: on for key, on, *_ in TRICKS5}, "factorial_half"))
    a = analyse(load(root))
    test_error = a.terms[a.terms.metric == "test_error"]
    assert test_error.p.isna().all() and test_error.low.isna().all()
    assert test_error.note.str.contains("no residual spread").all()
    assert not (a.claims.p == 0).any()
    assert any("1 run(s) diverged and are not in the factorial model" in w for w in a.warnings)
