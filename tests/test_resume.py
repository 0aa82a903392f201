"""``valign run --resume RUN_DIR``: the run's own config snapshot, the salt from VALIGN_SALT,
every finished stage skipped by fingerprint; clear one-line errors otherwise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from valign_ray.cli import main
from valign_ray.config import load_config
from valign_ray.config_loader import ConfigError
from valign_ray.pipeline import run_pipeline
from valign_ray.resume import check_same_survey, resume_config
from valign_ray.stages import STAGES

REPO = Path(__file__).resolve().parents[1]


def test_resume_needs_a_run_directory_with_its_snapshot(tmp_path, capsys) -> None:
    assert main(["run", "--resume", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'none'}: run directory not found\n"
    assert main(["train", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path}: no config.yaml (the config snapshot")
    assert main(["run", "configs/smoke.yaml", "--resume", str(tmp_path)]) == 2
    assert "the run's own config is used" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert (
        "the following arguments are required: config (or --resume RUN_DIR)"
        in capsys.readouterr().err
    )


def test_a_survey_files_run_resumes_only_with_its_salt(tmp_path, monkeypatch) -> None:
    """The snapshot's salt is redacted: VALIGN_SALT must give it back, and only the run's own
    salt passes (another would redo the survey stage with other pseudonyms)."""
    files = tmp_path / "files"
    shutil.copytree(REPO / "data/examples", files)
    cfg = load_config(
        REPO / "configs/smoke.yaml",
        [
            f"output_dir={tmp_path / 'elsewhere'}",
            "name=pilot",
            "survey.source=files",
            f"survey.files.instrument={files / 'instrument.yaml'}",
            f"survey.files.respondents={files / 'respondents.csv'}",
            f"survey.files.answers={files / 'answers.csv'}",
        ],
    )
    monkeypatch.setenv("VALIGN_SALT", "the-run-salt")
    run_pipeline(cfg, stages=["survey"])
    moved = tmp_path / "moved" / "pilot"  # a run directory moved: it is placed where given
    shutil.move(cfg.run_dir, moved)
    snapshot = (moved / "config.yaml").read_text()
    assert "salt: <redacted>" in snapshot and "the-run-salt" not in snapshot

    again = resume_config(moved, ["train.lr=0.001"])
    assert again.run_dir == moved and again.train.lr == 0.001
    assert again.survey.files == cfg.survey.files
    check_same_survey(again)  # the same salt: nothing to redo

    monkeypatch.setenv("VALIGN_SALT", "another-salt")
    with pytest.raises(ConfigError, match="survey stage's inputs differ from the recorded run"):
        check_same_survey(resume_config(moved))
    monkeypatch.delenv("VALIGN_SALT")
    with pytest.raises(ConfigError, match="holds the pseudonymisation salt redacted.*VALIGN_SALT"):
        check_same_survey(resume_config(moved))


@pytest.mark.ray
def test_resume_of_a_finished_run_skips_every_stage(smoke_run, capsys) -> None:
    cfg, summary = smoke_run
    before = json.loads((cfg.run_dir / "summary.json").read_text())
    assert main(["run", "--resume", str(cfg.run_dir)]) == 0
    out = capsys.readouterr().out
    for stage in STAGES:
        assert f"[{stage.name}] skipped: fingerprint {summary.fingerprints[stage.name]}" in out
    assert "] ...\n" not in out  # no stage ran
    after = json.loads((cfg.run_dir / "summary.json").read_text())
    assert after["skipped"] == [s.name for s in STAGES]
    for key in ("fingerprints", *(k for k in before if k not in ("wall_s", "skipped"))):
        assert after[key] == before[key], key
