"""The CAI generalisation experiment (valign_ray.eval.cai_generalisation[_report]): RL-CAI
pairs from the never-asked items' candidates, the items each seed holds out, the seed
intervals and paired differences (hand-computed), and (ray) the --smoke path end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest

from valign_ray.cai.rl import PAIR_COLUMNS, dpo_rows, survey_item_pairs
from valign_ray.config import load_config
from valign_ray.data.splits import heldout_item_ids, split_respondents_items
from valign_ray.eval.cai_generalisation_report import (
    combine_seeds,
    results_markdown,
    seed_interval,
    verdict,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/cai_generalisation.yaml"

ITEMS = pl.DataFrame(
    {"item_id": ["i1", "i2", "s1"], "kind": ["prompt", "prompt", "statement"]}
).with_columns(pl.Series("text", ["Fund rail?", "Close pools?", "Nature matters."]))
CANDIDATES = pl.DataFrame(
    {
        "item_id": ["i1", "i1", "i2", "i2", "i2"],
        "response_id": ["i1_b", "i1_a", "i2_a", "i2_b", "i2_c"],
        "text": ["No.", "Yes.", "Keep them.", "Close them.", "Sell them."],
    }
)


def test_survey_item_pairs_are_the_candidates_two_by_two() -> None:
    """i1 has two candidates -> one pair (a = the lower response id, i1_a 'Yes.'); i2 has
    three -> C(3, 2) = 3 pairs; the question is the item's text; no sampling seeds."""
    pairs = survey_item_pairs(ITEMS, CANDIDATES, ["i2", "i1"])
    assert pairs.columns == list(PAIR_COLUMNS)
    assert pairs["pair_id"].to_list() == [
        "survey:i1:i1_a-i1_b",
        "survey:i2:i2_a-i2_b",
        "survey:i2:i2_a-i2_c",
        "survey:i2:i2_b-i2_c",
    ]
    first = pairs.row(0, named=True)
    assert first["question"] == "Fund rail?" and first["prompt_id"] == "survey:i1"
    assert (first["response_a"], first["response_b"]) == ("Yes.", "No.")
    assert pairs["seed_a"].null_count() == 4
    # A label of 0.2 for (Yes., No.) makes 'No.' the chosen answer with share 0.8.
    row = dpo_rows(pairs.head(1).with_columns(pl.lit(0.2).alias("label"))).row(0, named=True)
    assert (row["chosen"], row["rejected"], row["share"]) == ("No.", "Yes.", 0.8)


def test_survey_item_pairs_refuse_an_item_without_a_pair() -> None:
    with pytest.raises(ValueError, match="'s1' is not a prompt item"):
        survey_item_pairs(ITEMS, CANDIDATES, ["s1"])


def test_heldout_item_ids_are_the_items_the_split_keeps_out() -> None:
    """The same items as split_respondents_items' held-out items, for several seeds."""
    answers = pl.DataFrame(
        {
            "respondent_id": [f"r{k % 7}" for k in range(200)],
            "item_id": [f"item{k % 20}" for k in range(200)],
        }
    )
    for seed in (0, 1, 5):
        parts = split_respondents_items(
            answers, holdout_respondents=0.0, holdout_items=0.35, seed=seed
        )
        out = sorted(parts["heldout_items"]["item_id"].unique().to_list())
        assert heldout_item_ids(answers["item_id"], 0.35, seed) == out
        assert 0 < len(out) < 20
        assert not set(out) & set(parts["train"]["item_id"].to_list())


def test_seed_interval_by_hand() -> None:
    """[0.6, 0.7, 0.8]: mean 0.7, sd 0.1, t(0.975, 2) = 4.302653 -> half 0.248414."""
    got = seed_interval([0.6, 0.7, 0.8])
    assert got["mean"] == pytest.approx(0.7)
    assert got["lo"] == pytest.approx(0.7 - 0.248414, abs=1e-6)
    assert got["hi"] == pytest.approx(0.7 + 0.248414, abs=1e-6)
    one = seed_interval([0.55])
    assert (one["mean"], one["lo"], one["hi"], one["n"]) == (0.55, None, None, 1)


def _table(pop: float, worst: float, major: float) -> dict:
    e = lambda x: {"estimate": x, "lo": x, "hi": x}  # noqa: E731
    return {"population": e(pop), "worst_group": {"group": "g", **e(worst)},
            "majority_agreement": e(major)}  # fmt: skip


def test_combine_seeds_pairs_differences_within_a_seed() -> None:
    """rl_cai - base per seed: A(pop) 0.10, 0.20, 0.30 -> mean 0.2, sd 0.1, interval
    0.2 +- 0.248414 (covers 0); majority 0.5 in every seed -> sd 0, interval [0.5, 0.5]."""
    per_seed = [
        {
            "seed": s,
            "s2_items": ["a", "b"],
            "base_models_identical": True,
            "tables": {
                "implicit": {
                    "base": _table(0.7, 0.6, 0.25),
                    "rl_cai": _table(0.7 + d, 0.6 - d, 0.75),
                }
            },
        }
        for s, d in ((0, 0.1), (1, 0.2), (2, 0.3))
    ]
    out = combine_seeds(per_seed)
    assert out["seeds"] == [0, 1, 2] and out["s2_items_per_seed"] == [2, 2, 2]
    assert list(out["differences"]["implicit"]) == ["rl_cai - base"]
    d = out["differences"]["implicit"]["rl_cai - base"]
    assert d["population"]["mean"] == pytest.approx(0.2)
    assert d["population"]["lo"] == pytest.approx(0.2 - 0.248414, abs=1e-6)
    assert d["worst_group"]["mean"] == pytest.approx(-0.2)
    assert d["majority_agreement"]["lo"] == pytest.approx(0.5)
    assert verdict(d["population"]) == "no difference shown (interval covers 0)"
    assert verdict(d["majority_agreement"]) == "higher"
    assert verdict({"lo": -0.3, "hi": -0.1}) == "lower"
    rl = out["forms"]["implicit"]["rl_cai"]["population"]
    assert rl["values"] == pytest.approx([0.8, 0.9, 1.0])
    text = results_markdown(out, per_seed)
    assert "| rl_cai | 0.900 [0.652, 1.148] |" in text
    assert "majority agreement +0.500 [+0.500, +0.500]: higher" in text


def test_default_config_keeps_generated_pairs_and_the_experiment_config_loads() -> None:
    """Existing configs keep generated RL-CAI pairs; the experiment holds items out."""
    assert load_config(REPO / "configs/cai_smoke.yaml").cai.rl_candidates == "generated"
    cfg = load_config(CONFIG)
    assert 0 < cfg.data.holdout_items < 1


@pytest.mark.ray
def test_smoke_experiment_end_to_end(ray_session, tmp_path: Path) -> None:
    """--smoke: one seed, both runs finished, results.md with the four models and the three
    measures in both forms, RL-CAI labelled exactly the S2 items' pairs, the plot."""
    from valign_ray.eval.cai_generalisation import run_cai_generalisation
    from valign_ray.run_layout import RunLayout

    exp = tmp_path / "exp"
    summary = run_cai_generalisation(CONFIG, output_dir=exp, smoke=True)
    runs = pl.read_csv(exp / "s0" / "runs.csv")
    assert sorted(runs["run"]) == ["cai", "dpo_oracle"]
    assert (runs["status"] == "finished").all()
    text = (exp / "results.md").read_text()
    for model in ("base", "dpo_weighted", "rl_cai", "dpo_oracle"):
        assert f"| {model} |" in text
    for measure in ("A(population)", "worst-group A", "majority agreement"):
        assert measure in text
    assert set(summary["forms"]) == {"implicit", "logprob"}
    assert summary["base_models_identical"] is True
    saved = json.loads((exp / "results.json").read_text())["seeds"][0]
    s2 = saved["s2_items"]
    assert sorted({p["pair_id"].split(":")[1] for p in saved["rl_labels"]}) == s2
    for p in saved["rl_labels"]:  # the label is sigmoid(beta x reward difference), beta 0.1
        diff = p["reward_a"] - p["reward_b"]
        assert p["label"] == pytest.approx(1 / (1 + math.exp(-0.1 * diff)), abs=1e-9)
    assert sorted(pl.read_parquet(exp / "preferences.parquet")["item_id"].unique()) == s2
    items = pl.read_parquet(RunLayout.of(exp / "s0", "cai").survey_table("items"))
    prompts = items.filter(pl.col("kind") == "prompt")["item_id"].to_list()
    answered = pl.read_csv(exp / "s0" / "oracle_survey" / "answers.csv")["item_id"].unique()
    assert sorted(set(answered.to_list()) & set(prompts)) == s2  # the oracle saw S2 only
    assert (exp / "generalisation.png").stat().st_size > 0


def test_rl_config_cuts_the_batch_to_few_pairs_and_takes_rl_epochs() -> None:
    """10 pairs, 16 per worker x 1 worker: the batch becomes 10; 2 workers: 5; 40 pairs keep
    16. cai.rl_epochs=150 replaces train.epochs=3; null keeps it. The loss is soft-label DPO."""
    from valign_ray.stages.cai_rl import rl_config

    sets = ["train.batch_size=16", "train.num_workers=1", "train.epochs=3"]
    cfg = load_config(CONFIG, [*sets, "cai.rl_epochs=150"])
    assert (rl_config(cfg, 10).train.batch_size, rl_config(cfg, 10).train.epochs) == (10, 150)
    assert rl_config(cfg, 40).train.batch_size == 16
    two = load_config(CONFIG, [*sets, "train.num_workers=2"])
    assert rl_config(two, 10).train.batch_size == 5
    assert rl_config(load_config(CONFIG, [*sets, "cai.rl_epochs=null"]), 40).train.epochs == 3
    assert rl_config(cfg).loss.name == "dpo" and rl_config(cfg).loss.soft_labels is True
