"""Survey platforms: the instrument exported for LimeSurvey and Qualtrics and read back; the
example response exports (data/examples/platforms, bad rows listed in its generator) imported
through the canonical checks; the mapping; configs/files_example.yaml through the pipeline."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from valign_ray.cli import main
from valign_ray.config import FilesConfig, load_config
from valign_ray.errors import InputError
from valign_ray.survey.ingest import pseudonymise
from valign_ray.survey.instrument import load_instrument
from valign_ray.survey.platforms.convert import ingest_platform
from valign_ray.survey.platforms.mapping import VariableMap, load_mapping
from valign_ray.survey.platforms.questions import platform_code, survey_questions
from valign_ray.survey.platforms.structure import read_limesurvey, read_qualtrics
from valign_ray.survey.row_checks import PLATFORM_REASONS

REPO = Path(__file__).resolve().parents[1]
PLAT = REPO / "data" / "examples" / "platforms"
INSTRUMENT = PLAT / "instrument.yaml"
FILES_EXAMPLE = REPO / "configs" / "files_example.yaml"
SALT = "platform-test-salt"


def _generator():
    spec = importlib.util.spec_from_file_location("mpe", PLAT / "make_platform_examples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _files(**kw) -> FilesConfig:
    base = dict(
        instrument=str(INSTRUMENT),
        platform="qualtrics",
        responses=str(PLAT / "qualtrics_responses.csv"),
        panel=str(PLAT / "prolific_demographics.csv"),
        mapping=str(PLAT / "mapping.yaml"),
    )
    return FilesConfig(**(base | kw))


def _ingest(tmp_path: Path, **kw):
    return ingest_platform(
        load_instrument(INSTRUMENT), _files(**kw), quarantine_dir=tmp_path / "q", salt=SALT
    )


# --- export, and reading the export back ---


@pytest.mark.parametrize("instrument", [INSTRUMENT, REPO / "data/examples/instrument.yaml"])
@pytest.mark.parametrize("fmt", ["limesurvey", "qualtrics"])
def test_export_reads_back_to_the_same_questions(tmp_path, instrument, fmt) -> None:
    out = tmp_path / f"{fmt}.txt"
    assert main(["export-instrument", str(instrument), "--format", fmt, "--out", str(out)]) == 0
    expected = survey_questions(load_instrument(instrument))
    got = (read_limesurvey if fmt == "limesurvey" else read_qualtrics)(out)
    assert [(q.code, q.kind, q.text, q.choices) for q in got] == [
        (q.code, q.kind, q.text, q.choices) for q in expected
    ]
    for g, e in zip(got, expected, strict=True):
        # LimeSurvey keeps the subquestion codes; Qualtrics numbers the statements 1..n
        codes = (
            [c for c, _ in e.rows]
            if fmt == "limesurvey"
            else [str(k) for k in range(1, len(e.rows) + 1)]
        )
        assert g.rows == tuple(zip(codes, [t for _, t in e.rows], strict=True))


def test_limesurvey_export_rows_by_hand(tmp_path) -> None:
    out = tmp_path / "ls.txt"
    main(["export-instrument", str(INSTRUMENT), "--format", "limesurvey", "--out", str(out)])
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM, as LimeSurvey writes it
    rows = [line.split("\t") for line in data.decode("utf-8-sig").splitlines()]
    header = rows[0]
    cols = [header.index(c) for c in ("class", "type/scale", "name", "text")]
    s2 = [
        tuple(r[c] for c in cols)
        for r in rows[1:]
        if r[header.index("id")] == str(_question_id(rows, "s2"))
    ]
    assert s2 == [
        ("Q", "L", "s2", "Decisions about my area should be made locally."),
        ("A", "0", "1", "disagree"),
        ("A", "0", "2", "neutral"),
        ("A", "0", "3", "agree"),
    ]


def _question_id(rows: list[list[str]], code: str) -> int:
    header = rows[0]
    return next(
        int(r[0])
        for r in rows[1:]
        if r[header.index("class")] == "Q" and r[header.index("name")] == code
    )


def test_skipped_demographics_are_not_asked_and_codes_are_alphanumeric() -> None:
    inst = load_instrument(INSTRUMENT)
    codes = [q.code for q in survey_questions(inst, skip_demographics=("age_band", "gender"))]
    assert codes == ["regiongroup", "q1", "q2", "q3", "s1", "s2"]
    assert platform_code("age_band") == "ageband" and platform_code("1st-item") == "Q1stitem"
    with pytest.raises(InputError, match="not variables"):
        survey_questions(inst, skip_demographics=("income",))


def test_two_ids_with_one_platform_code_are_an_error(tmp_path) -> None:
    text = INSTRUMENT.read_text().replace("- id: q3", "- id: q_1").replace("- id: q1", "- id: q1x")
    text = text.replace("- id: q1x", "- id: q1")  # q1 and q_1 both become q1
    path = tmp_path / "inst.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=r"same platform code\(s\) \['q1'\]"):
        survey_questions(load_instrument(path))


# --- the mapping ---


def test_age_bands_and_values_map_to_census_categories() -> None:
    bands = VariableMap("Age", bands={"15-64": (15, 64), "65+": (65, 130)})
    got = [
        bands.category(a)
        for a in ["15", "64", " 65 ", "130", "14", "131", "CONSENT_REVOKED", "64.5"]
    ]
    assert got == ["15-64", "15-64", "65+", "65+", None, None, None, None]
    sex = VariableMap("Sex", values={"Female": "female", "Male": "male"})
    assert [sex.category(s) for s in ["Female", "Male", "female", "DATA_EXPIRED"]] == [
        "female", "male", None, None,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"colour": "red"}, "unknown key"),
        (
            {"demographics": {"gender": {"panel_column": "Sex", "values": {"F": "woman"}}}},
            "'woman' is not a category",
        ),
        (
            {
                "demographics": {
                    "age_band": {
                        "panel_column": "Age",
                        "bands": {"15-64": [15, 64], "65+": [60, 99]},
                    }
                }
            },
            "overlaps",
        ),
        ({"demographics": {"income": {"values": {}}}}, "unknown key"),
        ({"panel": None}, "panel.id_column is not set"),
    ],
)
def test_bad_mapping_files_name_the_key(tmp_path, edit, message) -> None:
    import yaml

    raw = yaml.safe_load((PLAT / "mapping.yaml").read_text()) | edit
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match=message) as err:
        load_mapping(path, load_instrument(INSTRUMENT))
    assert str(path) in str(err.value)


# --- importing the example exports ---


def test_qualtrics_export_with_prolific_demographics(tmp_path) -> None:
    result = _ingest(tmp_path)
    counts = result.counts
    bad = _generator().BAD_ROWS["qualtrics_responses.csv"]
    assert counts["respondents"]["rows_in"] == 48 == 40 + len(bad)
    assert counts["respondents"]["kept"] == 40 and result.respondents.height == 40
    resp_q = result.quarantine.filter(~pl.col("field").str.contains(r"^(q\d_\d|s\d)$"))
    assert sorted(resp_q.select("row", "reason").rows()) == sorted(bad)
    fields = dict(zip(resp_q["row"], resp_q["field"], strict=True))
    assert (fields[41], fields[42], fields[43], fields[44]) == (
        "Participant id",
        "Status",
        "Age",
        "regiongroup",
    )
    a = counts["answers"]
    assert a["rows_in"] == a["kept"] + a["quarantined"] and a["kept"] == result.answers.height
    ans_q = result.quarantine.filter(pl.col("field").str.contains(r"^(q\d_\d|s\d)$"))
    # the only bad cell of a good respondent: response 1, q1_1 holds "Maybe"
    good_rows = ans_q.filter(pl.col("row") <= 40)
    assert good_rows.select("row", "field", "reason").rows() == [(1, "q1_1", "unmapped_value")]
    # a quarantined respondent takes every answer along (row 48 has none: it is unreadable);
    # row 47 has no participant id, so its answers have none either
    rest = ans_q.filter(pl.col("row") > 40)
    assert set(rest["row"]) == set(range(41, 48))
    reasons = dict(rest.group_by("row").agg(pl.col("reason").unique().sort()).rows())
    assert reasons == {
        r: ["missing_value"] if r == 47 else ["unknown_respondent"] for r in range(41, 48)
    }
    saved = json.loads((tmp_path / "q" / "quarantine_counts.json").read_text())
    assert saved["respondents"]["by_reason"] == {
        "no_panel_row": 1, "panel_status": 1, "unmapped_value": 2,
        "malformed_row": 1, "missing_value": 1, "duplicate_respondent": 2,
    }  # fmt: skip
    assert set(result.quarantine["reason"]) >= set(PLATFORM_REASONS)  # each platform reason


def test_one_respondent_checked_by_hand(tmp_path) -> None:
    """Response 6 of the Qualtrics export: Auckland; Prolific row 6: Age 20, Female; q1
    Undesirable / Desirable / Desirable, q2 Undesirable twice, q3_1 Undesirable, q3_2 blank
    (no answer); s1 "strongly agree" (5 of 5), s2 "disagree" (1 of 3)."""
    result = _ingest(tmp_path)
    pid = "38018b47b29a8b06daf66c5f"
    rid = pseudonymise([pid], SALT)[pid]
    person = result.respondents.filter(pl.col("respondent_id") == rid)
    assert person.select("age_band", "gender", "region_group").rows() == [
        ("15-64", "female", "Auckland")
    ]
    mine = result.answers.filter(pl.col("respondent_id") == rid).sort("item_id", "response_id")
    assert mine.select("item_id", "kind", "response_id", "value").rows() == [
        ("q1", "rating", "q1a", 0), ("q1", "rating", "q1b", 1), ("q1", "rating", "q1c", 1),
        ("q2", "rating", "q2a", 0), ("q2", "rating", "q2b", 0),
        ("q3", "rating", "q3a", 0),
        ("s1", "likert", None, 5), ("s2", "likert", None, 1),
    ]  # fmt: skip
    assert pid not in result.respondents["respondent_id"].to_list()  # raw ids never leave


def test_numeric_recode_export_gives_the_same_tables(tmp_path) -> None:
    text = _ingest(tmp_path / "t")
    numeric = _ingest(tmp_path / "n", responses=str(PLAT / "qualtrics_responses_numeric.csv"))
    assert_frame_equal(text.respondents, numeric.respondents)
    assert_frame_equal(text.answers, numeric.answers)
    assert text.counts["answers"]["by_reason"] == numeric.counts["answers"]["by_reason"]


def test_limesurvey_export_matches_the_qualtrics_one(tmp_path) -> None:
    """The same 40 people, asked their demographics in LimeSurvey: the same categories and
    answers, plus the q1_1 cell the Qualtrics file spoils."""
    ls = _ingest(
        tmp_path / "ls",
        platform="limesurvey",
        responses=str(PLAT / "limesurvey_responses.csv"),
        panel=None,
        mapping=None,
    )
    bad = _generator().BAD_ROWS["limesurvey_responses.csv"]
    assert ls.counts["respondents"] | {"source": ""} == {
        "source": "", "rows_in": 43, "kept": 40, "quarantined": 3,
        "by_reason": {"unmapped_value": 1, "malformed_row": 1, "missing_value": 1},
    }  # fmt: skip
    resp_q = ls.quarantine.filter(pl.col("field").is_in(["*", "gender", "age_band"]))
    assert sorted(resp_q.select("row", "reason").rows()) == sorted(bad)
    qx = _ingest(tmp_path / "qx")
    demo = ["age_band", "gender", "region_group"]
    assert ls.respondents.select(demo).equals(qx.respondents.select(demo))
    key = ["item_id", "kind", "response_id", "value"]

    def by_person(result) -> list:
        order = {r: k for k, r in enumerate(result.respondents["respondent_id"])}
        return sorted(
            (order[r["respondent_id"]], *(r[c] for c in key))
            for r in result.answers.iter_rows(named=True)
        )

    extra = sorted(set(by_person(ls)) - set(by_person(qx)))
    assert len(by_person(ls)) == len(by_person(qx)) + 1 and extra[0][:4] == (
        0,
        "q1",
        "rating",
        "q1a",
    )


def test_survey_answers_recoded_by_the_mapping(tmp_path) -> None:
    """The survey's region choice reads "Auckland region": mapped by ``values``, the other
    regions still by their choice text; the tables equal the unrecoded import's."""
    responses = tmp_path / "responses.csv"
    text = (PLAT / "qualtrics_responses.csv").read_text()
    responses.write_text(text.replace(",Auckland,", ",Auckland region,"))
    assert responses.read_text() != text
    mapping = tmp_path / "mapping.yaml"
    extra = '  region_group:\n    values: {"Auckland region": Auckland}\n'
    mapping.write_text((PLAT / "mapping.yaml").read_text() + extra)
    recoded = _ingest(tmp_path / "r", responses=str(responses), mapping=str(mapping))
    plain = _ingest(tmp_path / "p")
    assert_frame_equal(recoded.respondents, plain.respondents)
    assert recoded.counts["respondents"]["by_reason"] == plain.counts["respondents"]["by_reason"]


def test_a_missing_column_or_header_row_stops_the_import(tmp_path) -> None:
    lines = (PLAT / "qualtrics_responses.csv").read_text().splitlines()
    one_header = tmp_path / "one_header.csv"
    one_header.write_text("\n".join([lines[0], *lines[3:]]) + "\n")
    with pytest.raises(InputError, match="row 3 is not the ImportId header row"):
        _ingest(tmp_path, responses=str(one_header))
    no_s2 = tmp_path / "no_s2.csv"
    no_s2.write_text((PLAT / "qualtrics_responses.csv").read_text().replace(",s2,", ",s2x,", 1))
    with pytest.raises(InputError, match=r"no column\(s\) \['s2'\]"):
        _ingest(tmp_path, responses=str(no_s2))


def test_strict_mode_names_the_first_bad_row(tmp_path) -> None:
    with pytest.raises(
        InputError, match=r"qualtrics_responses.csv row 41, field 'Participant id': no_panel_row"
    ):
        ingest_platform(
            load_instrument(INSTRUMENT), _files(), quarantine_dir=tmp_path, salt=SALT, strict=True
        )


def test_example_files_are_rebuilt_byte_for_byte(tmp_path, monkeypatch) -> None:
    gen = _generator()
    monkeypatch.setattr(gen, "HERE", tmp_path)
    gen.main()
    for name in (
        "qualtrics_responses.csv",
        "qualtrics_responses_numeric.csv",
        "prolific_demographics.csv",
        "limesurvey_responses.csv",
    ):
        assert (tmp_path / name).read_bytes() == (PLAT / name).read_bytes(), name


# --- configs/files_example.yaml through the pipeline ---


def test_files_example_survey_weights_constitution(tmp_path) -> None:
    from valign_ray.pipeline import run_pipeline

    cfg = load_config(FILES_EXAMPLE, [f"output_dir={tmp_path}", f"survey.salt={SALT}"])
    summary = run_pipeline(cfg, stages=["survey", "weights", "constitution"])
    assert summary.results["survey"].counts["respondents"]["kept"] == 40
    run = cfg.run_dir
    weights = pl.read_parquet(run / "weights" / "weights.parquet")
    resp = pl.read_parquet(run / "survey" / "tables" / "respondents.parquet").join(
        weights, on="respondent_id"
    )
    assert resp.height == 40
    margins = pl.read_csv(REPO / "data/margins/nz_2023.csv")
    for var in ("age_band", "gender", "region_group"):
        share = resp.group_by(var).agg(pl.col("weight").sum() / resp["weight"].sum())
        target = margins.filter(pl.col("variable") == var).select(
            pl.col("category").alias(var), "share"
        )
        joined = share.join(target, on=var)
        assert joined.height == target.height
        assert (joined["weight"] - joined["share"]).abs().max() < 1e-8


def test_platform_files_without_a_platform_are_refused(tmp_path, capsys) -> None:
    argv = [
        "ingest",
        str(FILES_EXAMPLE),
        "--output-dir",
        str(tmp_path),
        "--set",
        f"survey.salt={SALT}",
    ]
    assert main([*argv, "--set", "survey.files.platform=canonical"]) == 2
    assert "survey.files.responses, survey.files.panel, survey.files.mapping are read only" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_valign_prepare_runs_files_example(ray_session, tmp_path, capsys) -> None:
    code = main(
        [
            "prepare",
            str(FILES_EXAMPLE),
            "--output-dir",
            str(tmp_path),
            "--set",
            f"survey.salt={SALT}",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "48 rows in, 40 kept, 8 quarantined" in out and "[datasets] done" in out
    assert (
        pl.read_parquet(tmp_path / "files_example" / "datasets" / "kto" / "rows.parquet").height > 0
    )
