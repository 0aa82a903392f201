"""The sample-size study (experiments/sample_size.py): its measures on hand-made data, the
recommendation rule, the study file's checks, and the --smoke run end to end."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from valign_ray.config_loader import ConfigError
from valign_ray.eval.sample_size import (
    draw_sample,
    present_margins,
    set_agreement,
    share_errors,
    share_estimates,
    true_consensus,
)
from valign_ray.eval.sample_size_report import (
    recommendation,
    recommendation_markdown,
    smallest_n,
)
from valign_ray.eval.sample_size_study import load_study, study_plan

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sample_size.yaml"


def _tiny() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Three respondents, one key. a (weight 2, 15-64) says 1, b (1, 15-64) says 0, c (1, 65+)
    says 1: weighted share 3/4, 15-64 share 2/3, 65+ share 1."""
    values = pl.DataFrame({"respondent_id": ["a", "b", "c"], "key": ["k"] * 3, "x": [1.0, 0, 1]})
    sample = pl.DataFrame(
        {"respondent_id": ["a", "b", "c"], "age": ["15-64", "15-64", "65+"], "weight": [2.0, 1, 1]}
    )
    truth = pl.DataFrame(
        {
            "key": ["k"] * 4,
            "variable": ["all", "age", "age", "age"],
            "category": ["all", "15-64", "65+", "80+"],
            "share": [0.5, 0.6, 0.9, 0.3],  # nobody 80+ in the sample
        }
    )
    return values, sample, truth


def test_share_estimates_are_weighted_means_overall_and_per_group() -> None:
    values, sample, _ = _tiny()
    est = share_estimates(values, sample, ["age"]).sort("variable", "category")
    got = {(r["variable"], r["category"]): r["estimate"] for r in est.iter_rows(named=True)}
    assert got == pytest.approx(
        {("age", "15-64"): 2 / 3, ("age", "65+"): 1.0, ("all", "all"): 0.75}
    )


def test_share_errors_mean_and_worst_group_by_hand() -> None:
    values, sample, truth = _tiny()
    out = share_errors(share_estimates(values, sample, ["age"]), truth)
    # population |0.75 - 0.5| = 0.25; 15-64 |2/3 - 0.6| = 0.0667; 65+ |1 - 0.9| = 0.1
    assert out["share_mean_error"] == pytest.approx(0.25)
    assert out["share_worst_group_error"] == pytest.approx(0.1)
    assert out["share_worst_group"] == "age=65+"
    assert out["share_empty_groups"] == 1  # 80+: in the truth, nobody in the sample
    unweighted = sample.with_columns(pl.lit(1.0).alias("weight"))
    out = share_errors(share_estimates(values, unweighted, ["age"]), truth)
    assert out["share_mean_error"] == pytest.approx(abs(2 / 3 - 0.5))  # 1/6
    assert out["share_worst_group_error"] == pytest.approx(0.1)  # 15-64: |0.5 - 0.6|


def test_share_errors_refuses_estimates_missing_a_population_key() -> None:
    values, sample, truth = _tiny()
    extra = pl.DataFrame({"key": ["z"], "variable": ["all"], "category": ["all"], "share": [0.5]})
    with pytest.raises(ValueError, match="miss some keys"):
        share_errors(share_estimates(values, sample, ["age"]), pl.concat([truth, extra]))


def test_set_agreement_by_hand() -> None:
    # found {a, b, c}, true {b, c, d, e}: both {b, c}; union of 5
    got = set_agreement({"a", "b", "c"}, {"b", "c", "d", "e"})
    assert got == pytest.approx({"jaccard": 2 / 5, "precision": 2 / 3, "recall": 2 / 4})
    assert set_agreement(set(), {"x"}) == {"jaccard": 0.0, "precision": 1.0, "recall": 0.0}
    assert set_agreement({"x"}, set()) == {"jaccard": 0.0, "precision": 0.0, "recall": 1.0}
    assert set_agreement(set(), set()) == {"jaccard": 1.0, "precision": 1.0, "recall": 1.0}


def test_true_consensus_needs_every_group_at_the_threshold() -> None:
    rows = [
        ("s1", "likert", "age", "young", 0.7),
        ("s1", "likert", "age", "old", 0.6),  # exactly 0.6: kept
        ("s2", "likert", "age", "young", 0.9),
        ("s2", "likert", "age", "old", 0.59),  # one group short: dropped
        ("s3", "likert", "all", "all", 0.99),  # only the population: not a group
        ("s4", "likert", "age", "young", 0.8),
        ("s4", "likert", "age", "none", math.nan),  # a group nobody is in: ignored
    ]
    truth = pl.DataFrame(
        rows, schema=["item_id", "kind", "variable", "category", "share"], orient="row"
    )
    assert true_consensus(truth, "age", 0.6) == {"s1", "s4"}
    with pytest.raises(ValueError, match="region"):
        true_consensus(truth, "region", 0.6)


def test_draw_sample_follows_the_factors_and_the_seed() -> None:
    people = pl.DataFrame(
        {"respondent_id": [f"p{i}" for i in range(10)], "g": ["a"] * 7 + ["b"] * 3}
    )
    heavy = ({"g": {"b": 1e9}},)
    drawn = draw_sample(people, heavy, 3, seed=0)
    assert drawn["g"].to_list() == ["b", "b", "b"]  # the 3 b people outweigh the rest 1e9:1
    plain = draw_sample(people, ({},), 5, seed=1, stream="x")
    assert plain.equals(draw_sample(people, ({},), 5, seed=1, stream="x"))
    assert plain["respondent_id"].n_unique() == 5
    others = [draw_sample(people, ({},), 5, seed=1, stream=s) for s in ("y", "z", "w")]
    assert any(not o.equals(plain) for o in others)
    with pytest.raises(ValueError, match="sample size 11"):
        draw_sample(people, ({},), 11, seed=0)


def test_present_margins_drops_and_renormalises() -> None:
    margins = {"g": {"a": 0.5, "b": 0.3, "c": 0.2}, "h": {"x": 1.0}}
    sample = pl.DataFrame({"g": ["a", "c"], "h": ["x", "x"]})
    out, dropped = present_margins(margins, sample)
    assert dropped == 1
    assert out["g"] == pytest.approx({"a": 0.5 / 0.7, "c": 0.2 / 0.7})
    assert out["h"] == {"x": 1.0}


def test_smallest_n_needs_the_criterion_to_hold_from_there_on() -> None:
    def ok(e: float) -> bool:
        return e <= 0.05

    assert smallest_n({50: 0.04, 100: 0.03, 200: 0.01}, ok) == 50
    assert smallest_n({50: 0.04, 100: 0.06, 200: 0.01}, ok) == 200  # 50 was luck
    assert smallest_n({50: 0.09, 100: 0.08, 200: 0.06}, ok) is None  # none meets it
    assert smallest_n({}, ok) is None


def test_recommendation_per_bias_from_seed_means() -> None:
    # default: worst-group error means 0.08 (n=100), 0.045 (400), 0.03 (1600) -> 400;
    # strong: 0.2, 0.1, 0.06 -> none in the grid
    data = pl.DataFrame(
        {
            "bias": ["default"] * 6 + ["strong"] * 3,
            "n": [100, 100, 400, 400, 1600, 1600, 100, 400, 1600],
            "seed": [0, 1, 0, 1, 0, 1, 0, 0, 0],
            "weighted_share_worst_group_error": [
                0.07,
                0.09,
                0.04,
                0.05,
                0.02,
                0.04,
                0.2,
                0.1,
                0.06,
            ],
        }
    )
    # oracle A 0.90 (mean of 0.89, 0.91); weighted default A means: 0.85 (100), 0.895 (400),
    # 0.90 (1600): within 0.01 from 400 on
    models = pl.DataFrame(
        {
            "arm": ["oracle", "oracle"] + ["weighted"] * 4 + ["unweighted"],
            "bias": ["population"] * 2 + ["default"] * 5,
            "n": [20000, 20000, 100, 400, 400, 1600, 1600],
            "a_population": [0.89, 0.91, 0.85, 0.89, 0.90, 0.90, 0.99],
        }
    )
    rec = recommendation(data, models, share_error_max=0.05, a_tolerance=0.01)
    rows = {r["bias"]: r for r in rec.iter_rows(named=True)}
    assert rows["default"]["n_share"] == 400
    assert rows["default"]["share_error_at_n"] == pytest.approx(0.045)
    assert rows["default"]["n_model"] == 400
    assert rows["default"]["oracle_a"] == pytest.approx(0.90)
    assert rows["default"]["model_runs"] == 4
    assert rows["strong"]["n_share"] is None and rows["strong"]["n_model"] is None
    assert rows["strong"]["model_runs"] == 0
    md = recommendation_markdown(rec, 0.05, 0.01)
    assert "| default | 400 | 0.045 | 400 | 0.900 |" in md
    assert "| strong | none in the grid | none in the grid | n/a: no model runs | 0.900 |" in md
    no_models = recommendation(data, models.clear(), share_error_max=0.05, a_tolerance=0.01)
    assert no_models["oracle_a"].null_count() == 2 and no_models["n_model"].null_count() == 2


def test_write_report_with_an_oracle(tmp_path: Path) -> None:
    """recommendation.csv/.md and six plots from hand tables, the oracle line included."""
    from valign_ray.eval.sample_size_report import write_report

    data = pl.DataFrame(
        {
            "bias": ["none"] * 4,
            "n": [100, 100, 400, 400],
            "seed": [0, 1, 0, 1],
            **{
                f"{arm}_{m}": [0.08, 0.06, 0.03, 0.02]
                for arm in ("weighted", "unweighted")
                for m in ("share_mean_error", "share_worst_group_error", "constitution_jaccard")
            },
        }
    )
    models = pl.DataFrame(
        {
            "arm": ["oracle", "weighted", "weighted", "unweighted"],
            "bias": ["population", "none", "none", "none"],
            "n": [20000, 100, 400, 400],
            "a_population": [0.9, 0.8, 0.895, 0.85],
            "worst_group_a": [0.8, 0.7, 0.79, 0.75],
            "majority_agreement": [1.0, 0.8, 1.0, 0.9],
        }
    )
    study = load_study(CONFIG).study
    rec = write_report(study, data, models, tmp_path)
    assert rec.row(0, named=True) == {
        "bias": "none",
        "n_share": 400,  # mean 0.07 at 100, 0.025 at 400
        "share_error_at_n": pytest.approx(0.025),
        "n_model": 400,  # 0.895 >= 0.9 - 0.01; 0.8 is not
        "model_runs": 2,
        "oracle_a": pytest.approx(0.9),
    }
    md = (tmp_path / "recommendation.md").read_text()
    assert "| none | 400 | 0.025 | 400 | 0.900 |" in md
    assert len(list((tmp_path / "plots").glob("*.png"))) == 6


def test_study_file_loads_and_plans() -> None:
    spec = load_study(CONFIG)
    assert set(spec.study.biases) == {"none", "default", "strong"}
    assert spec.study.biases["none"].oversample == {}
    assert spec.study.biases["default"].oversample is None  # the simulator's default
    full = study_plan(spec.study, smoke=False)
    assert full["n"] == [50, 100, 200, 400, 800, 1600, 3200] and full["seeds"] == [0, 1, 2, 3, 4]
    assert len(full["cells"]) == 9  # 3 n x 3 seeds, default bias
    smoke = study_plan(spec.study, smoke=True)
    assert smoke == {"n": [100, 400], "seeds": [0], "cells": [("default", 100, 0)], "full": False}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("study.model_biases=[typo]", "study.model_biases"),
        ("study.n=[50, 30000]", "study.n"),
        ("study.biases={}", "study.biases"),
        ("study.seeds=0", "study.seeds"),
        ("study.sedes=3", "study.sedes"),
    ],
)
def test_study_file_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_study(CONFIG, [override])


def test_entry_script_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = CONFIG.parents[1] / "experiments" / "sample_size.py"
    args = [str(CONFIG), "--set", "study.model_biases=[typo]", "--output-dir", str(tmp_path)]
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("config error: ") and "study.model_biases: ['typo']" in line


@pytest.mark.ray
def test_smoke_run_end_to_end(ray_session, tmp_path: Path) -> None:
    """--smoke: two n x three bias levels x one seed through Tune, one weighted 20-step model
    run through the experiment runner, then the recommendation and plots."""
    from valign_ray.eval.sample_size_study import run_sample_size_study

    out = run_sample_size_study(CONFIG, (), tmp_path / "study", smoke=True)
    data = pl.read_csv(tmp_path / "study" / "data.csv")
    assert data.height == 6 and set(data["n"]) == {100, 400}
    assert data["weighting_error"].null_count() == 6
    errors = data["weighted_share_worst_group_error"]
    assert ((errors > 0) & (errors < 1)).all()
    assert (data["true_consensus_size"] >= 1).all()
    models = pl.read_csv(tmp_path / "study" / "models.csv")
    assert models["variant"].to_list() == ["weighted-default-n100-s0"]
    assert 0 < models["a_population"][0] <= 1 and 0 <= models["majority_agreement"][0] <= 1
    rec = pl.read_csv(tmp_path / "study" / "recommendation.csv")
    assert sorted(rec["bias"]) == ["default", "none", "strong"]
    assert out["recommendation"]["oracle_a"].null_count() == 3  # the smoke has no oracle
    assert "How many respondents?" in (tmp_path / "study" / "recommendation.md").read_text()
    plots = {p.stem for p in (tmp_path / "study" / "plots").glob("*.png")}
    assert plots == {
        "share_mean_error",
        "share_worst_group_error",
        "constitution_jaccard",
        "a_population",
        "worst_group_a",
        "majority_agreement",
    }
