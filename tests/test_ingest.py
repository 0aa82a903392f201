"""Instrument loading and survey ingestion: validation, quarantine, pseudonymisation.

The bad rows of data/examples are listed by hand in data/examples/make_bad_examples.py, each
with the reason it must get; EXPECTED_QUARANTINE below is that list.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from valign_ray.survey.ingest import ingest_survey
from valign_ray.survey.instrument import Instrument, load_instrument, save_instrument
from valign_ray.survey.row_checks import REASONS

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "examples"
RESPONDENTS, ANSWERS = EXAMPLES / "respondents.csv", EXAMPLES / "answers.csv"
SALT = "pilot-salt"

# (file, row, field, reason), read off the comments in make_bad_examples.py.
EXPECTED_QUARANTINE = [
    ("respondents.csv", 9, "respondent_id", "duplicate_respondent"),
    ("respondents.csv", 10, "respondent_id", "duplicate_respondent"),
    ("respondents.csv", 11, "gender", "missing_value"),
    ("respondents.csv", 12, "gender", "unknown_category"),
    ("respondents.csv", 13, "base_weight", "bad_type"),
    ("respondents.csv", 14, "*", "malformed_row"),
    ("respondents.csv", 15, "region", "non_utf8"),
    ("answers.csv", 17, "free_text", "non_utf8"),
    ("answers.csv", 18, "*", "malformed_row"),
    ("answers.csv", 19, "value", "missing_value"),
    ("answers.csv", 20, "kind", "unknown_kind"),
    ("answers.csv", 21, "response_id", "unexpected_value"),
    ("answers.csv", 22, "value", "bad_type"),
    ("answers.csv", 23, "respondent_id", "unknown_respondent"),
    ("answers.csv", 24, "respondent_id", "unknown_respondent"),
    ("answers.csv", 25, "item_id", "unknown_item"),
    ("answers.csv", 26, "kind", "kind_mismatch"),
    ("answers.csv", 27, "response_id", "unknown_response"),
    ("answers.csv", 28, "response_b_id", "same_response"),
    ("answers.csv", 29, "value", "out_of_range"),
    ("answers.csv", 30, "value", "out_of_range"),
    ("answers.csv", 31, "free_text", "empty_text"),
    ("answers.csv", 32, "respondent_id", "duplicate_answer"),
    ("answers.csv", 33, "respondent_id", "duplicate_answer"),
    ("answers.csv", 34, "*", "malformed_row"),
]


@pytest.fixture(scope="module")
def inst() -> Instrument:
    return load_instrument(EXAMPLES / "instrument.yaml")


def _ingest(inst, resp, ans, qdir, **kw):
    """Ingest with the test salt; ``resp``/``ans`` are paths."""
    return ingest_survey(inst, resp, ans, quarantine_dir=qdir, salt=SALT, **kw)


# --- instrument ---


def test_example_instrument_tables(inst):
    """3 prompts (n_options 0) and statements with 5 and 3 options; 3 + 2 + 2 candidates."""
    items = inst.items_table()
    assert items["item_id"].to_list() == ["q1", "q2", "q3", "s1", "s2"]
    assert items["n_options"].to_list() == [0, 0, 0, 5, 3]
    assert items["dimension"].to_list() == ["environment", "housing", None, "environment", None]
    assert items.schema == {
        "item_id": pl.String,
        "kind": pl.String,
        "text": pl.String,
        "dimension": pl.String,
        "n_options": pl.Int64,
    }
    cands = inst.candidates_table()
    assert cands.group_by("item_id", maintain_order=True).len().rows() == [
        ("q1", 3),
        ("q2", 2),
        ("q3", 2),
    ]
    assert inst.demographics["age_band"] == ("15-34", "35-64", "65+")


def test_save_load_and_from_tables_round_trip(inst, tmp_path):
    save_instrument(inst, tmp_path / "copy.yaml")
    assert load_instrument(tmp_path / "copy.yaml") == inst
    options = {it.id: it.options for it in inst.items if it.kind == "statement"}
    rebuilt = Instrument.from_tables(
        inst.name, inst.demographics, inst.items_table(), inst.candidates_table(), options=options
    )
    assert rebuilt == inst
    plain = Instrument.from_tables(
        "x", {"g": ["a"]}, inst.items_table(), inst.candidates_table()
    )  # no labels given: statement s2 (3 options) gets "1", "2", "3"
    assert plain.items_by_id["s2"].options == ("1", "2", "3")


GOOD = "{id: q1, kind: prompt, text: Hi, responses: [{id: a, text: A}]}"
RESP = "responses: [{id: a, text: A}"


@pytest.mark.parametrize(
    ("demographics", "items", "expected"),
    [
        ("{g: [a]}\ncolour: red", [GOOD], "the document: unknown keys ['colour']"),
        ("{g: [a]}", [GOOD, GOOD], "duplicate item id 'q1'"),
        (
            "{g: [a]}",
            ["{id: q1, kind: prompt, responses: []}"],
            "item #1 ('q1'): missing fields ['text']",
        ),
        (
            "{g: [a]}",
            ["{id: q1, kind: prompt, text: Hi, x: 1, responses: []}"],
            "item #1 ('q1'): unknown keys ['x']",
        ),
        (
            "{g: [a]}",
            ["{id: q1, kind: prompt, text: Hi, " + RESP + ", {id: a, text: B}]}"],
            "item 'q1': duplicate response id 'a'",
        ),
        (
            "{g: [a]}",
            ["{id: s1, kind: statement, text: Hi, options: [agree]}"],
            "item 's1': field 'options': a statement needs at least 2 options",
        ),
        (
            "{g: [a]}",
            ["{id: q1, kind: prompt, text: '  ', " + RESP + "]}"],
            "item 'q1': field 'text': must be non-empty text",
        ),
        ("{smoker: [yes, no]}", [GOOD], "demographic 'smoker': category True (quote it in YAML)"),
        (
            "{g: [a]}",
            ["{id: q1, kind: poll, text: Hi}"],
            "item #1 ('q1'): field 'kind' must be one of ['prompt', 'statement']",
        ),
    ],
)
def test_instrument_errors_name_file_and_item(tmp_path, demographics, items, expected):
    path = tmp_path / "bad.yaml"
    lines = [f"  - {it}" for it in items]
    path.write_text("\n".join(["name: x", f"demographics: {demographics}", "items:", *lines]))
    with pytest.raises(ValueError) as err:
        load_instrument(path)
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


# --- ingestion of the example ---


@pytest.fixture(scope="module")
def example(inst, tmp_path_factory):
    qdir = tmp_path_factory.mktemp("q")
    res = _ingest(inst, EXAMPLES / "respondents.csv", EXAMPLES / "answers.csv", qdir)
    return res, qdir


def test_example_files_are_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("gen", EXAMPLES / "make_bad_examples.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (EXAMPLES / "respondents.csv").read_bytes() == b"\n".join(gen.RESPONDENTS) + b"\n"
    assert (EXAMPLES / "answers.csv").read_bytes() == b"\n".join(gen.ANSWERS) + b"\n"


def test_example_quarantine_is_the_hand_list(example):
    res, _ = example
    got = [(Path(s).name, r, f, why) for s, r, f, why, _ in res.quarantine.iter_rows()]
    assert got == EXPECTED_QUARANTINE
    assert set(res.quarantine["reason"]) == set(REASONS)  # every reason code appears


def test_rows_in_equals_kept_plus_quarantined(example):
    """respondents: 15 rows = 8 kept + 7 bad; answers: 35 rows = 17 kept + 18 bad."""
    res, _ = example
    r, a = res.counts["respondents"], res.counts["answers"]
    assert (r["rows_in"], r["kept"], r["quarantined"]) == (15, 8, 7)
    assert (a["rows_in"], a["kept"], a["quarantined"]) == (35, 17, 18)
    assert (res.respondents.height, res.answers.height) == (8, 17)
    for c in (r, a):
        assert c["rows_in"] == c["kept"] + c["quarantined"]
        assert c["quarantined"] == sum(c["by_reason"].values())
        assert (res.quarantine["source"] == c["source"]).sum() == c["quarantined"]
    assert a["by_reason"]["duplicate_answer"] == 2 and a["by_reason"]["out_of_range"] == 2


def test_quarantine_files(example):
    res, qdir = example
    written = pl.read_csv(qdir / "quarantine.csv", schema=res.quarantine.schema)
    assert_frame_equal(written, res.quarantine)
    assert written.columns == ["source", "row", "field", "reason", "message"]
    assert json.loads((qdir / "quarantine_counts.json").read_text()) == res.counts
    assert "respondents" in res.format_counts() and "duplicate_answer" in res.format_counts()


def test_raw_ids_and_free_text_never_leave(example):
    """Ids are sha256(salt + raw)[:16]; the two below come from `printf ... | sha256sum`."""
    res, qdir = example
    ids = res.respondents["respondent_id"].to_list()
    assert ids[:2] == ["4a8b432c17326e5b", "e10af77af9b882f7"]  # NZP-001, NZP-002
    assert set(res.answers["respondent_id"]) <= set(ids)
    tables = [res.respondents, res.answers, res.quarantine]
    cells = " ".join(str(v) for t in tables for row in t.iter_rows() for v in row)
    files = (qdir / "quarantine.csv").read_text() + (qdir / "quarantine_counts.json").read_text()
    for text in (cells, files):
        assert "NZP-" not in text
    for free_text in ("latte", "Too slow", "Housing first", "Female", "heavy", "agree"):
        assert free_text not in files


def test_salt_matters(inst, tmp_path):
    other = ingest_survey(
        inst,
        EXAMPLES / "respondents.csv",
        EXAMPLES / "answers.csv",
        quarantine_dir=tmp_path,
        salt="another",
    )
    assert "4a8b432c17326e5b" not in other.respondents["respondent_id"].to_list()
    with pytest.raises(ValueError, match="salt"):
        ingest_survey(
            inst,
            EXAMPLES / "respondents.csv",
            EXAMPLES / "answers.csv",
            quarantine_dir=tmp_path,
            salt="",
        )


def test_strict_raises_with_file_row_field(inst, tmp_path):
    with pytest.raises(ValueError) as err:
        _ingest(inst, RESPONDENTS, ANSWERS, tmp_path / "q", strict=True)
    assert "respondents.csv row 9, field 'respondent_id': duplicate_respondent" in str(err.value)
    # With only the 8 good respondents, the first bad answer is row 17 (undecodable free_text).
    good = b"\n".join((EXAMPLES / "respondents.csv").read_bytes().split(b"\n")[:9]) + b"\n"
    (tmp_path / "resp.csv").write_bytes(good)
    with pytest.raises(ValueError) as err:
        _ingest(inst, tmp_path / "resp.csv", ANSWERS, tmp_path / "q", strict=True)
    assert "answers.csv row 17, field 'free_text': non_utf8" in str(err.value)
    assert not (tmp_path / "q").exists()  # strict writes nothing


# --- formats ---


def _records(path: Path) -> tuple[list[str], list[list[str]]]:
    """The example rows that every format can hold (UTF-8, well-formed), as strings."""
    lines = path.read_bytes().decode("utf-8", "replace")
    header, *rows = csv.reader(io.StringIO(lines, newline=""))
    keep = [r for r in rows if len(r) == len(header) and "\ufffd" not in "".join(r)]
    return header, keep


def _json_value(v: str) -> str | int | float | None:
    """Numbers as JSON numbers ("0.8" -> 0.8, "1" -> 1), empty fields as null."""
    if v.lstrip("-").replace(".", "", 1).isdigit():
        return json.loads(v)
    return v or None


def _write_all_formats(tmp_path: Path, name: str) -> dict[str, Path]:
    header, rows = _records(EXAMPLES / name)
    stem = tmp_path / name.removesuffix(".csv")
    out = {"csv": stem.with_suffix(".csv"), "parquet": stem.with_suffix(".parquet")}
    with out["csv"].open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    cols = {h: [r[k] for r in rows] for k, h in enumerate(header)}
    pl.DataFrame(cols, schema=dict.fromkeys(header, pl.String)).write_parquet(out["parquet"])
    out["jsonl"] = stem.with_suffix(".jsonl")
    with out["jsonl"].open("w") as f:
        for r in rows:
            obj = {h: _json_value(v) for h, v in zip(header, r, strict=True)}
            f.write(json.dumps(obj) + "\n")
    return out


def test_csv_parquet_jsonl_agree(inst, tmp_path):
    resp = _write_all_formats(tmp_path, "respondents.csv")
    ans = _write_all_formats(tmp_path, "answers.csv")
    results = {fmt: _ingest(inst, resp[fmt], ans[fmt], tmp_path / fmt) for fmt in resp}
    base = results["csv"]
    assert base.respondents.height == 8 and base.answers.height == 17
    for fmt in ("parquet", "jsonl"):
        assert_frame_equal(results[fmt].respondents, base.respondents)
        assert_frame_equal(results[fmt].answers, base.answers)
        assert_frame_equal(results[fmt].quarantine.drop("source"), base.quarantine.drop("source"))


def test_typed_parquet(inst, tmp_path):
    """Integer and float Parquet columns read as their text: value 1 -> "1" -> 1."""
    resp = pl.DataFrame(
        {
            "respondent_id": ["a", "b"],
            "age_band": ["65+"] * 2,
            "gender": ["male"] * 2,
            "region": ["north"] * 2,
            "base_weight": [0.5, 0.0],
        }
    )
    ans = pl.DataFrame(
        {
            "respondent_id": ["a", "a"],
            "item_id": ["s2", "s1"],
            "kind": ["likert"] * 2,
            "value": [3, 0],
        }
    )
    resp.write_parquet(tmp_path / "r.parquet")
    ans.write_parquet(tmp_path / "a.parquet")
    res = _ingest(inst, tmp_path / "r.parquet", tmp_path / "a.parquet", tmp_path / "q")
    assert res.respondents["base_weight"].to_list() == [0.5]
    assert res.answers.select("item_id", "value").rows() == [("s2", 3)]
    assert res.quarantine.select("row", "reason").rows() == [(2, "bad_type"), (2, "out_of_range")]


def test_jsonl_line_problems(inst, tmp_path):
    (tmp_path / "r.csv").write_text("respondent_id,age_band,gender,region\na,65+,male,north\n")
    head = b'{"respondent_id": "a", "kind": "likert", '
    lines = [
        head + b'"item_id": "s1", "value": 2}',
        head + b'"item_id": "s2", "value": 2, "free_text": "\xff"}',
        b"{not json",
        b"",
        head + b'"item_id": "s2", "value": [2]}',
        head + b'"item_id": "s2", "value": 2, "colour": 1}',
        b"[1, 2]",
        head + b'"item_id": "s2", "value": 2.0}',
    ]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    res = _ingest(inst, tmp_path / "r.csv", tmp_path / "a.jsonl", tmp_path / "q")
    assert res.quarantine.select("row", "field", "reason").rows() == [
        (2, "free_text", "non_utf8"),
        (3, "*", "malformed_row"),
        (4, "*", "malformed_row"),
        (5, "value", "bad_type"),
        (6, "*", "malformed_row"),
        (7, "*", "malformed_row"),
        (8, "value", "bad_type"),  # 2.0 is not an integer
    ]
    assert res.counts["answers"]["rows_in"] == 8 and res.answers.height == 1


@pytest.mark.parametrize(
    ("weight", "ok"),
    [("1e0", True), ("0.25", True), ("0", False), ("-1", False), ("nan", False), ("inf", False)],
)
def test_base_weight_must_be_positive_finite(inst, tmp_path, weight, ok):
    (tmp_path / "r.csv").write_text(
        f"respondent_id,age_band,gender,region,base_weight\na,65+,male,north,{weight}\n"
    )
    (tmp_path / "a.csv").write_text("respondent_id,item_id,kind,value\na,s1,likert,1\n")
    res = _ingest(inst, tmp_path / "r.csv", tmp_path / "a.csv", tmp_path / "q")
    assert res.respondents.height == (1 if ok else 0)
    assert res.counts["answers"]["by_reason"] == ({} if ok else {"unknown_respondent": 1})


def test_file_level_errors(inst, tmp_path):
    (tmp_path / "r.csv").write_text("respondent_id,age_band,gender\na,65+,male\n")
    (tmp_path / "a.csv").write_text("respondent_id,item_id,kind,value\na,s1,likert,1\n")
    with pytest.raises(ValueError, match=r"r\.csv: missing columns \['region'\]"):
        _ingest(inst, tmp_path / "r.csv", tmp_path / "a.csv", tmp_path / "q")
    header = "respondent_id,age_band,gender,region,weight"
    (tmp_path / "r.csv").write_text(header + "\na,65+,male,north,1\n")
    with pytest.raises(ValueError, match=r"r\.csv: unknown columns \['weight'\]"):
        _ingest(inst, tmp_path / "r.csv", tmp_path / "a.csv", tmp_path / "q")
    with pytest.raises(ValueError, match="unknown format '.xlsx'"):
        _ingest(inst, tmp_path / "r.xlsx", tmp_path / "a.csv", tmp_path / "q")
