"""Held-out pair evaluation: the representation of each comparison's split, by hand."""

from __future__ import annotations

import polars as pl
import pytest

from valign_ray.eval.heldout import pair_representation


def test_pair_representation_by_hand() -> None:
    """i1 compares "x" < "y": x over y (w 1, g1), x over y (w 1, g2), y over x (w 2, g2);
    the model's P(x over y) = .8 (so P(y over x) = .2 on the third row).
    i2 compares "a" < "b": b over a twice (w 1 and 3, g1); the model's P(b over a) = .6.
    Everyone: i1 q(x) = 2/4 = .5, p .8 -> A .7, A_0 = 1 - |.5 - .5| = 1;
      i2 q(a) = 0, p(a) = .4 -> A .6, A_0 .5. Mean A .65, A_0 .75
      -> skill (.65 - .75)/.25 = -.4.
    Majority: i1 the population is split evenly, the model picks x -> 1/2; i2 both pick b -> 1:
      .75. Groups: g1 i1 q 1 -> .8, i2 -> .6: .7; g2 i1 q = 1/3 -> 1 - (.8 - 1/3) = 8/15."""
    pairs = pl.DataFrame(
        {
            "item_id": ["i1", "i1", "i1", "i2", "i2"],
            "chosen": ["x", "x", "y", "b", "b"],
            "rejected": ["y", "y", "x", "a", "a"],
            "weight": [1.0, 1.0, 2.0, 1.0, 3.0],
            "group": ["g1", "g2", "g2", "g1", "g1"],
            "p": [0.8, 0.8, 0.2, 0.6, 0.6],
        }
    )
    out = pair_representation(pairs)
    assert out["A_population"] == pytest.approx(0.65)
    assert out["A_indifferent"] == pytest.approx(0.75)
    assert out["skill"] == pytest.approx(-0.4)
    assert out["majority_agreement"] == pytest.approx(0.75)
    assert out["n_comparisons"] == 2
    assert out["groups"] == pytest.approx({"g1": 0.7, "g2": 8 / 15})
    assert "groups" not in pair_representation(pairs.drop("group"))
