"""The main job end to end on a local Ray, at smoke size: it must learn, and rerunning the
preparation must hit the reference cache (the tiny model is rebuilt bit-identically)."""

from __future__ import annotations

import json

import pytest

from valign_ray.pipeline import run_pipeline
from valign_ray.results import RunSummary

pytestmark = pytest.mark.ray


def test_aligned_model_beats_base_on_heldout_respondents(smoke_run) -> None:
    _, summary = smoke_run
    ev = summary.results["eval"].models
    base, aligned = ev["base"], ev["aligned"]
    assert aligned["preference_accuracy"] > base["preference_accuracy"]
    assert aligned["margin"] > base["margin"]
    assert base["n_pairs"] == aligned["n_pairs"] > 50


def test_run_directory_holds_every_artefact(smoke_run) -> None:
    cfg, summary = smoke_run
    run = cfg.run_dir
    for rel in (
        "config.yaml",
        "summary.json",
        "survey/quarantine_counts.json",
        "weights/diagnostics.json",
        "datasets/kto/rows.parquet",
        "datasets/kto/card.json",
        "datasets/eval_pairs.parquet",
        "base_model/config.json",
        "model/config.json",
        "model/tokenizer.json",
        "train_metrics.jsonl",
    ):
        assert (run / rel).exists(), rel
    assert list((run / "wandb").glob("wandb/offline-run-*")), "no offline W&B run"
    on_disk = json.loads((run / "summary.json").read_text())
    for stage in ("survey", "weights", "datasets", "model", "reference", "train", "eval"):
        assert on_disk["wall_s"][stage] >= 0
    assert on_disk["eval"] == summary.results["eval"].models
    assert RunSummary.load(run / "summary.json").to_json() == on_disk  # read back, typed
    # No raw respondent ids in the training rows (they are pseudonymised and then dropped).
    assert "respondent_id" not in (run / "datasets/kto/rows.parquet").read_bytes().decode("latin-1")


def test_salt_never_leaves_the_run_config(smoke_run) -> None:
    """The pseudonymisation salt re-derives respondent ids: W&B runs, the model card and the
    run's config snapshot must not carry it (the snapshot sits next to pseudonymised ids)."""
    cfg, _ = smoke_run
    salt = cfg.survey.salt.encode()
    shared = [p for p in (cfg.run_dir / "wandb").rglob("*") if p.is_file()]
    shared += [cfg.run_dir / "model" / "README.md", cfg.run_dir / "config.yaml"]
    assert len(shared) > 3
    for path in shared:
        assert salt not in path.read_bytes(), path


def test_rerun_skips_every_stage_by_fingerprint_and_records_a_manifest(smoke_run, capsys) -> None:
    cfg, first = smoke_run
    assert first.results["reference"].cache == "miss"
    again = run_pipeline(cfg)
    names = ["survey", "weights", "constitution", "datasets", "model", "reference", "train", "eval"]
    assert again.skipped == names
    out = capsys.readouterr().out
    for name in names:
        assert f"[{name}] skipped: fingerprint {first.fingerprints[name]} matches" in out
    assert again.results["eval"] == first.results["eval"]
    assert again.wall_s["train"] == first.wall_s["train"] > 0  # the recorded run's time
    assert f"train {first.wall_s['train']:.1f}s (skipped)" in out
    manifest = again.manifest
    assert manifest["packages"]["torch"] and manifest["python"].startswith("3.11")
    assert "weighting.margins" in manifest["input_files"]
    assert set(manifest) >= {"git_commit", "git_dirty", "input_files"}


def test_a_changed_loss_key_keeps_the_prepared_data(smoke_run, tmp_path) -> None:
    """KTO's beta is not one of its data keys: the data stages keep their fingerprints and
    are skipped; the train stage's fingerprint changes. (On a copy of the session's run: a
    run rewrites its config snapshot, which ``--resume`` reads.)"""
    import shutil
    from dataclasses import replace

    from valign_ray.stages import TRAIN, StageContext

    cfg, first = smoke_run
    shutil.copytree(cfg.run_dir, tmp_path / cfg.name, ignore=shutil.ignore_patterns("ray_train"))
    changed = replace(cfg, output_dir=str(tmp_path), loss=replace(cfg.loss, beta=cfg.loss.beta * 2))
    data_stages = ["survey", "weights", "constitution", "datasets"]
    summary = run_pipeline(changed, stages=data_stages)
    assert summary.skipped == data_stages
    ctx = StageContext(
        cfg=changed, layout=summary_layout(changed), fingerprints=dict(first.fingerprints)
    )
    assert TRAIN.fingerprint(ctx) != first.fingerprints["train"]


def summary_layout(cfg):
    from valign_ray.pipeline import layout_of

    return layout_of(cfg)
