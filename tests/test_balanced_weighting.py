"""Group-balanced weighting (``weighting.scheme: balanced``): raking to equal shares of each
raking variable's categories, against hand-computed weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from valign_ray.config import PipelineConfig, WeightingConfig
from valign_ray.run_layout import RunLayout
from valign_ray.stages.base import StageContext
from valign_ray.survey.margins import balanced_margins
from valign_ray.survey.weighting import rake_to_margins

# age a: 6 of 8, b: 2 of 8; sex m and f: 4 each (m a b b... independent of age: a 3 m 3 f,
# b 1 m 1 f).
PEOPLE = pl.DataFrame(
    {
        "respondent_id": [f"r{i}" for i in range(8)],
        "age": ["a"] * 6 + ["b"] * 2,
        "sex": ["m", "m", "m", "f", "f", "f", "m", "f"],
    }
)
POPULATION = {"age": {"a": 0.8, "b": 0.2}, "sex": {"m": 0.5, "f": 0.3, "x": 0.2}}


def test_balanced_margins_are_equal_shares() -> None:
    got = balanced_margins(POPULATION)
    assert got == {"age": {"a": 0.5, "b": 0.5}, "sex": pytest.approx({"m": 1 / 3, "f": 1 / 3,
                                                                     "x": 1 / 3})}  # fmt: skip


def test_every_group_gets_an_equal_total_by_hand() -> None:
    """Balanced margins of age and sex (f, m): age a weighs 0.5 / (6/8) = 2/3, b 0.5 / (2/8) =
    2; sex is already balanced within each age, so that is the fit: [2/3] * 6 + [2, 2]. Every
    group's total is 4 (a: 6 * 2/3, b: 2 * 2, m: 3 * 2/3 + 2, f: the same)."""
    margins = balanced_margins({"age": POPULATION["age"], "sex": {"m": 0.5, "f": 0.5}})
    w = rake_to_margins(PEOPLE, margins).respondents["weight"].to_numpy()
    np.testing.assert_allclose(w, [2 / 3] * 6 + [2.0, 2.0])
    for col in ("age", "sex"):
        totals = PEOPLE.with_columns(w=w).group_by(col).agg(pl.col("w").sum())["w"].to_numpy()
        np.testing.assert_allclose(totals, [4.0, 4.0])


def test_weights_stage_balanced(tmp_path: Path) -> None:
    """The weights stage under scheme balanced, margins from a file with population shares
    0.8 / 0.2: the weights are those above, not the population raking's (a: 0.8 / 0.75)."""
    path = tmp_path / "margins.csv"
    rows = ["age,a,0.8", "age,b,0.2", "sex,m,0.5", "sex,f,0.5"]
    path.write_text("variable,category,share,year,source\n" + "".join(
        f"{r},2023,test\n" for r in rows))  # fmt: skip
    from valign_ray.stages.survey import run_weights

    for scheme, want in (
        ("balanced", [2 / 3] * 6 + [2.0] * 2),
        ("raking", [16 / 15] * 6 + [0.8] * 2),
    ):
        wcfg = WeightingConfig(
            scheme=scheme, margins=str(path), variables=("age", "sex"), trim_max=None
        )
        cfg = PipelineConfig(output_dir=str(tmp_path / scheme), weighting=wcfg)
        layout = RunLayout.of(cfg.output_dir, cfg.name)
        layout.survey_table("respondents").parent.mkdir(parents=True)
        PEOPLE.write_parquet(layout.survey_table("respondents"))
        run_weights(StageContext(cfg, layout))
        w = pl.read_parquet(layout.weights)["weight"].to_numpy()
        np.testing.assert_allclose(w, want)
