"""The respondent bootstrap of the held-out preference accuracy, with re-weighting per
replicate: cases whose interval is known by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from valign_ray.config import WeightingConfig
from valign_ray.eval.respondent_bootstrap import (
    pair_credit,
    replicate_weigher,
    respondent_bootstrap,
)


def _margins(tmp_path: Path, shares: dict[str, float]) -> str:
    path = tmp_path / "margins.csv"
    rows = [f"sex,{k},{v},2023,test" for k, v in shares.items()]
    path.write_text("variable,category,share,year,source\n" + "\n".join(rows) + "\n")
    return str(path)


def test_identical_respondents_give_a_zero_width_interval() -> None:
    """Every respondent has one right and one wrong pair: every replicate's accuracy is 1/2."""
    ids = np.repeat(["r1", "r2", "r3", "r4"], 2)
    credit = np.tile([1.0, 0.0], 4)
    resp = pl.DataFrame({"respondent_id": ["r1", "r2", "r3", "r4"], "weight": [1.0, 2, 1, 3]})
    out = respondent_bootstrap({"m": credit}, ids, resp, reweigh=None, n_boot=50)
    assert out["models"]["m"] == (0.5, 0.5) and out["failed"] == 0


def test_seeded_and_respondents_resampled_whole() -> None:
    """Two respondents, r1 right on both pairs, r2 wrong on both, weights 1: a replicate draws
    (r1, r1), (r1, r2), (r2, r1) or (r2, r2), so every replicate's accuracy is 0, 1/2 or 1
    (pairs resampled one by one could give 1/4 or 3/4); the same seed gives the same interval."""
    ids = np.array(["r1", "r1", "r2", "r2"])
    resp = pl.DataFrame({"respondent_id": ["r1", "r2"], "weight": [1.0, 1.0]})
    credit = {"m": np.array([1.0, 1.0, 0.0, 0.0])}
    seen = set()

    def record(frame: pl.DataFrame) -> np.ndarray:
        seen.add(float(credit["m"][np.repeat(frame["k"].to_numpy() * 2, 2) + [0, 1] * 2].mean()))
        return np.ones(frame.height)

    keyed = resp.with_columns(pl.Series("k", [0, 1]))
    out = respondent_bootstrap(credit, ids, keyed, reweigh=record, n_boot=200, seed=7)
    assert seen == {0.0, 0.5, 1.0}
    assert out["models"]["m"] == (0.0, 1.0)
    again = respondent_bootstrap(credit, ids, resp, reweigh=None, n_boot=200, seed=7)
    assert again["models"] == out["models"]
    other = respondent_bootstrap(credit, ids, resp, reweigh=None, n_boot=5, seed=1)
    assert other["n_boot"] == 5 and other["seed"] == 1


def test_reraking_meets_the_margins_in_every_replicate(tmp_path: Path) -> None:
    """Men are always right, women always wrong, one pair each; 3 men in 10 respondents, half
    the population. Re-raked to the margins, every replicate's accuracy is exactly 0.5, so the
    interval is [0.5, 0.5]; with the full-sample weights held fixed it is wide, since the
    replicate's mix of men and women varies."""
    sex = ["m"] * 3 + ["f"] * 7
    resp = pl.DataFrame({"respondent_id": [f"r{i}" for i in range(10)], "sex": sex})
    resp = resp.with_columns(weight=1.0)  # the run's weights ride along, as in the eval stage
    wcfg = WeightingConfig(
        margins=_margins(tmp_path, {"m": 0.5, "f": 0.5}), variables=("sex",), trim_max=None
    )
    rake = replicate_weigher(wcfg)
    shares = []

    def checked(frame: pl.DataFrame) -> np.ndarray:
        w = rake(frame)
        shares.append(w[frame["sex"].to_numpy() == "m"].sum() / w.sum())
        return w

    credit = {"m": np.array([1.0] * 3 + [0.0] * 7)}
    ids = resp["respondent_id"].to_numpy()
    out = respondent_bootstrap(credit, ids, resp, reweigh=checked, n_boot=100, seed=0)
    # a replicate with no man (0.7^10 = 2.8 % of draws) cannot be raked: skipped and counted
    assert len(shares) == 100 - out["failed"] and out["failed"] <= 10
    assert np.allclose(shares, 0.5)
    lo, hi = out["models"]["m"]
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    full = rake(resp)  # men weigh 0.5 / 0.3 = 5/3, women 0.5 / 0.7 = 5/7
    assert full[:3] == pytest.approx([5 / 3] * 3) and full[3:] == pytest.approx([5 / 7] * 7)
    fixed = resp.with_columns(pl.Series("weight", full))
    lo, hi = respondent_bootstrap(credit, ids, fixed, reweigh=None, n_boot=100)["models"]["m"]
    assert hi - lo > 0.2


def test_too_many_failed_replicates_give_no_interval(tmp_path: Path) -> None:
    """One man in ten: most replicates draw none and cannot be raked."""
    resp = pl.DataFrame({"respondent_id": list("abcdefghij"), "sex": ["m"] + ["f"] * 9})
    wcfg = WeightingConfig(
        margins=_margins(tmp_path, {"m": 0.5, "f": 0.5}), variables=("sex",), trim_max=None
    )
    out = respondent_bootstrap(
        {"m": np.ones(10)},
        resp["respondent_id"].to_numpy(),
        resp,
        reweigh=replicate_weigher(wcfg),
        n_boot=40,
    )
    assert out["models"]["m"] == (None, None) and "could not be re-weighted" in out["note"]


def test_opinion_group_scheme_and_off() -> None:
    """opinion_groups re-weights each replicate to equal group shares; weighting off: None."""
    assert replicate_weigher(WeightingConfig(enabled=False)) is None
    weigh = replicate_weigher(WeightingConfig(scheme="opinion_groups"))
    frame = pl.DataFrame(
        {"respondent_id": ["a", "a", "b"], "group": ["0", "0", "1"], "weight": [5.0, 5.0, 1.0]}
    )
    # group 0 (two rows) and group 1 (one row) each get half: 0.75, 0.75, 1.5 (mean 1)
    assert weigh(frame) == pytest.approx([0.75, 0.75, 1.5])
    assert pair_credit(np.array([0.7, 0.5, 0.2])) == pytest.approx([1.0, 0.5, 0.0])
