"""A catalogue of bad inputs and the one-line answer each must get.

Each case makes one malformed input in a fresh folder (a survey file, an instrument, a margins
file, a config, a model folder, a Polis export, command-line arguments) and feeds it to the
real ``valign`` command (:func:`valign_ray.cli.main`, in this process) or, where the command
would have to start Ray or train first, to the library function it calls; a library error is
turned into the line the command would print (:func:`valign_ray.cli.error_line`). A row that
can be quarantined is, and the answer is its quarantine record.

``tests/test_bad_inputs.py`` runs every case. ``docs/BAD_INPUTS.md`` is written from it::

    python -m tests.bad_input_catalogue --write docs/BAD_INPUTS.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "data" / "examples"
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
NOT_UTF8 = b"\xff\xfe\xfa"

Call = list[str] | Callable[[], object]  # argv for valign, or a library call


@dataclass(frozen=True)
class Case:
    name: str  # a short id
    # what sort of input: survey, platform, instrument, margins, config, model, polis, cli, cai
    kind: str
    input: str  # what is wrong with it, for the doc
    make: Callable[[Path], Call]  # writes the bad input under a folder; says how to run it
    expect: tuple[str, ...]  # fragments the answer must hold (the file, the row, the field)
    code: int | None = 2  # exit code; None: not an error (a quarantined row, a warning)


@dataclass(frozen=True)
class Answer:
    code: int | None  # exit code; None for a library call that did not raise
    lines: tuple[str, ...]  # what went to stderr (or the library's answer), line by line
    traceback: bool  # a traceback was printed, or an exception escaped


# --- building bad inputs ---


def _prepare(d: Path, *sets: str, config: str = QUICKSTART) -> list[str]:
    argv = ["prepare", config, "--output-dir", str(d / "runs")]
    for item in sets:
        argv += ["--set", item]
    return argv


def _survey_files(d: Path, **replace: str | bytes) -> dict[str, Path]:
    """Copies of the example survey, with some files replaced (text or bytes)."""
    paths = {}
    for name in ("instrument.yaml", "respondents.csv", "answers.csv"):
        path = d / name
        shutil.copy(EXAMPLES / name, path)
        paths[name.split(".")[0]] = path
    for role, content in replace.items():
        path = paths.get(role, d / role)
        if "." in role:  # a file with another name or format: replace["respondents.xlsx"]
            path = d / role
            paths[role.split(".")[0]] = path
        _write(path, content)
    return paths


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _files_prepare(d: Path, *sets: str, salt: bool = True, **replace: str | bytes) -> list[str]:
    paths = _survey_files(d, **replace)
    keys = [f"survey.files.{role}={path}" for role, path in paths.items()]
    return _prepare(
        d, "survey.source=files", *keys, *(["survey.salt=s3cret"] if salt else []), *sets
    )


def _example(name: str) -> str:
    return (EXAMPLES / name).read_text(encoding="utf-8")


def _ingest(d: Path, **replace: str | bytes) -> Callable[[], object]:
    """Ingest the example survey with some files replaced; the answer is the first quarantined
    row of the replaced file (file, row, field, reason, message)."""
    from valign_ray.survey.ingest import ingest_survey
    from valign_ray.survey.instrument import load_instrument

    paths = _survey_files(d, **replace)
    role = next(iter(replace)).split(".")[0]

    def run() -> str:
        result = ingest_survey(
            load_instrument(paths["instrument"]),
            paths["respondents"],
            paths["answers"],
            quarantine_dir=d / "q",
            salt="s3cret",
        )
        q = result.quarantine.filter(result.quarantine["source"] == str(paths[role]))
        src, row, field, reason, message = q.sort("row").row(0)
        return f"quarantined: {src} row {row}, field {field!r}: {reason}: {message}"

    return run


def _polis(d: Path, **replace: str | bytes | None) -> Path:
    """The tiny Polis export of tests/test_polis.py, with files replaced (None: removed)."""
    from tests.test_polis import write_tiny_export

    export = write_tiny_export(d / "export")
    for name, content in replace.items():
        path = export / name.replace("_", "-").replace("-csv", ".csv")
        if content is None:
            path.unlink()
        else:
            _write(path, content)
    return export


def _polis_prepare(d: Path, **replace: str | bytes | None) -> list[str]:
    polis_dir = f"survey.polis_dir={_polis(d, **replace)}"
    return _prepare(d, polis_dir, config=str(REPO / "configs" / "polis.yaml"))


def _polis_text(d: Path, name: str) -> str:
    from tests.test_polis import write_tiny_export

    return (write_tiny_export(d / "clean") / name).read_text()


def _later_vote(d: Path, vote: str) -> str:
    """The tiny export's votes.csv plus a last vote of participant 0 on comment 0."""
    return _polis_text(d, "votes.csv").rstrip("\n") + f"\n999999,,0,0,{vote}\n"


def _polis_truncated(d: Path) -> Callable[[], object]:
    """A matrix cut off in its last row's vote cells, and no votes.csv: a warning, not silence."""
    from valign_ray.survey.polis import import_polis

    matrix = _polis_text(d, "participants-votes.csv").rstrip("\n")
    export = _polis(d, votes_csv=None, participants_votes_csv=matrix[: matrix.rindex(",") - 2])

    def run() -> str:
        warnings = import_polis(export, salt="s3cret").report["warnings"]
        return "warning: " + warnings[0] if warnings else "no warning"

    return run


def _model(d: Path, files: dict[str, str | bytes]) -> Callable[[], object]:
    from valign_ray.models import check_model_folder

    folder = d / "model"
    folder.mkdir()
    for name, content in files.items():
        _write(folder / name, content)
    return lambda: check_model_folder(folder)


def _model_missing(d: Path) -> Callable[[], object]:
    from valign_ray.models import check_model_folder

    return lambda: check_model_folder(d / "none")


def _config(d: Path, text: str | bytes, *sets: str) -> list[str]:
    return _prepare(d, *sets, config=str(_write(d / "bad.yaml", text)))


def _margins(d: Path, content: str | bytes) -> list[str]:
    return _prepare(d, f"weighting.margins={_write(d / 'margins.csv', content)}")


MARGINS_HEADER = "variable,category,share,year,source\n"
LLAMA = '{"model_type": "llama"}'
ANSWERS_HEADER = "respondent_id,item_id,kind,response_id,response_b_id,value,free_text\n"
LIKERT_9 = "respondent_id,item_id,kind,value\nNZP-001,s1,likert,9\n"


def _polis_cases() -> list[Case]:
    cut = 'comment-id,moderated,comment-body\n0,1,Statement 0\n1,1,"Statement one is cut\n'
    return [
        Case("polis-no-folder", "polis", "survey.polis_dir names no folder",
             lambda d: _prepare(d, "survey.source=polis", f"survey.polis_dir={d / 'none'}"),
             ("none", "not found", "survey.polis_dir")),
        Case("polis-no-comments", "polis", "the export has no comments.csv",
             lambda d: _polis_prepare(d, comments_csv=None), ("comments.csv", "file not found")),
        Case("polis-empty-participants", "polis", "participants-votes.csv is 0 bytes",
             lambda d: _polis_prepare(d, participants_votes_csv=b""),
             ("participants-votes.csv", "empty file (0 bytes)")),
        Case("polis-empty-votes", "polis", "votes.csv is 0 bytes",
             lambda d: _polis_prepare(d, votes_csv=b""), ("votes.csv", "empty file")),
        Case("polis-comments-not-utf8", "polis", "comments.csv has Latin-1 bytes on line 3",
             lambda d: _polis_prepare(
                 d, comments_csv=b"comment-id,moderated,comment-body\n0,1,ok\n"
                 + b"1,1,caf\xe9\n"),
             ("comments.csv", "line 3", "not valid UTF-8")),
        Case("polis-votes-not-utf8", "polis", "votes.csv has undecodable bytes on line 2",
             lambda d: _polis_prepare(
                 d, votes_csv=b"timestamp,comment-id,voter-id,vote\n1,0,\xff,1\n"),
             ("votes.csv", "line 2", "not valid UTF-8")),
        Case("polis-comments-cut-in-quotes", "polis",
             "comments.csv ends inside a quoted comment-body (a truncated download)",
             lambda d: _polis_prepare(d, comments_csv=cut),
             ("comments.csv", "line 3", "never closed")),
        Case("polis-participants-header-only", "polis",
             "participants-votes.csv has its header and no participants",
             lambda d: _polis_prepare(
                 d, participants_votes_csv="participant,group-id,n-votes,0,1\n"),
             ("participants-votes.csv", "no participants")),
        Case("polis-comments-header-only", "polis", "comments.csv has its header and no rows",
             lambda d: _polis_prepare(d, comments_csv="comment-id,moderated,comment-body\n"),
             ("comments.csv", "no statements")),
        Case("polis-matrix-truncated", "polis",
             "participants-votes.csv cut off in its last row, and no votes.csv",
             _polis_truncated, ("participants-votes.csv", "missing", "votes.csv"), code=None),
        Case("polis-comments-missing-column", "polis", "comments.csv has no moderated column",
             lambda d: _polis_prepare(d, comments_csv="comment-id,comment-body\n0,ok\n"),
             ("comments.csv", "missing column", "moderated")),
        Case("polis-vote-out-of-range", "polis", "votes.csv holds a vote of 2",
             lambda d: _polis_prepare(d, votes_csv=_later_vote(d, "2")),
             ("votes.csv", "vote 2 is not -1/0/1")),
        Case("polis-vote-not-integer", "polis", "votes.csv holds a vote 'yes' on data row 1",
             lambda d: _polis_prepare(
                 d, votes_csv="timestamp,comment-id,voter-id,vote\n1,0,0,yes\n"),
             ("votes.csv", "data row 1", "'vote'", "not an integer")),
        Case("polis-bad-moderated", "polis", "comments.csv holds moderated=5",
             lambda d: _polis_prepare(
                 d, comments_csv="comment-id,moderated,comment-body\n0,5,ok\n"),
             ("comments.csv", "comment-id=0", "moderated=5")),
        Case("polis-duplicate-comment", "polis", "comments.csv lists comment-id 0 twice",
             lambda d: _polis_prepare(
                 d, comments_csv="comment-id,moderated,comment-body\n0,1,a\n0,1,b\n"),
             ("comments.csv", "duplicated comment-id", "[0]")),
        Case("polis-log-disagrees", "polis", "votes.csv and the matrix disagree on a vote",
             lambda d: _polis_prepare(
                 d, votes_csv=_later_vote(d, "-1")),
             ("votes.csv", "participants-votes.csv", "disagree")),
    ]  # fmt: skip


def _survey_cases() -> list[Case]:
    header = "respondent_id,age_band,gender,region,group,base_weight"
    return [
        Case("survey-default-salt", "survey", "collected survey files with the default salt",
             lambda d: _files_prepare(d, salt=False), ("survey.salt", "VALIGN_SALT")),
        Case("survey-no-respondents", "survey", "survey.files.respondents names no file",
             lambda d: _files_prepare(d, f"survey.files.respondents={d / 'none.csv'}"),
             ("none.csv", "not found", "survey.files.respondents")),
        Case("survey-xlsx", "survey", "the respondents file is a spreadsheet (.xlsx)",
             lambda d: _files_prepare(d, **{"respondents.xlsx": b"PK"}),
             ("respondents.xlsx", "unknown format '.xlsx'")),
        Case("survey-empty-csv", "survey", "respondents.csv is 0 bytes",
             lambda d: _files_prepare(d, respondents=b""), ("respondents.csv", "empty file")),
        Case("survey-unknown-column", "survey", "respondents.csv has a column 'income'",
             lambda d: _files_prepare(d, respondents=header + ",income\n"),
             ("respondents.csv", "unknown columns ['income']")),
        Case("survey-missing-column", "survey", "respondents.csv has no gender column",
             lambda d: _files_prepare(d, respondents="respondent_id,age_band,region\n"),
             ("respondents.csv", "missing columns ['gender']")),
        Case("survey-header-not-utf8", "survey", "the header of answers.csv is not UTF-8",
             lambda d: _files_prepare(d, answers=b"respondent_id,item_id,kind,value,\xff\n"),
             ("answers.csv", "not UTF-8")),
        Case("survey-bad-parquet", "survey", "respondents.parquet is not a Parquet file",
             lambda d: _files_prepare(d, **{"respondents.parquet": b"not parquet"}),
             ("respondents.parquet", "not a readable Parquet file")),
        Case("survey-strict-bad-row", "survey",
             "survey.strict: true and a respondent with gender 'robot' on row 2",
             lambda d: _files_prepare(d, "survey.strict=true", respondents=header
                                      + "\nr1,65+,male,north,g1,1\nr2,65+,robot,north,g1,1\n"),
             ("respondents.csv row 2", "field 'gender'", "unknown_category")),
        Case("survey-quarantine-category", "survey", "a respondent with gender 'robot' (row 2)",
             lambda d: _ingest(d, respondents=header
                               + "\nr1,65+,male,north,g1,1\nr2,65+,robot,north,g1,1\n"),
             ("respondents.csv row 2", "field 'gender'", "unknown_category"), code=None),
        Case("survey-quarantine-not-utf8", "survey", "answers.csv row 1 holds Latin-1 bytes",
             lambda d: _ingest(d, answers=b"respondent_id,item_id,kind,value,free_text\n"
                               + b"NZP-001,q1,rating,1,caf\xe9\n"),
             ("answers.csv row 1", "field 'free_text'", "non_utf8"), code=None),
        Case("survey-quarantine-fields", "survey", "answers.csv row 1 has an extra field",
             lambda d: _ingest(d, answers=ANSWERS_HEADER + "NZP-001,q1,rating,q1a,,1,,x\n"),
             ("answers.csv row 1", "malformed_row", "8 fields; the header has 7"), code=None),
        Case("survey-quarantine-likert", "survey", "a likert answer of 9 on a 5-option statement",
             lambda d: _ingest(d, answers=LIKERT_9),
             ("answers.csv row 1", "field 'value'", "out_of_range", "outside 1..5"), code=None),
        Case("survey-quarantine-jsonl", "survey", "answers.jsonl line 1 is not JSON",
             lambda d: _ingest(d, **{"answers.jsonl": "{not json\n"}),
             ("answers.jsonl row 1", "malformed_row", "not valid JSON"), code=None),
    ]  # fmt: skip


PLATFORMS = EXAMPLES / "platforms"
PLATFORM_FILES = {"instrument": "instrument.yaml", "responses": "qualtrics_responses.csv",
                  "panel": "prolific_demographics.csv", "mapping": "mapping.yaml"}  # fmt: skip


def _platform(d: Path, *sets: str, **replace: str) -> list[str]:
    """valign ingest on configs/files_example.yaml, with copies of its platform files, some
    replaced (by role: instrument, responses, panel, mapping)."""
    keys = []
    for role, name in PLATFORM_FILES.items():
        path = d / name
        _write(path, replace[role] if role in replace else (PLATFORMS / name).read_text())
        keys += ["--set", f"survey.files.{role}={path}"]
    sets_argv = [a for item in ("survey.salt=s3cret", *sets) for a in ("--set", item)]
    config = str(REPO / "configs" / "files_example.yaml")
    return ["ingest", config, "--output-dir", str(d / "runs"), *keys, *sets_argv]


def _platform_row(d: Path, cell: str) -> Callable[[], object]:
    """Ingest a one-response Qualtrics export whose q1_1 cell is ``cell``; the answer is the
    first quarantined row."""
    lines = (PLATFORMS / "qualtrics_responses.csv").read_text().splitlines()
    fields = lines[4].split(",")  # response 2: a good one
    fields[11] = cell
    responses = _write(d / "responses.csv", "\n".join([*lines[:3], ",".join(fields)]) + "\n")

    def run() -> str:
        from valign_ray.config import load_config
        from valign_ray.survey.instrument import load_instrument
        from valign_ray.survey.platforms.convert import ingest_platform

        cfg = load_config(REPO / "configs" / "files_example.yaml")
        files = cfg.survey.files.__class__(
            **{**vars(cfg.survey.files), "responses": str(responses)}
        )
        result = ingest_platform(
            load_instrument(files.instrument), files, quarantine_dir=d / "q", salt="s3cret"
        )
        src, row, field, reason, message = result.quarantine.sort("row").row(0)
        return f"quarantined: {src} row {row}, field {field!r}: {reason}: {message}"

    return run


def _platform_cases() -> list[Case]:
    qualtrics = (PLATFORMS / "qualtrics_responses.csv").read_text().splitlines()
    mapping = (PLATFORMS / "mapping.yaml").read_text()
    panel = (PLATFORMS / "prolific_demographics.csv").read_text()
    clash = (PLATFORMS / "instrument.yaml").read_text().replace("- id: q3", "- id: q_1")
    return [
        Case("platform-no-responses", "platform", "survey.files.platform: qualtrics and no "
             "survey.files.responses", lambda d: _platform(d, "survey.files.responses=null"),
             ("survey.files.responses",)),
        Case("platform-one-header-row", "platform", "a Qualtrics export without its 2nd and "
             "3rd header rows", lambda d: _platform(d, responses="\n".join(
                 [qualtrics[0], *qualtrics[3:]]) + "\n"),
             ("responses.csv", "row 3 is not the ImportId header row")),
        Case("platform-missing-column", "platform", "the export has no column for statement s2",
             lambda d: _platform(d, responses="\n".join(qualtrics).replace(",s2,", ",s2x,", 1)),
             ("responses.csv", "no column(s) ['s2']")),
        Case("platform-mapping-category", "platform", "the mapping maps Female to 'woman'",
             lambda d: _platform(d, mapping=mapping.replace("female, Male", "woman, Male")),
             ("mapping.yaml", "'woman' is not a category of gender")),
        Case("platform-panel-column", "platform", "the panel export has no Age column",
             lambda d: _platform(d, panel=panel.replace(",Age,", ",Years,", 1)),
             ("prolific_demographics.csv", "missing column(s) ['Age']")),
        Case("platform-export-code-clash", "platform", "valign export-instrument: items q1 and "
             "q_1 (both platform code q1)", lambda d: ["export-instrument", str(_write(
                 d / "inst.yaml", clash)), "--format", "qualtrics", "--out", str(d / "q.txt")],
             ("same platform code(s) ['q1']",)),
        Case("platform-quarantine-choice", "platform", "a Qualtrics matrix cell 'Maybe' "
             "(not a choice)", lambda d: _platform_row(d, "Maybe"),
             ("responses.csv row 1", "field 'q1_1'", "unmapped_value"), code=None),
    ]  # fmt: skip


def _instrument_cases() -> list[Case]:
    return [
        Case("instrument-missing", "instrument", "survey.files.instrument names no file",
             lambda d: _files_prepare(d, f"survey.files.instrument={d / 'none.yaml'}"),
             ("none.yaml", "not found", "survey.files.instrument")),
        Case("instrument-not-yaml", "instrument", "instrument.yaml is not YAML",
             lambda d: _files_prepare(d, instrument="name: [unclosed\n"),
             ("instrument.yaml", "not valid YAML")),
        Case("instrument-unknown-key", "instrument", "an item with a misspelt key 'txt'",
             lambda d: _files_prepare(d, instrument=_example("instrument.yaml").replace(
                 "    text: \"Should the council", "    txt: \"Should the council", 1)),
             ("instrument.yaml", "item #1 ('q1')", "unknown keys ['txt']")),
        Case("instrument-duplicate-item", "instrument", "two items with id q1",
             lambda d: _files_prepare(d, instrument=_example("instrument.yaml").replace(
                 "id: q2", "id: q1")),
             ("instrument.yaml", "duplicate item id 'q1'")),
        Case("instrument-not-utf8", "instrument", "instrument.yaml has Latin-1 bytes on line 2",
             lambda d: _files_prepare(d, instrument=b"name: pilot\ndemographics: {caf\xe9: [a]}\n"),
             ("instrument.yaml", "line 2", "not valid UTF-8")),
        Case("instrument-yes-category", "instrument", "a category written yes (YAML: true)",
             lambda d: _files_prepare(d, instrument=_example("instrument.yaml").replace(
                 "region: [north, south]", "region: [north, yes]")),
             ("instrument.yaml", "demographic 'region'", "quote it")),
    ]  # fmt: skip


def _margins_cases() -> list[Case]:
    row = "gender,female,{},2023,census\ngender,male,0.5,2023,census\n"
    return [
        Case("margins-missing", "margins", "weighting.margins names no file",
             lambda d: _prepare(d, f"weighting.margins={d / 'none.csv'}"),
             ("none.csv", "not found", "weighting.margins")),
        Case("margins-sum", "margins", "gender shares sum to 0.9",
             lambda d: _margins(d, MARGINS_HEADER + row.format(0.4)),
             ("margins.csv", "'gender' sum to 0.9")),
        Case("margins-not-number", "margins", "a share written 'half' on row 2",
             lambda d: _margins(d, MARGINS_HEADER + row.format("half")),
             ("margins.csv row 2", "share 'half' is not a number")),
        Case("margins-not-utf8", "margins", "margins.csv has Latin-1 bytes on line 2",
             lambda d: _margins(d, MARGINS_HEADER.encode() + b"gender,f\xe9male,1,2023,x\n"),
             ("margins.csv", "line 2", "not valid UTF-8")),
        Case("margins-header", "margins", "margins.csv has no year column",
             lambda d: _margins(d, "variable,category,share,source\n"),
             ("margins.csv", "missing columns ['year']")),
        Case("margins-empty", "margins", "margins.csv is 0 bytes",
             lambda d: _margins(d, b""), ("margins.csv", "empty file")),
    ]  # fmt: skip


def _config_cases() -> list[Case]:
    return [
        Case("config-missing", "config", "the config file does not exist",
             lambda d: _prepare(d, config=str(d / "none.yaml")),
             ("config file not found", "none.yaml")),
        Case("config-not-yaml", "config", "the config is not YAML",
             lambda d: _config(d, "train: [1, 2\n"), ("bad.yaml", "not valid YAML")),
        Case("config-not-mapping", "config", "the config is a list",
             lambda d: _config(d, "- a\n- b\n"), ("bad.yaml", "must be a mapping")),
        Case("config-not-utf8", "config", "the config has Latin-1 bytes on line 1",
             lambda d: _config(d, b"name: caf\xe9\n"), ("bad.yaml", "line 1", "not valid UTF-8")),
        Case("config-unknown-key", "config", "a misspelt key train.learning_rate",
             lambda d: _config(d, "train:\n  learning_rate: 0.1\n"),
             ("unknown config key 'train.learning_rate'", "valid keys")),
        Case("config-out-of-range", "config", "train.lr=-1 (must be > 0)",
             lambda d: _prepare(d, "train.lr=-1"), ("train.lr", "out of range", "> 0")),
        Case("config-share-out-of-range", "config", "data.holdout_respondents=1.5",
             lambda d: _prepare(d, "data.holdout_respondents=1.5"),
             ("data.holdout_respondents", "out of range", "[0, 1)")),
        Case("config-wrong-type", "config", "train.epochs=1.5",
             lambda d: _prepare(d, "train.epochs=1.5"), ("train.epochs", "expected an integer")),
        Case("config-bool", "config", "train.weighted='yes' (a string, not true)",
             lambda d: _prepare(d, "train.weighted='yes'"),
             ("train.weighted", "expected true or false")),
        Case("config-literal", "config", "survey.source=excel",
             lambda d: _prepare(d, "survey.source=excel"),
             ("survey.source", "'excel' is not allowed", "synthetic, files, polis")),
        Case("config-set-no-equals", "config", "--set train.lr (no =VALUE)",
             lambda d: _prepare(d, "train.lr"), ("--set 'train.lr'", "KEY=VALUE")),
        Case("config-set-not-yaml", "config", "--set train.lr=[1",
             lambda d: _prepare(d, "train.lr=[1"), ("--set 'train.lr=[1'", "not valid YAML")),
        Case("config-unknown-method", "config", "loss.name=ppo",
             lambda d: _prepare(d, "loss.name=ppo"), ("ppo",)),
        Case("config-offload-needs-zero3", "config", "train.offload=all with ZeRO-2",
             lambda d: _prepare(d, "train.offload=all"), ("train.offload", "zero_stage=3")),
    ]  # fmt: skip


def _model_cases() -> list[Case]:
    return [
        Case("model-missing", "model", "model.path names no folder",
             _model_missing,
             ("none", "model folder not found")),
        Case("model-no-config", "model", "a model folder without config.json",
             lambda d: _model(d, {"model.safetensors": b""}), ("model", "no config.json")),
        Case("model-bad-json", "model", "config.json is not JSON",
             lambda d: _model(d, {"config.json": "{oops"}), ("config.json", "not a JSON object")),
        Case("model-unknown-arch", "model", "config.json says model_type 'gpt9'",
             lambda d: _model(d, {"config.json": '{"model_type": "gpt9"}'}),
             ("config.json", "model_type 'gpt9'", "not an architecture")),
        Case("model-pickle-only", "model", "weights only in pytorch_model.bin (pickle)",
             lambda d: _model(d, {"config.json": LLAMA, "pytorch_model.bin": b"\x80\x04"}),
             ("model", "only pickle weights ['pytorch_model.bin']", "safetensors only")),
        Case("model-no-weights", "model", "a config.json and no weights at all",
             lambda d: _model(d, {"config.json": LLAMA}), ("model", "no *.safetensors weights")),
    ]  # fmt: skip


def _cli_cases() -> list[Case]:
    return [
        Case("cli-unknown-command", "cli", "valign fit (no such subcommand)",
             lambda d: ["fit"], ("invalid choice: 'fit'",)),
        Case("cli-no-config", "cli", "valign prepare (no config given)",
             lambda d: ["prepare"], ("the following arguments are required: config",)),
        Case("cli-report-missing-run", "cli", "valign report on a folder that does not exist",
             lambda d: ["report", str(d / "runs" / "none")], ("none", "run directory not found")),
        Case("cli-design-n-zero", "cli", "valign design --n 0",
             lambda d: ["design", str(REPO / "configs" / "design_nz.yaml"), "--n", "0"],
             ("--n", "must be >= 1")),
        Case("cli-design-no-n", "cli", "valign design without --n or --from",
             lambda d: ["design", str(REPO / "configs" / "design_nz.yaml")],
             ("--n N", "--from RUN_DIR")),
        Case("cli-design-from-missing", "cli", "valign design --from a run that does not exist",
             lambda d: ["design", str(REPO / "configs" / "design_nz.yaml"), "--from",
                        str(d / "none")], ("none",)),
        Case("cli-release-missing-run", "cli", "valign release on a folder that does not exist",
             lambda d: ["release", str(d / "none"), "--out", str(d / "rel")],
             ("none", "not a run directory")),
        Case("cli-release-no-out", "cli", "valign release without --out",
             lambda d: ["release", str(d / "none")], ("required: --out",)),
    ]  # fmt: skip


CAI_SMOKE = str(REPO / "configs" / "cai_smoke.yaml")


def _cai(d: Path, *sets: str) -> list[str]:
    """``valign cai`` on the smoke config: these inputs are refused before any stage runs."""
    argv = ["cai", CAI_SMOKE, "--output-dir", str(d / "runs")]
    for item in sets:
        argv += ["--set", item]
    return argv


def _cai_prompt_file(d: Path, name: str, text: str) -> Callable[[], object]:
    """The prompt file's first quarantined row (line, reason), or its error."""
    from valign_ray.cai.prompts import file_prompts

    path = _write(d / name, text)

    def run() -> str:
        _, bad = file_prompts(path)
        source, line, reason = bad.row(0)
        return f"quarantined: {path} line {line}: {reason}"

    return run


def _cai_cases() -> list[Case]:
    good = '{"prompt_id": "a", "prompt": "Fund rail?"}\n'
    return [
        Case("cai-prompt-file-duplicate-id", "cai", "a JSONL prompt file repeats a prompt_id",
             lambda d: _cai_prompt_file(d, "p.jsonl", good + good),
             ("p.jsonl line 2", "appears on an earlier line"), code=None),
        Case("cai-prompt-file-empty-prompt", "cai", "a CSV prompt file row has no prompt",
             lambda d: _cai_prompt_file(d, "p.csv", "prompt_id,prompt\na,Fund rail?\nb,\n"),
             ("p.csv line 3", "prompt is missing"), code=None),
        Case("cai-prompt-file-no-columns", "cai", "a CSV prompt file without prompt_id, prompt",
             lambda d: _cai_prompt_file(d, "p.csv", "id,text\n1,hi\n"),
             ("p.csv", "prompt_id", "cai.prompts.file")),
        Case("cai-prompt-file-missing", "cai", "cai.prompts.file names no file",
             lambda d: _cai(d, f"cai.prompts.file={d / 'none.jsonl'}"),
             ("none.jsonl", "cai.prompts.file")),
        Case("cai-options-identical", "cai", "cai.feedback.options are the same string",
             lambda d: _cai(d, 'cai.feedback.options=["(A)", "(A)"]'),
             ("cai.feedback.options", "must be different and non-empty")),
        Case("cai-options-empty", "cai", "one of cai.feedback.options is empty",
             lambda d: _cai(d, 'cai.feedback.options=["", "(B)"]'),
             ("cai.feedback.options", "must be different and non-empty")),
        Case("cai-clamp-reversed", "cai", "cai.feedback.clamp has lo > hi",
             lambda d: _cai(d, "cai.feedback.clamp=[0.6, 0.4]"),
             ("cai.feedback.clamp", "0 <= lo <= hi <= 1")),
        Case("cai-constitution-empty", "cai", "cai.constitution has no principles",
             lambda d: _cai(d, f"cai.constitution={_write(d / 'c.yaml', 'principles: []')}"),
             ("c.yaml", "no principles", "cai.constitution")),
        Case("cai-template-missing-placeholder", "cai",
             "cai.templates: the critique request lacks {principle}",
             lambda d: _cai(d, f"cai.templates={_templates_without(d, '{principle}')}"),
             ("critique_request", "missing placeholder(s) {principle}")),
    ]  # fmt: skip


def _templates_without(d: Path, placeholder: str) -> Path:
    text = (REPO / "configs" / "cai_templates.yaml").read_text(encoding="utf-8")
    head, rest = text.split("critique_request:", 1)
    first, others = rest.split("revision_request:", 1)
    first = first.replace(placeholder, "")
    return _write(d / "t.yaml", head + "critique_request:" + first + "revision_request:" + others)


CASES: list[Case] = [
    *_survey_cases(),
    *_platform_cases(),
    *_instrument_cases(),
    *_margins_cases(),
    *_config_cases(),
    *_model_cases(),
    *_polis_cases(),
    *_cli_cases(),
    *_cai_cases(),
]


# --- running the cases, and the doc ---


def run_case(case: Case, folder: Path) -> Answer:
    """Make the case's input under ``folder`` and feed it to valign or the library."""
    from valign_ray.cli import error_line, main

    folder.mkdir(parents=True, exist_ok=True)
    call = case.make(folder)
    err, out = io.StringIO(), io.StringIO()
    code: int | None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            if isinstance(call, list):
                code = main(call)
                lines = err.getvalue().splitlines()
            else:
                result, code = call(), None
                lines = [str(result)]
        except SystemExit as exc:  # argparse
            code, lines = int(exc.code or 0), err.getvalue().splitlines()
        except Exception as exc:  # noqa: BLE001 - the library's error, as valign prints it
            line = error_line(exc)
            if line is None:
                return Answer(None, (f"{type(exc).__name__}: {exc}",), traceback=True)
            code, lines = 2, [line]
    text = "\n".join(lines)
    return Answer(code, tuple(lines), traceback="Traceback" in text)


def normalise(text: str, root: Path) -> str:
    """``text`` without this run's folders, so the doc does not change from run to run."""
    return text.replace(str(root), "<tmp>").replace(str(REPO), "<repo>")


def run_all(root: Path) -> dict[str, Answer]:
    """Every case's answer, with VALIGN_SALT unset (the default-salt case needs it so)."""
    salt = os.environ.pop("VALIGN_SALT", None)
    try:
        return {case.name: run_case(case, root / case.name) for case in CASES}
    finally:
        if salt is not None:
            os.environ["VALIGN_SALT"] = salt


def render(answers: dict[str, Answer], root: Path) -> str:
    """docs/BAD_INPUTS.md: every case, what it must answer and what it answered."""
    lines = [
        "# Bad inputs and their answers",
        "",
        "Generated from `tests/bad_input_catalogue.py` by",
        "`python -m tests.bad_input_catalogue --write docs/BAD_INPUTS.md`;",
        "`tests/test_bad_inputs.py` checks every answer and that this file is current.",
        "An error is one line on stderr with exit code 2 and no traceback (`valign --debug` shows",
        "it). Exit `-`: not an error (a quarantined row goes to `survey/quarantine.csv`, a warning",
        "is printed and recorded). `<tmp>` stands for the case's folder.",
        "",
        f"{len(CASES)} cases.",
        "",
        "| case | input | expected answer holds | exit | answer given |",
        "|---|---|---|---|---|",
    ]
    for case in CASES:
        ans = answers[case.name]
        given = normalise(" / ".join(ans.lines), root / case.name).replace("|", "\\|")
        expect = "; ".join(f"`{e}`" for e in case.expect).replace("|", "\\|")
        code = "-" if ans.code is None else str(ans.code)
        lines.append(f"| {case.name} | {case.input} | {expect} | {code} | {given} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PATH", help="write the doc here (else print it)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        doc = render(run_all(root), root)
    if args.write:
        Path(args.write).write_text(doc, encoding="utf-8")
    else:
        sys.stdout.write(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
