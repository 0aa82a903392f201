"""The instrument as platform questions: what both the structure export and the response import
agree on (codes, choice codes, which answer a cell is).

- A demographic variable is a single-answer question; choice k (1-based) is the k-th category.
- A statement is a single-answer question; choice k is option k, answer value k.
- A prompt is a matrix (LimeSurvey array, Qualtrics matrix table): one row (subquestion) per
  candidate response, two columns: 1 ``Desirable`` (rating 1) and 2 ``Undesirable`` (rating 0).

Codes are the instrument ids with everything but letters and digits removed (LimeSurvey
question codes are alphanumeric and start with a letter; Qualtrics joins a matrix's export tag
and row code with ``_``, so an id's own ``_`` would be ambiguous).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from valign_ray.errors import InputError
from valign_ray.survey.instrument import Instrument

RATING_CHOICES = (("1", "Desirable"), ("2", "Undesirable"))
RATING_VALUE = {"1": 1, "2": 0}  # matrix column code -> canonical rating value


@dataclass(frozen=True)
class Question:
    """One platform question. ``rows`` are a matrix's subquestions (code, text), else empty;
    ``choices`` are (code, text) pairs, codes ``"1".."n"``."""

    code: str
    kind: str  # "single" | "matrix"
    text: str
    choices: tuple[tuple[str, str], ...]
    rows: tuple[tuple[str, str], ...] = ()
    source: str = ""  # instrument id: an item id, or "demographic:<variable>"


def platform_code(identifier: str, *, prefix: str = "Q") -> str:
    """``identifier`` with only letters and digits, starting with a letter."""
    code = re.sub(r"[^A-Za-z0-9]", "", identifier)
    return code if code[:1].isalpha() else prefix + code


def _numbered(texts: tuple[str, ...] | list[str]) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), text) for k, text in enumerate(texts, start=1))


def survey_questions(
    inst: Instrument, *, skip_demographics: tuple[str, ...] = ()
) -> list[Question]:
    """The instrument's questions in order: demographics asked in the survey, then the items.

    ``skip_demographics``: variables a panel provider supplies (not asked). Two ids with the
    same code are an InputError (the platform could not tell their answers apart).
    """
    unknown = sorted(set(skip_demographics) - set(inst.demographics))
    if unknown:
        raise InputError(f"skip_demographics: {unknown} are not variables of the instrument")
    questions = [
        Question(platform_code(var), "single", var, _numbered(list(cats)), (), f"demographic:{var}")
        for var, cats in inst.demographics.items()
        if var not in skip_demographics
    ]
    for it in inst.items:
        code = platform_code(it.id)
        if it.kind == "statement":
            questions.append(Question(code, "single", it.text, _numbered(it.options), (), it.id))
        else:
            rows = tuple((platform_code(r.id, prefix="SQ"), r.text) for r in it.responses)
            if len({c for c, _ in rows}) != len(rows):
                raise InputError(f"item {it.id!r}: two responses share a platform code")
            questions.append(Question(code, "matrix", it.text, RATING_CHOICES, rows, it.id))
    codes = [q.code for q in questions]
    dup = sorted({c for c in codes if codes.count(c) > 1})
    if dup:
        raise InputError(f"instrument ids give the same platform code(s) {dup}: rename one")
    return questions
