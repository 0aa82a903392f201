"""``valign release``: the weighted survey as Parquet plus a datasheet, loadable with
``datasets``; no raw ids or direct identifiers, free text only when asked for.

The runs here stop after the constitution (survey, weights, constitution: 1-4 s, no Ray);
one test releases the session's full smoke run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from valign_ray.cli import main
from valign_ray.errors import InputError
from valign_ray.release import default_salt_used, release_run
from valign_ray.release_licence import polis_licence
from valign_ray.run_layout import RunLayout

REPO = Path(__file__).resolve().parents[1]
FREE_TEXTS = {"Too slow, and too costly", "Housing first.\nThen the rest."}  # answers.csv


def _survey_run(out: Path, overrides: list[str], config: str = "configs/smoke.yaml") -> Path:
    from valign_ray.config import load_config
    from valign_ray.pipeline import run_pipeline

    cfg = load_config(REPO / config, [f"output_dir={out}", *overrides])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)  # the configs' data paths are relative to the repository
        mp.delenv("VALIGN_SALT", raising=False)
        run_pipeline(cfg, stages=["survey", "weights", "constitution"])
    return Path(cfg.output_dir) / cfg.name


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    return _survey_run(tmp_path_factory.mktemp("runs"), [])


@pytest.fixture(scope="module")
def files_run(tmp_path_factory) -> Path:
    """data/examples: 15 respondents (7 quarantined), 2 free-text answers, opinion groups."""
    overrides = ["name=files", "survey.source=files", "survey.salt=s3cret"]
    overrides.append("weighting.scheme=opinion_groups")
    return _survey_run(tmp_path_factory.mktemp("runs"), overrides)


def _release(run: Path, out: Path, **kw) -> dict[str, Path]:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        return release_run(run, out, **kw)


def test_release_tables_match_the_run(synthetic_run, tmp_path):
    paths = _release(synthetic_run, tmp_path / "rel")
    layout = RunLayout(synthetic_run, synthetic_run.parent)
    resp = pl.read_parquet(paths["respondents"])
    weights = pl.read_parquet(layout.weights)
    assert resp.height == 160  # configs/smoke.yaml n_sample, none quarantined
    joined = resp.join(weights, on="respondent_id", suffix="_run")
    assert joined.height == 160 and (joined["weight"] == joined["weight_run"]).all()
    assert resp["respondent_id"].str.contains(r"^[0-9a-f]{16}$").all()
    answers = pl.read_parquet(paths["answers"])
    run_answers = pl.read_parquet(layout.survey_table("answers"))
    assert "free_text" not in answers.columns
    assert answers.equals(run_answers.drop("free_text"))
    const = pl.read_parquet(paths["constitution"])
    doc = yaml.safe_load(layout.constitution.read_text())
    assert const["item_id"].to_list() == [p["id"] for p in doc["principles"]]
    first = {g["group"]: g["support"] for g in const["support_by_group"][0]}
    assert first == doc["principles"][0]["support"]
    # release.json: every file's sha256, and the options
    record = json.loads(paths["release.json"].read_text())
    assert record["licence"] == "CC0-1.0" and record["include_free_text"] is False
    for name, digest in record["files"].items():
        assert hashlib.sha256((tmp_path / "rel" / name).read_bytes()).hexdigest() == digest


def test_datasheet_answers_from_the_run(synthetic_run, tmp_path):
    paths = _release(synthetic_run, tmp_path / "rel")
    text = paths["README.md"].read_text()
    w = pl.read_parquet(paths["respondents"])["weight"]
    ess = float(w.sum()) ** 2 / float((w * w).sum())  # Kish, by hand
    assert f"ESS {ess:.1f} of 160, design effect {160 / ess:.3f}" in text
    for section in ("Motivation", "Composition", "Collection process", "Uses", "Maintenance"):
        assert f"\n## {section}" in text
    assert "| licence | CC0-1.0 (synthetic data" in text
    assert "| quarantined | respondents 0 of 160; answers 0 of 3,840 |" in text
    assert "Source of `gender`: approximate, not verified against Stats NZ" in text
    assert "(sha256 736983cfb5298c53 at the run; unchanged since)" in text  # margins file
    assert "trim cap 5.0 x mean (raise_cap); converged" in text
    assert "with the public default salt" in text  # the smoke run keeps the default salt
    assert "| age_band | 65+ | 65 | 0.4062 | 0.2042 | 0.2042 |" in text
    assert "- config_name: answers\n  data_files: answers.parquet" in text


def test_release_loads_with_datasets(synthetic_run, tmp_path, monkeypatch):
    import datasets  # a dev dependency (setup.cfg)

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    paths = _release(synthetic_run, tmp_path / "rel")
    cache = str(tmp_path / "hf")
    resp = datasets.load_dataset("parquet", data_files=str(paths["respondents"]), cache_dir=cache)[
        "train"
    ]
    expected = pl.read_parquet(paths["respondents"])
    assert resp.num_rows == 160 and resp.column_names == expected.columns
    assert resp["weight"] == expected["weight"].to_list()
    # The README's header names one config per table: load_dataset(folder, table).
    const = datasets.load_dataset(str(tmp_path / "rel"), "constitution", cache_dir=cache)
    assert const["train"]["item_id"] == pl.read_parquet(paths["constitution"])["item_id"].to_list()


def _strings(folder: Path) -> str:
    """Every text a release holds: its text files and every string cell of its tables."""
    out = [p.read_text() for p in folder.iterdir() if p.suffix in (".md", ".json", ".yaml")]
    for p in folder.glob("*.parquet"):
        frame = pl.read_parquet(p)
        for col, dtype in frame.schema.items():
            if dtype == pl.String:
                out += [v for v in frame[col].to_list() if v is not None]
    return "\n".join(out)


def test_free_text_left_out_by_default(files_run, tmp_path):
    paths = _release(files_run, tmp_path / "rel", licence="CC-BY-4.0")
    assert "free_text" not in pl.read_parquet(paths["answers"]).columns
    held = _strings(tmp_path / "rel")
    assert not any(t in held for t in FREE_TEXTS)
    assert "free-text answers: excluded, 2 in the run" in paths["README.md"].read_text()


def test_free_text_with_the_flag(files_run, tmp_path):
    paths = _release(files_run, tmp_path / "rel", licence="CC-BY-4.0", include_free_text=True)
    answers = pl.read_parquet(paths["answers"])
    assert set(answers["free_text"].drop_nulls().to_list()) == FREE_TEXTS
    assert answers.height == 17  # 35 rows in, 18 quarantined
    assert "free-text answers: included (opted in), 2 in the run" in paths["README.md"].read_text()


def test_no_raw_ids_and_pseudonyms_as_documented(files_run, tmp_path):
    paths = _release(files_run, tmp_path / "rel", licence="CC-BY-4.0", include_free_text=True)
    lines = (REPO / "data/examples/respondents.csv").read_bytes().decode("utf-8", "replace")
    raw_ids = {line.split(",")[0] for line in lines.splitlines()[1:]} - {""}
    assert "NZP-001" in raw_ids and len(raw_ids) >= 8
    held = _strings(tmp_path / "rel")
    assert not any(rid in held for rid in raw_ids)
    # NZP-001 (15-34, female, north, g1, base weight 0.8) under sha256(salt + raw id)[:16]
    ids = pl.read_parquet(paths["respondents"]).filter(pl.col("base_weight") == 0.8)
    assert ids["respondent_id"].to_list() == [hashlib.sha256(b"s3cretNZP-001").hexdigest()[:16]]
    text = paths["README.md"].read_text()
    assert "a salt other than the public default" in text
    assert "respondents 7 of 15; answers 18 of 35" in text
    assert "duplicate_respondent 2" in text


def test_direct_identifier_columns_dropped(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    table = RunLayout(run, tmp_path).survey_table("respondents")
    resp = pl.read_parquet(table)
    resp.with_columns(pl.lit("a@b.nz").alias("E-mail"), pl.lit("Ann").alias("name")).write_parquet(
        table
    )
    paths = _release(run, tmp_path / "rel")
    assert pl.read_parquet(paths["respondents"]).columns == [*resp.columns, "weight"]
    assert "a@b.nz" not in _strings(tmp_path / "rel")
    assert json.loads(paths["release.json"].read_text())["dropped_identifier_columns"] == [
        "E-mail",
        "name",
    ]
    assert "direct-identifier columns dropped: E-mail, name;" in paths["README.md"].read_text()


def test_release_again_into_the_same_folder(synthetic_run, tmp_path):
    """A second release replaces the first's files; a folder that is not a release is kept."""
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    rel = tmp_path / "rel"
    assert "constitution" in _release(run, rel)
    (run / "constitution.yaml").unlink()  # e.g. a rerun with constitution.enabled false
    paths = _release(run, rel)
    assert "constitution" not in paths and not (rel / "constitution.parquet").exists()
    assert sorted(p.name for p in rel.iterdir()) == sorted(p.name for p in paths.values())
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty, and not an earlier release"):
        _release(run, other)
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(InputError, match="outside the run directory"):
        _release(run, run / "release")


def test_ids_that_are_not_pseudonyms_are_refused(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    table = RunLayout(run, tmp_path).survey_table("answers")
    answers = pl.read_parquet(table)
    answers.with_columns(pl.lit("NZP-001").alias("respondent_id")).write_parquet(table)
    with pytest.raises(InputError, match=r"answers.parquet, field 'respondent_id'.*'NZP-001'"):
        _release(run, tmp_path / "rel")


def test_licence_required_for_collected_files(files_run, tmp_path, capsys):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        code = main(["release", str(files_run), "--out", str(tmp_path / "rel")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "needs its licence: give it with --licence" in err
    assert not (tmp_path / "rel").exists()


def test_polis_licence_from_the_export():
    lic = polis_licence(REPO / "data/polis/scoop-hivemind.biodiversity")
    assert lic is not None and lic.spdx == "CC-BY-4.0"
    assert lic.attribution.startswith("Data was gathered using the Polis software")
    assert "2019-scoop-hivemind-biodiversity" in lic.attribution
    assert polis_licence(REPO / "data/examples") is None


def test_release_of_a_polis_import(tmp_path_factory, tmp_path):
    run = _survey_run(tmp_path_factory.mktemp("runs"), [], config="configs/polis.yaml")
    paths = _release(run, tmp_path / "rel")
    report = json.loads(RunLayout(run, run.parent).polis_report.read_text())
    text = paths["README.md"].read_text()
    kept, total = report["votes"]["kept"], report["votes"]["in"]
    assert f"| quarantined | Polis import: {kept:,} of {total:,} votes kept;" in text
    assert "| licence | CC-BY-4.0 (stated in the Polis export's SOURCE.md) |" in text
    assert "Attribution to The Computational Democracy Project" in text
    assert "with the public default salt" in text  # configs/polis.yaml keeps it
    items = pl.read_parquet(paths["items"])
    assert items.height == report["statements"]["kept"]  # statements ship: they are the items
    assert "Item texts are participants' statements that passed" in text


def test_default_salt_detected_for_polis_numbers(tmp_path):
    layout = RunLayout(tmp_path, tmp_path)
    seven = hashlib.sha256(b"change-me7").hexdigest()[:16]  # participant 7, default salt
    other = hashlib.sha256(b"secret7").hexdigest()[:16]
    assert default_salt_used("polis", pl.Series([seven]), layout) is True
    assert default_salt_used("polis", pl.Series([other]), layout) is False


@pytest.mark.parametrize("missing", ["summary.json", "weights/weights.parquet"])
def test_incomplete_run_is_one_line(synthetic_run, tmp_path, capsys, missing):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    (run / missing).unlink()
    code = main(["release", str(run), "--out", str(tmp_path / "rel")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{run / missing}: missing" in err


def test_release_of_a_full_run(smoke_run, tmp_path):
    cfg, summary = smoke_run
    paths = _release(Path(cfg.output_dir) / cfg.name, tmp_path / "rel")
    ess = summary.results["weighting"].ess
    assert f"ESS {ess:.1f} of 160" in paths["README.md"].read_text()
    assert pl.read_parquet(paths["respondents"]).height == summary.results["weighting"].n
