"""The main job end to end on a local Ray, at smoke size: it must learn, and rerunning the
preparation must hit the reference cache (the tiny model is rebuilt bit-identically)."""

from __future__ import annotations

import json

import pytest

from valign_ray.pipeline import run_pipeline

pytestmark = pytest.mark.ray


def test_aligned_model_beats_base_on_heldout_respondents(smoke_run) -> None:
    _, summary = smoke_run
    base, aligned = summary["eval"]["base"], summary["eval"]["aligned"]
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
    assert on_disk["eval"] == summary["eval"]
    # No raw respondent ids in the training rows (they are pseudonymised and then dropped).
    assert "respondent_id" not in (run / "datasets/kto/rows.parquet").read_bytes().decode("latin-1")


def test_salt_never_leaves_the_run_config(smoke_run) -> None:
    """The pseudonymisation salt re-derives respondent ids: W&B runs and the model card
    must not carry it (the run's own config.yaml keeps it, to reproduce the run)."""
    cfg, _ = smoke_run
    salt = cfg.survey.salt.encode()
    shared = [p for p in (cfg.run_dir / "wandb").rglob("*") if p.is_file()]
    shared.append(cfg.run_dir / "model" / "README.md")
    assert len(shared) > 3
    for path in shared:
        assert salt not in path.read_bytes(), path


def test_second_preparation_hits_the_reference_cache(smoke_run) -> None:
    cfg, first = smoke_run
    assert first["reference"]["cache"] == "miss"
    again = run_pipeline(cfg, stages=["survey", "weights", "datasets", "model", "reference"])
    assert again["reference"] == {"cache": "hit", "key": first["reference"]["key"]}
