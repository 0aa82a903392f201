"""privacy.log_personal_data: no respondent id (raw or pseudonymised), no free-text answer in
what the pipeline prints or sends to W&B; with the flag on, messages may name them.

The survey files are data/examples plus one bad respondent and one bad answer whose ids and
free text are marked SECRET, so a leak of a quarantined row would show too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from valign_ray.config import load_config
from valign_ray.errors import InputError
from valign_ray.eval.report import write_report
from valign_ray.pipeline import run_pipeline
from valign_ray.privacy import WITHHELD, personal, personal_data_logging

REPO = Path(__file__).resolve().parents[1]
BAD_ID = "NZP-SECRET-77"
BAD_TEXT = "SECRET free text of a quarantined answer"


def _survey_files(tmp: Path) -> Path:
    folder = tmp / "survey"
    shutil.copytree(REPO / "data/examples", folder)
    with (folder / "respondents.csv").open("a") as f:
        f.write(f"{BAD_ID},15-34,robot,north,g1,1.0\n")  # unknown category: quarantined
    with (folder / "answers.csv").open("a") as f:
        f.write(f'NZP-001,q9,rating,q9a,,1,"{BAD_TEXT}"\n')  # unknown item: quarantined
    return folder


def _personal_strings(run_dir: Path) -> list[str]:
    """Every raw respondent id of the files (bad rows too), every pseudonym, every free text."""
    raw = [f"NZP-{i:03d}" for i in range(1, 15)] + ["NZP-999", BAD_ID]
    pseudonyms = pl.read_parquet(run_dir / "survey/tables/respondents.parquet")["respondent_id"]
    assert pseudonyms.len() == 8  # NZP-001..008 kept, the rest quarantined
    texts = ["Too slow, and too costly", "Housing first.", "Then the rest.", "latte", BAD_TEXT]
    return [*raw, *pseudonyms.to_list(), *texts]


def test_survey_stages_and_report_keep_personal_data_out(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("VALIGN_SALT", "a-test-salt")
    folder = _survey_files(tmp_path)
    cfg = load_config(
        REPO / "configs/smoke.yaml",
        [
            f"output_dir={tmp_path / 'runs'}",
            "survey.source=files",
            f"survey.files.instrument={folder / 'instrument.yaml'}",
            f"survey.files.respondents={folder / 'respondents.csv'}",
            f"survey.files.answers={folder / 'answers.csv'}",
            "weighting.enabled=false",
            "constitution.min_votes_per_group=1",
        ],
    )
    run_pipeline(cfg, stages=["survey", "weights", "constitution"])
    report = write_report(cfg.run_dir)  # the report and its offline W&B run
    out = capsys.readouterr()
    printed = out.out + out.err
    assert "quarantined" in printed and "unknown_category" in printed  # the stages did print
    personal_strings = _personal_strings(cfg.run_dir)
    leaked = [s for s in personal_strings if s in printed]
    assert not leaked, leaked

    # The W&B run's files (offline), tables included, hold none of them either.
    wandb_files = [p for p in report["wandb"].rglob("*") if p.is_file()]
    tables = [p for p in wandb_files if p.name.endswith(".table.json")]
    assert tables and any("ingestion" in p.name for p in tables)
    ingestion = next(json.loads(p.read_text()) for p in tables if "ingestion" in p.name)
    assert ingestion["data"][0][:4] == ["respondents", 16, 8, 8]  # the scan reads real tables
    for path in wandb_files:
        data = path.read_bytes()
        leaked = [s for s in personal_strings if s.encode() in data]
        assert not leaked, (path, leaked)

    # The quarantine file (a local output) keeps file, row, field and reason.
    quarantine = pl.read_csv(cfg.run_dir / "survey/quarantine.csv")
    rows = set(quarantine.select("row", "field", "reason").iter_rows())
    assert {(16, "gender", "unknown_category"), (36, "item_id", "unknown_item")} <= rows


@pytest.mark.parametrize("allowed", [False, True])
def test_the_flag_decides_whether_a_message_names_a_participant(tmp_path, allowed) -> None:
    """A Polis export with a bad vote, through the pipeline: the error names the file and the
    row, and the participant id only with privacy.log_personal_data: true."""
    from tests.test_polis import write_tiny_export

    export = write_tiny_export(tmp_path / "export")
    with (export / "votes.csv").open("a") as f:
        f.write("9999,,1,4,2\n")  # comment 1, participant 4, vote 2
    cfg = load_config(
        REPO / "configs/polis.yaml",
        [
            f"output_dir={tmp_path / 'runs'}",
            f"survey.polis_dir={export}",
            f"privacy.log_personal_data={str(allowed).lower()}",
        ],
    )
    with pytest.raises(InputError) as err:
        run_pipeline(cfg, stages=["survey"])
    message = str(err.value)
    assert "votes.csv: data row 23, participant " in message
    assert ("participant '4'" in message) is allowed
    assert (WITHHELD in message) is not allowed
    assert personal("x") == WITHHELD  # the setting does not outlive the run


def test_personal_shows_values_only_inside_an_opted_in_block() -> None:
    assert personal("NZP-001") == WITHHELD
    with personal_data_logging(True):
        assert personal("NZP-001") == "'NZP-001'"
        with personal_data_logging(False):
            assert personal(["a"]) == WITHHELD
        assert personal(["a"]) == "['a']"
    assert personal("NZP-001") == WITHHELD


@pytest.mark.ray
def test_smoke_run_wandb_files_hold_no_respondent_id(smoke_run) -> None:
    """The training run's and the report's offline W&B files (configs/smoke.yaml): none of the
    synthetic survey's raw ids or pseudonyms; the config they log is there (the scan reads)."""
    cfg, _ = smoke_run
    run = cfg.run_dir
    ids = pl.read_parquet(run / "survey/tables/respondents.parquet")["respondent_id"].to_list()
    truth = run / "survey" / "truth"
    raw = []
    for path in truth.rglob("*.parquet") if truth.exists() else []:
        frame = pl.read_parquet(path)
        if "respondent_id" in frame.columns:
            raw += frame["respondent_id"].cast(pl.String).to_list()
    files = [p for p in (run / "wandb").rglob("*") if p.is_file()]
    blobs = [p.read_bytes() for p in files]
    assert any(b"run-" in p.name.encode() or p.suffix == ".wandb" for p in files)
    assert any(cfg.wandb.project.encode() in b for b in blobs)
    for path, data in zip(files, blobs, strict=True):
        leaked = [i for i in ids + raw if i.encode() in data]
        assert not leaked, (path, leaked[:3])
