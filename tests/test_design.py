"""Collection design: quota arithmetic, Kish design effects and margins of error by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from valign_ray.cli import main
from valign_ray.config import DesignConfig, load_design_config
from valign_ray.survey.design import (
    allocate,
    kish_deff_cells,
    largest_remainder,
    margin_of_error,
    n_for_margin,
    propensity_deff,
)
from valign_ray.survey.design_plan import observed_design, plan_design
from valign_ray.survey.weighting import design_effect

REPO = Path(__file__).resolve().parents[1]
MARGINS = """variable,category,share,year,source
age,young,0.7,2023,x
age,mid,0.2,2023,x
age,old,0.1,2023,x
sex,f,0.5,2023,x
sex,m,0.5,2023,x
edu,deg,0.2,2023,x
edu,none,0.8,2023,x
"""


@pytest.fixture
def margins_csv(tmp_path: Path) -> str:
    path = tmp_path / "margins.csv"
    path.write_text(MARGINS)
    return str(path)


def test_largest_remainder_by_hand():
    """.5/.3/.2 of 7: 3.5, 2.1, 1.4 -> floors 3, 2, 1; the 1 left goes to remainder .5."""
    assert largest_remainder([0.5, 0.3, 0.2], 7) == [4, 2, 1]
    # 1/3 each of 10: 3.33 each, floors 9; ties go to the first category
    assert largest_remainder([1, 1, 1], 10) == [4, 3, 3]
    assert largest_remainder([0.25, 0.75], 0) == [0, 0]


def test_allocate_with_minimums_by_hand():
    """.7/.2/.1 of 100 with old >= 20: old (10) is fixed at 20; the other 80 split .7:.2 ->
    62.22, 17.78 -> floors 62, 17 and the one left to the larger remainder .78: 62, 18, 20."""
    assert allocate([0.7, 0.2, 0.1], 100, [0, 0, 20]) == [62, 18, 20]
    # cascading: .6/.25/.15 of 20 -> 12, 5, 3; both mid (>= 6) and old (>= 5) fixed -> 9, 6, 5
    assert allocate([0.6, 0.25, 0.15], 20, [0, 6, 5]) == [9, 6, 5]
    # a minimum already met changes nothing
    assert allocate([0.7, 0.2, 0.1], 100, [0, 0, 5]) == [70, 20, 10]
    with pytest.raises(ValueError, match="minimums add up to 25, more than n=20"):
        allocate([0.5, 0.5], 20, [15, 10])


def test_quota_table_keeps_totals_and_minimums(margins_csv):
    cfg = DesignConfig(
        margins=margins_csv,
        variables=("age", "sex"),
        interlock=("age", "sex"),
        minimum={"age": {"old": 20}},
    )
    plan = plan_design(cfg, 100)
    q = plan.quotas
    for variable in ("age", "sex", "age x sex"):
        assert q.filter(variable=variable)["target"].sum() == 100, variable
    assert q.filter(variable="age")["target"].to_list() == [62, 18, 20]
    # cells: independence, scaled by the over-sampling of old (20 / 10): old x f = .05 x 2 = 10
    assert q.filter(variable="age x sex", category="old x f")["target"].item() == 10
    assert any("assume independence" in note for note in plan.notes)


def test_kish_design_effect_from_propensities_by_hand():
    """Shares .5/.5 answering at 1 and .5: (.5 + .25)(.5 + 1) = 1.125. The same sample as rows:
    2 + 1 respondents weighted 1, 1, 2: 3 (1 + 1 + 4) / 16 = 1.125."""
    assert kish_deff_cells([0.5, 0.5], [1.0, 0.5]) == pytest.approx(1.125)
    assert design_effect([1.0, 1.0, 2.0]) == pytest.approx(1.125)
    assert kish_deff_cells([0.3, 0.7], [2.0, 2.0]) == pytest.approx(1.0)  # equal: no effect
    # independent variables multiply: edu .2/.8 at 1.5/1 -> (.3 + .8)(.2/1.5 + .8) = 1.02667
    margins = {"sex": {"f": 0.5, "m": 0.5}, "edu": {"deg": 0.2, "none": 0.8}}
    both = propensity_deff(margins, {"sex": {"m": 0.5}, "edu": {"deg": 1.5}})
    assert both == pytest.approx(1.125 * 1.1 * (0.2 / 1.5 + 0.8))
    assert propensity_deff(margins, {"sex": {"m": 0.5}}, exclude="sex") == 1.0


def test_margin_of_error_and_its_inverse_by_hand():
    """n = 100: 1.96 sqrt(.25 / 100) = .098; deff 2: .098 sqrt 2 = .13859. For .05:
    1.96^2 .25 / .0025 = 384.16 -> 385; deff 2: 768.32 -> 769."""
    assert margin_of_error(100) == pytest.approx(0.098)
    assert margin_of_error(100, deff=2.0) == pytest.approx(0.098 * 2**0.5)
    assert n_for_margin(0.05) == 385 and n_for_margin(0.05, deff=2.0) == 769
    assert margin_of_error(385) <= 0.05 < margin_of_error(384)


def test_expected_precision_by_hand(margins_csv):
    """Quotas age 62/18/20 for N = 100 (old over-sampled 2x), sex 50/50; edu answers at
    1.5 (deg). Allocation deff of age: .49/.62 + .04/.18 + .01/.2 = 1.06235; edu's propensity
    deff (.3 + .8)(.2/1.5 + .8) = 1.02667. Group sex=f: both apply, n = 50."""
    cfg = DesignConfig(
        margins=margins_csv,
        variables=("age", "sex"),
        minimum={"age": {"old": 20}},
        propensity={"edu": {"deg": 1.5}},
    )
    p = plan_design(cfg, 100).precision
    alloc = 0.49 / 0.62 + 0.04 / 0.18 + 0.01 / 0.2
    prop = 1.1 * (0.2 / 1.5 + 0.8)
    row = p.filter(group="sex=f").row(0, named=True)
    assert row["n"] == 50 and row["deff"] == pytest.approx(alloc * prop)
    assert row["margin_of_error"] == pytest.approx(1.96 * (alloc * prop * 0.25 / 50) ** 0.5)
    old = p.filter(group="age=old").row(0, named=True)  # age fixed within: only edu
    assert old["n"] == 20 and old["deff"] == pytest.approx(prop)
    assert p.filter(group="all")["deff"].item() == pytest.approx(alloc * prop)


def test_required_n_meets_the_target_in_every_subgroup(margins_csv):
    """One variable, equal shares .5/.5, no deff: each half needs 385, so N = 770."""
    cfg = DesignConfig(margins=margins_csv, variables=("sex",), target_moe=0.05)
    assert plan_design(cfg, 100).required_n == 770


def _fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    (run / "survey" / "tables").mkdir(parents=True)
    resp = pl.DataFrame(
        {
            "respondent_id": ["a", "b", "c", "d"],
            "age": ["young", "young", "old", "mid"],
            "sex": ["f", "m", "f", "m"],
        }
    )
    resp.write_parquet(run / "survey" / "tables" / "respondents.parquet")
    weights = pl.DataFrame({"respondent_id": ["a", "b", "c", "d"], "weight": [1.0, 3.0, 0.5, 0.5]})
    weights.write_parquet(run / "weights" / "weights.parquet")
    return run


def test_observed_design_uses_the_collected_weights(tmp_path, margins_csv):
    """young: weights 1 and 3 -> deff 2 (1 + 9) / 16 = 1.25; all four (1, 3, .5, .5):
    4 * 10.5 / 25 = 1.68."""
    cfg = DesignConfig(margins=margins_csv, variables=("age", "sex"))
    plan = observed_design(cfg, _fake_run(tmp_path))
    p = plan.precision
    young = p.filter(group="age=young").row(0, named=True)
    assert young["n"] == 2 and young["deff"] == pytest.approx(1.25)
    assert young["margin_of_error"] == pytest.approx(1.96 * (1.25 * 0.25 / 2) ** 0.5)
    assert p.filter(group="all")["deff"].item() == pytest.approx(1.68)
    q = plan.quotas
    assert q.filter(variable="age")["achieved"].to_list() == [2, 1, 1]
    assert q.filter(variable="age")["target"].sum() == 4


def test_cli_design_writes_tables_and_prints(tmp_path, margins_csv, capsys):
    config = tmp_path / "design.yaml"
    config.write_text(f"design:\n  margins: {margins_csv}\n  variables: [age, sex]\n")
    out = tmp_path / "out"
    assert main(["design", str(config), "--n", "100", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "margin of error" in text and "N needed" in text
    quotas = pl.read_csv(out / "quotas.csv")
    assert quotas.columns == ["variable", "category", "population_share", "target"]
    precision = pl.read_csv(out / "precision.csv")
    assert precision.columns == ["group", "n", "deff", "margin_of_error"]
    run = _fake_run(tmp_path)
    assert main(["design", str(config), "--from", str(run), "--out", str(out)]) == 0
    assert "achieved" in pl.read_csv(out / "quotas.csv").columns


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --n N"),
        (["--n", "10", "--set", "design.minimum={age: {old: 50}}"], "more than n=10"),
        (["--n", "10", "--set", "design.target_moe=2"], "target_moe: 2 is out of range"),
        (["--from", "nowhere"], "not found"),
    ],
)
def test_cli_design_errors_exit_2(tmp_path, margins_csv, capsys, args, message):
    config = tmp_path / "design.yaml"
    config.write_text(f"design:\n  margins: {margins_csv}\n  variables: [age, sex]\n")
    assert main(["design", str(config), *args]) == 2
    assert message in capsys.readouterr().err


def test_shipped_design_config_loads():
    cfg = load_design_config(REPO / "configs" / "design_nz.yaml")
    assert cfg.minimum["age_band"]["65+"] > 0 and np.isclose(cfg.target_moe, 0.05)


def test_interlocked_cells_from_a_joint_table(tmp_path, margins_csv):
    """Joint sex x edu shares .15/.35/.05/.45 of 20: 3, 7, 1, 9; no independence note."""
    joint = tmp_path / "joint.csv"
    joint.write_text("sex,edu,share\nf,deg,0.15\nf,none,0.35\nm,deg,0.05\nm,none,0.45\n")
    cfg = DesignConfig(
        margins=margins_csv, variables=("sex", "edu"), interlock=("sex", "edu"), joint=str(joint)
    )
    plan = plan_design(cfg, 20)
    cells = plan.quotas.filter(variable="sex x edu")
    assert cells["category"].to_list() == ["f x deg", "f x none", "m x deg", "m x none"]
    assert cells["target"].to_list() == [3, 7, 1, 9]
    assert not any("independence" in note for note in plan.notes)
