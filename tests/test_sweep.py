"""Ray Tune sweeps: strict sweep files, the search space as Tune objects, the trial table, and
one real 2-trial KTO sweep (Tune -> TorchTrainer -> held-out eval -> offline W&B)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from valign_ray.config import PipelineConfig
from valign_ray.config_loader import ConfigError
from valign_ray.sweeps import load_sweep, rank_trials, trial_config

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, sweep: dict, pipeline: dict | None = None) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"sweep": sweep, "pipeline": pipeline or {}}))
    return path


def test_shipped_sweep_files_load() -> None:
    kto = load_sweep(REPO / "configs/sweep_kto.yaml")
    assert set(kto.sweep.space) == {"loss.beta", "loss.lambda_d", "loss.lambda_u"}
    assert kto.pipeline.loss.name == "kto"
    dpo = load_sweep(REPO / "configs/sweep_dpo.yaml", ["train.epochs=1", "sweep.num_samples=3"])
    assert dpo.pipeline.loss.name == "dpo" and dpo.pipeline.train.epochs == 1
    assert dpo.sweep.num_samples == 3


@pytest.mark.parametrize(
    ("sweep", "pipeline", "message"),
    [
        # A misspelt sweep key, naming the valid ones.
        ({"num_sampels": 2, "space": {"loss.beta": {"choice": [0.1]}}}, {}, "sweep.num_sampels"),
        # A misspelt space entry and a misspelt swept key.
        ({"space": {"loss.beta": {"chioce": [0.1]}}}, {}, "chioce"),
        ({"space": {"loss.betta": {"choice": [0.1]}}}, {}, "betta"),
        # A misspelt metric would only show after the whole sweep: rejected up front.
        (
            {"metric": "eval_acuracy", "space": {"loss.beta": {"choice": [0.1]}}},
            {},
            "eval_acuracy",
        ),
        # A value of the wrong type for the swept key.
        ({"space": {"loss.beta": {"choice": ["big"]}}}, {}, "loss.beta"),
        # Keys that change the data every trial shares.
        ({"space": {"loss.name": {"choice": ["dpo"]}}}, {}, "only loss.* and train.*"),
        ({"space": {"data.max_length": {"choice": [32]}}}, {}, "only loss.* and train.*"),
        # loguniform needs 0 < lo < hi; exactly one kind per key.
        ({"space": {"loss.beta": {"loguniform": [0.5, 0.1]}}}, {}, "0 < lo < hi"),
        ({"space": {"loss.beta": {"choice": [0.1], "grid": [0.2]}}}, {}, "exactly one"),
        ({"space": {}}, {}, "empty"),
        ({"space": {"loss.beta": {"choice": [0.1]}}}, {"loss": {"name": "sft"}}, "sft"),
        # A typo in the pipeline section is rejected as in `valign run`.
        ({"space": {"loss.beta": {"choice": [0.1]}}}, {"trian": {}}, "trian"),
    ],
)
def test_sweep_file_rejects_mistakes(tmp_path: Path, sweep, pipeline, message: str) -> None:
    path = _write(tmp_path, sweep, pipeline)
    with pytest.raises(ConfigError, match=message) as info:
        load_sweep(path)
    assert str(path) in str(info.value)


def test_overrides_route_to_sections(tmp_path: Path) -> None:
    path = _write(tmp_path, {"space": {"loss.beta": {"choice": [0.1]}}})
    spec = load_sweep(path, ["train.epochs=3", "sweep.num_samples=5", "pipeline.name=x"])
    assert (spec.pipeline.train.epochs, spec.sweep.num_samples, spec.pipeline.name) == (3, 5, "x")


def test_search_space_translates_to_tune_domains() -> None:
    """choice -> Categorical with the same values; grid -> {"grid_search": values};
    loguniform [0.01, 1] -> log10(value) uniform on [-2, 0], so the median is 10^-1 = 0.1 and
    a quarter of the draws fall below 10^-1.5 = 0.0316."""
    from ray.tune.search.sample import Categorical, Float, LogUniform

    spec = load_sweep(REPO / "configs/sweep_kto.yaml")
    sweep = spec.sweep.__class__(
        space={
            **spec.sweep.space,
            "loss.beta": spec.sweep.space["loss.beta"].__class__(loguniform=(0.01, 1.0)),
            "train.lr": spec.sweep.space["loss.beta"].__class__(grid=(1e-3, 2e-3)),
        }
    )
    from valign_ray.distributed.tune import search_space

    space = search_space(sweep)
    lam = space["loss.lambda_d"]
    assert isinstance(lam, Categorical) and lam.categories == [0.5, 1.0, 1.5]
    assert space["train.lr"] == {"grid_search": [1e-3, 2e-3]}
    beta = space["loss.beta"]
    assert isinstance(beta, Float) and isinstance(beta.sampler, LogUniform)
    assert (beta.lower, beta.upper) == (0.01, 1.0)
    draws = np.array(beta.sample(size=20000, random_state=np.random.default_rng(0)))
    assert draws.min() >= 0.01 and draws.max() <= 1.0
    assert np.median(draws) == pytest.approx(0.1, rel=0.05)
    assert np.mean(draws < 10**-1.5) == pytest.approx(0.25, abs=0.01)


def test_trial_config_overrides_only_the_point() -> None:
    base = PipelineConfig()
    cfg = trial_config(base, {"loss.beta": 0.3, "loss.lambda_u": "auto", "train.lr": 1e-4})
    assert (cfg.loss.beta, cfg.loss.lambda_u, cfg.train.lr) == (0.3, "auto", 1e-4)
    assert cfg.loss.lambda_d == base.loss.lambda_d and cfg.model == base.model


def test_rank_trials_orders_best_first_and_keeps_failures() -> None:
    """Accuracies 0.6, 0.8 and a failed trial: max mode -> b (0.8), a (0.6), then the failure;
    min mode on loss 0.5 vs 0.4 -> b first."""
    recs = [
        {"trial_id": "a", "status": "ok", "loss.beta": 0.1, "beta": 0.1,
         "eval_preference_accuracy": 0.6, "loss": 0.5},
        {"trial_id": "c", "status": "error", "loss.beta": 0.3, "error": "boom"},
        {"trial_id": "b", "status": "ok", "loss.beta": 0.2, "beta": 0.2,
         "eval_preference_accuracy": 0.8, "loss": 0.4},
    ]  # fmt: skip
    table = rank_trials(recs, ["loss.beta"], "eval_preference_accuracy", "max")
    assert table["trial_id"].to_list() == ["b", "a", "c"]
    assert table["error"].to_list() == [None, None, "boom"]
    assert rank_trials(recs, ["loss.beta"], "loss", "min")["trial_id"].to_list()[:2] == ["b", "a"]


@pytest.mark.ray
def test_a_real_two_trial_sweep(ray_session, tmp_path: Path) -> None:
    """Two KTO trials (beta grid 0.05 and 0.5, lambda_d drawn log-uniformly from [0.5, 2]) at
    smoke size, 3 steps each: both finish with held-out metrics, the table and best.json agree,
    the best model re-evaluates to its reported accuracy, and each trial has an offline W&B run.
    """
    from valign_ray.eval.heldout import evaluate_pairs
    from valign_ray.models import load_model, load_tokenizer
    from valign_ray.sweeps import run_sweep

    smoke = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    smoke["survey"]["synthetic"]["n_sample"] = 80
    smoke["train"].update(epochs=1, max_steps=3, batch_size=8, report_every=2)
    smoke.update(output_dir=str(tmp_path / "runs"), name="sweep-test")
    sweep = {
        "space": {
            "loss.beta": {"grid": [0.05, 0.5]},
            "loss.lambda_d": {"loguniform": [0.5, 2.0]},
        },
        "num_samples": 1,
    }
    out = run_sweep(_write(tmp_path, sweep, smoke), [])

    run_dir = tmp_path / "runs" / "sweep-test"
    table = pl.read_csv(run_dir / "sweep" / "results.csv")
    assert table.height == 2 and out["n_failed"] == 0
    assert sorted(table["loss.beta"].to_list()) == [0.05, 0.5]
    # What each trial trained with is what Tune drew: reported beta/lambda_d == the point.
    assert table["beta"].to_list() == table["loss.beta"].to_list()
    assert table["lambda_d"].to_list() == table["loss.lambda_d"].to_list()
    assert all(0.5 <= v <= 2.0 for v in table["lambda_d"])
    assert all(0.0 <= v <= 1.0 for v in table["eval_preference_accuracy"])
    # Different beta -> different KTO loss: the sampled point reached the training loop.
    assert table["loss"][0] != table["loss"][1]
    best = json.loads((run_dir / "sweep" / "best.json").read_text())
    assert (
        best["best"]["metrics"]["eval_preference_accuracy"]
        == table["eval_preference_accuracy"].max()
    )
    n_pairs = pl.read_parquet(run_dir / "datasets" / "eval_pairs.parquet").height
    assert best["best"]["metrics"]["eval_n_pairs"] == n_pairs
    # Cross-check the reporting path: evaluate the best trial's exported model ourselves.
    model_dir = Path(best["best"]["model_dir"])
    assert model_dir.is_relative_to(run_dir / "sweep" / "trials" / best["best"]["trial_id"])
    pairs = pl.read_parquet(run_dir / "datasets" / "eval_pairs.parquet")
    again = evaluate_pairs(load_model(model_dir), load_tokenizer(model_dir), pairs, max_length=96)
    assert again["preference_accuracy"] == pytest.approx(
        best["best"]["metrics"]["eval_preference_accuracy"], abs=1e-9
    )
    # Every trial trained 3 steps (one metrics line each) and logged one offline W&B run.
    metrics = sorted((run_dir / "sweep" / "trials").glob("*/train_metrics.jsonl"))
    assert [len(p.read_text().splitlines()) for p in metrics] == [3, 3]
    assert len(out["wandb_dirs"]) == 2
    assert all(Path(d).is_dir() and any(Path(d).glob("*.wandb")) for d in out["wandb_dirs"])
