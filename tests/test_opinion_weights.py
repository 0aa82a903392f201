"""Opinion-group weights (survey/opinion_weights.py) against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from valign_ray.survey.opinion_weights import opinion_group_weights

# group "0": r1, r2, r3; group "1": r4; r5 has no group (Polis did not place them).
PEOPLE = pl.DataFrame(
    {"respondent_id": ["r1", "r2", "r3", "r4", "r5"], "group": ["0", "0", "0", "1", None]}
)


def test_equal_shares_by_hand() -> None:
    """Equal shares, base weights 1: B = 4 grouped; group "0" (B_g 3) -> .5 * 4 / 3 = 2/3 each,
    total 2; group "1" (B_g 1) -> .5 * 4 = 2; r5 keeps 1. Sum 5 = n: already mean 1.
    The groups' shares of the grouped weight: 2/4 and 2/4."""
    w = opinion_group_weights(PEOPLE)["weight"].to_numpy()
    np.testing.assert_allclose(w, [2 / 3, 2 / 3, 2 / 3, 2.0, 1.0])


def test_given_shares_and_base_weights_by_hand() -> None:
    """Shares {"0": .75, "1": .25} are the sample's own: .75 * 4 / 3 = 1 and .25 * 4 / 1 = 1,
    every weight 1. Base weights [2, 1, 1, 1, 1], equal shares: B = 5; group "0" B_g 4 ->
    factor .5 * 5 / 4 = .625 -> 1.25, .625, .625; group "1" -> .5 * 5 = 2.5; r5 1; sum 6
    -> times 5/6 for mean 1: [25/24, 25/48, 25/48, 25/12, 5/6]."""
    same = opinion_group_weights(PEOPLE, shares={"0": 0.75, "1": 0.25})
    np.testing.assert_allclose(same["weight"].to_numpy(), np.ones(5))
    based = opinion_group_weights(
        PEOPLE.with_columns(base_weight=pl.Series([2.0, 1, 1, 1, 1])), base_weight="base_weight"
    )
    want = [25 / 24, 25 / 48, 25 / 48, 25 / 12, 5 / 6]
    np.testing.assert_allclose(based["weight"].to_numpy(), want)


def test_bad_shares_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"groups without a target \['1'\]"):
        opinion_group_weights(PEOPLE, shares={"0": 1.0})
    with pytest.raises(ValueError, match=r"absent groups \['9'\]"):
        opinion_group_weights(PEOPLE, shares={"0": 0.5, "1": 0.25, "9": 0.25})
    with pytest.raises(ValueError, match="sum to 1"):
        opinion_group_weights(PEOPLE, shares={"0": 0.5, "1": 0.6})
    with pytest.raises(ValueError, match="> 0"):
        opinion_group_weights(PEOPLE, shares={"0": 1.5, "1": -0.5})
    with pytest.raises(ValueError, match="nobody has an opinion group"):
        opinion_group_weights(PEOPLE.with_columns(pl.lit(None, pl.String).alias("group")))


def _context(tmp_path, **weighting):
    from valign_ray.config import PipelineConfig, WeightingConfig
    from valign_ray.run_layout import RunLayout
    from valign_ray.stages.base import StageContext

    cfg = PipelineConfig(output_dir=str(tmp_path), weighting=WeightingConfig(**weighting))
    layout = RunLayout.of(cfg.output_dir, cfg.name)
    layout.survey_table("respondents").parent.mkdir(parents=True)
    PEOPLE.write_parquet(layout.survey_table("respondents"))
    return StageContext(cfg, layout)


def test_weights_stage_uses_the_scheme_and_fingerprints_it(tmp_path) -> None:
    """The weights stage writes the equal-share weights of test_equal_shares_by_hand; its
    fingerprint covers scheme and group_shares; no margins file is read or hashed."""
    import json

    from valign_ray.stages.survey import WEIGHTS, run_weights

    ctx = _context(tmp_path, scheme="opinion_groups", margins="no/such/file.csv")
    result = run_weights(ctx)
    assert result.method == "opinion_groups" and result.n == 5
    w = pl.read_parquet(ctx.layout.weights)["weight"].to_numpy()
    np.testing.assert_allclose(w, [2 / 3, 2 / 3, 2 / 3, 2.0, 1.0])
    diag = json.loads(ctx.layout.weight_diagnostics.read_text())
    assert diag["groups"]["0"] == {"n": 3, "weighted_share": pytest.approx(0.5)}
    assert diag["without_group"] == 1
    ctx.fingerprints["survey"] = "s"
    prints = {WEIGHTS.fingerprint(ctx)}
    for shares in ({"0": 0.75, "1": 0.25}, {"0": 0.5, "1": 0.5}):
        other = _context(tmp_path / str(len(prints)), scheme="opinion_groups", group_shares=shares)
        other.fingerprints["survey"] = "s"
        prints.add(WEIGHTS.fingerprint(other))
    assert len(prints) == 3
