"""The experiment runner: planning variants x seeds, skipping finished runs, the results table,
and one real experiment on Ray Tune (two runs, one failing variant, W&B grouped, then a rerun
that skips everything)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from valign_ray.config import public_config_dict
from valign_ray.config_loader import ConfigError
from valign_ray.experiment import (
    Variant,
    flatten_numbers,
    plan_runs,
    run_experiment,
    run_is_finished,
    runs_table,
)

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs/smoke.yaml"


def test_plan_runs_names_overrides_and_seeds(tmp_path: Path) -> None:
    """2 variants x seeds (3, 7) -> 4 runs named <variant>-s<seed>, in variant-major order;
    each seed lands on both seed keys; the variant's beta (0.5) beats the base's (0.2); every
    run lives in the one (absolute) experiment folder."""
    variants = [Variant("kto", ()), Variant("dpo", ("loss.name=dpo", "loss.beta=0.5"))]
    plan = plan_runs(
        SMOKE,
        variants,
        [3, 7],
        output_dir=tmp_path / "exp",
        seed_keys=("train.seed", "survey.synthetic.seed"),
        base_overrides=("loss.beta=0.2",),
    )
    assert [r.name for r in plan] == ["kto-s3", "kto-s7", "dpo-s3", "dpo-s7"]
    assert [(r.variant, r.seed) for r in plan] == [("kto", 3), ("kto", 7), ("dpo", 3), ("dpo", 7)]
    for run in plan:
        assert run.config.train.seed == run.config.survey.synthetic.seed == run.seed
        assert run.config.run_dir == tmp_path / "exp" / run.name
        assert Path(run.config.output_dir).is_absolute()
    assert [r.config.loss.name for r in plan] == ["kto", "kto", "dpo", "dpo"]
    assert [r.config.loss.beta for r in plan] == [0.2, 0.2, 0.5, 0.5]
    assert plan[2].overrides == (
        "loss.beta=0.2",
        "loss.name=dpo",
        "loss.beta=0.5",
        "train.seed=3",
        "survey.synthetic.seed=3",
        f"output_dir={tmp_path / 'exp'}",
        "name=dpo-s3",
    )
    # Everything else is the config file: smoke.yaml's 160 respondents.
    assert {r.config.survey.synthetic.n_sample for r in plan} == {160}


def test_plan_runs_one_seed_keeps_variant_names(tmp_path: Path) -> None:
    plan = plan_runs(SMOKE, [Variant("a"), Variant("b")], [5], output_dir=tmp_path, seed_keys=())
    assert [r.name for r in plan] == ["a", "b"]
    assert plan[0].config.train.seed == 0  # no seed key: the config's own seed
    assert plan[0].seed == 5


@pytest.mark.parametrize(
    ("variants", "seeds", "error", "message"),
    [
        ([Variant("a"), Variant("a")], [0], ValueError, "unique"),
        ([Variant("a")], [0, 0], ValueError, "unique"),
        ([Variant("../up")], [0], ValueError, "variant name"),
        ([], [0], ValueError, "at least one"),
        ([Variant("a", ("trian.seed=1",))], [0], ConfigError, "trian"),
    ],
)
def test_plan_runs_rejects_mistakes(tmp_path: Path, variants, seeds, error, message) -> None:
    with pytest.raises(error, match=message):
        plan_runs(SMOKE, variants, seeds, output_dir=tmp_path)


def _fake_run(cfg, summary: dict) -> None:
    """What run_pipeline leaves behind, for the skip rule: the snapshot and the summary."""
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(public_config_dict(cfg)))
    (cfg.run_dir / "summary.json").write_text(json.dumps(summary))


def test_a_snapshot_and_summary_without_fingerprints_are_not_a_finished_run(
    tmp_path: Path,
) -> None:
    (run,) = plan_runs(SMOKE, [Variant("a")], [0], output_dir=tmp_path)
    assert not run_is_finished(run.config)  # nothing there yet
    _fake_run(run.config, {"name": "a", "run_dir": str(run.config.run_dir), "eval": {}})
    assert not run_is_finished(run.config)  # no stage fingerprints recorded: run it


def test_flatten_numbers_keeps_nested_numbers_only() -> None:
    summary = {
        "name": "a",
        "eval": {"base": {"preference_accuracy": 0.5, "groups": {"18-29": 0.4}, "n_pairs": 12}},
        "weighting": {"method": "raking", "ess": 101.5, "converged": True},
        "flipped": [1, 2],
        "wall_s": {"total": 30.25},
        "nothing": None,
    }
    assert flatten_numbers(summary) == {
        "eval.base.preference_accuracy": 0.5,
        "eval.base.groups.18-29": 0.4,
        "eval.base.n_pairs": 12,
        "weighting.ess": 101.5,
        "wall_s.total": 30.25,
    }


def test_runs_table_keeps_failures_and_column_types() -> None:
    """Two finished runs (n_pairs 12 and 14: integers stay Int64; ess 100 and 99.5: Float64)
    and a failed one with its error and no numbers."""
    records = [
        {"run": "a", "variant": "a", "seed": 0, "status": "finished", "error": None,
         "eval.n_pairs": 12, "weighting.ess": 100},
        {"run": "b", "variant": "b", "seed": 0, "status": "failed", "error": "ValueError: x"},
        {"run": "c", "variant": "c", "seed": 0, "status": "skipped", "error": None,
         "weighting.ess": 99.5, "eval.n_pairs": 14},
    ]  # fmt: skip
    table = runs_table(records)
    assert table.columns == [
        "run", "variant", "seed", "status", "error", "eval.n_pairs", "weighting.ess",
    ]  # fmt: skip
    assert table.schema["eval.n_pairs"] == pl.Int64
    assert table.schema["weighting.ess"] == pl.Float64
    assert table["status"].to_list() == ["finished", "failed", "skipped"]
    assert table["error"].to_list() == [None, "ValueError: x", None]
    assert table["weighting.ess"].to_list() == [100.0, None, 99.5]


def _group_in_offline_runs(run_dir: Path, group: str) -> list[bool]:
    """Whether each offline W&B run of ``run_dir`` recorded ``group`` (its run record holds the
    group as a plain protobuf string)."""
    runs = sorted(run_dir.glob("wandb/wandb/offline-run-*/run-*.wandb"))
    return [group.encode() in path.read_bytes() for path in runs]


@pytest.mark.ray
def test_a_real_experiment_then_a_rerun_that_skips(ray_session, tmp_path: Path) -> None:
    """Two tiny KTO variants (unweighted, weighted) x one seed, 3 steps each, plus one variant
    that cannot find its survey: the table has both real runs finished with held-out numbers,
    the broken one failed with its error; the weighted run's W&B run (offline, in the Ray Train
    worker) and its report run carry the experiment's group. Rerunning skips both runs without
    a new trial."""
    exp = tmp_path / "exp"  # the group name below appears nowhere in the configs or paths
    base = [
        "survey.synthetic.n_sample=80",
        "train.epochs=1",
        "train.max_steps=3",
        "train.batch_size=8",
        "train.num_workers=1",
        "wandb.enabled=false",
    ]
    variants = [
        Variant("unweighted", ("weighting.enabled=false",)),
        Variant("weighted", ("weighting.enabled=true", "wandb.enabled=true")),
    ]
    broken = Variant(
        "broken",
        ("survey.source=files", "survey.salt=test", "survey.files.instrument=/nonexistent.yaml"),
    )
    table = run_experiment(
        SMOKE, [*variants, broken], [0], output_dir=exp, name="grp-7f3a", base_overrides=base
    )
    assert table["run"].to_list() == ["unweighted", "weighted", "broken"]
    assert table["status"].to_list() == ["finished", "finished", "failed"]
    assert "nonexistent.yaml" in table["error"][2]
    done = table.filter(pl.col("status") == "finished")
    for col in ("eval.aligned.preference_accuracy", "eval.base.preference_accuracy"):
        assert done[col].is_between(0, 1).all()
    assert done["eval.base.n_pairs"].to_list()[0] > 0
    # Weighting off gives ESS = n; raking lowers it.
    ess = dict(zip(done["run"], done["weighting.ess"], strict=True))
    assert ess["weighted"] < ess["unweighted"]
    assert (done["wall_s.total"] > 0).all()
    on_disk = pl.read_csv(exp / "runs.csv")
    assert on_disk["run"].to_list() == table["run"].to_list()
    assert pl.read_parquet(exp / "runs.parquet").equals(table)
    # The runs shared one reference cache: the second run hit it.
    summaries = {r: json.loads((exp / r / "summary.json").read_text()) for r in done["run"]}
    assert sorted(s["reference"]["cache"] for s in summaries.values()) == ["hit", "miss"]
    assert len(list((exp / ".cache" / "reference").glob("*.parquet"))) == 1
    # Its training run (rank 0 of Ray Train) and its report run both carry the group.
    assert _group_in_offline_runs(exp / "weighted", "grp-7f3a") == [True, True]
    assert not (exp / "unweighted" / "wandb" / "wandb").exists()

    tune_runs = sorted((exp / ".tune").iterdir())
    again = run_experiment(
        SMOKE, variants, [0], output_dir=exp, name="grp-7f3a", base_overrides=base
    )
    assert again["status"].to_list() == ["skipped", "skipped"]
    assert sorted((exp / ".tune").iterdir()) == tune_runs  # no new Tune experiment
    kept = ["run", "eval.aligned.preference_accuracy", "weighting.ess"]
    assert again.select(kept).equals(done.select(kept))
    # Another beta is another run: its train fingerprint differs, so it is not finished.
    weighted = variants[1]
    (same,) = plan_runs(SMOKE, [weighted], [0], output_dir=exp, base_overrides=base)
    (other,) = plan_runs(
        SMOKE, [weighted], [0], output_dir=exp, base_overrides=[*base, "loss.beta=0.3"]
    )
    assert run_is_finished(same.config)
    assert not run_is_finished(other.config)


def test_run_experiment_table_without_ray(tmp_path: Path, monkeypatch) -> None:
    """The runner around a stand-in grid: run "done" is finished already (skipped, no trial),
    "ok" trains (its summary numbers reach the table), "bad" fails (kept, with its error, and
    it keeps whatever summary it had: a failed trial is failed whatever that says)."""
    import valign_ray.distributed.grid as grid

    exp = tmp_path / "exp"
    plan = {
        r.name: r.config
        for r in plan_runs(SMOKE, [Variant("done"), Variant("ok"), Variant("bad")], [0],
                           output_dir=exp)
    }  # fmt: skip
    _fake_run(plan["done"], {"eval": {"aligned": {"preference_accuracy": 0.75}}})
    _fake_run(plan["bad"], {"eval": {"aligned": {"preference_accuracy": 0.5}}})
    calls = []

    def fake_grid(trial_fn, points, **kwargs):
        calls.append(([p["run"] for p in points], kwargs))
        (exp / "ok").mkdir()
        (exp / "ok" / "summary.json").write_text(json.dumps({"wall_s": {"total": 3}}))
        return [
            {"status": "ok", "error": None, "result": {}},
            {"status": "error", "error": "RuntimeError: boom", "result": {}},
        ]

    monkeypatch.setattr(grid, "run_grid", fake_grid)
    table = run_experiment(
        SMOKE,
        [Variant("done"), Variant("ok"), Variant("bad")],
        [0],
        output_dir=exp,
        name="e1",
        is_finished=lambda cfg: cfg.name == "done",  # the real rule is tested with Ray above
    )
    assert [c[0] for c in calls] == [["ok", "bad"]]
    kwargs = calls[0][1]
    assert kwargs["env_vars"] == {"WANDB_RUN_GROUP": "e1"}
    assert kwargs["worker_cpus"] == 2  # smoke.yaml: train.num_workers 2 (the default)
    assert kwargs["storage_path"] == exp / ".tune"
    assert table.select("run", "status", "error").rows() == [
        ("done", "skipped", None),
        ("ok", "finished", None),
        ("bad", "failed", "RuntimeError: boom"),
    ]
    assert table["eval.aligned.preference_accuracy"].to_list() == [0.75, None, None]
    assert table["wall_s.total"].to_list() == [None, 3, None]
    assert pl.read_csv(exp / "runs.csv")["status"].to_list() == ["skipped", "finished", "failed"]
