"""The prompts SL-CAI answers, critiques and revises, from up to three sources (they add up):

- ``survey``: every survey item's text (``prompt_id`` = ``survey:<item_id>``);
- ``file``: a prompt file, JSONL (one object a line) or CSV, with the fields ``prompt_id``
  (unique, non-empty) and ``prompt`` (non-empty text); ``prompt_id`` becomes
  ``file:<prompt_id>``. A bad row (not JSON, a field missing or empty, an id seen before) is
  quarantined with its line and reason; a file without those columns, or with no good row, is
  an :class:`~valign_ray.errors.InputError`;
- ``hh_rlhf``: the first human turn of each HH-RLHF conversation (``hh_rlhf:<file>:<line>``),
  at most ``hh_rlhf_max`` lines read; lines the importer cannot split are quarantined.

Plain functions of files and tables; no Ray.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import polars as pl

from valign_ray.errors import InputError, read_utf8

PROMPT_SCHEMA = {"prompt_id": pl.String, "source": pl.String, "question": pl.String}
QUARANTINE_SCHEMA = {"source": pl.String, "line": pl.Int64, "reason": pl.String}


def survey_prompts(items: pl.DataFrame) -> pl.DataFrame:
    """One prompt per survey item (``item_id``, ``text``)."""
    return pl.DataFrame(
        {
            "prompt_id": [f"survey:{i}" for i in items["item_id"]],
            "source": ["survey"] * items.height,
            "question": items["text"].cast(pl.String).to_list(),
        },
        schema=PROMPT_SCHEMA,
    )


def _file_records(path: Path, text: str) -> list[tuple[int, object]]:
    """(line, record) pairs: a JSON object per JSONL line, a dict per CSV row."""
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = {"prompt_id", "prompt"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(
                f"the prompt file lacks column(s) {sorted(missing)}; a CSV prompt file has the "
                "header prompt_id,prompt (cai.prompts.file)",
                path=path,
            )
        return [(k + 2, row) for k, row in enumerate(reader)]  # line 1 is the header
    out: list[tuple[int, object]] = []
    for k, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            out.append((k, json.loads(raw)))
        except json.JSONDecodeError as err:
            out.append((k, f"invalid JSON: {err.msg}"))
    return out


def file_prompts(path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(prompts, quarantine)`` from a JSONL or CSV prompt file (module docstring)."""
    path = Path(path)
    good: list[tuple[str, str]] = []
    bad: list[tuple[int, str]] = []
    seen: set[str] = set()
    for line, record in _file_records(path, read_utf8(path, "prompt file")):
        if isinstance(record, str):
            bad.append((line, record))
            continue
        if not isinstance(record, dict):
            bad.append((line, "not a JSON object with prompt_id and prompt"))
            continue
        pid, prompt = record.get("prompt_id"), record.get("prompt")
        if pid is None or str(pid).strip() == "":
            bad.append((line, "prompt_id is missing or empty"))
        elif not isinstance(prompt, str) or not prompt.strip():
            bad.append((line, "prompt is missing, empty or not text"))
        elif str(pid) in seen:
            bad.append((line, f"prompt_id {pid!r} appears on an earlier line"))
        else:
            seen.add(str(pid))
            good.append((f"file:{pid}", prompt.strip()))
    if not good:
        raise InputError(
            f"no usable prompt ({len(bad)} bad row(s), e.g. {bad[0][1] if bad else 'empty file'}); "
            "each row needs a unique prompt_id and a non-empty prompt (cai.prompts.file)",
            path=path,
        )
    prompts = pl.DataFrame(
        {
            "prompt_id": [g[0] for g in good],
            "source": ["file"] * len(good),
            "question": [g[1] for g in good],
        },
        schema=PROMPT_SCHEMA,
    )
    quarantine = pl.DataFrame(
        {"source": ["file"] * len(bad), "line": [b[0] for b in bad], "reason": [b[1] for b in bad]},
        schema=QUARANTINE_SCHEMA,
    )
    return prompts, quarantine


def first_human_turn(prompt: str) -> str:
    """The first ``Human:`` turn of an HH-RLHF dialogue prefix, without the marker."""
    from valign_ray.survey.hh_rlhf import ASSISTANT, HUMAN

    return prompt.removeprefix(HUMAN).split(ASSISTANT, 1)[0].strip()


def hh_rlhf_prompts(path: str | Path, max_rows: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(prompts, quarantine)``: the first human turn of each of the first ``max_rows`` lines."""
    from valign_ray.survey.hh_rlhf import import_hh_pairs

    pairs, bad = import_hh_pairs(path, max_rows=max_rows)
    turns = [first_human_turn(p) for p in pairs["prompt"]]
    prompts = pl.DataFrame(
        {
            "prompt_id": [f"hh_rlhf:{pid}" for pid in pairs["pair_id"]],
            "source": ["hh_rlhf"] * pairs.height,
            "question": turns,
        },
        schema=PROMPT_SCHEMA,
    )
    empty = prompts["question"].str.len_chars() == 0
    lines = [int(pid.rsplit(":", 1)[1]) for pid in prompts.filter(empty)["prompt_id"]]
    quarantine = pl.concat(
        [
            bad.select(pl.lit("hh_rlhf").alias("source"), "line", "reason"),
            pl.DataFrame(
                {
                    "source": ["hh_rlhf"] * len(lines),
                    "line": lines,
                    "reason": ["empty first human turn"] * len(lines),
                },
                schema=QUARANTINE_SCHEMA,
            ),
        ]
    )
    return prompts.filter(~empty), quarantine.cast(QUARANTINE_SCHEMA)


def load_prompts(
    items: pl.DataFrame | None, file: str | None, hh_rlhf: str | None, hh_rlhf_max: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every source asked for, concatenated (survey, file, hh_rlhf), with ``row_idx``; and the
    quarantined rows of all of them. No source, or no prompt at all, is an error."""
    parts, bad = [], [pl.DataFrame(schema=QUARANTINE_SCHEMA)]
    if items is not None:
        parts.append(survey_prompts(items))
    if file is not None:
        good, q = file_prompts(file)
        parts.append(good)
        bad.append(q)
    if hh_rlhf is not None:
        good, q = hh_rlhf_prompts(hh_rlhf, hh_rlhf_max)
        parts.append(good)
        bad.append(q)
    prompts = pl.concat(parts) if parts else pl.DataFrame(schema=PROMPT_SCHEMA)
    if prompts.height == 0:
        raise InputError(
            "cai.prompts: no prompts; set cai.prompts.survey_items: true, a cai.prompts.file "
            "or cai.prompts.hh_rlhf"
        )
    return prompts.with_row_index("row_idx"), pl.concat(bad)
