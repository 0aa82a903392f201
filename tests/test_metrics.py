"""Evaluation metrics against numbers worked out by hand (in each docstring)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from valign_ray.eval.bootstrap import bootstrap_ci
from valign_ray.eval.metrics import (
    calibration,
    expected_calibration_error,
    group_representativeness,
    indifferent_representativeness,
    majority_agreement,
    mean_representativeness,
    mean_skill_score,
    preference_accuracy,
    representativeness,
    skill_score,
    spread,
    wasserstein_ordinal,
    weighted_distribution,
    weighted_margin,
    worst_group,
)


def test_w1_three_options_by_hand() -> None:
    """p=[.2,.3,.5], q=[.5,.3,.2]: CDFs [.2,.5,1] vs [.5,.8,1] -> W1=.3+.3=.6 -> A=1-.6/2=.7."""
    p, q = [0.2, 0.3, 0.5], [0.5, 0.3, 0.2]
    assert wasserstein_ordinal(p, q) == pytest.approx(0.6)
    assert wasserstein_ordinal(q, p) == pytest.approx(0.6)
    assert representativeness(p, q) == pytest.approx(0.7)
    assert representativeness(p, p) == pytest.approx(1.0)


def test_w1_five_options_by_hand() -> None:
    """p=[.1,.2,.4,.2,.1], q=[0,0,0,.5,.5]: CDFs [.1,.3,.7,.9,1] vs [0,0,0,.5,1]
    -> W1 = .1+.3+.7+.4 = 1.5 -> A = 1 - 1.5/4 = .625.
    Extremes: all mass on option 1 vs option 5 -> W1 = 4 (= N-1) -> A = 0."""
    p, q = [0.1, 0.2, 0.4, 0.2, 0.1], [0, 0, 0, 0.5, 0.5]
    assert wasserstein_ordinal(p, q) == pytest.approx(1.5)
    assert representativeness(p, q) == pytest.approx(0.625)
    assert wasserstein_ordinal([1, 0, 0, 0, 0], [0, 0, 0, 0, 1]) == pytest.approx(4.0)
    assert representativeness([1, 0, 0, 0, 0], [0, 0, 0, 0, 1]) == pytest.approx(0.0)


def test_w1_matches_scipy_when_available() -> None:
    """Independent implementation: scipy's W1 between weighted point masses at 1..N."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
        support = np.arange(1, 7)
        want = stats.wasserstein_distance(support, support, p, q)
        assert wasserstein_ordinal(p, q) == pytest.approx(want)


def test_two_options_identity() -> None:
    """N=2: A = 1 - |p_model - p_pop| (the only CDF difference is |p - q| at option 1)."""
    rng = np.random.default_rng(0)
    for pm, pp in rng.uniform(size=(50, 2)):
        want = 1 - abs(pm - pp)
        assert representativeness([pm, 1 - pm], [pp, 1 - pp]) == pytest.approx(want)
    assert representativeness([0.8, 0.2], [0.5, 0.5]) == pytest.approx(0.7)


def test_mean_representativeness() -> None:
    """Items: (the 3-option example above, A=.7) and a 3-option identity (A=1) -> mean .85."""
    pm = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    pp = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    assert mean_representativeness(pm, pp) == pytest.approx(0.85)


def test_skill_score_by_hand() -> None:
    """S = (A - A_0) / (1 - A_0): (.9, .8) -> .1/.2 = .5; (.8, .8) -> 0; (.7, .8) -> -.5.
    Uniform [1/3]*3 vs q = [.5,.3,.2]: CDFs [1/3,2/3] vs [.5,.8] -> W1 = 1/6 + 2/15 = .3
    -> A_0 = 1 - .3/2 = .85. Uniform vs [.1,.1,.8]: 7/30 + 14/30 = .7 -> A_0 = .65.
    Items (p=[.2,.3,.5] vs [.5,.3,.2]: A .7) and (identity on [.1,.1,.8]: A 1):
    mean A .85, mean A_0 .75 -> S = .1/.25 = .4 (on item means, not a mean of ratios).
    Two options: the model at p = .5 scores A_0 = 1 - |.5 - q|, so q = .8 -> .7."""
    assert skill_score(0.9, 0.8) == pytest.approx(0.5)
    assert skill_score(0.8, 0.8) == pytest.approx(0.0)
    assert skill_score(0.7, 0.8) == pytest.approx(-0.5)
    assert indifferent_representativeness([0.5, 0.3, 0.2]) == pytest.approx(0.85)
    assert indifferent_representativeness([0.1, 0.1, 0.8]) == pytest.approx(0.65)
    assert indifferent_representativeness([0.8, 0.2]) == pytest.approx(0.7)
    pm = [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]
    pp = [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]
    assert mean_skill_score(pm, pp) == pytest.approx(0.4)
    assert mean_skill_score([[1 / 3] * 3] * 2, pp) == pytest.approx(0.0)  # hedging: no skill
    with pytest.raises(ValueError, match="A_0 = 1"):
        skill_score(1.0, 1.0)
    with pytest.raises(ValueError, match="A_0 = 1"):
        mean_skill_score([[0.9, 0.1]], [[0.5, 0.5]])


def test_distribution_validation() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        wasserstein_ordinal([0.5, 0.6], [0.5, 0.5])
    with pytest.raises(ValueError, match="different numbers"):
        wasserstein_ordinal([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match=">= 0"):
        representativeness([1.5, -0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="items"):
        mean_representativeness(np.ones((2, 3)) / 3, np.ones((3, 3)) / 3)


def test_weighted_distribution_by_hand() -> None:
    """values [1,3,3,2], weights [1,2,1,4], total 8: option 1 -> 1/8, option 2 -> 4/8,
    option 3 -> (2+1)/8 = 3/8, option 4 -> 0."""
    got = weighted_distribution(np.array([1, 3, 3, 2]), [1, 2, 1, 4], 4)
    np.testing.assert_allclose(got, [0.125, 0.5, 0.375, 0.0])
    with pytest.raises(ValueError, match="outside 1..3"):
        weighted_distribution(np.array([1, 4]), [1, 1], 3)
    with pytest.raises(ValueError, match="integer"):
        weighted_distribution(np.array([1.0, 2.0]), [1, 1], 3)


def _survey() -> tuple[pl.DataFrame, pl.DataFrame]:
    respondents = pl.DataFrame(
        {
            "respondent_id": ["r1", "r2", "r3", "r4"],
            "region": ["north", "north", "south", "south"],
            "weight": [1.0, 3.0, 1.0, 1.0],
        }
    )
    answers = pl.DataFrame(
        {
            "respondent_id": ["r1", "r2", "r3", "r4", "r1", "r3", "r2"],
            "item_id": ["s1", "s1", "s1", "s1", "s2", "s2", "p1"],
            "kind": ["likert"] * 6 + ["rating"],
            "value": [1, 3, 3, 3, 2, 2, 1],
        }
    )
    return respondents, answers


def test_group_representativeness_by_hand() -> None:
    """model s1 = [0,0,1], s2 = [0,1] (2 options).
    north on s1: r1 says 1 (w1), r2 says 3 (w3) -> [.25,0,.75]; CDFs [.25,.25,1] vs [0,0,1]
      -> W1 = .5 -> A = 1 - .5/2 = .75. north on s2: r1 says 2 -> [0,1] -> A = 1.
      north mean = (.75 + 1)/2 = .875.
    south on s1: both say 3 -> A = 1; s2: r3 says 2 -> A = 1; south mean = 1.
    all on s1: weights 1,3,1,1 -> [1/6,0,5/6] -> W1 = 1/6+1/6 = 1/3 -> A = 1 - 1/6 = 5/6;
      s2: A = 1; mean = 11/12. The rating answer p1 is not a likert answer and is ignored."""
    respondents, answers = _survey()
    model = {"s1": np.array([0.0, 0.0, 1.0]), "s2": np.array([0.0, 1.0])}
    table = group_representativeness(model, answers, respondents, "region")
    assert table["group"].to_list() == ["north", "south"]
    assert table["n_respondents"].to_list() == [2, 2]
    assert table["n_items"].to_list() == [2, 2]
    np.testing.assert_allclose(table["representativeness"].to_numpy(), [0.875, 1.0])
    # Uniform model: north s1 CDFs [1/3,2/3] vs [.25,.25] -> W1 = 1/12 + 5/12 -> A_0 = .75;
    # s2 [.5,.5] vs [0,1] -> .5; mean .625 -> skill (.875 - .625)/.375 = 2/3.
    # south: s1 [1/3,2/3] vs [0,0] -> W1 1 -> .5; s2 .5 -> A_0 .5 -> skill (1 - .5)/.5 = 1.
    # The model's top option is the group's on every item: majority agreement 1.
    np.testing.assert_allclose(table["representativeness_indifferent"].to_numpy(), [0.625, 0.5])
    np.testing.assert_allclose(table["skill"].to_numpy(), [2 / 3, 1.0])
    np.testing.assert_allclose(table["majority_agreement"].to_numpy(), [1.0, 1.0])
    assert worst_group(table) == ("north", pytest.approx(0.875))
    assert spread(table) == pytest.approx(0.125)

    overall = group_representativeness(model, answers, respondents, None)
    assert overall["group"].to_list() == ["all"]
    assert overall["representativeness"][0] == pytest.approx(11 / 12)
    # all, s1 [1/6,0,5/6]: CDFs [1/3,2/3] vs [1/6,1/6] -> W1 2/3 -> A_0 2/3; s2 .5 -> 7/12;
    # skill (11/12 - 7/12) / (5/12) = .8.
    assert overall["representativeness_indifferent"][0] == pytest.approx(7 / 12)
    assert overall["skill"][0] == pytest.approx(0.8)
    unweighted = group_representativeness(model, answers, respondents, None, weight_col=None)
    # s1 unweighted: [1/4,0,3/4] -> A = .75; s2 -> 1; mean .875.
    assert unweighted["representativeness"][0] == pytest.approx(0.875)


def test_group_representativeness_rejects_gaps() -> None:
    respondents, answers = _survey()
    model = {"s1": np.array([0.0, 0.0, 1.0]), "s2": np.array([0.0, 1.0])}
    with pytest.raises(ValueError, match="without a model distribution"):
        group_representativeness({"s1": model["s1"]}, answers, respondents, "region")
    with pytest.raises(ValueError, match="no likert answers"):
        group_representativeness({**model, "s9": np.ones(3) / 3}, answers, respondents, "region")
    with pytest.raises(ValueError, match="not in respondents"):
        group_representativeness(
            model, answers, respondents.filter(pl.col("respondent_id") != "r4"), "region"
        )
    with pytest.raises(ValueError, match="missing column 'weight'"):
        group_representativeness(model, answers, respondents.drop("weight"), "region")
    bad = answers.with_columns(
        pl.when(pl.col("respondent_id") == "r1").then(9).otherwise(pl.col("value")).alias("value")
    )
    with pytest.raises(ValueError, match="group 'north', item 's1'.*outside 1..3"):
        group_representativeness(model, bad, respondents, "region")


def test_preference_accuracy_and_margin_by_hand() -> None:
    """p = [.9, .4, .5, .7], w = [1, 2, 1, 4] -> correct [1, 0, 1/2 (tie), 1]
    -> (1 + 0 + .5 + 4)/8 = 5.5/8 = .6875; unweighted 2.5/4 = .625.
    margins [1, -2, 0, 3], w as above -> (1 - 4 + 0 + 12)/8 = 9/8."""
    p, w = [0.9, 0.4, 0.5, 0.7], [1, 2, 1, 4]
    assert preference_accuracy(p, w) == pytest.approx(0.6875)
    assert preference_accuracy(p) == pytest.approx(0.625)
    assert weighted_margin([1, -2, 0, 3], w) == pytest.approx(9 / 8)
    assert weighted_margin([1, -2, 0, 3]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="within"):
        preference_accuracy([1.2])
    with pytest.raises(ValueError, match="shape"):
        preference_accuracy([0.2, 0.8], [1.0])


def test_majority_agreement_by_hand() -> None:
    """Binary: model [.8,.3,.5,.6] vs pop [.7,.4,.9,.2] -> [agree, agree, tie 1/2, disagree]
    -> 2.5/4 = .625; item weights [1,1,2,4] -> (1+1+1+0)/8 = .375.
    3 options: model [.5,.3,.2] top {1}, pop [.4,.4,.2] top {1,2} -> 1/(1*2) = .5;
    model [.1,.1,.8] vs pop [.2,.2,.6] -> 1 -> mean .75."""
    pm, pp = [0.8, 0.3, 0.5, 0.6], [0.7, 0.4, 0.9, 0.2]
    assert majority_agreement(pm, pp) == pytest.approx(0.625)
    assert majority_agreement(pm, pp, [1, 1, 2, 4]) == pytest.approx(0.375)
    pm3 = [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]
    pp3 = [[0.4, 0.4, 0.2], [0.2, 0.2, 0.6]]
    assert majority_agreement(pm3, pp3) == pytest.approx(0.75)


def test_calibration_table_and_ece_by_hand() -> None:
    """4 bins of width .25. p = [.1, .2, .6, .7, .9], y = [0, 1, 1, 0, 1], w = [1,1,2,2,1].
    bin 0: p .1,.2 (w 1,1): mean_pred .15, frac_pos .5, weight 2.
    bin 1: empty.  bin 2: p .6,.7 (w 2,2): mean_pred .65, frac_pos .5, weight 4.
    bin 3: p .9: mean_pred .9, frac_pos 1, weight 1.
    ECE = (2*.35 + 4*.15 + 1*.1)/7 = (.7 + .6 + .1)/7 = 1.4/7 = .2."""
    p, y, w = [0.1, 0.2, 0.6, 0.7, 0.9], [0, 1, 1, 0, 1], [1, 1, 2, 2, 1]
    table = calibration(p, y, w, n_bins=4)
    assert table.height == 4
    assert table["n"].to_list() == [2, 0, 2, 1]
    np.testing.assert_allclose(table["weight"].to_numpy(), [2, 0, 4, 1])
    assert table["mean_pred"].to_list()[1] is None
    np.testing.assert_allclose(table["mean_pred"].drop_nulls().to_numpy(), [0.15, 0.65, 0.9])
    np.testing.assert_allclose(table["frac_pos"].drop_nulls().to_numpy(), [0.5, 0.5, 1.0])
    assert expected_calibration_error(p, y, w, n_bins=4) == pytest.approx(0.2)
    # p = 1 belongs to the last bin; a perfectly calibrated 0/1 forecaster has ECE 0.
    assert expected_calibration_error([1.0, 0.0], [1, 0], n_bins=4) == pytest.approx(0.0)


def test_bootstrap_degenerate_and_cluster_rows() -> None:
    """Constant data -> the interval collapses onto the value. With per-row ids, a replicate
    contains either all rows of a respondent or none (here r1 has 3 rows, r2 one)."""
    est, lo, hi = bootstrap_ci(lambda idx: 0.3, 10, n_boot=20)
    assert (est, lo, hi) == (0.3, 0.3, 0.3)

    ids = np.array(["r1", "r2", "r1", "r1"])
    seen: list[np.ndarray] = []

    def stat(idx: np.ndarray) -> float:
        seen.append(idx.copy())
        return float(len(idx))

    est, lo, hi = bootstrap_ci(stat, ids, n_boot=50, seed=3)
    assert est == 4.0
    np.testing.assert_array_equal(np.sort(seen[0]), [0, 1, 2, 3])
    for idx in seen[1:]:
        counts = np.bincount(idx, minlength=4)
        assert counts[0] == counts[2] == counts[3]  # r1's rows travel together
        assert counts[0] + counts[1] == 2  # two respondents drawn
    assert lo >= 2.0 and hi <= 6.0  # 2 draws: {r2,r2}=2 rows ... {r1,r1}=6 rows


def test_bootstrap_reweight_receives_drawn_respondents() -> None:
    """reweight gets the drawn ids (duplicates kept); rows inherit their respondent's weight."""
    ids = np.array(["a", "b", "b"])
    calls: list[tuple[list[str], list[float]]] = []

    def reweight(drawn: np.ndarray) -> np.ndarray:
        return np.where(drawn == "a", 2.0, 5.0)

    def stat(idx: np.ndarray, w: np.ndarray) -> float:
        calls.append((ids[idx].tolist(), w.tolist()))
        return float(w.sum())

    est, _, _ = bootstrap_ci(stat, ids, n_boot=10, reweight=reweight)
    assert est == 2.0 + 5.0 + 5.0
    for rows, w in calls:
        assert w == [2.0 if r == "a" else 5.0 for r in rows]
    with pytest.raises(ValueError, match="one weight per drawn"):
        bootstrap_ci(stat, ids, n_boot=2, reweight=lambda d: np.ones(1))


def _stratified_sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Population: strata A, B, half each, P(y=1) .2 and .4 -> true mean .3. The sample
    oversamples A (80%), so design weights are .5/.8 = .625 (A) and .5/.2 = 2.5 (B)."""
    in_a = rng.uniform(size=n) < 0.8
    y = rng.uniform(size=n) < np.where(in_a, 0.2, 0.4)
    w = np.where(in_a, 0.625, 2.5)
    return in_a, y.astype(float), w


def test_bootstrap_coverage_simulation() -> None:
    """200 samples of 150 from the population above; the 95% interval of the weighted mean
    (sum w y / sum w) must cover the true .3 in 88-99% of them (nominal 95%)."""
    rng = np.random.default_rng(2024)
    covered = 0
    for sim in range(200):
        _, y, w = _stratified_sample(rng, 150)
        _, lo, hi = bootstrap_ci(
            lambda idx, y=y, w=w: np.sum(w[idx] * y[idx]) / np.sum(w[idx]),
            150,
            n_boot=200,
            seed=sim,
        )
        covered += lo <= 0.3 <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_coverage_with_reraking() -> None:
    """Same, re-post-stratifying each replicate to the known 50/50 strata (the caller's
    re-raking): weight = .5 / (share of the stratum in the replicate). 100 simulations,
    coverage must land in 85-100% (wider band: fewer simulations)."""
    rng = np.random.default_rng(7)
    covered = 0
    for sim in range(100):
        in_a, y, _ = _stratified_sample(rng, 150)
        if in_a.all() or not in_a.any():
            continue

        def rerake(drawn: np.ndarray, in_a: np.ndarray = in_a) -> np.ndarray:
            share_a = in_a[drawn].mean()
            if share_a in (0.0, 1.0):
                return np.ones(drawn.size)  # a replicate without one stratum: no correction
            return np.where(in_a[drawn], 0.5 / share_a, 0.5 / (1 - share_a))

        _, lo, hi = bootstrap_ci(
            lambda idx, ww, y=y: np.sum(ww * y[idx]) / np.sum(ww),
            150,
            n_boot=200,
            seed=sim,
            reweight=rerake,
        )
        covered += lo <= 0.3 <= hi
    assert 0.85 <= covered / 100 <= 1.0


def test_bootstrap_validation() -> None:
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(lambda idx: 0.0, 5, alpha=1.5)
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci(lambda idx: float("nan"), 5)
