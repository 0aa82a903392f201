"""Likert evaluation (eval/likert.py) on hand-computed numbers, with the model's scores stubbed.

Two options (disagree = 1, agree = 3 in Polis codes), so A = 1 - |p_model(agree) - p_pop(agree)|.
Model: P(agree) = 0.8 on s1, 0.5 on s2. Answers (weight, group):
  a (1, "0"): agree s1, disagree s2      b (3, "1"): agree s1, pass s2 (left out)
  c (1, "1"): disagree s1                d (1, none): disagree s2
Everyone:  s1 agree share (1 + 3) / 5 = 0.8 -> A 1.0;  s2 agree 0 -> A 0.5;  mean 0.75.
Group "0": s1 1.0 -> A 0.8;  s2 0 -> A 0.5;  mean 0.65.
Group "1": s1 3 / 4 = 0.75 -> A 0.95 (s2 only a pass).  Worst 0.65, spread 0.30.
The indifferent model (P(agree) = 0.5) scores A_0 = 1 - |0.5 - share|:
Everyone: s1 0.7, s2 0.5 -> A_0 0.6 -> skill (0.75 - 0.6) / 0.4 = 0.375.
Group "0": 0.5, 0.5 -> skill (0.65 - 0.5) / 0.5 = 0.3.  Group "1": 0.75 -> (0.95 - .75)/.25 = 0.8.
Majority agreement: s2 is a model tie (0.5) -> 1/2: everyone (1 + 1/2)/2 = 0.75, "0" 0.75, "1" 1.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import valign_ray.eval.likert as likert_eval
from valign_ray.data.likert import POLIS_OPTIONS

ITEMS = pl.DataFrame(
    {"item_id": ["s1", "s2"], "kind": ["statement"] * 2, "text": ["Bush.", "Roads."]}
)
RESPONDENTS = pl.DataFrame(
    {
        "respondent_id": ["a", "b", "c", "d"],
        "group": ["0", "1", "1", None],
        "weight": [1.0, 3.0, 1.0, 1.0],
    }
)
ANSWERS = pl.DataFrame(
    {
        "respondent_id": ["a", "a", "b", "b", "c", "d"],
        "item_id": ["s1", "s2", "s1", "s2", "s1", "s2"],
        "kind": ["likert"] * 6,
        "value": [3, 1, 3, 2, 1, 1],
    }
)
P_AGREE = {"Bush.": 0.8, "Roads.": 0.5}


def test_evaluate_likert_hand_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = {}

    def fake_distribution(model, tokenizer, statements, options, *, template, max_length):
        asked.update(statements=statements, options=options, max_length=max_length)
        return np.array([[1 - P_AGREE[s], P_AGREE[s]] for s in statements])

    monkeypatch.setattr(likert_eval, "likert_distribution", fake_distribution)
    out = likert_eval.evaluate_likert(
        None,
        None,
        ITEMS,
        ANSWERS,
        RESPONDENTS,
        options=POLIS_OPTIONS,
        group_column="group",
        max_length=32,
    )
    assert asked == {"statements": ["Bush.", "Roads."], "options": ["disagree", "agree"],
                     "max_length": 32}  # fmt: skip
    assert out["A_population"] == pytest.approx(0.75)
    assert (out["n_items"], out["answers_left_out"]) == (2, 1)
    assert out["mean_p_agree"] == pytest.approx(0.65)
    assert out["groups"] == pytest.approx({"0": 0.65, "1": 0.95})
    assert out["worst_group"] == pytest.approx(0.65)
    assert out["spread"] == pytest.approx(0.30)
    assert out["A_indifferent"] == pytest.approx(0.6)
    assert out["skill"] == pytest.approx(0.375)
    assert out["majority_agreement"] == pytest.approx(0.75)
    assert out["groups_skill"] == pytest.approx({"0": 0.3, "1": 0.8})
    assert out["groups_majority_agreement"] == pytest.approx({"0": 0.75, "1": 1.0})


def test_evaluate_likert_without_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        likert_eval,
        "likert_distribution",
        lambda m, t, statements, o, **kw: np.array(
            [[1 - P_AGREE[s], P_AGREE[s]] for s in statements]
        ),
    )
    out = likert_eval.evaluate_likert(
        None, None, ITEMS, ANSWERS, RESPONDENTS, options=POLIS_OPTIONS, group_column=None,
        max_length=32,
    )  # fmt: skip
    assert out["A_population"] == pytest.approx(0.75)
    assert "groups" not in out
