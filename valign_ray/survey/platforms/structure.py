"""Survey-structure files: LimeSurvey's tab-separated survey structure and Qualtrics'
Advanced Format TXT, written from :func:`~.questions.survey_questions` and read back.

Only the subset we write is read (docs/PLATFORMS.md): single-answer lists (LimeSurvey type
``L``, Qualtrics ``MC:SingleAnswer``) and single-answer arrays (LimeSurvey ``F``, Qualtrics
``Matrix``), one language. Reading back is how the tests check an export: the same codes,
texts, choices and rows as the instrument.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from valign_ray.errors import InputError, read_utf8
from valign_ray.survey.platforms.questions import Question

LIMESURVEY_COLUMNS = (
    "id", "related_id", "class", "type/scale", "name", "relevance", "text", "help",
    "language", "validation", "mandatory", "other", "default", "same_default",
)  # fmt: skip
_LS_TYPE = {"single": "L", "matrix": "F"}  # L: list (radio), F: array (flexible labels)


def _flat(text: str) -> str:
    """One line without tabs: both formats are line- (and tab-) structured."""
    return " ".join(text.split())


def write_limesurvey(questions: list[Question], title: str, path: str | Path) -> None:
    """The survey as a LimeSurvey TSV structure file (UTF-8 with a BOM, as LimeSurvey writes)."""
    rows: list[dict[str, str]] = [
        {"class": "S", "name": "language", "text": "en"},
        {"class": "SL", "name": "surveyls_title", "text": _flat(title), "language": "en"},
        {"id": "1", "class": "G", "name": "Survey", "relevance": "1",
         "language": "en"},
    ]  # fmt: skip
    next_id = 1
    for q in questions:
        qid = str(next_id)
        rows.append({"id": qid, "class": "Q", "type/scale": _LS_TYPE[q.kind], "name": q.code,
                     "relevance": "1", "text": _flat(q.text), "language": "en",
                     "mandatory": "N", "other": "N"})  # fmt: skip
        for code, text in q.rows:
            next_id += 1
            rows.append({"id": str(next_id), "related_id": qid, "class": "SQ", "type/scale": "0",
                         "name": code, "relevance": "1", "text": _flat(text),
                         "language": "en"})  # fmt: skip
        for code, text in q.choices:
            rows.append({"id": qid, "class": "A", "type/scale": "0", "name": code,
                         "text": _flat(text), "language": "en"})  # fmt: skip
        next_id += 1
    out = io.StringIO()
    writer = csv.DictWriter(out, LIMESURVEY_COLUMNS, delimiter="\t", lineterminator="\n",
                            quoting=csv.QUOTE_NONE, escapechar="\\", restval="")  # fmt: skip
    writer.writeheader()
    writer.writerows(rows)
    Path(path).write_text("\ufeff" + out.getvalue(), encoding="utf-8")


def read_limesurvey(path: str | Path) -> list[Question]:
    """The questions of a LimeSurvey TSV structure file (its first language only)."""
    text = read_utf8(path, "LimeSurvey structure file")
    reader = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    missing = [
        c for c in ("class", "type/scale", "name", "text") if c not in (reader.fieldnames or [])
    ]
    if missing:
        raise InputError(f"not a LimeSurvey TSV structure file: no column(s) {missing}", path=path)
    questions: list[dict] = []
    language = None
    for line, row in enumerate(reader, start=2):
        cls, lang = row["class"], row.get("language") or ""
        if cls in ("Q", "SQ", "A"):
            language = language or lang
            if lang != language:
                continue  # a translation of rows already read
        if cls == "Q":
            kinds = {v: k for k, v in _LS_TYPE.items()}
            if row["type/scale"] not in kinds:
                raise InputError(f"question type {row['type/scale']!r} is not supported "
                                 "(L or F)", path=path, row=line)  # fmt: skip
            questions.append({"code": row["name"], "kind": kinds[row["type/scale"]],
                              "text": row["text"], "choices": [], "rows": []})  # fmt: skip
        elif cls in ("SQ", "A"):
            if not questions:
                raise InputError(f"a {cls} row before any question", path=path, row=line)
            key = "rows" if cls == "SQ" else "choices"
            questions[-1][key].append((row["name"], row["text"]))
    return [_question(q) for q in questions]


def _question(q: dict) -> Question:
    return Question(q["code"], q["kind"], q["text"], tuple(q["choices"]), tuple(q["rows"]))


def _numbered_block(tag: str, entries: list[str]) -> list[str]:
    lines = [f"[[Advanced{tag}s]]"]
    for k, text in enumerate(entries, start=1):
        lines += [f"[[{tag}:{k}]]", _flat(text)]
    return lines


def write_qualtrics(questions: list[Question], title: str, path: str | Path) -> None:
    """The survey as a Qualtrics Advanced Format TXT file; a matrix's rows are numbered
    statements (export columns ``<code>_<k>``), its scale points the rating choices."""
    lines = ["[[AdvancedFormat]]", "", f"[[Block:{_flat(title)}]]", ""]
    for q in questions:
        if q.kind == "single":
            lines += [
                "[[Question:MC:SingleAnswer:Vertical]]",
                f"[[ID:{q.code}]]",
                _flat(q.text),
                "",
            ]
            lines += _numbered_block("Choice", [t for _, t in q.choices])
        else:
            lines += ["[[Question:Matrix:SingleAnswer]]", f"[[ID:{q.code}]]", _flat(q.text), ""]
            lines += _numbered_block("Choice", [t for _, t in q.rows])
            lines += _numbered_block("Answer", [t for _, t in q.choices])
        lines.append("")
    Path(path).write_text("\n".join(lines), encoding="utf-8")


_TAG = re.compile(r"^\[\[([A-Za-z]+)(?::([^\]]*))?\]\]$")


def read_qualtrics(path: str | Path) -> list[Question]:
    """The questions of a Qualtrics Advanced Format TXT file (the subset we write); a matrix's
    rows come back with their statement numbers as codes."""
    text = read_utf8(path, "Qualtrics TXT file")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "[[AdvancedFormat]]":
        raise InputError(
            "not an Advanced Format TXT file: line 1 is not [[AdvancedFormat]]", path=path
        )
    questions: list[dict] = []
    target: list | None = None  # the list the next text line goes to
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        tag = _TAG.match(line)
        if not line:
            continue
        if tag is None:
            if target is None or not questions:
                raise InputError("text outside a question", path=path, row=n)
            if target is questions[-1]["text"]:
                target.append(line)
            elif target and target[-1][1] is None:
                target[-1] = (target[-1][0], line)
            else:
                raise InputError("a second line for one choice", path=path, row=n)
            continue
        name, arg = tag.group(1), tag.group(2)
        if name == "Question":
            kind = {"MC:SingleAnswer:Vertical": "single", "Matrix:SingleAnswer": "matrix"}.get(
                arg or ""
            )
            if kind is None:
                raise InputError(f"question type {arg!r} is not supported", path=path, row=n)
            questions.append({"code": "", "kind": kind, "text": [], "choices": [], "rows": []})
            target = questions[-1]["text"]
        elif name == "ID" and questions:
            questions[-1]["code"] = arg or ""
        elif name in ("AdvancedChoices", "AdvancedAnswers") and questions:
            q = questions[-1]
            key = "rows" if q["kind"] == "matrix" and name == "AdvancedChoices" else "choices"
            target = q[key]
        elif name in ("Choice", "Answer") and target is not None:
            target.append((arg or str(len(target) + 1), None))
        elif name not in ("AdvancedFormat", "Block", "PageBreak"):
            raise InputError(f"tag [[{name}]] is not supported here", path=path, row=n)
    for q in questions:
        q["text"] = " ".join(q["text"])
    return [_question(q) for q in questions]
