"""The variance experiment (valign_ray.eval.representation_variance[_report]): the interval
arithmetic on hand-computed values, the runs it plans, and (Ray) the smoke run end to end."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from valign_ray.config import load_config
from valign_ray.eval.representation_variance import VarianceSpec, variance_variants
from valign_ray.eval.representation_variance_report import (
    paired_differences,
    summarise,
    t_interval,
    variance_components,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/representation_variance.yaml"


def test_t_interval_by_hand() -> None:
    """[1, 2, 3, 4]: mean 2.5, sd sqrt(5/3) = 1.290994, se 0.645497, t(0.975, 3) = 3.182446:
    half-width 2.054260. One value: no interval."""
    mean, lo, hi = t_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert lo == pytest.approx(2.5 - 2.054260, abs=1e-6)
    assert hi == pytest.approx(2.5 + 2.054260, abs=1e-6)
    mean, lo, hi = t_interval([0.7])
    assert mean == 0.7 and math.isnan(lo) and math.isnan(hi)


def test_variance_components_by_hand() -> None:
    """Draw 0: 1, 2, 3 (mean 2, var 1); draw 1: 5, 5, 8 (mean 6, var 3). SD between draws:
    sd(2, 6) = 2.828427; SD between train seeds: sqrt((1 + 3) / 2) = 1.414214; t over the
    draw means: 4 +- t(0.975, 1) * 2.828427 / sqrt(2) = 4 +- 12.706205 * 2 = 4 +- 25.412409."""
    c = variance_components([0, 0, 0, 1, 1, 1], [1.0, 2.0, 3.0, 5.0, 5.0, 8.0])
    assert c["sd_draws"] == pytest.approx(2.828427, abs=1e-6)
    assert c["sd_seeds"] == pytest.approx(1.414214, abs=1e-6)
    assert c["draw_mean"] == 4.0
    assert c["draw_lo"] == pytest.approx(4 - 25.412409, abs=1e-5)
    assert c["draw_hi"] == pytest.approx(4 + 25.412409, abs=1e-5)


def _rows() -> pl.DataFrame:
    """Two variants x 2 draws x 2 seeds, one metric, seen items; item-bootstrap bounds
    estimate -+ 0.05."""
    values = {"a": [0.80, 0.82, 0.70, 0.74], "b": [0.75, 0.75, 0.66, 0.68]}
    rows = []
    for variant, vals in values.items():
        for k, v in enumerate(vals):
            draw, seed = divmod(k, 2)
            rows.append(
                {"variant": variant, "draw": draw, "train_seed": seed,
                 "run": f"{variant}-d{draw}-s{seed}", "items": "seen", "n_items": 10,
                 "metric": "population", "estimate": v, "lo": v - 0.05, "hi": v + 0.05}
            )  # fmt: skip
    return pl.DataFrame(rows)


def test_summary_keeps_the_interval_kinds_apart() -> None:
    """Variant a: runs 0.80 0.82 0.70 0.74: mean 0.765, sd 0.055076, t(0.975, 3) 3.182446 ->
    half 0.087637; draw means 0.81, 0.72 -> SD 0.063640; within-draw variances 0.0002, 0.0008
    -> SD sqrt(0.0005) = 0.022361; item bootstrap of the first run (d0-s0): [0.75, 0.85]."""
    s = summarise(_rows()).filter(pl.col("variant") == "a").row(0, named=True)
    assert s["n_runs"] == 4 and s["mean"] == pytest.approx(0.765)
    assert s["run_hi"] - s["mean"] == pytest.approx(0.087637, abs=1e-6)
    assert s["sd_draws"] == pytest.approx(0.063640, abs=1e-6)
    assert s["sd_seeds"] == pytest.approx(0.022361, abs=1e-6)
    assert s["item_run"] == "a-d0-s0"
    assert (s["item_lo"], s["item_hi"]) == pytest.approx((0.75, 0.85))


def test_paired_differences_match_runs_by_draw_and_seed() -> None:
    """a - b run by run: 0.05, 0.07, 0.04, 0.06: mean 0.055, sd 0.012910, half-width
    3.182446 * 0.012910 / 2 = 0.020543; positive, so the text may claim it."""
    rows = _rows().with_columns(pl.col("variant").replace({"a": "dpo_hard", "b": "dpo_unweighted"}))
    (d,) = paired_differences(rows)
    assert (d["a"], d["b"], d["items"], d["n_pairs"]) == ("dpo_hard", "dpo_unweighted", "seen", 4)
    assert d["mean"] == pytest.approx(0.055)
    assert d["lo"] == pytest.approx(0.055 - 0.020543, abs=1e-6)
    assert d["hi"] == pytest.approx(0.055 + 0.020543, abs=1e-6)


def test_variants_vary_the_sample_draw_and_the_oracle_draw() -> None:
    """One variant per (trained variant, draw): biased-sample runs set sample_seed, the oracle
    reads its draw's files; bad specs are refused by name."""
    base = load_config(CONFIG)
    spec = VarianceSpec(trained=("dpo_hard", "dpo_oracle"), sample_seeds=(0, 4))
    files = {d: {"answers": Path(f"/o/d{d}/answers.csv")} for d in (0, 4)}
    variants, meta = variance_variants(base, spec, files)
    by = {v.name: v.overrides for v in variants}
    assert list(by) == ["dpo_hard-d0", "dpo_oracle-d0", "dpo_hard-d4", "dpo_oracle-d4"]
    assert by["dpo_hard-d4"] == ("loss.name=dpo", "survey.synthetic.sample_seed=4")
    assert "survey.files.answers=/o/d4/answers.csv" in by["dpo_oracle-d4"]
    assert meta["dpo_oracle-d4"] == ("dpo_oracle", 4)
    spec.check(base)
    for bad, word in (
        (VarianceSpec(trained=("nope",)), "nope"),
        (VarianceSpec(train_seeds=(1, 1)), "train_seeds"),
        (VarianceSpec(form="x"), "form"),
    ):
        with pytest.raises(ValueError, match=word):
            bad.check(base)
    with pytest.raises(ValueError, match="holdout_items"):
        VarianceSpec().check(load_config(CONFIG, ["data.holdout_items=0"]))


@pytest.mark.ray
def test_smoke_run_end_to_end(ray_session, tmp_path: Path) -> None:
    """The --smoke path (base and dpo_hard, sample draws 0 and 1, train seed 0, 10 steps) at a
    small population: 2 runs, every model scored on seen and unseen items, and a page whose
    table has both item sets and names each kind of interval."""
    from valign_ray.eval.representation_variance import (
        SMOKE_SETS,
        SMOKE_TRAINED,
        run_variance_experiment,
    )

    sets = [*SMOKE_SETS, "survey.synthetic.n_population=2000", "survey.synthetic.n_sample=120"]
    spec = VarianceSpec(trained=SMOKE_TRAINED, sample_seeds=(0, 1), train_seeds=(0,))
    rows = run_variance_experiment(CONFIG, sets, tmp_path / "exp", spec=spec)
    exp = tmp_path / "exp"
    runs = pl.read_csv(exp / "runs.csv")
    assert runs.height == 2 and (runs["status"] == "finished").all()
    assert set(rows["run"]) == {"base", *runs["run"]}
    # 18 items, 8 held out (data.holdout_items 0.33, split_seed 0): every run scored on both
    assert sorted(rows["n_items"].unique().to_list()) == [8, 10]
    assert set(rows["items"]) == {"seen", "unseen"}
    # another sample draw: another sample of the same population (truths checked equal when
    # scoring), hence other training rows
    d0, d1 = (exp / f"dpo_hard-d{d}" for d in (0, 1))
    for path in ("survey/tables/answers.parquet", "survey/truth.parquet"):
        same = pl.read_parquet(d0 / path).equals(pl.read_parquet(d1 / path))
        assert same == path.endswith("truth.parquet"), path
    text = (exp / "results.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| variant | runs |"))
    assert "A(population), seen" in header and "A(population), unseen" in header
    assert "skill, unseen" in header and "worst-group A, seen" in header
    for kind in ("95% t, runs (both sources)", "95% t, draw means", "item bootstrap, one run"):
        assert kind in text, kind
    for plot in ("seen_vs_unseen", "variance_bands", "skill", "population_vs_worst_group"):
        assert (exp / f"{plot}.png").stat().st_size > 1000, plot


def test_run_done_line_eta_by_hand() -> None:
    """372 s for 3 of 45 runs: 124 s per run x 42 left = 5208 s = 1h26m (rounded down)."""
    from valign_ray.output import run_done_line

    line = run_done_line("dpo_hard-d0-s2", 3, 45, 372.0, failed=False)
    assert line == "[grid] run 3/45 dpo_hard-d0-s2 finished, elapsed 6m12s, eta 1h26m"
    assert "FAILED" in run_done_line("x", 1, 2, 1.0, failed=True)


def test_soft_batch_is_the_trained_item_count() -> None:
    """18 items, 8 held out at 0.33 (split_seed 0): dpo_soft's one row per trained item fits
    one batch of 10 per worker, the last word on train.batch_size (the default 18 failed:
    10 rows are fewer than one global batch)."""
    from valign_ray.eval.representation_experiment import biased_survey
    from valign_ray.eval.representation_variance import trained_item_count

    base = load_config(CONFIG)
    ids = biased_survey(base).items.filter(pl.col("kind") == "prompt")["item_id"]
    assert len(ids) == 18 and trained_item_count(base, ids) == 10
    spec = VarianceSpec(trained=("dpo_soft",), sample_seeds=(0,))
    (variant,), _ = variance_variants(base, spec, {}, n_trained_items=10)
    sizes = [o for o in variant.overrides if o.startswith("train.batch_size=")]
    assert sizes[-1] == "train.batch_size=10"
    assert load_config(CONFIG, list(variant.overrides)).train.batch_size == 10


def test_the_script_defaults_to_the_modules_variants() -> None:
    import importlib.util

    from valign_ray.eval.representation_variance import TRAINED

    spec = importlib.util.spec_from_file_location(
        "rv_script", REPO / "experiments/representation_variance.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.TRAINED == TRAINED
