"""The report's tests checked two ways: against independent computations (scipy.stats, brute-force
definitions) on fixed examples, and by simulating null data sets with ties and censoring, run
through the same functions the report calls, to measure how often they reject."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from alexlab.report.analysis import EQUIVALENT, FINDINGS, verdict
from alexlab.report.stats import (SIGN_FLIP, T_TEST, holm, ordered_pairs, paired_interval, paired_p,
                                  pairs_needed_for_sign_test, seeds_for_power, sign_test_p, t_power, times_p, tost_p)

ALPHA = 0.05
SETS = 2000
# the most a valid level-0.05 procedure may reject in SETS null data sets: alpha + 2 Monte-Carlo SEs
LIMIT = ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / SETS)   # 0.0597
TEST_IMAGES = 25     # a small test set: error differences sit on a lattice of 4 pt, and tie often


def null_errors(rng, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Final test errors (sets x seeds) of paper and arm under the null (shift 0): a seed shares its
    difficulty between the two runs of a pair; each error is a count of wrong test images."""
    p = np.clip(0.25 + 0.04 * rng.standard_normal((SETS, n)), 0.01, 0.99)
    paper = rng.binomial(TEST_IMAGES, p) / TEST_IMAGES
    arm = rng.binomial(TEST_IMAGES, np.clip(p + shift, 0.0, 1.0)) / TEST_IMAGES
    return paper, arm


def null_times(rng, n: int, epochs: int, factor: float = 1.0):
    """Epochs to the threshold (sets x seeds) of paper and arm: a shared seed effect and lognormal
    noise, read on half epochs (ties), at least one epoch (a run below the threshold at its first
    evaluation), censored at `epochs` (time = epochs, censored = True) when not reached by then."""
    seed_effect = np.log(5.0) + 0.3 * rng.standard_normal((SETS, n))

    def runs(scale):
        t = np.maximum(1.0, np.ceil(2 * scale * np.exp(seed_effect + 0.35 * rng.standard_normal((SETS, n)))) / 2)
        return np.minimum(t, epochs), t > epochs

    (tp, cp), (ta, ca) = runs(1.0), runs(factor)
    return ta, ca, tp, cp


def decisions(rng, n: int, epochs: int, shift: float = 0.0, factor: float = 1.0) -> dict:
    """The report's decision procedure on SETS data sets: p-values from the functions the report
    calls (paired_interval -> paired_p; compare_times -> times_p), Holm over the two claims of each
    data set, and the verdict word. Returns how often each raw p was below alpha, how often each
    claim (and either) became a finding, and what the data sets held."""
    paper, arm = null_errors(rng, n, shift)
    diffs = (arm - paper) * 100
    p_err = paired_p(diffs)
    ta, ca, tp, cp = null_times(rng, n, epochs, factor)
    p_time, by_sign = times_p(ta, ca, tp, cp)
    slower, faster = ordered_pairs(ta, ca, tp, cp)
    observed_err = np.sign(diffs.mean(axis=1))
    observed_time = np.where(by_sign, np.sign(slower - faster), np.sign(np.log(ta / tp).mean(axis=1)))
    found = np.zeros((SETS, 2), dtype=bool)
    for i in range(SETS):
        p = np.array([p_err[i], p_time[i]])
        adjusted = holm(p)
        for j, observed in enumerate((observed_err[i], observed_time[i])):
            found[i, j] = verdict(+1, int(observed), p[j], adjusted[j], ALPHA) in FINDINGS
    sorted_diffs = np.sort(diffs, axis=1)
    return {"p_error": (p_err < ALPHA).mean(), "p_time": (p_time < ALPHA).mean(),
            "error": found[:, 0].mean(), "time": found[:, 1].mean(), "either": found.any(axis=1).mean(),
            "censored": (ca | cp).any(axis=1).mean(), "sign_test": by_sign.mean(),
            "ties": (np.diff(sorted_diffs, axis=1) == 0).any(axis=1).mean(),
            "all_equal": (sorted_diffs[:, 0] == sorted_diffs[:, -1]).mean(),
            "smallest_p": float(np.nanmin(np.concatenate([p_err, p_time])))}


@pytest.mark.parametrize("epochs", [8, 14])   # heavy censoring (most data sets), light (a few)
@pytest.mark.parametrize("n", [3, 5, 8])
def test_null_data_with_ties_and_censoring_are_rejected_at_most_alpha(n, epochs):
    rates = decisions(np.random.default_rng(20261202 + 10 * n + epochs), n, epochs)
    # the data sets hold what the test is about: tied differences, censored runs (sign test), uncensored ones
    assert rates["ties"] > 0.1 and (rates["all_equal"] > 0 if n == 3 else True)
    assert 0.05 < rates["censored"] < 0.95 and rates["sign_test"] == rates["censored"]
    assert rates["smallest_p"] > 0.0
    for each in ("p_error", "p_time", "error", "time", "either"):  # raw tests; findings after Holm
        assert rates[each] <= LIMIT, (each, rates)


def test_the_same_procedure_finds_real_effects():
    """Not a procedure that never rejects: +12 pt test error and 2.5x the epochs with 8 seeds."""
    found = decisions(np.random.default_rng(7), 8, 8, shift=0.12, factor=2.5)
    assert found["error"] > 0.5 and found["time"] > 0.5


def test_paired_t_matches_scipy_on_tied_lattice_data():
    arm = np.array([0.24, 0.28, 0.20, 0.24, 0.32])
    paper = np.array([0.20, 0.24, 0.20, 0.16, 0.24])
    iv = paired_interval(arm - paper)
    assert iv.method == T_TEST
    assert iv.p == pytest.approx(stats.ttest_rel(arm, paper).pvalue)
    d = arm - paper
    assert (iv.low, iv.high) == pytest.approx(stats.t.interval(0.95, 4, loc=d.mean(), scale=stats.sem(d)))
    assert paired_p(np.vstack([d, -d, d[::-1]])) == pytest.approx([iv.p] * 3)


def sign_flip_p_by_enumeration(d) -> float:
    """The exact permutation p of |mean| over all 2^n sign flips, counted one by one."""
    observed = abs(np.mean(d))
    flips = [abs(np.mean(np.array(s) * d)) >= observed - 1e-12 for s in itertools.product((1, -1), repeat=len(d))]
    return float(np.mean(flips))


@pytest.mark.parametrize("d", [[2.0, 2.0], [2.0, 2.0, 2.0], [-4.0] * 5, [0.0, 0.0, 0.0], [0.8] * 8])
def test_equal_differences_get_the_exact_sign_flip_p_and_no_interval(d):
    iv = paired_interval(d)
    assert iv.method == SIGN_FLIP and math.isnan(iv.low) and math.isnan(iv.high) and iv.sd == 0
    assert iv.p == pytest.approx(sign_flip_p_by_enumeration(np.array(d))) and iv.p > 0


def test_one_seed_has_no_p():
    iv = paired_interval([1.5])
    assert iv.n == 1 and math.isnan(iv.low) and math.isnan(iv.p) and iv.method == ""


def test_sign_test_p_matches_scipy_binomtest():
    for m in range(1, 13):
        for k in range(m + 1):
            assert sign_test_p(k, m - k) == pytest.approx(stats.binomtest(k, m).pvalue), (k, m)
    assert math.isnan(sign_test_p(0, 0))
    assert pairs_needed_for_sign_test(0.05) == 6 and stats.binomtest(5, 5).pvalue >= 0.05 > stats.binomtest(6, 6).pvalue


def test_ordered_pairs_count_only_pairs_whose_order_is_known():
    #            both seen  both seen  tie   arm cens.  arm cens. early  paper cens.  both cens.
    t_arm = np.array([9.0, 2.0, 3.0, 12.0, 4.0, 5.0, 12.0])
    c_arm = np.array([False, False, False, True, True, False, True])
    t_paper = np.array([3.0, 3.0, 3.0, 12.0, 6.0, 12.0, 12.0])
    c_paper = np.array([False, False, False, False, False, True, True])
    slower, faster = ordered_pairs(t_arm, c_arm, t_paper, c_paper)
    # slower: pair 0 (9 > 3) and pair 3 (censored at 12, paper reached at 12); faster: pair 1, pair 5
    # unknown: the tie, the arm censored at 4 before paper's 6, both censored
    assert (int(slower), int(faster)) == (2, 2)
    p, by_sign = times_p(t_arm, c_arm, t_paper, c_paper)
    assert by_sign and p == pytest.approx(stats.binomtest(2, 4).pvalue)


def test_uncensored_times_use_the_paired_t_on_log_ratios():
    t_arm, t_paper = np.array([8.2, 9.5, 7.1, 8.8]), np.array([2.5, 3.3, 2.7, 3.1])
    none = np.zeros(4, dtype=bool)
    p, by_sign = times_p(t_arm, none, t_paper, none)
    assert not by_sign and p == pytest.approx(stats.ttest_rel(np.log(t_arm), np.log(t_paper)).pvalue)


def holm_by_definition(p, alpha):
    """Holm's step-down procedure at level alpha, as defined: which hypotheses it rejects."""
    order = np.argsort(p, kind="stable")
    rejected = np.zeros(len(p), dtype=bool)
    for rank, i in enumerate(order):
        if p[i] > alpha / (len(p) - rank):
            break
        rejected[i] = True
    return rejected


def test_holm_adjusted_p_rejects_exactly_what_the_step_down_procedure_rejects():
    rng = np.random.default_rng(3)
    for _ in range(200):
        m = int(rng.integers(1, 9))
        p = np.round(rng.uniform(0, 0.2, m) ** 2, 3)  # small p-values, with ties
        adjusted = holm(p)
        for alpha in (0.01, 0.05, 0.1):
            assert np.array_equal(adjusted <= alpha, holm_by_definition(p, alpha)), (p, alpha)
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.01, float("nan")])[1])


# ------------------------------------------------------------------- equivalence and the one family
BIG_TEST = 2000     # a test set of 2,000 images: error differences on a 0.05 pt lattice


def lattice_differences(rng, n: int, theta_pt: float) -> np.ndarray:
    """Per-seed test-error differences (pt; sets x seeds): a seed's difficulty shared by both runs, each
    error a count of wrong images, the arm's true error theta_pt higher."""
    p = np.clip(0.25 + 0.04 * rng.standard_normal((SETS, n)), 0.01, 0.98)
    paper = rng.binomial(BIG_TEST, p) / BIG_TEST
    arm = rng.binomial(BIG_TEST, p + theta_pt / 100) / BIG_TEST
    return (arm - paper) * 100


def family_verdicts(diffs: list[np.ndarray], delta: float) -> np.ndarray:
    """The report's procedure for claims judged together: paired p and TOST p per claim (the functions
    the report calls), Holm over all of them with each claim one unit, the verdict word. Returns
    (sets x claims) verdicts."""
    n = diffs[0].shape[1]
    p_diff = np.column_stack([paired_p(d) for d in diffs])
    p_equiv = np.column_stack([tost_p(d.mean(axis=1), d.std(axis=1, ddof=1) / math.sqrt(n), n - 1, delta)
                               for d in diffs])
    observed = np.column_stack([np.sign(d.mean(axis=1)) for d in diffs]).astype(int)
    claims = list(range(len(diffs)))
    words = np.empty((SETS, len(diffs)), dtype=object)
    for i in range(SETS):
        adjusted = holm(np.concatenate([p_diff[i], p_equiv[i]]), units=claims * 2)
        for j in claims:
            words[i, j] = verdict(+1, observed[i, j], p_diff[i, j], adjusted[j], ALPHA, adjusted[len(claims) + j])
    return words


@pytest.mark.parametrize("theta", [1.0, -1.0])
def test_an_effect_of_exactly_delta_is_called_no_larger_than_delta_at_most_alpha_of_the_time(theta):
    words = family_verdicts([lattice_differences(np.random.default_rng(41), 10, theta)], delta=1.0)
    declared = np.vectorize(lambda w: w.startswith(EQUIVALENT))(words).mean()
    assert declared <= LIMIT, declared


def test_a_true_zero_with_enough_seeds_is_called_no_larger_than_delta_most_of_the_time():
    rng = np.random.default_rng(42)
    zero = family_verdicts([lattice_differences(rng, 30, 0.0)], delta=1.0)
    assert np.vectorize(lambda w: w.startswith(EQUIVALENT))(zero).mean() > 0.9
    twice = family_verdicts([lattice_differences(rng, 30, 2.0)], delta=1.0)   # 2 delta: never "no effect"
    assert not np.vectorize(lambda w: w.startswith(EQUIVALENT))(twice).any()


def test_one_family_for_difference_and_equivalence_keeps_the_family_wise_error_where_two_would_not():
    """Four claims, two with no effect (a 'reproduced'/'contradicted' would be false) and two with an
    effect of exactly delta (a 'no effect larger than delta' would be false), 30 seeds, so that each
    claim's false null is rejected early. The report's one family, each claim counted once until both
    its tests are rejected, makes any false finding at most alpha; Holm run separately over the
    difference tests and over the equivalence tests (two families) makes it about 2 alpha."""
    rng, n = np.random.default_rng(43), 30
    diffs = [lattice_differences(rng, n, theta) for theta in (0.0, 0.0, 1.0, -1.0)]
    words = family_verdicts(diffs, delta=1.0)
    false_difference = np.isin(words[:, :2], FINDINGS).any(axis=1)
    false_equivalence = np.vectorize(lambda w: w.startswith(EQUIVALENT))(words[:, 2:]).any(axis=1)
    assert (false_difference | false_equivalence).mean() <= LIMIT
    p_diff = np.column_stack([paired_p(d) for d in diffs])
    p_equiv = np.column_stack([tost_p(d.mean(1), d.std(1, ddof=1) / math.sqrt(n), n - 1, 1.0) for d in diffs])
    two = np.array([(holm(p_diff[i])[:2] < ALPHA).any() or (holm(p_equiv[i])[2:] < ALPHA).any() for i in range(SETS)])
    assert two.mean() > LIMIT, two.mean()


def test_tost_matches_statsmodels_and_the_interval_inside_delta():
    from statsmodels.stats.weightstats import ttost_paired
    arm = np.array([20.1, 19.6, 21.0, 20.4, 19.9, 20.7])
    paper = np.array([20.0, 19.9, 20.6, 20.5, 19.7, 20.2])
    d = arm - paper
    p = tost_p(d.mean(), stats.sem(d), len(d) - 1, 1.0)
    assert p == pytest.approx(ttost_paired(arm, paper, -1.0, 1.0)[0])
    low, high = stats.t.interval(1 - 2 * ALPHA, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    for delta in np.linspace(0.05, 2.0, 40):  # p < alpha exactly when the 90% interval lies inside +-delta
        assert (tost_p(d.mean(), stats.sem(d), len(d) - 1, delta) < ALPHA) == (-delta < low and high < delta)
    assert math.isnan(tost_p(0.5, 0.0, 5, 1.0)) and math.isnan(tost_p(0.5, 0.1, 0, 1.0))


def test_holm_counts_a_claims_two_tests_once_until_both_are_rejected():
    # claim a: difference 0.01, equivalence 0.02; claim b: 0.03 -> multipliers 2, 2, 1 (a still open, then b alone)
    assert holm([0.01, 0.02, 0.03], units=["a", "a", "b"]) == pytest.approx([0.02, 0.04, 0.04])
    assert holm([0.01, 0.04, 0.03]) == pytest.approx(holm([0.01, 0.04, 0.03], units=[0, 1, 2]))


def test_power_matches_statsmodels_and_the_seeds_for_it_are_the_first_enough():
    from statsmodels.stats.power import TTestPower
    for d, n, alpha in ((0.5, 10, 0.05), (1.2, 4, 0.01), (0.3, 40, 0.05 / 7)):
        assert t_power(d, 1 / math.sqrt(n), n - 1, alpha) == pytest.approx(TTestPower().power(d, n, alpha))
    n = seeds_for_power(0.5, lambda k: 1 / math.sqrt(k), lambda k: k - 1, 0.05 / 3)
    assert TTestPower().power(0.5, n, 0.05 / 3) >= 0.8 > TTestPower().power(0.5, n - 1, 0.05 / 3)
    assert seeds_for_power(0.0, lambda k: 1.0, lambda k: k - 1, 0.05) is None
