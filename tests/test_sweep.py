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
    # The DPO file's ASHA section is valid as shipped; KTO's loss is on the swept beta's scale.
    asha = load_sweep(REPO / "configs/sweep_dpo.yaml", ["sweep.scheduler=asha"]).sweep.asha
    assert (asha.metric, asha.grace_period, asha.max_t) == ("rewards/accuracy", 2, 16)
    with pytest.raises(ConfigError, match="on the scale of loss.beta"):
        load_sweep(REPO / "configs/sweep_kto.yaml", ["sweep.scheduler=asha"])


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
        # Any reported metric may be the objective, in its better direction.
        ({"metric": "loss", "space": {"loss.beta": {"choice": [0.1]}}}, {}, "use mode min"),
        # ASHA compares a training metric mid-run: not a held-out one (reported at the end)...
        (
            {
                "space": {"train.lr": {"choice": [0.1]}},
                "scheduler": "asha",
                "asha": {"metric": "eval_A_population", "mode": "max"},
            },
            {},
            "not reported during training",
        ),
        # ... and not one whose scale the swept loss keys change.
        (
            {"space": {"loss.beta": {"choice": [0.1]}}, "scheduler": "asha"},
            {},
            "on the scale of loss.beta",
        ),
        (
            {
                "space": {"train.lr": {"choice": [0.1]}},
                "scheduler": "asha",
                "asha": {"grace_period": 5, "max_t": 4},
            },
            {},
            "grace_period",
        ),
        ({"space": {"loss.beta": {"choice": [0.1]}}, "scheduler": "hyperband"}, {}, "scheduler"),
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


def test_objective_names_every_valid_metric(tmp_path: Path) -> None:
    path = _write(tmp_path, {"metric": "eval_worst_A", "space": {"loss.beta": {"choice": [0.1]}}})
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    for name in ("eval_A_population", "eval_worst_group_A", "eval_skill", "loss"):
        assert name in str(info.value)
    ok = {"metric": "eval_worst_group_A", "space": {"train.lr": {"grid": [1e-3, 2e-3]}}}
    ok |= {"scheduler": "asha", "asha": {"metric": "loss", "grace_period": 2, "max_t": 8}}
    spec = load_sweep(_write(tmp_path, ok))
    assert (spec.sweep.metric, spec.sweep.asha.grace_period) == ("eval_worst_group_A", 2)
    dpo = {"space": {"loss.beta": {"grid": [0.1]}}, "scheduler": "asha"}
    dpo["asha"] = {"metric": "rewards/accuracy", "mode": "max"}  # a sign: the same for any beta
    assert load_sweep(_write(tmp_path, dpo, {"loss": {"name": "dpo"}})).sweep.scheduler == "asha"


def test_eval_columns_flatten_groups_and_take_the_worst() -> None:
    """Groups A = 0.9, B = 0.7: eval_A_group.A 0.9, eval_A_group.B 0.7, worst 0.7; numbers get
    the eval_ prefix, None and the groups dict do not become columns."""
    from valign_ray.sweep_summary import eval_columns

    ev = {"preference_accuracy": 0.6, "skill": None, "n_pairs": 10, "groups": {"A": 0.9, "B": 0.7}}
    assert eval_columns(ev) == {
        "eval_preference_accuracy": 0.6,
        "eval_n_pairs": 10,
        "eval_A_group.A": 0.9,
        "eval_A_group.B": 0.7,
        "eval_worst_group_A": 0.7,
    }
    assert "eval_worst_group_A" not in eval_columns({"margin": 0.1})


def test_summary_writes_csv_markdown_and_plot(tmp_path: Path) -> None:
    """Three trials, worst-group A 0.5 / 0.7 / error: the Markdown table lists b (0.7) before a
    (0.5), the failed trial last with its error below; the PNG has one panel per swept key."""
    from valign_ray.sweep_summary import markdown_table, objective_plot, write_summary

    recs = [
        {"trial_id": "a", "status": "ok", "loss.beta": 0.1, "loss.lambda_d": 1.0,
         "eval_worst_group_A": 0.5, "eval_A_group.x": 0.5},
        {"trial_id": "c", "status": "error", "loss.beta": 0.3, "loss.lambda_d": 1.5,
         "error": "RuntimeError('boom')\nmore"},
        {"trial_id": "b", "status": "ok", "loss.beta": 0.2, "loss.lambda_d": 0.5,
         "eval_worst_group_A": 0.7, "eval_A_group.x": 0.7},
    ]  # fmt: skip
    keys = ["loss.beta", "loss.lambda_d"]
    table = rank_trials(recs, keys, "eval_worst_group_A", "max")
    assert table["trial_id"].to_list() == ["b", "a", "c"]
    assert table["eval_A_group.x"].to_list() == [0.7, 0.5, None]
    md = markdown_table(table, "eval_worst_group_A", "max").splitlines()
    rows = [line for line in md if line.startswith("| ") and "`" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| b", "| a", "| c"]
    assert "| b | ok | 0.2 | 0.5 |" in rows[0] and rows[2].count(" - ") >= 2
    assert "- `c`: RuntimeError('boom')" in md
    fig = objective_plot(table, keys, "eval_worst_group_A", log_keys=("loss.beta",))
    assert [ax.get_xlabel() for ax in fig.axes] == keys
    assert fig.axes[0].get_xscale() == "log" and fig.axes[1].get_xscale() == "linear"
    paths = write_summary(table, tmp_path, keys=keys, metric="eval_worst_group_A", mode="max")
    assert pl.read_csv(paths["results_csv"])["trial_id"].to_list() == ["b", "a", "c"]
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stored_sweep_reloads_and_resume_checks_it(tmp_path: Path) -> None:
    """The stored form (sweep.yaml in the sweep folder) loads back to the same sweep, with the
    run directory absolute; resuming a folder without it, or with a different CONFIG, is
    refused before Ray starts."""
    from valign_ray.sweeps import SWEEP_FILE, _stored_form, resume_sweep

    spec = load_sweep(REPO / "configs/sweep_kto.yaml", [f"output_dir={tmp_path}"])
    sweep_dir = spec.pipeline.run_dir / "sweep"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / SWEEP_FILE).write_text(yaml.safe_dump(_stored_form(spec), sort_keys=False))
    again = load_sweep(sweep_dir / SWEEP_FILE)
    assert again == spec and Path(again.pipeline.output_dir).is_absolute()
    with pytest.raises(ConfigError, match="not a sweep folder"):
        resume_sweep(tmp_path)
    with pytest.raises(ConfigError, match="differs from the sweep stored"):
        resume_sweep(sweep_dir, REPO / "configs/sweep_kto.yaml", [f"output_dir={tmp_path}",
                     "sweep.num_samples=9"])  # fmt: skip
    with pytest.raises(ConfigError, match="no Tune experiment"):
        resume_sweep(sweep_dir)


def test_trial_status_and_an_interrupted_summary(tmp_path: Path) -> None:
    """A trial is ok when it reported its evaluation (model_dir), error when it raised,
    stopped when ASHA ended it (Tune marks that last result done) and otherwise unfinished (cut
    by Ctrl+C). An interrupted sweep writes its partial summary and no best.json."""
    from types import SimpleNamespace

    from valign_ray.distributed.tune import TuneOutcome, _record
    from valign_ray.sweeps import _summarise

    def result(metrics, error=None, name="t"):
        return SimpleNamespace(
            metrics=metrics, error=error, config={"loss.beta": 0.1}, path=f"/x/{name}"
        )

    done = result({"trial_id": "a", "model_dir": "/m", "eval_preference_accuracy": 0.6})
    assert _record(done, ["loss.beta"])["status"] == "ok"
    assert _record(result({}, RuntimeError("x")), [])["status"] == "error"
    assert _record(result({"loss": 0.3, "done": True}), [])["status"] == "stopped"
    cut = _record(result({"loss": 0.3, "done": False}, name="b"), ["loss.beta"])
    assert (cut["status"], cut["trial_id"]) == ("unfinished", "b")
    spec = load_sweep(REPO / "configs/sweep_kto.yaml")
    records = [_record(done, ["loss.beta"]), cut]
    out = _summarise(spec.sweep, tmp_path, TuneOutcome(records, tmp_path / "tune-x", True), {})
    assert out["interrupted"] and not (tmp_path / "best.json").exists()
    assert pl.read_csv(tmp_path / "results.csv")["status"].to_list() == ["ok", "unfinished"]
    assert (tmp_path / "objective.png").exists() and (tmp_path / "results.md").exists()


def test_wandb_runs_are_grouped_by_sweep_name() -> None:
    from valign_ray.distributed.tune import wandb_callbacks

    spec = load_sweep(REPO / "configs/sweep_kto.yaml")
    (callback,) = wandb_callbacks(spec.pipeline)
    assert (callback.group, callback.project) == ("sweep-kto", "valign-ray-sweep")
    assert callback._upload_timeout == 30  # offline: Ctrl+C must not wait 30 min for uploads
    off = trial_config(spec.pipeline, {"wandb.enabled": False})
    assert wandb_callbacks(off) == []


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


@pytest.mark.ray
def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(
    ray_session, tmp_path: Path
) -> None:
    """A 2-trial grid (train.lr 1e-3, 1e-2) under ASHA, whose second trial is interrupted (a
    hook raises before it trains). ``resume_sweep`` restores the Tune experiment: the errored
    trial runs, the finished one is not rerun (its files and Tune log untouched), and the
    summary (CSV, Markdown, plot) then holds both, best worst-group A first."""
    from valign_ray.sweeps import resume_sweep, run_sweep

    def interrupt_big_lr(point: dict) -> None:  # pickled by value into the trial
        if point["train.lr"] == 1e-2:
            raise RuntimeError("interrupted by the test")

    smoke = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    smoke["survey"]["synthetic"]["n_sample"] = 80
    smoke["train"].update(epochs=1, max_steps=3, batch_size=8, report_every=2)
    smoke.update(output_dir=str(tmp_path / "runs"), name="sweep-resume")
    sweep = {
        "space": {"train.lr": {"grid": [1e-3, 1e-2]}},
        "num_samples": 1,
        "metric": "eval_worst_group_A",
        "scheduler": "asha",  # rungs at 4 reports: wired in, but no trial reaches one here
        "asha": {"metric": "loss", "mode": "min", "grace_period": 4, "max_t": 4},
    }
    first = run_sweep(_write(tmp_path, sweep, smoke), [], trial_hook=interrupt_big_lr)
    sweep_dir = tmp_path / "runs" / "sweep-resume" / "sweep"
    assert [t["status"] for t in first["trials"]] == ["ok", "error"]
    assert "interrupted by the test" in first["trials"][1]["error"]
    done_id = first["trials"][0]["trial_id"]
    done_files = sorted(p for p in (sweep_dir / "trials" / done_id).rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in done_files}
    (progress,) = (sweep_dir / first["experiment_path"]).glob(f"*{done_id}*/progress.csv")
    progress_before = progress.read_text()

    out = resume_sweep(sweep_dir)

    assert out["n_failed"] == 0 and out["n_trials"] == 2
    table = pl.read_csv(sweep_dir / "results.csv")
    assert sorted(table["train.lr"].to_list()) == [1e-3, 1e-2]
    assert table["status"].to_list() == ["ok", "ok"]
    worst = table["eval_worst_group_A"].to_list()
    assert worst == sorted(worst, reverse=True)
    groups = [c for c in table.columns if c.startswith("eval_A_group.")]
    assert groups and all(
        row["eval_worst_group_A"] == pytest.approx(min(row[g] for g in groups))
        for row in table.iter_rows(named=True)
    )
    # The finished trial was not rerun: same files, same mtimes, same Tune log.
    assert sorted(p for p in (sweep_dir / "trials" / done_id).rglob("*") if p.is_file()) == (
        done_files
    )
    assert {p: p.stat().st_mtime_ns for p in done_files} == stamps
    assert progress.read_text() == progress_before
    # Under ASHA each trial reported its training steps (2) and its evaluation: 3 iterations.
    assert all(
        pl.read_csv(p)["training_iteration"].max() == 3
        for p in Path(out["experiment_path"]).glob("*/progress.csv")
    )
    md = (sweep_dir / "results.md").read_text()
    assert md.count("| ok |") == 2
    assert (sweep_dir / "objective.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((sweep_dir / "best.json").read_text())["best"]["trial_id"] in md
