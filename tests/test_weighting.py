"""Survey weighting: hand-computed raking, ESS, trimming, errors, and parity with weightipy."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from valign_ray.survey.margins import load_margins, select_margins
from valign_ray.survey.weighting import (
    design_effect,
    diagnostics_to_dict,
    format_diagnostics,
    kish_ess,
    poststratify,
    rake_to_margins,
)

REPO = Path(__file__).resolve().parents[1]
NZ_MARGINS = REPO / "data" / "margins" / "nz_2023.csv"
HALF = {"m": 0.5, "f": 0.5}
HALF_AGE = {"y": 0.5, "o": 0.5}


def _sample(cells: dict[tuple[str, str], int]) -> pl.DataFrame:
    rows = [(sex, age) for (sex, age), k in cells.items() for _ in range(k)]
    return pl.DataFrame(rows, schema=["sex", "age"], orient="row")


def _biased_sample(n: int, seed: int) -> pl.DataFrame:
    """Young, female, region-A and educated respondents over-represented, and correlated."""
    rng = np.random.default_rng(seed)
    age = rng.choice(["15-29", "30-44", "45-64", "65+"], n, p=[0.4, 0.3, 0.2, 0.1])
    sex = np.where(rng.random(n) < np.where(age == "65+", 0.3, 0.6), "female", "male")
    region = rng.choice(["A", "B", "C"], n, p=[0.6, 0.3, 0.1])
    edu = np.where(rng.random(n) < np.where(region == "A", 0.6, 0.3), "bach", "below")
    return pl.DataFrame({"age": age, "sex": sex, "region": region, "edu": edu})


BIASED_MARGINS = {
    "age": {"15-29": 0.25, "30-44": 0.25, "45-64": 0.3, "65+": 0.2},
    "sex": {"female": 0.51, "male": 0.49},
    "region": {"A": 0.3, "B": 0.3, "C": 0.4},
    "edu": {"bach": 0.2, "below": 0.8},
}


def test_rake_independent_2x2_by_hand():
    """Cells (m,y)=3 (m,o)=3 (f,y)=1 (f,o)=1, n=8; targets sex .5/.5, age y .25 / o .75.

    The sample is independent, so one sweep is exact. Sex: m x 0.5/(6/8) = 2/3, f x
    0.5/(2/8) = 2. Age shares then y = (3*2/3 + 1*2)/8 = .5, o = .5, so y x .5, o x 1.5.
    Weights: (m,y) 1/3, (m,o) 1, (f,y) 1, (f,o) 3; sum 1+3+1+3 = 8, mean 1.
    """
    df = _sample({("m", "y"): 3, ("m", "o"): 3, ("f", "y"): 1, ("f", "o"): 1})
    res = rake_to_margins(df, {"sex": HALF, "age": {"y": 0.25, "o": 0.75}})
    expected = [1 / 3] * 3 + [1.0] * 3 + [1.0, 3.0]
    np.testing.assert_allclose(res.respondents["weight"].to_numpy(), expected, atol=1e-12)
    assert res.diagnostics.iterations == 1
    assert res.respondents.columns == ["sex", "age", "weight"]


def test_rake_correlated_2x2_by_hand():
    """Cells (m,y)=4 (m,o)=1 (f,y)=1 (f,o)=1, n=7; all targets .5/.5.

    Raking keeps the sample odds ratio 4*1/(1*1) = 4. With .5/.5 margins the fitted shares
    are p, .5-p, .5-p, p with p^2/(.5-p)^2 = 4, so p = 2(.5-p), p = 1/3. Weight = share * n /
    count: (m,y) (1/3)*7/4 = 7/12, (m,o) (1/6)*7 = 7/6, (f,y) 7/6, (f,o) (1/3)*7 = 7/3.
    """
    df = _sample({("m", "y"): 4, ("m", "o"): 1, ("f", "y"): 1, ("f", "o"): 1})
    res = rake_to_margins(df, {"sex": HALF, "age": {"y": 0.5, "o": 0.5}})
    expected = [7 / 12] * 4 + [7 / 6, 7 / 6, 7 / 3]
    np.testing.assert_allclose(res.respondents["weight"].to_numpy(), expected, atol=1e-9)
    assert res.diagnostics.converged and res.diagnostics.iterations > 1


def test_rake_base_weights_by_hand():
    """Base weights a:[1,3], b:[2], targets .5/.5; n=3, B=6.

    Category a has base share 4/6, so factor .5/(4/6) = .75; b: .5/(2/6) = 1.5. Mean-1
    scaling n/B = 1/2: weights .375, 1.125, 1.5 (sum 3).
    """
    df = pl.DataFrame({"v": ["a", "a", "b"], "bw": [1.0, 3.0, 2.0]})
    res = rake_to_margins(df, {"v": {"a": 0.5, "b": 0.5}}, base_weight="bw")
    np.testing.assert_allclose(res.respondents["weight"].to_numpy(), [0.375, 1.125, 1.5])
    rows = res.diagnostics.margins.rows(named=True)
    assert rows[0]["sample_share"] == pytest.approx(2 / 3)
    assert rows[0]["base_share"] == pytest.approx(4 / 6)
    assert rows[0]["weighted_share"] == pytest.approx(0.5)


def test_kish_ess_and_design_effect_by_hand():
    """Weights [1,3]: ESS = 16/10 = 1.6, deff = 2/1.6 = 1.25. Equal weights: ESS = n, deff 1."""
    assert kish_ess([1.0, 3.0]) == pytest.approx(1.6)
    assert design_effect(np.array([1.0, 3.0])) == pytest.approx(1.25)
    assert kish_ess(pl.Series([2.0] * 5)) == pytest.approx(5.0)
    assert design_effect([2.0] * 5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="finite"):
        kish_ess([1.0, -1.0])


def test_trimming_cap_binding_by_hand():
    """9 respondents 'a', 1 'b', targets .5/.5: raked weights a 5/9, b 0.5*10 = 5.

    Cap 2: b -> 2, the 9 a's share the remaining 10-2 = 8, i.e. 8/9 each. Re-raking always
    puts b back to 5, so the cap never holds with the margins: the final weights are capped,
    b's weighted share is 2/10 = .2, so the margin error is .5 - .2 = .3.
    """
    df = pl.DataFrame({"v": ["a"] * 9 + ["b"]})
    res = rake_to_margins(df, {"v": {"a": 0.5, "b": 0.5}}, trim_max=2.0)
    np.testing.assert_allclose(res.respondents["weight"].to_numpy(), [8 / 9] * 9 + [2.0])
    d = res.diagnostics
    assert d.cap_binding and not d.converged
    assert d.max_margin_error == pytest.approx(0.3)
    assert "binding" in format_diagnostics(d)


def test_trimming_meets_cap_and_margins():
    """Four variables: untrimmed max weight is about 11.8; capped at 5 x mean, 30 rounds of
    cap-then-rerake meet the cap and every margin (to 1e-10) at once."""
    df = _biased_sample(2000, seed=3)
    untrimmed = rake_to_margins(df, BIASED_MARGINS).diagnostics.weight_max
    res = rake_to_margins(df, BIASED_MARGINS, trim_max=5.0, trim_rounds=30)
    w = res.respondents["weight"].to_numpy()
    assert untrimmed > 11.0
    assert w.max() <= 5.0 and w.mean() == pytest.approx(1.0, abs=1e-12)
    assert not res.diagnostics.cap_binding and res.diagnostics.max_margin_error <= 1e-10


@pytest.mark.parametrize(
    ("margins", "frame", "message"),
    [
        ({"sex": {"m": 0.5, "f": 0.6}}, None, r"'sex' sum to 1\.1"),
        ({"sex": HALF, "age": {"y": 0.5, "o": 0.4, "x": 0.1}}, None, r"age=x .*no respondents"),
        ({"sex": {"m": 1.0}}, None, r"'sex' has categories \['f'\] with no target"),
        ({"region": {"A": 1.0}}, None, r"\['region'\] missing"),
        ({"sex": HALF}, pl.DataFrame({"sex": ["m", None, "f"]}), r"'sex' has 1 nulls.*row 1"),
        ({"sex": HALF, "age": {"y": 0.3, "o": 0.7}}, "diag", r"did not converge.*(sex|age)=\w"),
    ],
)
def test_errors_name_variable_and_category(margins, frame, message):
    df = _sample({("m", "y"): 2, ("m", "o"): 1, ("f", "y"): 1, ("f", "o"): 2})
    if isinstance(frame, pl.DataFrame):
        df = frame
    elif frame == "diag":
        # Only (m,y) and (f,o) occur, so sex and age are the same split: .5 vs .3 cannot hold.
        df = _sample({("m", "y"): 2, ("f", "o"): 2})
    with pytest.raises(ValueError, match=message):
        rake_to_margins(df, margins, max_iter=50)


def test_margins_keyed_by_non_strings_are_named():
    df = pl.DataFrame({"sex": [1, 2, 2]})
    with pytest.raises(ValueError, match=r"categories of 'sex' must be strings.*got 1 \(int\)"):
        rake_to_margins(df, {"sex": {1: 0.5, 2: 0.5}})
    with pytest.raises(ValueError, match=r"variable names must be strings, got 3"):
        rake_to_margins(df, {3: {"1": 0.5, "2": 0.5}})


def test_shares_off_by_less_than_1e6_are_renormalised_with_a_note():
    """Sex shares .5 + .5000005 = 1.0000005: within the loader's 1e-6, so accepted, but raking
    to 1e-10 could never meet them. Renormalised: m .5/1.0000005, f .5000005/1.0000005."""
    df = _sample({("m", "y"): 2, ("m", "o"): 1, ("f", "y"): 1, ("f", "o"): 2})
    res = rake_to_margins(df, {"sex": {"m": 0.5, "f": 0.5000005}, "age": HALF_AGE})
    d = res.diagnostics
    assert d.converged and d.notes == ("margins of 'sex' sum to 1.0000005; renormalised to 1",)
    m = d.margins.filter(variable="sex", category="m")["weighted_share"].item()
    assert m == pytest.approx(0.5 / 1.0000005, abs=1e-10)
    assert "note: margins of 'sex'" in format_diagnostics(d)
    assert diagnostics_to_dict(d)["notes"] == list(d.notes)


def test_target_zero_category_without_respondents_is_quiet():
    df = _sample({("m", "y"): 2, ("m", "o"): 1, ("f", "y"): 1, ("f", "o"): 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = rake_to_margins(df, {"sex": {"m": 0.5, "f": 0.5, "x": 0.0}, "age": HALF_AGE})
    assert res.diagnostics.converged
    x = res.diagnostics.margins.filter(variable="sex", category="x").row(0, named=True)
    assert x["n"] == 0 and x["weighted_share"] == 0.0


def test_bad_base_weight_named():
    df = pl.DataFrame({"sex": ["m", "f"], "bw": [1.0, 0.0]})
    with pytest.raises(ValueError, match=r"'bw'.*row 1"):
        rake_to_margins(df, {"sex": HALF}, base_weight="bw")


def test_weighted_margins_equal_targets_nz():
    """Raking a biased sample to the shipped NZ margins reproduces every target share."""
    margins = select_margins(load_margins(NZ_MARGINS), ["age_band", "gender", "region_group"])
    rng = np.random.default_rng(7)
    n = 5000
    df = pl.DataFrame(
        {
            "age_band": rng.choice(["15-64", "65+"], n, p=[0.9, 0.1]),
            "gender": rng.choice(["female", "male"], n, p=[0.6, 0.4]),
            "region_group": rng.choice(list(margins["region_group"]), n, p=[0.5, 0.3, 0.1, 0.1]),
        }
    )
    res = rake_to_margins(df, margins)
    out = res.respondents
    for v, targets in margins.items():
        got = out.group_by(v).agg(pl.col("weight").sum() / out["weight"].sum())
        for category, share in got.iter_rows():
            assert share == pytest.approx(targets[category], abs=1e-10), (v, category)
    table = res.diagnostics.margins
    np.testing.assert_allclose(table["weighted_share"], table["target"], atol=1e-10)
    assert res.diagnostics.weight_mean == pytest.approx(1.0)


def test_matches_weightipy():
    """Four correlated variables, biased sample: same weights as weightipy's Rim to 1e-8.

    Both solve far past the comparison (ours to 1e-13; weightipy until its error stops
    falling), so the 1e-8 is not a race between two stopping rules.
    """
    weightipy = pytest.importorskip("weightipy")
    df = _biased_sample(3000, seed=0)
    ours = rake_to_margins(df, BIASED_MARGINS, tol=1e-13).respondents["weight"].to_numpy()
    scheme = weightipy.scheme_from_dict(BIASED_MARGINS, rim_params={"convcrit": 0.0})
    theirs = weightipy.weight(df.to_pandas(), scheme)
    np.testing.assert_allclose(ours, theirs.to_numpy(), rtol=0, atol=1e-8)


def test_base_weights_match_weightipy_on_expanded_rows():
    """weightipy has no base weights; an integer base weight b equals b copies of the row.

    Each copy's weightipy weight is the cell factor f; ours is b * f * n / B (mean 1 over n).
    """
    weightipy = pytest.importorskip("weightipy")
    df = _biased_sample(1500, seed=1).with_row_index("i")
    rng = np.random.default_rng(2)
    df = df.with_columns(bw=pl.Series(rng.integers(1, 4, df.height)).cast(pl.Float64))
    ours = rake_to_margins(df, BIASED_MARGINS, base_weight="bw", tol=1e-13).respondents
    expanded = df.select(pl.all().repeat_by(pl.col("bw").cast(pl.Int64)).explode())
    scheme = weightipy.scheme_from_dict(BIASED_MARGINS, rim_params={"convcrit": 0.0})
    w = weightipy.weight(expanded.to_pandas(), scheme)
    per_copy = (
        expanded.with_columns(w=pl.Series(w.to_numpy())).group_by("i").agg(pl.col("w").first())
    )
    joined = ours.join(per_copy, on="i").sort("i")
    scale = df.height / df["bw"].sum()
    expected = joined["bw"].to_numpy() * joined["w"].to_numpy() * scale
    np.testing.assert_allclose(joined["weight"].to_numpy(), expected, rtol=0, atol=1e-8)


def test_poststratify_hits_cells_exactly():
    """Joint shares .1/.2/.3/.4 on cells with 4/1/1/1 respondents (n=7).

    Weight = share * n / count: (m,y) .1*7/4 = .175, (m,o) 1.4, (f,y) 2.1, (f,o) 2.8.
    """
    df = _sample({("m", "y"): 4, ("m", "o"): 1, ("f", "y"): 1, ("f", "o"): 1})
    joint = pl.DataFrame(
        {"sex": ["m", "m", "f", "f"], "age": ["y", "o", "y", "o"], "share": [0.1, 0.2, 0.3, 0.4]}
    )
    res = poststratify(df, joint)
    expected = [0.175] * 4 + [1.4, 2.1, 2.8]
    np.testing.assert_allclose(res.respondents["weight"].to_numpy(), expected, atol=1e-12)
    assert res.diagnostics.max_margin_error < 1e-12
    sex_m = res.diagnostics.margins.filter(variable="sex", category="m").row(0, named=True)
    assert sex_m["target"] == pytest.approx(0.3) and sex_m["weighted_share"] == pytest.approx(0.3)


def test_poststratify_errors_name_cell():
    df = _sample({("m", "y"): 2, ("f", "o"): 2})
    joint = pl.DataFrame(
        {"sex": ["m", "m", "f", "f"], "age": ["y", "o", "y", "o"], "share": [0.1, 0.2, 0.3, 0.4]}
    )
    with pytest.raises(ValueError, match=r"\(sex=m, age=o\) has target share 0\.2 but 0"):
        poststratify(df, joint)
    partial = joint.filter(pl.col("sex") == "m").with_columns(share=pl.lit(0.5))
    with pytest.raises(ValueError, match=r"'sex' has categories \['f'\]"):
        poststratify(df, partial)


def test_diagnostics_serialise_and_format():
    res = rake_to_margins(_biased_sample(500, seed=4), BIASED_MARGINS)
    d = diagnostics_to_dict(res.diagnostics)
    again = json.loads(json.dumps(d))
    assert again["n"] == 500 and len(again["margins"]) == 11
    assert set(again["margins"][0]) == {
        "variable",
        "category",
        "n",
        "sample_share",
        "base_share",
        "weighted_share",
        "target",
    }
    text = format_diagnostics(res.diagnostics)
    assert len(text.splitlines()) == 4 + 11 and "region" in text


def test_load_margins_shipped_file():
    m = load_margins(NZ_MARGINS)
    assert m["age_band"]["65+"] == pytest.approx(16.6 / (64.7 + 16.6))
    assert len(m["region"]) == 16 and m["maori"]["yes"] == pytest.approx(0.178)
    assert sum(m["region_group"].values()) == pytest.approx(1.0)
    assert m["region_group"]["South Island"] == pytest.approx(
        sum(m["region"][r] for r in ["Tasman", "Nelson", "Marlborough", "West Coast"])
        + sum(m["region"][r] for r in ["Canterbury", "Otago", "Southland"])
    )
    with pytest.raises(ValueError, match="unknown margin"):
        select_margins(m, ["ethnicity"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("variable,category,share,year,source\nsex,m,0.5,2023,x\nsex,f,0.4,2023,x\n", "'sex'.*0.9"),
        (
            "variable,category,share,year,source,note\nsex,m,1,2023,x,y\n",
            r"unknown columns \['note'",
        ),
        ("variable,category,share,year,source\nsex,m,1,,x\n", r"row 2: blank.*\['year'\]"),
        ("variable,category,share,year,source\nsex,m,1,2023,x\nsex,m,0,2023,x\n", "row 3: dup"),
    ],
)
def test_load_margins_rejects(tmp_path, text, message):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_margins(path)
