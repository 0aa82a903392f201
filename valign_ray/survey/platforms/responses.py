"""Response exports of survey platforms -> the tables :func:`~valign_ray.survey.ingest.
ingest_frames` checks: one respondent row per response, one answer row per answered cell.

- **Qualtrics** CSV: three header rows (export tags, question text, ``{"ImportId": ...}``);
  a single-answer question is column ``<code>``, matrix row k is ``<code>_<k>``; cells hold
  choice text or numeric recode values (both are accepted, text first).
- **LimeSurvey** CSV, "question code" headings: ``<code>`` and ``<code>[<row code>]``; cells
  hold answer codes or full answer text.

Row numbers are the export's data records (header rows not counted), and the quarantine's
``field`` is the export's column (or the panel export's), so a bad cell can be found. What
cannot be converted is not dropped: the row carries its reason (``unmapped_value``,
``no_panel_row``, ``panel_status``) into the quarantine, counted like every other.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from valign_ray.errors import InputError, read_utf8
from valign_ray.survey.instrument import Instrument
from valign_ray.survey.platforms.mapping import Mapping, Panel
from valign_ray.survey.platforms.questions import RATING_VALUE, Question, survey_questions
from valign_ray.survey.row_checks import META_COLUMNS
from valign_ray.survey.tables import ANSWER_COLUMNS

PLATFORMS = ("qualtrics", "limesurvey")
DEFAULT_ID = {"qualtrics": "ResponseId", "limesurvey": "id"}
Problem = tuple[str, str, str] | None  # reason, field, message


@dataclass(frozen=True)
class Converted:
    """The canonical respondent and answer rows of an export, and lines for the terminal."""

    respondents: pl.DataFrame
    answers: pl.DataFrame
    notes: list[str]


def read_export(platform: str, path: str | Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The column names and the data records (1-based number, fields) of a response export."""
    path = Path(path)
    rows = list(csv.reader(io.StringIO(read_utf8(path, f"{platform} export"), newline="")))
    n_header = 3 if platform == "qualtrics" else 1
    if len(rows) < n_header:
        raise InputError(
            f"fewer than the {n_header} header row(s) of a {platform} export", path=path
        )
    header = rows[0]
    if platform == "qualtrics" and not all(c.startswith('{"ImportId"') for c in rows[2] if c):
        raise InputError(
            "row 3 is not the ImportId header row: export the CSV with its three header rows",
            path=path,
        )
    if len(set(header)) != len(header):
        raise InputError("the header repeats a column name", path=path)
    return header, list(enumerate(rows[n_header:], start=1))


def _cell_column(platform: str, q: Question, row_index: int | None = None) -> str:
    if row_index is None:
        return q.code
    if platform == "qualtrics":
        return f"{q.code}_{row_index + 1}"
    return f"{q.code}[{q.rows[row_index][0]}]"


def _choice(q: Question, raw: str) -> str | None:
    """The choice code of a cell: its text, else its code."""
    by_text = {text: code for code, text in q.choices}
    codes = {code for code, _ in q.choices}
    raw = raw.strip()
    return by_text.get(raw) or (raw if raw in codes else None)


def convert_export(
    inst: Instrument,
    platform: str,
    path: str | Path,
    mapping: Mapping,
    panel: Panel | None,
) -> Converted:
    """Convert a response export (and the panel's demographics) into canonical rows."""
    if platform not in PLATFORMS:
        raise InputError(f"unknown platform {platform!r}; valid: {list(PLATFORMS)}")
    if mapping.panel_variables and panel is None:
        raise InputError("the mapping takes demographics from a panel export: give its file")
    path = Path(path)
    header, records = read_export(platform, path)
    questions = survey_questions(inst, skip_demographics=mapping.panel_variables)
    id_col = mapping.respondent_id or DEFAULT_ID[platform]
    wanted = [id_col] + [
        _cell_column(platform, q, k)
        for q in questions
        for k in (range(len(q.rows)) if q.rows else [None])
    ]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise InputError(
            f"no column(s) {missing}: export with question codes as headings", path=path
        )
    resp_rows, ans_rows = [], []
    for n, fields in records:
        rec = dict(zip(header, fields, strict=False))
        if len(fields) != len(header):
            msg = f"{len(fields)} fields; the header has {len(header)}"
            resp_rows.append(({}, n, ("malformed_row", "*", msg)))
            continue
        rid = rec[id_col].strip() or None
        demo, problem = _demographics(inst, questions, platform, rec, rid, mapping, panel)
        resp_rows.append(({"respondent_id": rid, **demo}, n, problem))
        for q in questions:
            if q.source.startswith("demographic:"):
                continue
            ans_rows += _answers(inst, platform, q, rec, rid, n)
    notes = []
    if panel is not None:
        ids = {r[0]["respondent_id"] for r in resp_rows if r[0].get("respondent_id")}
        notes.append(
            f"panel {panel.path}: {panel.unmatched(ids)} participant(s) without a response"
        )
    return Converted(
        _frame(resp_rows, ["respondent_id", *inst.demographics]),
        _frame(ans_rows, [*ANSWER_COLUMNS, "_column"]),
        notes,
    )


def _frame(rows: list[tuple[dict, int, Problem]], columns: list[str]) -> pl.DataFrame:
    schema = dict.fromkeys(columns, pl.String) | {"_row": pl.Int64}
    schema |= dict.fromkeys(META_COLUMNS[1:], pl.String)
    data = [
        [values.get(c) for c in columns] + [n, *(problem or (None, None, None))]
        for values, n, problem in rows
    ]
    return pl.DataFrame(data, schema=schema, orient="row")


def _panel_record(
    rid: str | None, mapping: Mapping, panel: Panel | None
) -> tuple[dict[str, str] | None, Problem]:
    """The respondent's row of the panel export (None without a panel), or why there is none."""
    if panel is None or rid is None:
        return None, None
    found = panel.rows.get(rid, [])
    if len(found) != 1:
        where = "no row" if not found else f"rows {', '.join(str(r) for r, _ in found)}"
        why = f"the participant is on {where} of the panel export"
        return None, ("no_panel_row", mapping.panel_id_column or "", why)
    rec, status_col = found[0][1], mapping.panel_status_column
    if status_col and rec.get(status_col, "").strip() not in mapping.accept_status:
        why = f"panel status is not one of {', '.join(mapping.accept_status)}"
        return None, ("panel_status", status_col, why)
    return rec, None


def _demographics(
    inst: Instrument,
    questions: list[Question],
    platform: str,
    rec: dict[str, str],
    rid: str | None,
    mapping: Mapping,
    panel: Panel | None,
) -> tuple[dict[str, str | None], Problem]:
    """The respondent's categories, and the first problem met finding them: a panel variable
    through its map; a survey variable through ``values`` if given, else its choices."""
    panel_rec, problem = _panel_record(rid, mapping, panel)
    by_source = {q.source: q for q in questions}
    out: dict[str, str | None] = {}
    for var, cats in inst.demographics.items():
        vmap = mapping.demographics.get(var)
        if vmap is not None and vmap.panel_column:
            column = vmap.panel_column
            raw = (panel_rec or {}).get(column, "")
            cat = vmap.category(raw) if raw.strip() else None
        else:
            q = by_source[f"demographic:{var}"]
            column = _cell_column(platform, q)
            raw, code = rec[column], _choice(q, rec[column])
            cat = vmap.category(raw) if vmap and vmap.values else None
            cat = cat or (cats[int(code) - 1] if code else None)
        out[var] = cat
        if raw.strip() and cat is None and problem is None:
            why = f"no category of {var} ({', '.join(cats)}) by choice text, code or mapping"
            problem = ("unmapped_value", column, why)
    return out, problem


def _answers(
    inst: Instrument, platform: str, q: Question, rec: dict[str, str], rid: str | None, n: int
) -> list[tuple[dict, int, Problem]]:
    """One canonical answer per answered cell of question ``q`` (empty cells: not answered)."""
    item = inst.items_by_id[q.source]
    cells = [(None, None)] if not q.rows else list(enumerate(item.response_ids))
    rows = []
    for k, response_id in cells:
        column = _cell_column(platform, q, k)
        raw = rec[column]
        if not raw.strip():
            continue
        code = _choice(q, raw)
        values: dict[str, str | None] = {
            "respondent_id": rid,
            "item_id": item.id,
            "_column": column,
        }
        if item.kind == "statement":
            values |= {"kind": "likert", "value": code}
        else:
            value = RATING_VALUE.get(code or "")
            values |= {
                "kind": "rating",
                "response_id": response_id,
                "value": None if value is None else str(value),
            }
        problem = None
        if code is None:
            problem = (
                "unmapped_value",
                column,
                f"not a choice of question {q.code} (its text or code 1..{len(q.choices)})",
            )
        rows.append((values, n, problem))
    return rows
