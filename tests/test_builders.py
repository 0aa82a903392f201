"""Builders and dataset cards on a survey small enough to work out by hand.

The survey (every number below is derived from it):

    items        q1 "Q1?", q2 "Q2?" (prompts, 2 responses each), s1 (a statement)
    candidates   q1_a "A1", q1_b "B1", q2_a "A2", q2_b "B2"
    respondents  r1 weight 1 group x; r2 weight 2 group y; r3 weight 3 group y
    ratings      r1: q1_a 1, q1_b 0, q2_a 1
                 r2: q1_a 1, q1_b 1, q2_b 0
                 r3: q1_a 0, q1_b 1
    pairwise     q2: r1 A2 > B2, r2 B2 > A2, r3 A2 > B2
    likert       r1 on s1: 3 (no builder may use it)

KTO rows, one per rating: 8 rows; weights [1,1,1, 2,2,2, 3,3], total 15.
    label True: r1 q1_a, r1 q2_a (1+1), r2 q1_a, r2 q1_b (2+2), r3 q1_b (3) -> 9/15 = 0.6
    group x: r1's 3 rows (3) -> 3/15 = 0.2; group y: 6 + 6 = 12 -> 12/15 = 0.8
    ESS = 15^2 / (3*1 + 3*4 + 2*9) = 225/33 = 6.8181...
DPO pairs: 3 pairwise + 2 from ratings (r1: A1 > B1, weight 1; r3: B1 > A1, weight 3). r2 rated
    q1 both 1 -> no pair; r1 rated only q2_a and r2 only q2_b -> no pair across people.
aggregate_pairs: q2: weights 1 and 3 prefer A2, 2 prefers B2 -> share 4/6, weight 6;
    q1: weight 3 prefers B1, 1 prefers A1 -> chosen B1, share 3/4, weight 4.
SFT approval: q1_a (1 yes, 2 yes, 3 no) -> 3/6; q1_b (1 no, 2 yes, 3 yes) -> 5/6, weight 6;
    q2_a (1 yes) -> 1, weight 1; q2_b (2 no) -> 0. So q1 -> "B1" (5/6), q2 -> "A2" (1).
"""

from __future__ import annotations

import json
import random

import polars as pl
import pytest

from valign_ray.data.builders import (
    DPO_SCHEMA,
    KTO_SCHEMA,
    aggregate_pairs,
    assign_kl_completions,
    build_dpo_pairs,
    build_kto_rows,
    build_sft_rows,
    canonical_order,
    mismatched_completions,
)
from valign_ray.data.cards import card_markdown, dataset_card, write_card
from valign_ray.survey.tables import ANSWER_COLUMNS, polars_schema

ANSWER_SCHEMA = polars_schema(ANSWER_COLUMNS)
TEXT = {"q1_a": "A1", "q1_b": "B1", "q2_a": "A2", "q2_b": "B2"}
ITEM_OF_TEXT = {"A1": "q1", "B1": "q1", "A2": "q2", "B2": "q2"}


def answers_frame(rows: list[tuple]) -> pl.DataFrame:
    """(respondent, item, kind, response, response_b, value) tuples -> canonical answers."""
    return pl.DataFrame([(*r, None) for r in rows], schema=ANSWER_SCHEMA, orient="row")


def survey() -> dict:
    items = pl.DataFrame(
        {
            "item_id": ["q1", "q2", "s1"],
            "kind": ["prompt", "prompt", "statement"],
            "text": ["Q1?", "Q2?", "Cats are good"],
            "dimension": [None, None, None],
            "n_options": [0, 0, 5],
        },
        schema_overrides={"dimension": pl.String},
    )
    candidates = pl.DataFrame(
        {
            "item_id": ["q1", "q1", "q2", "q2"],
            "response_id": list(TEXT),
            "text": list(TEXT.values()),
        }
    )
    respondents = pl.DataFrame(
        {
            "respondent_id": ["r1", "r2", "r3"],
            "region": ["north", "north", "south"],
            "opinion": ["x", "y", "y"],
            "weight": [1.0, 2.0, 3.0],
        }
    )
    answers = answers_frame(
        [
            ("r1", "q1", "rating", "q1_a", None, 1),
            ("r1", "q1", "rating", "q1_b", None, 0),
            ("r1", "q2", "pairwise", "q2_a", "q2_b", 1),
            ("r1", "q2", "rating", "q2_a", None, 1),
            ("r1", "s1", "likert", None, None, 3),
            ("r2", "q1", "rating", "q1_a", None, 1),
            ("r2", "q1", "rating", "q1_b", None, 1),
            ("r2", "q2", "pairwise", "q2_b", "q2_a", 1),
            ("r2", "q2", "rating", "q2_b", None, 0),
            ("r3", "q1", "rating", "q1_a", None, 0),
            ("r3", "q1", "rating", "q1_b", None, 1),
            ("r3", "q2", "pairwise", "q2_a", "q2_b", 1),
        ]
    )
    return dict(answers=answers, items=items, candidates=candidates, respondents=respondents)


def tables(**overrides) -> tuple[pl.DataFrame, dict]:
    t = survey() | overrides
    return t.pop("answers"), t | {"group_column": "opinion"}


def test_kto_rows_by_hand():
    answers, lookups = tables()
    rows = build_kto_rows(answers, **lookups)
    assert rows.schema == pl.Schema(KTO_SCHEMA)  # no respondent_id: only weight and group
    got = rows.select("item_id", "prompt", "completion", "label", "weight", "group").rows()
    assert got == [
        ("q1", "Q1?", "A1", True, 1.0, "x"),
        ("q1", "Q1?", "B1", False, 1.0, "x"),
        ("q2", "Q2?", "A2", True, 1.0, "x"),
        ("q1", "Q1?", "A1", True, 2.0, "y"),
        ("q1", "Q1?", "B1", True, 2.0, "y"),
        ("q2", "Q2?", "B2", False, 2.0, "y"),
        ("q1", "Q1?", "A1", False, 3.0, "y"),
        ("q1", "Q1?", "B1", True, 3.0, "y"),
    ]
    # Next row with another item, cyclically: rows 0,1 -> row 2 (A2); 2 -> 3 (A1);
    # 3,4 -> 5 (B2); 5 -> 6 (A1); 6,7 wrap past rows 0,1 (q1) to row 2 (A2).
    kl = mismatched_completions(rows["item_id"], rows["completion"])
    assert kl.to_list() == ["A2", "A2", "A1", "B2", "B2", "A1", "A2", "A2"]
    for item, text in zip(rows["item_id"], kl, strict=True):
        assert ITEM_OF_TEXT[text] != item


def _rows_in_batches(answers: pl.DataFrame, lookups: dict, batch: int) -> pl.DataFrame:
    """KTO rows as the datasets stage builds them, with the answers cut into batches of
    ``batch`` (as Ray Data's map_batches would), in canonical order, KL pairs assigned once."""
    parts = [
        build_kto_rows(answers.slice(i, batch), **lookups) for i in range(0, answers.height, batch)
    ]
    return assign_kl_completions(canonical_order(pl.concat(parts)), seed=0)


def test_row_order_and_kl_pairs_do_not_depend_on_batch_boundaries():
    answers, lookups = tables()
    one, other = _rows_in_batches(answers, lookups, 3), _rows_in_batches(answers, lookups, 5)
    assert one.equals(other)
    assert one["row_idx"].to_list() == list(range(8))  # the 8 ratings
    for item, text in zip(one["item_id"], one["kl_completion"], strict=True):
        assert ITEM_OF_TEXT[text] != item


def test_kto_group_comes_from_the_named_column():
    answers, lookups = tables()
    rows = build_kto_rows(answers, **lookups | {"group_column": "region"})
    assert rows["group"].to_list() == ["north"] * 6 + ["south"] * 2
    with pytest.raises(ValueError, match="group column 'nope'"):
        build_kto_rows(answers, **lookups | {"group_column": "nope"})


def test_kto_without_weight_column_weighs_one():
    answers, lookups = tables()
    lookups["respondents"] = lookups["respondents"].drop("weight")
    assert build_kto_rows(answers, **lookups)["weight"].to_list() == [1.0] * 8


def test_dpo_pairs_by_hand():
    answers, lookups = tables()
    pairs = build_dpo_pairs(answers, **lookups)
    assert pairs.schema == pl.Schema(DPO_SCHEMA)
    got = sorted(pairs.select("item_id", "chosen", "rejected", "weight", "share", "group").rows())
    assert got == [
        ("q1", "A1", "B1", 1.0, 1.0, "x"),  # r1 rated A1 desirable, B1 undesirable
        ("q1", "B1", "A1", 3.0, 1.0, "y"),  # r3 the other way round
        ("q2", "A2", "B2", 1.0, 1.0, "x"),  # pairwise r1
        ("q2", "A2", "B2", 3.0, 1.0, "y"),  # pairwise r3
        ("q2", "B2", "A2", 2.0, 1.0, "y"),  # pairwise r2
    ]
    assert set(pairs["prompt"]) == {"Q1?", "Q2?"}


def test_dpo_same_rating_twice_gives_no_pair():
    answers, lookups = tables()
    only_r2 = answers.filter((pl.col("respondent_id") == "r2") & (pl.col("kind") == "rating"))
    assert build_dpo_pairs(only_r2, **lookups).height == 0  # q1 both 1; q2 only one rating


def test_aggregate_pairs_soft_labels():
    answers, lookups = tables()
    agg = aggregate_pairs(build_dpo_pairs(answers, **lookups))
    got = agg.select("item_id", "prompt", "chosen", "rejected", "weight", "group").rows()
    assert got == [("q1", "Q1?", "B1", "A1", 4.0, "all"), ("q2", "Q2?", "A2", "B2", 6.0, "all")]
    # q1: weight 3 prefers B1 of 1 + 3 -> 3/4; q2: weights 1 and 3 prefer A2, 2 prefers B2 -> 4/6
    assert agg["share"].to_list() == pytest.approx([3 / 4, 4 / 6], abs=1e-12)


def test_aggregate_pairs_even_split_keeps_both_orders_together():
    """Weights 2 (A over B) and 2 (B over A): share 1/2, chosen = the smaller text, weight 4."""
    pairs = pl.DataFrame(
        {
            "item_id": ["q", "q"],
            "prompt": ["P", "P"],
            "chosen": ["b", "a"],
            "rejected": ["a", "b"],
            "weight": [2.0, 2.0],
            "share": [1.0, 1.0],
            "group": ["g", "h"],
        }
    )
    assert aggregate_pairs(pairs).select("chosen", "rejected", "weight", "share").rows() == [
        ("a", "b", 4.0, 0.5)
    ]


def test_sft_picks_highest_weighted_approval():
    answers, lookups = tables()
    sft = build_sft_rows(answers, **lookups).sort("item_id")
    assert sft.select("item_id", "prompt", "completion", "weight").rows() == [
        ("q1", "Q1?", "B1", 6.0),
        ("q2", "Q2?", "A2", 1.0),
    ]
    assert sft["approval"].to_list() == pytest.approx([5 / 6, 1.0], abs=1e-12)


def test_sft_tie_goes_to_smaller_response_id():
    """r2 rated both q1 responses desirable: approval 1 and 1. q1_a wins although its row comes
    second and its text ("Z1") sorts after q1_b's ("B1")."""
    answers, lookups = tables()
    lookups["candidates"] = lookups["candidates"].with_columns(
        pl.when(pl.col("response_id") == "q1_a").then(pl.lit("Z1")).otherwise("text").alias("text")
    )
    r2 = answers.filter((pl.col("respondent_id") == "r2") & (pl.col("item_id") == "q1"))
    assert build_sft_rows(r2.reverse(), **lookups)["completion"].to_list() == ["Z1"]


@pytest.mark.parametrize("builder", [build_kto_rows, build_dpo_pairs, build_sft_rows])
@pytest.mark.parametrize(
    "bad",
    [
        ("r1", "q1", "rating", "q1_zz", None, 1),  # unknown response
        ("r1", "q9", "rating", "q9_a", None, 1),  # unknown item
        ("r9", "q1", "rating", "q1_b", None, 0),  # unknown respondent
    ],
)
def test_unknown_reference_raises(builder, bad):
    answers, lookups = tables()
    if builder is build_dpo_pairs:  # a pair needs two answers: pair the bad one with a good one
        bad = (bad[0], bad[1], "pairwise", "q1_a" if bad[0] == "r9" else bad[3], "q1_b", 1)
    with pytest.raises(ValueError, match="unknown"):
        builder(pl.concat([answers, answers_frame([bad])]), **lookups)


def test_dataset_card_by_hand(tmp_path):
    answers, lookups = tables()
    rows = build_kto_rows(answers, **lookups)
    card = dataset_card(rows, "kto-train", label_column="label")
    assert card["rows"] == 8 and card["items"] == 2
    assert card["weight_total"] == pytest.approx(15.0)
    assert card["ess"] == pytest.approx(225 / 33)
    assert card["weighted_share_by_group"] == pytest.approx({"x": 0.2, "y": 0.8})
    assert card["weighted_share_by_label"] == pytest.approx({"False": 0.4, "True": 0.6})

    write_card(card, tmp_path / "kto")
    assert json.loads((tmp_path / "kto" / "card.json").read_text()) == card
    md = (tmp_path / "kto" / "card.md").read_text()
    assert md == card_markdown(card)
    assert "- rows: 8" in md and "(Kish, row weights): 6.8" in md and "| y | 0.800 |" in md

    with pytest.raises(ValueError, match="label column 'label'"):
        dataset_card(rows.drop("label"), "kto-train", label_column="label")


def _scan_reference(items: list[str], comps: list[str]) -> list[str]:
    """The rule as a plain scan: the first later row (cyclically) with another item."""
    n, out = len(items), []
    for i in range(n):
        shift = 1
        while items[(i + shift) % n] == items[i]:
            shift += 1
        out.append(comps[(i + shift) % n])
    return out


def test_mismatched_completions_matches_a_scan():
    rng = random.Random(0)
    cases = [["a", "b"], ["a", "a", "b", "a"], ["b", "a", "a", "b", "b"]]
    cases += [[rng.choice("abc") for _ in range(rng.randint(2, 15))] for _ in range(300)]
    cases += [sorted(rng.choice("abcdef") for _ in range(2000))]  # sorted by item: long runs
    for items in cases:
        if len(set(items)) < 2:
            continue
        comps = [f"c{i}" for i in range(len(items))]
        got = mismatched_completions(pl.Series(items), pl.Series(comps))
        assert got.name == "kl_completion" and got.dtype == pl.String
        assert got.to_list() == _scan_reference(items, comps), items


def test_mismatched_completions_edges():
    empty = pl.Series([], dtype=pl.String)
    assert mismatched_completions(empty, empty).len() == 0
    with pytest.raises(ValueError, match="two different prompts"):
        mismatched_completions(pl.Series(["a", "a"]), pl.Series(["x", "y"]))
