"""Held-out splits: no leaks, shares near the requested ones, independent of row order and batches.

A unit (respondent or item) is held out when a salted hash of its id falls below the share, so
over n distinct ids the held-out count is Binomial(n, share): its share has standard deviation
sqrt(share * (1 - share) / n). The tolerances below are 4 of those (the hash is fixed, so the
outcome is too; 4 SD just says the numbers are not luck).
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from valign_ray.config import SyntheticConfig
from valign_ray.data.splits import holdout_mask, split_respondents_items
from valign_ray.survey.margins import load_margins
from valign_ray.survey.synthetic import generate_synthetic

MARGINS = Path(__file__).resolve().parents[1] / "data" / "margins" / "nz_2023.csv"
PARTS = ("train", "heldout_respondents", "heldout_items", "heldout_both")


@pytest.fixture(scope="module")
def answers() -> pl.DataFrame:
    # 2000 respondents, 4 dimensions x 10 prompts + 4 x 3 statements = 52 items (no consensus
    # statements: the split shares below were worked out for this world)
    spec = SyntheticConfig(
        n_sample=2000,
        n_dimensions=4,
        items_per_dimension=10,
        statements_per_dimension=3,
        consensus_per_dimension=0,
    )
    return generate_synthetic(spec, load_margins(MARGINS)).answers


def split(answers: pl.DataFrame, seed: int = 7) -> dict[str, pl.DataFrame]:
    return split_respondents_items(answers, holdout_respondents=0.2, holdout_items=0.25, seed=seed)


def canonical(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns, nulls_last=True)


def within_4_sd(share: float, target: float, n: int) -> bool:
    return abs(share - target) < 4 * math.sqrt(target * (1 - target) / n)


def test_no_respondent_or_item_leaks(answers):
    parts = split(answers)
    assert all(parts[k].height > 0 for k in PARTS)
    assert sum(parts[k].height for k in PARTS) == answers.height
    assert canonical(pl.concat([parts[k] for k in PARTS])).equals(canonical(answers))

    def ids(keys: tuple[str, ...], column: str) -> set[str]:
        return set(pl.concat([parts[k][column] for k in keys]).to_list())

    # held-out people are never seen in training or in the held-out-items part
    held_people = ids(("heldout_respondents", "heldout_both"), "respondent_id")
    assert held_people.isdisjoint(ids(("train", "heldout_items"), "respondent_id"))
    # held-out items are never seen in training or in the held-out-respondents part
    held_items = ids(("heldout_items", "heldout_both"), "item_id")
    assert held_items.isdisjoint(ids(("train", "heldout_respondents"), "item_id"))
    # "seen people, held-out items": the people of heldout_items are all training people
    assert ids(("heldout_items",), "respondent_id") <= ids(("train",), "respondent_id")


def test_heldout_shares_near_requested(answers):
    parts = split(answers)
    n_people, n_items = answers["respondent_id"].n_unique(), answers["item_id"].n_unique()
    assert (n_people, n_items) == (2000, 52)
    held_people = pl.concat([parts["heldout_respondents"], parts["heldout_both"]])
    held_items = pl.concat([parts["heldout_items"], parts["heldout_both"]])
    # 2000 people at 0.2: SD 0.0089, tolerance 0.036; 52 items at 0.25: SD 0.06, tolerance 0.24
    assert within_4_sd(held_people["respondent_id"].n_unique() / n_people, 0.2, n_people)
    assert within_4_sd(held_items["item_id"].n_unique() / n_items, 0.25, n_items)


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5, 0.9])
def test_holdout_mask_share_on_many_ids(share):
    """100,000 distinct ids: SD at 0.5 is 0.0016, so the tolerance is at most 0.0063."""
    n = 100_000
    ids = pl.Series([f"id{k}" for k in range(n)])
    mask = holdout_mask(ids, share, seed=3)
    assert mask.dtype == pl.Boolean and mask.len() == n
    assert within_4_sd(mask.mean(), share, n)


def test_holdout_mask_zero_share_holds_out_nothing():
    assert not holdout_mask(pl.Series(["a", "b", "c"]), 0.0, seed=0).any()


def test_holdout_mask_depends_on_seed_not_position():
    ids = pl.Series([f"id{k}" for k in range(1000)])
    a = holdout_mask(ids, 0.3, seed=1)
    assert holdout_mask(ids.reverse(), 0.3, seed=1).reverse().equals(a)
    assert not holdout_mask(ids, 0.3, seed=2).equals(a)  # another seed, another draw
    # a repeated id gets one answer wherever it stands
    repeated = pl.Series(["id5", "id7", "id5", "id5"])
    assert holdout_mask(repeated, 0.3, seed=1).to_list() == [a[5], a[7], a[5], a[5]]


def test_split_stable_under_shuffle_and_batches(answers):
    whole = {k: canonical(v) for k, v in split(answers).items()}
    shuffled = split(answers.sample(fraction=1.0, shuffle=True, seed=11))
    # batches of 997 rows (a prime, so boundaries cut through respondents), split one by one
    batched = [split(answers.slice(start, 997)) for start in range(0, answers.height, 997)]
    for k in PARTS:
        assert canonical(shuffled[k]).equals(whole[k]), k
        assert canonical(pl.concat([b[k] for b in batched])).equals(whole[k]), k


@pytest.mark.parametrize("share", [-0.1, 1.0, 1.5, float("nan")])
def test_share_outside_unit_interval_raises(share):
    with pytest.raises(ValueError, match=r"held-out share must be in \[0, 1\)"):
        holdout_mask(pl.Series(["a"]), share, seed=0)
    answers = pl.DataFrame({"respondent_id": ["r1"], "item_id": ["q1"]})
    with pytest.raises(ValueError, match="held-out share"):
        split_respondents_items(answers, holdout_respondents=share, holdout_items=0.1, seed=0)
    with pytest.raises(ValueError, match="held-out share"):
        split_respondents_items(answers, holdout_respondents=0.1, holdout_items=share, seed=0)
