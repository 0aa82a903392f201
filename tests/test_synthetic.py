"""Tests of the synthetic population and its biased survey sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from valign_ray.config import SyntheticConfig
from valign_ray.survey.synthetic import DIMENSIONS, generate_synthetic
from valign_ray.survey.tables import ANSWER_COLUMNS, CANDIDATE_COLUMNS, ITEM_COLUMNS
from valign_ray.survey.weighting import rake_to_margins

# The group margins of data/margins/nz_2023.csv, inline so these tests do not depend on it.
MARGINS = {
    "age_band": {"15-64": 0.7958179582, "65+": 0.2041820418},
    "gender": {"female": 0.504, "male": 0.496},
    "region_group": {
        "Auckland": 0.3391887452,
        "Wellington": 0.1039673798,
        "Rest of North Island": 0.3247144762,
        "South Island": 0.2321293988,
    },
}
FRAMES = ("respondents", "items", "candidates", "answers", "truth", "flips")


@pytest.fixture(scope="module")
def survey():
    return generate_synthetic(SyntheticConfig(), MARGINS)


def _truth_all(survey, kind: str) -> pl.DataFrame:
    return survey.truth.filter((pl.col("kind") == kind) & (pl.col("variable") == "all")).select(
        "item_id", "response_id", "share"
    )


def _estimates(answers: pl.DataFrame, weights: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """(Weighted) sample estimates of the three kinds of ``truth`` share:
    rating: sum w * value / sum w per response; pairwise: the pole-positive response's win share;
    likert: share answering 4 or 5."""
    a = answers.join(weights, on="respondent_id")
    est = lambda frame, keys, hit: frame.group_by(keys).agg(  # noqa: E731
        ((hit * pl.col("w")).sum() / pl.col("w").sum()).alias("estimate")
    )
    rating = a.filter(pl.col("kind") == "rating")
    likert = a.filter(pl.col("kind") == "likert")
    # a pairwise row names the winner; share for response x = weight where x won / all weight
    pairs = a.filter(pl.col("kind") == "pairwise")
    pairs = pl.concat(
        [
            pairs.select("respondent_id", "item_id", "w", x="response_id", won=pl.lit(1)),
            pairs.select("respondent_id", "item_id", "w", x="response_b_id", won=pl.lit(0)),
        ]
    ).rename({"x": "response_id"})
    return {
        "rating": est(rating, ["item_id", "response_id"], pl.col("value")),
        "pairwise": est(pairs, ["item_id", "response_id"], pl.col("won")),
        "likert": est(likert, ["item_id"], (pl.col("value") >= 4).cast(pl.Int64)),
    }


def _mae(survey, weights: pl.DataFrame) -> dict[str, float]:
    out = {}
    for kind, est in _estimates(survey.answers, weights).items():
        keys = ["item_id"] if kind == "likert" else ["item_id", "response_id"]
        joined = _truth_all(survey, kind).join(est, on=keys, how="inner")
        assert joined.height == _truth_all(survey, kind).height  # every truth row estimated
        out[kind] = float((joined["share"] - joined["estimate"]).abs().mean())
    return out


def test_same_seed_same_frames_other_seed_differs():
    a, b = (generate_synthetic(SyntheticConfig(seed=7), MARGINS) for _ in range(2))
    c = generate_synthetic(SyntheticConfig(seed=8), MARGINS)
    for name in FRAMES:
        assert getattr(a, name).equals(getattr(b, name)), name
    assert a.population_margins() == b.population_margins()
    for name in ("respondents", "answers", "truth"):
        assert not getattr(a, name).equals(getattr(c, name)), name


def test_sample_seed_null_is_seed_and_another_draws_another_sample_of_the_same_population():
    """sample_seed null (every config before it existed) and sample_seed == seed give the very
    same frames; another sample_seed changes who is sampled and their answers, never the
    population: truth, items, candidates and population margins are identical."""
    a = generate_synthetic(SyntheticConfig(seed=7), MARGINS)
    same = generate_synthetic(SyntheticConfig(seed=7, sample_seed=7), MARGINS)
    other = generate_synthetic(SyntheticConfig(seed=7, sample_seed=3), MARGINS)
    for name in FRAMES:
        assert getattr(a, name).equals(getattr(same, name)), name
    for name in ("truth", "items", "candidates"):
        assert getattr(a, name).equals(getattr(other, name)), name
    assert a.population_margins() == other.population_margins()
    assert other.respondents.height == a.respondents.height == 600
    for name in ("respondents", "answers"):
        assert not getattr(a, name).equals(getattr(other, name)), name
    # the unweighted sample shares move with the sample, the population shares do not
    assert a.flips["population_share"].equals(other.flips["population_share"])
    assert not a.flips["sample_share"].equals(other.flips["sample_share"])


def test_default_config_draws_the_configured_sample():
    """The defaults: 600 respondents from 20 000 people; 3 dimensions x 8 prompt items with two
    responses each (48 candidates) plus 3 x (2 + 1 consensus) statements; every respondent rates
    both responses of all 24 prompts (48 ratings), compares round(0.5 * 24) = 12 pairs and
    answers 9 statements.
    (Its speed is measured in experiments/benchmarks, not asserted here.)"""
    s = generate_synthetic(SyntheticConfig(seed=1), MARGINS)
    assert s.respondents.height == 600 and s.respondents["respondent_id"].n_unique() == 600
    assert s.items["kind"].value_counts(sort=True).rows() == [("prompt", 24), ("statement", 9)]
    assert s.candidates.height == 48
    per_person = s.answers.group_by("respondent_id", "kind").len()["kind", "len"].unique()
    assert sorted(per_person.rows()) == [("likert", 9), ("pairwise", 12), ("rating", 48)]


def test_tables_follow_canonical_schema(survey):
    dtype = {"str": pl.Utf8, "i64": pl.Int64}
    for frame, columns in (
        (survey.items, ITEM_COLUMNS),
        (survey.candidates, CANDIDATE_COLUMNS),
        (survey.answers, ANSWER_COLUMNS),
    ):
        assert frame.schema == pl.Schema({k: dtype[t] for k, t in columns.items()})
    assert survey.respondents.columns == ["respondent_id", "age_band", "gender", "region_group"]
    assert survey.respondents["respondent_id"].to_list()[:2] == ["r000000", "r000001"]
    assert survey.respondents.height == 600
    assert survey.demographics == {v: list(c) for v, c in MARGINS.items()}
    # 3 dimensions x 8 prompts + 3 x (2 + 1) statements; 2 candidates per prompt
    assert survey.items["kind"].value_counts().sort("kind").rows() == [
        ("prompt", 24),
        ("statement", 9),
    ]
    assert survey.candidates.height == 48
    assert survey.answers["free_text"].null_count() == survey.answers.height


def test_each_respondent_answers_everything_once(survey):
    """Per respondent: 24 prompts x 2 ratings = 48, pairwise on round(0.5 x 24) = 12, 9 likert."""
    counts = survey.answers.group_by("respondent_id", "kind").len()
    assert counts.filter(pl.col("kind") == "rating")["len"].unique().to_list() == [48]
    assert counts.filter(pl.col("kind") == "pairwise")["len"].unique().to_list() == [12]
    assert counts.filter(pl.col("kind") == "likert")["len"].unique().to_list() == [9]
    likert = survey.answers.filter(pl.col("kind") == "likert")
    assert likert["value"].min() >= 1 and likert["value"].max() <= 5
    assert likert["response_id"].null_count() == likert.height
    assert set(survey.answers.filter(pl.col("kind") == "pairwise")["value"]) == {1}


def test_pairwise_winner_agrees_with_unequal_ratings(survey):
    """Ratings and pairwise answers come from one preference: where a respondent rated the two
    responses differently, the pairwise winner is the one rated 1. About flip = 5% of pairs
    are rated the same (both 1 or both 0)."""
    ratings = survey.answers.filter(pl.col("kind") == "rating")
    rated = ratings.group_by("respondent_id", "item_id").agg(
        pl.col("value").sum().alias("n_good"),
        pl.col("response_id").filter(pl.col("value") == 1).first().alias("good"),
    )
    same_share = rated.filter(pl.col("n_good") != 1).height / rated.height
    assert 0.03 < same_share < 0.07
    pairs = survey.answers.filter(pl.col("kind") == "pairwise").join(
        rated, on=["respondent_id", "item_id"]
    )
    unequal = pairs.filter(pl.col("n_good") == 1)
    assert unequal.height > 0.9 * pairs.height
    assert (unequal["response_id"] == unequal["good"]).all()


def test_population_margins_match_given_margins(survey):
    """n = 20,000 draws: SE of a share p is sqrt(p(1-p)/20000), e.g. 65+ (p = 0.204) 0.0029;
    allow 4 SE."""
    got = survey.population_margins()
    for v, cats in MARGINS.items():
        assert set(got[v]) == set(cats)
        for c, p in cats.items():
            assert abs(got[v][c] - p) < 4 * np.sqrt(p * (1 - p) / 20000), (v, c)


def test_sample_is_biased_in_the_designed_direction(survey):
    """Default design: 65+ odds x3, South Island x2, men respond at 0.6. With independent
    demographics the expected sample share of a favoured group is o*p / (o*p + 1 - p):
    65+ 3*0.204/(3*0.204 + 0.796) = 0.435; South Island 2*0.232/(2*0.232 + 0.768) = 0.377;
    men 0.6*0.496/(0.6*0.496 + 0.504) = 0.371. SE at n = 600 is about 0.02; allow 0.05."""
    shares = {v: dict(survey.respondents[v].value_counts(normalize=True).rows()) for v in MARGINS}
    for (v, c), expected in {
        ("age_band", "65+"): 0.435,
        ("region_group", "South Island"): 0.377,
        ("gender", "male"): 0.371,
    }.items():
        assert abs(shares[v][c] - expected) < 0.05, (v, c, shares[v][c])
    assert shares["age_band"]["65+"] > MARGINS["age_band"]["65+"] + 0.15
    assert shares["gender"]["male"] < MARGINS["gender"]["male"] - 0.08


def test_truth_is_internally_consistent(survey):
    """Whole-population shares are the margin-weighted mean of the category shares (exact, with
    the realised population margins); a rating share = (1 - flip) * preference + flip / 2
    (about, the flips are random: allow 0.01); likert share = dist[4] + dist[5], dist sums to 1."""
    truth = survey.truth
    pop = survey.population_margins()
    overall = truth.filter(pl.col("variable") == "all")
    for v, cats in pop.items():
        by_cat = truth.filter(pl.col("variable") == v).with_columns(
            pl.col("category").replace_strict(cats, return_dtype=pl.Float64).alias("p")
        )
        mixed = by_cat.group_by("item_id", "kind", "response_id").agg(
            (pl.col("share") * pl.col("p")).sum().alias("mixed")
        )
        joined = overall.join(mixed, on=["item_id", "kind", "response_id"], nulls_equal=True)
        assert joined.height == overall.height
        assert np.allclose(joined["share"], joined["mixed"], atol=1e-9), v
    pref = _truth_all(survey, "pairwise").rename({"share": "pref"})
    rating = _truth_all(survey, "rating").join(pref, on=["item_id", "response_id"])
    assert rating.height == 24
    assert np.allclose(rating["share"], 0.95 * rating["pref"] + 0.025, atol=0.01)
    likert = overall.filter(pl.col("kind") == "likert")
    dist = np.array(likert["dist"].to_list())
    assert dist.shape == (9, 5) and np.allclose(dist.sum(axis=1), 1.0)
    assert np.allclose(likert["share"], dist[:, 3] + dist[:, 4])
    assert overall.filter(pl.col("kind") != "likert")["dist"].null_count() == 48 + 24
    prefs = pref["pref"].to_numpy()  # grid over (0.3, 0.75) plus contested items near 1/2
    assert prefs.min() >= 0.29 and prefs.max() <= 0.76 and np.all(np.abs(prefs - 0.5) > 0.002)


def test_several_sample_majorities_are_wrong(survey):
    """At least 20% of the 24 prompt items (5) have an unweighted sample majority (share of
    respondents rating the pole-positive response desirable) on the other side of 1/2 than
    the population's; the ``flips`` frame records them."""
    truth = _truth_all(survey, "pairwise")
    pos_rating = _truth_all(survey, "rating").join(truth, on=["item_id", "response_id"])
    ones = pl.DataFrame({"respondent_id": survey.respondents["respondent_id"], "w": 1.0})
    sample = _estimates(survey.answers, ones)["rating"]
    joined = pos_rating.join(sample, on=["item_id", "response_id"])
    wrong = ((joined["share"] > 0.5) != (joined["estimate"] > 0.5)).sum()
    print(f"\nsample majority != population majority on {wrong} of {joined.height} items")
    assert joined.height == 24 and wrong >= 5
    assert survey.flips["flipped"].sum() >= 5
    assert survey.flips["contested"].sum() == 6  # 0.25 x 24, placed to flip
    flips = survey.flips.join(truth, on="item_id")
    assert np.allclose(flips["population_share"], flips["share"])


def test_no_bias_means_no_contested_items():
    """With uniform selection the expected sample median is the population median: nothing to
    contest, and the sample's 65+ share is the margin's 0.204 (SE 0.016 at n = 600; allow 4)."""
    spec = SyntheticConfig(oversample={}, response_rate={})
    s = generate_synthetic(spec, MARGINS)
    assert not s.flips["contested"].any()
    share_65 = (s.respondents["age_band"] == "65+").mean()
    assert abs(share_65 - 0.204) < 0.065


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_raking_brings_sample_estimates_closer_to_the_population(seed):
    """THE KEY PROPERTY: shares weighted by raking to the population margins are closer to the
    population truth than unweighted shares (mean absolute error over items, per answer kind),
    and get more population majorities right."""
    s = generate_synthetic(SyntheticConfig(seed=seed), MARGINS)
    raked = rake_to_margins(s.respondents, s.population_margins()).respondents
    weighted = _mae(s, raked.select("respondent_id", w="weight"))
    unweighted = _mae(s, raked.select("respondent_id", w=pl.lit(1.0)))
    print(f"\nseed {seed} MAE unweighted {unweighted}\nseed {seed} MAE weighted   {weighted}")
    for kind in ("rating", "pairwise", "likert"):
        assert weighted[kind] < unweighted[kind], kind
    assert weighted["rating"] < 0.75 * unweighted["rating"]


def test_item_texts_carry_shared_pole_markers(survey):
    """Each prompt reads "Question: Should <topic>?\\nAnswer:" with its own topic; every
    pole-positive response starts with one of its dimension's positive markers (negative
    likewise); all text is ASCII and short (at most 20 words, about 30 tokens)."""
    truth = _truth_all(survey, "pairwise").select("item_id", pos="response_id")
    cands = survey.candidates.join(truth, on="item_id").join(
        survey.items.select("item_id", "dimension"), on="item_id"
    )
    by_name = {d.name: d for d in DIMENSIONS}
    for item_id, response_id, text, pos, dim in cands.iter_rows():
        d = by_name[dim]
        markers = d.positive_markers if response_id == pos else d.negative_markers
        assert any(text.startswith(f" {m}, because ") for m in markers), (item_id, text)
    prompts = survey.items.filter(pl.col("kind") == "prompt")
    assert prompts["text"].str.contains(r"^Question: Should [^?\n]+\?\nAnswer:$").all()
    assert prompts["text"].n_unique() == prompts.height
    texts = survey.items["text"].to_list() + survey.candidates["text"].to_list()
    assert all(t.isascii() and len(t.split()) <= 20 for t in texts)


@pytest.mark.parametrize(
    ("spec", "margins", "message"),
    [
        (SyntheticConfig(), {"age_band": MARGINS["age_band"]}, "no variable 'gender'"),
        (SyntheticConfig(), {**MARGINS, "gender": {"female": 0.5, "male": 0.4}}, "sum to 0.9"),
        (
            SyntheticConfig(oversample={"age_band": {"75+": 2.0}}),
            MARGINS,
            r"unknown category '75\+'",
        ),
        (SyntheticConfig(response_rate={"gender": {"male": 1.5}}), MARGINS, r"\['male'\]=1.5"),
        (SyntheticConfig(n_sample=30000), MARGINS, "n_sample=30000"),
        (SyntheticConfig(n_dimensions=9), MARGINS, "n_dimensions=9"),
    ],
)
def test_bad_input_raises_naming_the_field(spec, margins, message):
    with pytest.raises(ValueError, match=message):
        generate_synthetic(spec, margins)


def test_shipped_margins_file_works():
    path = Path(__file__).resolve().parents[1] / "data" / "margins" / "nz_2023.csv"
    load_margins = pytest.importorskip("valign_ray.survey.margins").load_margins
    if not path.exists():
        pytest.skip(f"{path} not written yet")
    s = generate_synthetic(SyntheticConfig(n_population=2000, n_sample=100), load_margins(path))
    assert s.respondents.height == 100
    assert set(s.demographics) == {"age_band", "gender", "region_group"}


def test_default_survey_has_consensus_and_divisive_statements():
    """The defaults give a non-empty constitution: each dimension's consensus statement
    (``<dim>_c0``, ``0.25 theta + L + 2.8``: P(agree) about 0.82 even at theta = -2) is agreed by
    >= 60% of every age band, gender and region, weighted; the divisive ``_s`` statements
    (``theta + L -/+ 1``: about 40% agree overall) are not. Consensus statements add answers but
    leave every other answer of the survey unchanged (their noise has its own stream)."""
    from valign_ray.survey.constitution import build_constitution

    for seed in (0, 1, 2):
        s = generate_synthetic(SyntheticConfig(seed=seed), MARGINS)
        raked = rake_to_margins(s.respondents, s.population_margins()).respondents
        for group in ("age_band", "gender", "region_group"):
            kept = {
                p.item_id
                for p in build_constitution(s.items, s.answers, raked, group_col=group).principles
            }
            assert kept == {f"{d.name}_c0" for d in DIMENSIONS[:3]}, (seed, group)
    without = generate_synthetic(SyntheticConfig(consensus_per_dimension=0), MARGINS)
    with_ = generate_synthetic(SyntheticConfig(), MARGINS)
    not_consensus = ~pl.col("item_id").str.contains(r"_c\d+$")
    assert with_.answers.filter(not_consensus).equals(without.answers)
    assert with_.items.filter(not_consensus).equals(without.items)
