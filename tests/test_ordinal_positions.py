"""Ordinal option positions and refusal codes, on a small fixture in the shape OpinionQA takes
from Pew's American Trends Panel (tests/fixtures/opinionqa/): hand-computed W1 and A.

CLIM_PROB: Yes = 1, No = 2, Not sure = 3 placed at 1.5; refusal 99. Answers (weight 1 each):
  1, 1, 2, 3, 99 -> the refusal is dropped: population [.5, .25, .25] over codes 1, 2, 3.
  Model [.25, .25, .5]. Sorted by position (codes 1, 3, 2 at 1, 1.5, 2; gaps .5, .5):
  population [.5, .25, .25] CDF [.5, .75]; model [.25, .5, .25] CDF [.25, .75]
  -> W1 = .25 * .5 + 0 * .5 = .125, range 2 - 1 = 1 -> A = .875.
  In code order (positions 1, 2, 3): CDFs [.5, .75] vs [.25, .5] -> W1 .5, range 2 -> A .75.
  Uniform model: sorted CDF [1/3, 2/3] vs [.5, .75] -> W1 = (1/6 + 1/12) * .5 = .125 -> .875.
GOV_TRUST: SA 1, A 2, D 3, SD 4, Neither = 5 at 2.5; refusal 99. Answers 1, 2, 5, 4, 99
  -> population [.25, .25, 0, .25, .25]. Model all on Neither [0, 0, 0, 0, 1].
  Sorted (codes 1, 2, 5, 3, 4 at 1, 2, 2.5, 3, 4; gaps 1, .5, .5, 1):
  population CDF [.25, .5, .75, .75], model CDF [0, 0, 1, 1] -> |diff| [.25, .5, .25, .25]
  -> W1 = .25 + .25 + .125 + .25 = .875, range 3 -> A = 1 - .875/3 = 17/24.
  In code order: CDFs [.25, .5, .5, .75] vs [0, 0, 0, 0] -> W1 2, range 4 -> A .5.
  Uniform: CDF [.2, .4, .6, .8] vs [.25, .5, .75, .75] -> .05 + .05 + .075 + .05 = .225
  -> A_0 = 1 - .075 = .925.
Mean A = (21/24 + 17/24)/2 = 19/24 (code order: .625); mean A_0 = .9;
skill = (19/24 - .9)/.1 = -13/12: a model worse than hedging, which A alone hides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from valign_ray.eval.metrics import (
    group_representativeness,
    representativeness,
    wasserstein_ordinal,
)
from valign_ray.survey.ingest import ingest_survey
from valign_ray.survey.instrument import load_instrument, save_instrument

FIXTURE = Path(__file__).parent / "fixtures" / "opinionqa"
MODEL = {"CLIM_PROB": np.array([0.25, 0.25, 0.5]), "GOV_TRUST": np.array([0.0, 0, 0, 0, 1])}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    inst = load_instrument(FIXTURE / "instrument.yaml")
    res = ingest_survey(
        inst,
        FIXTURE / "respondents.csv",
        FIXTURE / "answers.csv",
        quarantine_dir=tmp_path_factory.mktemp("q"),
        salt="s",
    )
    return inst, res


def test_w1_with_positions_by_hand() -> None:
    """CLIM_PROB and GOV_TRUST of the module docstring, item by item; W1 scales with the
    positions (x 20: .125 -> 2.5) but A does not (normalised by the first-to-last distance)."""
    pop, pos = [0.5, 0.25, 0.25], [1, 2, 1.5]
    assert wasserstein_ordinal(MODEL["CLIM_PROB"], pop, pos) == pytest.approx(0.125)
    assert representativeness(MODEL["CLIM_PROB"], pop, pos) == pytest.approx(0.875)
    assert representativeness(MODEL["CLIM_PROB"], pop) == pytest.approx(0.75)  # code order
    assert wasserstein_ordinal(MODEL["CLIM_PROB"], pop, [0, 20, 10]) == pytest.approx(2.5)
    assert representativeness(MODEL["CLIM_PROB"], pop, [0, 20, 10]) == pytest.approx(0.875)
    pop5, pos5 = [0.25, 0.25, 0, 0.25, 0.25], [1, 2, 3, 4, 2.5]
    assert wasserstein_ordinal(MODEL["GOV_TRUST"], pop5, pos5) == pytest.approx(0.875)
    assert representativeness(MODEL["GOV_TRUST"], pop5, pos5) == pytest.approx(17 / 24)
    assert representativeness(MODEL["GOV_TRUST"], pop5) == pytest.approx(0.5)


def test_w1_with_positions_matches_scipy() -> None:
    """Independent implementation: scipy's W1 between weighted point masses at the positions."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
        pos = rng.uniform(0, 10, 5)
        want = stats.wasserstein_distance(pos, pos, p, q)
        assert wasserstein_ordinal(p, q, pos) == pytest.approx(want)


def test_bad_positions_are_errors() -> None:
    with pytest.raises(ValueError, match="two positions"):
        representativeness([0.5, 0.5], [0.2, 0.8], [1, 1])
    with pytest.raises(ValueError, match="expected 3 finite"):
        wasserstein_ordinal([0.2, 0.3, 0.5], [0.5, 0.3, 0.2], [1, 2])


def test_refusals_are_dropped_and_counted(ingested) -> None:
    """Two answers coded 99 of 10: dropped before the checks, counted, not quarantined."""
    _, res = ingested
    a = res.counts["answers"]
    assert (a["rows_in"], a["kept"], a["quarantined"], a["refused"]) == (10, 8, 0, 2)
    assert a["rows_in"] == a["kept"] + a["quarantined"] + a["refused"]
    assert sorted(res.answers["value"].unique().to_list()) == [1, 2, 3, 4, 5]
    assert "2 refusals dropped" in res.format_counts()


def test_fixture_representativeness_with_positions(ingested) -> None:
    """Mean A 19/24 with the instrument's positions (.625 in code order), A_0 .9, skill -13/12."""
    inst, res = ingested
    assert inst.option_positions() == {
        "CLIM_PROB": (1.0, 2.0, 1.5),
        "GOV_TRUST": (1.0, 2.0, 3.0, 4.0, 2.5),
    }
    args = (MODEL, res.answers, res.respondents, None)
    table = group_representativeness(*args, weight_col=None, positions=inst.option_positions())
    row = table.row(0, named=True)
    assert row["representativeness"] == pytest.approx(19 / 24)
    assert row["representativeness_indifferent"] == pytest.approx(0.9)
    assert row["skill"] == pytest.approx(-13 / 12)
    code_order = group_representativeness(*args, weight_col=None)
    assert code_order["representativeness"][0] == pytest.approx(0.625)


def test_positions_round_trip_and_validation(ingested, tmp_path) -> None:
    inst, _ = ingested
    save_instrument(inst, tmp_path / "i.yaml")
    assert load_instrument(tmp_path / "i.yaml") == inst
    raw = yaml.safe_load((FIXTURE / "instrument.yaml").read_text())
    cases = [
        ({"positions": {1: 1, 2: 2}}, "every option code 1..3"),
        ({"positions": {1: 1, 2: 1, 3: 1}}, "two distinct positions"),
        ({"positions": {1: 1, 2: 2, 3: ".5"}}, "finite numbers"),
        ({"positions": [1, 2, 1.5]}, "must be a mapping: option code"),
        ({"refusal_codes": [2]}, "not an integer outside 1..3"),
        ({"refusal_codes": [99, 99]}, "duplicate refusal code"),
    ]
    for change, message in cases:
        doc = yaml.safe_load(yaml.safe_dump(raw))
        doc["items"][0].update(change)
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(doc))
        with pytest.raises(ValueError, match=message):
            load_instrument(tmp_path / "bad.yaml")
