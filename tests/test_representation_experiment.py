"""The headline experiment's assembly (valign_ray.eval.representation_experiment): which runs
it asks the experiment runner for, and (slow) the whole experiment at a tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from valign_ray.config import load_config
from valign_ray.eval.representation_experiment import representation_variants

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/representation.yaml"


def test_only_oracle_variants_read_the_oracle_survey() -> None:
    """Nine trained variants; the two *_oracle ones switch the survey to the oracle files
    (after their own overrides), the others keep the synthetic source."""
    base = load_config(CONFIG)
    files = {"instrument": Path("/o/instrument.yaml"), "respondents": Path("/o/respondents.csv")}
    variants = {v.name: v.overrides for v in representation_variants(base, files)}
    assert list(variants) == [
        "kto_unweighted", "kto_weighted", "kto_balanced", "kto_oracle",
        "dpo_unweighted", "dpo_hard", "dpo_balanced", "dpo_oracle", "dpo_soft",
    ]  # fmt: skip
    oracle = (
        "survey.source=files",
        "survey.files.instrument=/o/instrument.yaml",
        "survey.files.respondents=/o/respondents.csv",
        "survey.salt=synthetic-oracle",
    )
    assert variants["kto_oracle"] == ("weighting.enabled=false", *oracle)
    assert variants["dpo_oracle"] == ("loss.name=dpo", "weighting.enabled=false", *oracle)
    for name in ("kto_unweighted", "kto_weighted", "kto_balanced", "dpo_hard", "dpo_soft"):
        assert not any(o.startswith("survey.") for o in variants[name])
    assert variants["dpo_balanced"] == (
        "loss.name=dpo", "weighting.enabled=true", "weighting.scheme=balanced"
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.ray
def test_the_whole_experiment_at_a_tiny_size(ray_session, tmp_path: Path) -> None:
    """Nine 2-step runs through the experiment runner, then the scoring: every run finished,
    results for the base model and all nine variants in both model forms, the plots."""
    from valign_ray.eval.representation_experiment import run_representation_experiment

    sets = [
        "survey.synthetic.n_population=1500",
        "survey.synthetic.n_sample=120",
        "train.max_steps=2",
        "train.num_workers=1",
    ]
    out = run_representation_experiment(CONFIG, sets, tmp_path / "exp")
    runs = pl.read_csv(tmp_path / "exp" / "runs.csv")
    assert runs.height == 9 and (runs["status"] == "finished").all()
    assert set(out["results"]["implicit"]) == {"base", *runs["run"]}
    assert set(out["results"]["data"]) == set(runs["run"])
    saved = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert saved["base_models_identical"] is True
    for name in ("results.md", "a_population_implicit.png", "a_groups_logprob.png"):
        assert (tmp_path / "exp" / name).exists(), name


def test_tradeoff_table_puts_population_next_to_worst_group() -> None:
    """Rows for the variants present, in method then weighting order; each cell estimate
    [lo, hi]; the worst group named."""
    from valign_ray.eval.representation_runs import tradeoff_markdown

    def r(pop: float, worst: float, group: str) -> dict:
        return {
            "population": {"estimate": pop, "lo": pop - 0.01, "hi": pop + 0.01},
            "worst_group": {"group": group, "estimate": worst, "lo": worst - 0.02, "hi": worst},
        }

    text = tradeoff_markdown(
        {"dpo_hard": r(0.977, 0.716, "age_band=65+"), "dpo_balanced": r(0.93, 0.80, "gender=m"),
         "dpo_unweighted": r(0.891, 0.792, "age_band=65+"), "base": r(0.5, 0.4, "x")},
        title="t",
    )  # fmt: skip
    rows = [line for line in text.splitlines() if line.startswith("| dpo")]
    assert rows == [
        "| dpo | none | 0.891 [0.881, 0.901] | 0.792 [0.772, 0.792] | age_band=65+ |",
        "| dpo | population | 0.977 [0.967, 0.987] | 0.716 [0.696, 0.716] | age_band=65+ |",
        "| dpo | group-balanced | 0.930 [0.920, 0.940] | 0.800 [0.780, 0.800] | gender=m |",
    ]
