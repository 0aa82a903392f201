"""Likert answers as KTO rows (Polis votes): hand-checked rows and the pass-vote accounting."""

from __future__ import annotations

import polars as pl
import pytest

from valign_ray.data.likert import POLIS_OPTIONS, build_likert_kto_rows, likert_answers
from valign_ray.eval.preferences import DEFAULT_LIKERT_TEMPLATE

ITEMS = pl.DataFrame(
    {
        "item_id": ["s1", "s2"],
        "kind": ["statement", "statement"],
        "text": ["Protect the bush.", "Build more roads."],
        "dimension": [None, None],
        "n_options": [3, 3],
    }
)
RESPONDENTS = pl.DataFrame({"respondent_id": ["a", "b"], "group": ["0", "1"], "weight": [1.0, 3.0]})
ANSWERS = pl.DataFrame(
    {
        "respondent_id": ["a", "a", "b", "b"],
        "item_id": ["s1", "s2", "s1", "s2"],
        "kind": ["likert"] * 4,
        "response_id": [None] * 4,
        "response_b_id": [None] * 4,
        "value": [3, 1, 3, 2],  # a: agree s1, disagree s2; b: agree s1, pass s2
        "free_text": [None] * 4,
    },
    schema_overrides={"response_id": pl.String, "response_b_id": pl.String},
)


def test_rows_by_hand() -> None:
    """3 votes that are not passes x 2 options = 6 rows; the pass (b, s2) is left out."""
    rows = build_likert_kto_rows(
        ANSWERS, ITEMS, RESPONDENTS, group_column="group", options=POLIS_OPTIONS
    )
    assert rows.height == 6
    s1 = DEFAULT_LIKERT_TEMPLATE.format(text="Protect the bush.")
    got = {
        (r["prompt"], r["completion"], r["weight"]): r["label"] for r in rows.iter_rows(named=True)
    }
    assert got[(s1, " agree", 1.0)] is True and got[(s1, " disagree", 1.0)] is False
    assert got[(s1, " agree", 3.0)] is True and got[(s1, " disagree", 3.0)] is False
    s2 = DEFAULT_LIKERT_TEMPLATE.format(text="Build more roads.")
    assert got[(s2, " disagree", 1.0)] is True and got[(s2, " agree", 1.0)] is False
    # KL completions come later, once over the whole frame (test below).
    assert "kl_completion" not in rows.columns
    assert set(rows["group"]) == {"0", "1"}


def test_passes_are_counted_not_hidden() -> None:
    kept, left_out = likert_answers(ANSWERS, POLIS_OPTIONS)
    assert (kept.height, left_out) == (3, 1)


def test_unknown_statement_is_an_error() -> None:
    bad = ANSWERS.with_columns(pl.lit("s9").alias("item_id"))
    with pytest.raises(ValueError, match="unknown items or respondents"):
        build_likert_kto_rows(bad, ITEMS, RESPONDENTS, group_column="group", options=POLIS_OPTIONS)


def test_kl_completions_are_assigned_over_the_whole_frame() -> None:
    """Sorted Likert rows paired with the next statement's row would always take its first
    option; the seeded assignment spreads the KL completions over both options, and is
    deterministic."""
    from valign_ray.data.builders import assign_kl_completions

    many = pl.concat(
        [ANSWERS.with_columns(pl.lit(f"r{i}").alias("respondent_id")) for i in range(20)]
    )
    resp = pl.DataFrame(
        {"respondent_id": [f"r{i}" for i in range(20)], "group": ["0"] * 20, "weight": [1.0] * 20}
    )
    rows = build_likert_kto_rows(many, ITEMS, resp, group_column="group", options=POLIS_OPTIONS)
    a, b = assign_kl_completions(rows, seed=0), assign_kl_completions(rows, seed=0)
    assert a.equals(b)
    assert set(a["kl_completion"]) == {" agree", " disagree"}
    # Nothing but the KL completions changes.
    assert a.drop("kl_completion").equals(rows)
