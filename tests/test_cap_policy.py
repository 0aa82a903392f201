"""weighting.on_cap_binding: what weighting does on a sample where the trim cap 5 binds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from valign_ray.config import WeightingConfig
from valign_ray.stages.survey import weighting_result
from valign_ray.survey.cap_policy import MARGIN_MET, CapBindingError, rake_with_cap_policy
from valign_ray.survey.margins import load_margins, select_margins
from valign_ray.survey.weighting import rake_to_margins

NZ = Path(__file__).resolve().parents[1] / "data" / "margins" / "nz_2023.csv"
VARIABLES = ["age_band", "gender", "region_group"]


def scarce_65_plus() -> tuple[pl.DataFrame, dict]:
    """1,000 respondents, only 35 of them 65+ (target 20.4 %), women and Auckland over-represented.

    Each 65+ respondent needs a weight near 0.2042 / 0.035 = 5.8 x mean, so with the default
    cap of 5 the 65+ share can reach at most about 5 x 0.035 = 17.5 %: the cap binds, about
    3 points short.
    """
    margins = select_margins(load_margins(NZ), VARIABLES)
    rng = np.random.default_rng(0)
    n = 1000
    frame = pl.DataFrame(
        {
            "age_band": ["65+"] * 35 + ["15-64"] * (n - 35),
            "gender": rng.choice(["female", "male"], n, p=[0.62, 0.38]),
            "region_group": rng.choice(list(margins["region_group"]), n, p=[0.45, 0.2, 0.2, 0.15]),
        }
    )
    return frame, margins


def test_default_cap_binds_on_this_sample():
    frame, margins = scarce_65_plus()
    d = rake_to_margins(frame, margins, trim_max=5.0).diagnostics
    assert d.cap_binding and not d.converged
    assert 0.025 < d.max_margin_error < 0.035  # "about 3 points off"


def test_accept_continues_with_the_misses_in_the_summary():
    frame, margins = scarce_65_plus()
    res = rake_with_cap_policy(frame, margins, trim_max=5.0, on_cap_binding="accept")
    d = res.diagnostics
    assert d.cap_binding and d.trim_max == 5.0 and res.respondents["weight"].max() == 5.0
    summary = weighting_result(d, "accept")
    assert summary.cap_binding and summary.on_cap_binding == "accept"
    assert summary.max_margin_error == pytest.approx(d.max_margin_error)
    # the largest miss first, signed weighted - target: 65+ short, 15-64 over
    first = next(iter(summary.margin_errors))
    assert first in ("age_band=65+", "age_band=15-64")
    assert summary.margin_errors["age_band=65+"] < -0.025


def test_error_names_the_missed_margins():
    frame, margins = scarce_65_plus()
    with pytest.raises(CapBindingError, match=r"trim cap 5 x mean binds.*age_band=(65\+|15-64)"):
        rake_with_cap_policy(frame, margins, trim_max=5.0, on_cap_binding="error")


def test_raise_cap_finds_the_smallest_cap_meeting_the_margins():
    frame, margins = scarce_65_plus()
    res = rake_with_cap_policy(frame, margins, trim_max=5.0)  # raise_cap is the default
    d = res.diagnostics
    assert 5.0 < d.trim_max <= 20.0 and not d.cap_binding and d.max_margin_error <= MARGIN_MET
    assert res.respondents["weight"].max() <= d.trim_max * (1 + 1e-12)
    assert any("raised from 5 to" in note for note in d.notes)
    # smallest: 0.02 lower (two steps of the search's resolution) misses the margins
    lower = rake_to_margins(frame, margins, trim_max=d.trim_max - 0.02, trim_rounds=1000)
    assert lower.diagnostics.max_margin_error > MARGIN_MET
    assert weighting_result(d, "raise_cap").notes == list(d.notes)


def test_raise_cap_errors_naming_the_limit():
    frame, margins = scarce_65_plus()
    with pytest.raises(CapBindingError, match=r"trim_max_limit=5\.5"):
        rake_with_cap_policy(frame, margins, trim_max=5.0, trim_max_limit=5.5)


def test_no_policy_when_the_cap_holds():
    frame, margins = scarce_65_plus()
    res = rake_with_cap_policy(frame, margins, trim_max=15.0, on_cap_binding="error")
    assert not res.diagnostics.cap_binding and res.diagnostics.notes == ()


def test_config_defaults_and_choices():
    cfg = WeightingConfig()
    assert cfg.on_cap_binding == "raise_cap" and cfg.trim_max_limit == 20.0
    with pytest.raises(ValueError):
        WeightingConfig(on_cap_binding="ignore")


@pytest.mark.parametrize("policy", ["raise_cap", "error", "accept"])
def test_weights_stage_records_each_policy(tmp_path: Path, policy: str):
    """The weights stage on the scarce-65+ sample: summary.json says what the policy did."""
    from valign_ray.config import PipelineConfig
    from valign_ray.pipeline import format_summary
    from valign_ray.results import RunSummary
    from valign_ray.run_layout import RunLayout
    from valign_ray.stages.base import StageContext
    from valign_ray.stages.survey import run_weights

    frame, _ = scarce_65_plus()
    cfg = PipelineConfig(
        output_dir=str(tmp_path),
        weighting=WeightingConfig(margins=str(NZ), on_cap_binding=policy),
    )
    layout = RunLayout.of(tmp_path, cfg.name)
    layout.survey_table("respondents").parent.mkdir(parents=True)
    frame.with_row_index("respondent_id").write_parquet(layout.survey_table("respondents"))
    ctx = StageContext(cfg, layout)
    if policy == "error":
        with pytest.raises(CapBindingError):
            run_weights(ctx)
        assert not layout.weights.exists()
        return
    result = run_weights(ctx)
    summary = RunSummary(name="run", run_dir=str(layout.run_dir), results={"weighting": result})
    summary.save(layout.summary)
    again = RunSummary.load(layout.summary).results["weighting"]
    assert again == result and again.on_cap_binding == policy
    text = format_summary(RunSummary.load(layout.summary))
    if policy == "accept":
        assert again.cap_binding and again.trim_max == 5.0 and "CAP BINDING" in text
        assert again.margin_errors["age_band=65+"] < -0.025
    else:
        assert not again.cap_binding and again.trim_max > 5.0 and "raised from 5" in text
        assert again.margin_errors is None
