"""Representation of the population against known truth: metrics by hand, model preferences
against a direct, unbatched forward pass, and one end-to-end check on the smoke run."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from valign_ray.eval.representation import (
    data_preferences,
    model_pair_preferences,
    paired_difference,
    pole_pairs,
    representation_table,
)

ITEMS = ["i1", "i2", "i3"]
P_MODEL = [0.8, 0.3, 0.5]
# population and group shares preferring the pole-positive response, per item
SHARES = {
    ("all", "all"): [0.6, 0.4, 0.7],
    ("age_band", "young"): [0.9, 0.2, 0.6],
    ("age_band", "old"): [0.3, 0.6, 0.8],
}


def _truth(shares: dict = SHARES, items: list[str] = ITEMS) -> pl.DataFrame:
    rows = []
    for (v, c), values in shares.items():
        for item, s in zip(items, values, strict=True):
            rows.append((item, "pairwise", f"{item}_r1", v, c, s))
            # rating rows must be ignored: give them absurd shares
            rows.append((item, "rating", f"{item}_r2", v, c, 0.0))
    frame = pl.DataFrame(
        rows,
        schema=["item_id", "kind", "response_id", "variable", "category", "share"],
        orient="row",
    )
    return frame.with_columns(pl.lit(None, dtype=pl.List(pl.Float64)).alias("dist"))


def _p(values: list[float] = P_MODEL, items: list[str] = ITEMS) -> pl.DataFrame:
    return pl.DataFrame({"item_id": items, "p_logprob": values})


def test_representation_table_by_hand() -> None:
    """p = [0.8, 0.3, 0.5]
    population q = [0.6, 0.4, 0.7]: A = mean(1-.2, 1-.1, 1-.2) = 2.5/3 = 0.8333
    young [0.9, 0.2, 0.6]: A = mean(.9, .9, .9) = 0.9
    old   [0.3, 0.6, 0.8]: A = mean(.5, .7, .7) = 1.9/3 = 0.6333 -> worst; spread 0.2667
    majority: i1 pos/pos 1, i2 neg/neg 1, i3 p = .5 tie -> 1/2: 2.5/3 = 0.8333
    margin-weighted, w = |2q - 1| = [.2, .2, .4]: (.2 + .2 + .4 * .5) / .8 = 0.75
    flipped {i2, i3}: (1 + 0.5) / 2 = 0.75
    indifferent (p = .5): A = mean(1-.1, 1-.1, 1-.2) = 2.6/3; skill = (2.5/3 - 2.6/3) /
    (1 - 2.6/3) = -.1/.4 = -0.25: this model is worse than one that always hedges
    """
    t = representation_table(
        _p(), _truth(), variables=["age_band"], flipped=["i2", "i3"], n_boot=200
    )
    assert t["n_items"] == 3 and t["n_flipped"] == 2
    assert t["population"]["estimate"] == pytest.approx(2.5 / 3)
    groups = {g["group"]: g["estimate"] for g in t["groups"]}
    assert groups == pytest.approx({"age_band=old": 1.9 / 3, "age_band=young": 0.9})
    assert t["worst_group"]["group"] == "age_band=old"
    assert t["worst_group"]["estimate"] == pytest.approx(1.9 / 3)
    assert t["spread"]["estimate"] == pytest.approx(0.9 - 1.9 / 3)
    assert t["majority_agreement"]["estimate"] == pytest.approx(2.5 / 3)
    assert t["majority_agreement_margin_weighted"]["estimate"] == pytest.approx(0.75)
    assert t["majority_agreement_flipped"]["estimate"] == pytest.approx(0.75)
    assert t["population_indifferent"]["estimate"] == pytest.approx(2.6 / 3)
    assert t["skill"]["estimate"] == pytest.approx(-0.25)
    assert t["groups_without_people"] == []
    # A_young is 0.9 on every item: every item resample gives 0.9, a zero-width interval
    young = next(g for g in t["groups"] if g["group"] == "age_band=young")
    assert young["lo"] == pytest.approx(0.9) and young["hi"] == pytest.approx(0.9)
    # the population interval lies within the item scores' range [0.8, 0.9]
    pop = t["population"]
    assert 0.8 - 1e-12 <= pop["lo"] <= pop["estimate"] <= pop["hi"] <= 0.9 + 1e-12
    # independent cross-check of A(population): 1 - mean |p - q|
    assert pop["estimate"] == pytest.approx(
        1 - np.mean(np.abs(np.subtract(P_MODEL, [0.6, 0.4, 0.7])))
    )


def test_no_flipped_items_and_item_order() -> None:
    """Rows of p_model in any order align with the truth by item id."""
    shuffled = _p([0.5, 0.3, 0.8], ["i3", "i2", "i1"])
    t = representation_table(shuffled, _truth(), variables=["age_band"], n_boot=50)
    assert t["population"]["estimate"] == pytest.approx(2.5 / 3)
    assert t["majority_agreement_flipped"] is None and t["n_flipped"] == 0


def test_empty_group_is_listed_not_dropped_silently() -> None:
    shares = {**SHARES, ("age_band", "nobody"): [math.nan] * 3}
    t = representation_table(_p(), _truth(shares), variables=["age_band"], n_boot=20)
    assert t["groups_without_people"] == ["age_band=nobody"]
    assert len(t["groups"]) == 2
    partial = {**SHARES, ("age_band", "some"): [0.5, math.nan, 0.5]}
    with pytest.raises(ValueError, match="age_band=some"):
        representation_table(_p(), _truth(partial), variables=["age_band"], n_boot=20)


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="variable 'gender'"):
        representation_table(_p(), _truth(), variables=["gender"])
    with pytest.raises(ValueError, match="i4"):
        representation_table(_p(P_MODEL + [0.5], ITEMS + ["i4"]), _truth(), variables=[])
    with pytest.raises(ValueError, match="flipped"):
        representation_table(_p(), _truth(), variables=["age_band"], flipped=["zz"])
    with pytest.raises(ValueError, match="p_implicit"):
        representation_table(_p(), _truth(), variables=[], column="p_implicit")
    with pytest.raises(ValueError, match="probabilities"):
        representation_table(_p([0.5, 1.5, 0.5]), _truth(), variables=[])


def test_paired_difference_by_hand() -> None:
    """a = [0.8, 0.3, 0.5]: A = 0.8333, majority 0.8333 (above).
    b = [0.5, 0.5, 0.5]: A = mean(.9, .9, .8) = 0.8667, majority 1/2 everywhere = 0.5.
    a - b: dA = -0.0333, d majority = +0.3333; flipped {i2}: 1 - 0.5 = +0.5.
    """
    d = paired_difference(_p(), _p([0.5] * 3), _truth(), flipped=["i2"], n_boot=200)
    assert d["population"]["estimate"] == pytest.approx(2.5 / 3 - 2.6 / 3)
    assert d["majority_agreement"]["estimate"] == pytest.approx(2.5 / 3 - 0.5)
    assert d["majority_agreement_flipped"]["estimate"] == pytest.approx(0.5)
    # per-item A differences are [-.1, 0, 0]: every resample's mean lies in [-0.1, 0]
    assert -0.1 - 1e-12 <= d["population"]["lo"] <= d["population"]["hi"] <= 1e-12


# ---- model preferences --------------------------------------------------------------------

PROMPTS = {
    "q1": "Question: Should the council protect the bush?\nAnswer:",
    "q2": "Question: Should the council sell the harbour?\nAnswer:",
}
RESPONSES = {
    ("q1", "q1_r1"): " Yes, protect the native bush.",
    ("q1", "q1_r2"): " No, keep costs low for families.",
    ("q2", "q2_r1"): " No, keep costs low for families.",
    ("q2", "q2_r2"): " Yes, protect the native bush.",
}


def _tables() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    items = pl.DataFrame(
        {
            "item_id": ["q1", "q2", "s1"],
            "kind": ["prompt", "prompt", "statement"],
            "text": [PROMPTS["q1"], PROMPTS["q2"], "A statement."],
        }
    )
    candidates = pl.DataFrame(
        [(i, r, t) for (i, r), t in RESPONSES.items()],
        schema=["item_id", "response_id", "text"],
        orient="row",
    )
    # pole-positive: q1_r1 and q2_r2 (the "protect" response in both)
    truth = _truth({("all", "all"): [0.7, 0.4]}, items=["q1", "q2"]).with_columns(
        pl.when(pl.col("item_id") == "q2")
        .then(pl.lit("q2_r2"))
        .otherwise(pl.col("response_id"))
        .alias("response_id")
    )
    return items, candidates, truth


def _direct_logps(model, tok, prompt: str, completion: str) -> tuple[float, int]:
    """Unbatched, unpadded forward pass: sum of log p(completion tokens, EOS included)."""
    import torch

    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p_ids + c_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    total = sum(float(logp[len(p_ids) + k - 1, t]) for k, t in enumerate(c_ids))
    return total, len(c_ids)


def test_model_pair_preferences_match_direct_computation(tiny_model_dir) -> None:
    import torch

    from valign_ray.models import load_model, load_tokenizer

    tok, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    reference = load_model(tiny_model_dir)
    torch.manual_seed(0)
    with torch.no_grad():  # a different reference, so the implicit reward is not 0
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    items, candidates, truth = _tables()
    out = model_pair_preferences(
        model, tok, items, candidates, truth, reference=reference, beta=0.5, batch_size=3
    )
    assert out["item_id"].to_list() == ["q1", "q2"]
    assert out["pos_id"].to_list() == ["q1_r1", "q2_r2"]
    assert out["neg_id"].to_list() == ["q1_r2", "q2_r1"]
    for row in out.iter_rows(named=True):
        prompt = PROMPTS[row["item_id"]]
        pos = RESPONSES[(row["item_id"], row["pos_id"])]
        neg = RESPONSES[(row["item_id"], row["neg_id"])]
        (sp, np_), (sn, nn) = (_direct_logps(model, tok, prompt, c) for c in (pos, neg))
        (rp, _), (rn, _) = (_direct_logps(reference, tok, prompt, c) for c in (pos, neg))
        assert row["logp_sum_pos"] == pytest.approx(sp, abs=1e-4)
        assert row["logp_mean_neg"] == pytest.approx(sn / nn, abs=1e-5)
        expected = 1 / (1 + math.exp(-(sp / np_ - sn / nn)))
        assert row["p_logprob"] == pytest.approx(expected, abs=1e-5)
        implicit = 1 / (1 + math.exp(-0.5 * ((sp - rp) - (sn - rn))))
        assert row["p_implicit"] == pytest.approx(implicit, abs=1e-4)
    # the model as its own reference: no implicit preference at all
    same = model_pair_preferences(model, tok, items, candidates, truth, reference=model, beta=0.1)
    assert same["p_implicit"].to_list() == [0.5, 0.5]


def test_pole_pairs_reject_bad_tables() -> None:
    items, candidates, truth = _tables()
    extra = pl.concat(
        [
            candidates,
            pl.DataFrame({"item_id": ["q1"], "response_id": ["q1_r3"], "text": [" Maybe."]}),
        ]
    )
    with pytest.raises(ValueError, match="'q1' has 3 responses"):
        pole_pairs(items, extra, truth)
    with pytest.raises(ValueError, match="'q2'"):
        pole_pairs(items, candidates, truth.filter(pl.col("item_id") == "q1"))
    wrong = truth.with_columns(pl.lit("q1_r9").alias("response_id"))
    with pytest.raises(ValueError, match="q1_r9"):
        pole_pairs(items, candidates, wrong)
    with pytest.raises(ValueError, match="both reference and beta"):
        model_pair_preferences(None, None, items, candidates, truth, beta=0.1)


def test_smoke_run_end_to_end(smoke_run) -> None:
    """The real run's tables, base and aligned models and written truth fit together: the base
    model against itself has p_implicit = 1/2 on every item, hence majority agreement 1/2."""
    from valign_ray.eval.representation_runs import score_models
    from valign_ray.survey.instrument import load_instrument

    cfg, _ = smoke_run
    run = cfg.run_dir
    inst = load_instrument(run / "survey" / "raw" / "instrument.yaml")
    truth = pl.read_parquet(run / "survey" / "truth.parquet")
    models = {
        "base": (run / "base_model", run / "base_model", cfg.loss.beta),
        "aligned": (run / "model", run / "base_model", cfg.loss.beta),
    }
    prefs = score_models(
        models, inst.items_table(), inst.candidates_table(), truth, max_length=cfg.data.max_length
    )
    n_items = cfg.survey.synthetic.n_dimensions * cfg.survey.synthetic.items_per_dimension
    assert prefs.height == 2 * n_items
    base = prefs.filter(pl.col("model") == "base")
    assert base["p_implicit"].to_list() == [0.5] * n_items
    for name in models:
        t = representation_table(
            prefs.filter(pl.col("model") == name),
            truth,
            variables=cfg.weighting.variables,
            column="p_implicit",
            n_boot=50,
        )
        assert 0.0 <= t["population"]["lo"] <= t["population"]["hi"] <= 1.0
        assert {g["group"].split("=")[0] for g in t["groups"]} == set(cfg.weighting.variables)
        if name == "base":
            assert t["majority_agreement"]["estimate"] == 0.5


def test_data_preferences_by_hand() -> None:
    """Item i1, pole-positive i1_r1. r1 rates r1=1, r2=0 (prefers pos) but picks i1_r2 in the
    pairwise question (prefers neg); r2 rates both 1 (a tie: no comparison) and picks i1_r1.
    Comparisons: r1 pos, r1 neg, r2 pos. Weights r1 = 3, r2 = 1: p = (3 + 1) / (3 + 3 + 1)
    = 4/7; unweighted 2/3; n = 3.
    """
    answers = pl.DataFrame(
        [
            ("r1", "i1", "rating", "i1_r1", None, 1),
            ("r1", "i1", "rating", "i1_r2", None, 0),
            ("r1", "i1", "pairwise", "i1_r2", "i1_r1", 1),
            ("r2", "i1", "rating", "i1_r1", None, 1),
            ("r2", "i1", "rating", "i1_r2", None, 1),
            ("r2", "i1", "pairwise", "i1_r1", "i1_r2", 1),
        ],
        schema=["respondent_id", "item_id", "kind", "response_id", "response_b_id", "value"],
        orient="row",
    )
    pairs = pl.DataFrame({"item_id": ["i1"], "pos_id": ["i1_r1"]})
    weights = pl.DataFrame({"respondent_id": ["r1", "r2"], "weight": [3.0, 1.0]})
    out = data_preferences(answers, pairs, weights)
    assert out["p_data"].to_list() == pytest.approx([4 / 7]) and out["n"].to_list() == [3]
    assert data_preferences(answers, pairs)["p_data"].to_list() == pytest.approx([2 / 3])
    with pytest.raises(ValueError, match="no weight"):
        data_preferences(answers, pairs, weights.head(1))


def test_oracle_survey_is_a_simple_random_sample_of_the_same_population(tmp_path) -> None:
    """Same truth as the biased survey (the world does not depend on n_sample), n_sample
    respondents, each with all their answers (2 ratings per prompt item, pairwise on half)."""
    from pathlib import Path

    from valign_ray.config import load_config
    from valign_ray.eval.representation_runs import synthetic_spec, write_oracle_survey
    from valign_ray.survey.margins import load_margins
    from valign_ray.survey.synthetic import generate_synthetic

    repo = Path(__file__).resolve().parents[1]
    sets = [
        "survey.synthetic.n_population=1500",
        "survey.synthetic.n_sample=120",
        f"weighting.margins={repo / 'data/margins/nz_2023.csv'}",
    ]
    cfg = load_config(repo / "configs/representation.yaml", sets)
    paths, everyone = write_oracle_survey(cfg, tmp_path)
    biased = generate_synthetic(
        synthetic_spec(cfg), load_margins(cfg.weighting.margins), cfg.weighting.variables
    )
    assert everyone.truth.equals(biased.truth)
    assert everyone.respondents.height == 1500
    respondents = pl.read_csv(paths["respondents"])
    answers = pl.read_csv(paths["answers"])
    assert respondents.height == 120 and respondents["respondent_id"].n_unique() == 120
    assert set(answers["respondent_id"].unique().to_list()) == set(respondents["respondent_id"])
    n_items = 3 * 6  # representation.yaml: 3 dimensions x 6 prompt items
    assert answers.height == 120 * (2 * n_items + n_items // 2)
