"""The Polis per-group table under both weighting schemes (tabulating runs' eval sections)."""

from __future__ import annotations

import polars as pl
import pytest

from valign_ray.config import load_config
from valign_ray.eval.metrics import group_representativeness
from valign_ray.eval.scheme_comparison import SCHEMES, scheme_group_table, scheme_markdown
from valign_ray.survey.opinion_weights import opinion_group_weights


def _ev(base: dict, aligned: dict) -> dict:
    return {
        "base": {"A_population": base["pop"], "groups": base["groups"]},
        "aligned": {"A_population": aligned["pop"], "groups": aligned["groups"]},
    }


def test_table_rows_and_markdown() -> None:
    evals = {
        "unweighted": _ev(
            {"pop": 0.88, "groups": {"0": 0.90, "1": 0.80}},
            {"pop": 0.91, "groups": {"0": 0.95, "1": 0.75}},
        ),
        "opinion_groups": _ev(
            {"pop": 0.85, "groups": {"0": 0.90, "1": 0.80}},
            {"pop": 0.87, "groups": {"0": 0.89, "1": 0.84}},
        ),
    }
    table = scheme_group_table(evals)
    got = {(s, m, r): a for s, m, r, a in table.iter_rows()}
    assert got[("unweighted", "aligned", "worst group")] == pytest.approx(0.75)
    assert got[("unweighted", "aligned", "spread")] == pytest.approx(0.20)
    assert got[("opinion_groups", "aligned", "spread")] == pytest.approx(0.05)
    assert got[("opinion_groups", "base", "population")] == pytest.approx(0.85)
    assert table.height == 2 * 2 * 5  # 2 schemes x 2 models x (2 groups + 3 summaries)
    text = scheme_markdown(table)
    assert "| | base (unweighted) | aligned (unweighted) | base (opinion_groups) |" in text
    assert "| group 1 | 0.8000 | 0.7500 | 0.8000 | 0.8400 |" in text
    assert "| worst group | 0.8000 | 0.7500 | 0.8000 | 0.8400 |" in text


def test_missing_groups_name_the_scheme() -> None:
    with pytest.raises(ValueError, match="scheme 'opinion_groups': eval.aligned"):
        scheme_group_table(
            {"opinion_groups": {"base": {"A_population": 0.9, "groups": {"0": 0.9}}, "aligned": {}}}
        )
    with pytest.raises(ValueError, match="scheme 'x': eval.base lacks groups or A_population"):
        scheme_group_table({"x": {"base": {"groups": {}}, "aligned": {}}})


def test_schemes_load_on_the_polis_config() -> None:
    unweighted = load_config("configs/polis.yaml", list(SCHEMES["unweighted"]))
    grouped = load_config("configs/polis.yaml", list(SCHEMES["opinion_groups"]))
    assert not unweighted.weighting.enabled
    assert grouped.weighting.enabled and grouped.weighting.scheme == "opinion_groups"


def test_group_a_does_not_depend_on_group_shares() -> None:
    """Why the table needs one trained model per scheme: a group's A uses only its own answer
    split, which opinion-group weights (constant within a group) leave alone; A of everyone
    moves. Group 0 (3 people) all agree (code 2), group 1 (1 person) disagrees (code 1); the
    model says P(agree) = 0.75. Unweighted everyone splits 3 : 1 -> A = 1 - |0.75 - 0.75| = 1;
    equal group shares split 1 : 1 -> A = 1 - |0.75 - 0.5| = 0.75. Per group: 0.75 and 0.25
    both ways."""
    resp = pl.DataFrame({"respondent_id": list("abcd"), "group": ["0", "0", "0", "1"]})
    answers = pl.DataFrame(
        {"respondent_id": list("abcd"), "item_id": ["s"] * 4, "kind": ["likert"] * 4,
         "value": [2, 2, 2, 1]}
    )  # fmt: skip
    model = {"s": [0.25, 0.75]}
    for weights, everyone in ((resp.with_columns(weight=1.0), 1.0),
                              (opinion_group_weights(resp), 0.75)):  # fmt: skip
        groups = group_representativeness(model, answers, weights, "group")
        assert groups["representativeness"].to_list() == pytest.approx([0.75, 0.25])
        whole = group_representativeness(model, answers, weights, None)
        assert whole["representativeness"][0] == pytest.approx(everyone)
