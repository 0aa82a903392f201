"""Survey ingestion: read respondents and answers, check every row, quarantine the bad ones.

Files are CSV, Parquet or JSONL (chosen by extension). Every field is read as a string first,
so a wrong type is one bad row, not a failed read. Each row is checked against the instrument;
a bad row goes to ``quarantine_dir/quarantine.csv`` with its file, 1-based row number (the
data record; the CSV header is not counted, a JSONL row is its line), field, reason code and
message (the checks and reason codes are in :mod:`valign_ray.survey.row_checks`). Nothing is
dropped silently: per file, rows in = rows kept + rows quarantined (+ refusals: likert answers
coded as one of their statement's ``refusal_codes``, dropped before the checks and counted as
``refused``, since a refusal is not a position on the scale).

Respondent ids are pseudonymised here, ``sha256(salt + raw_id)`` in hex cut to 16 characters,
in both tables, so raw ids never leave this module.

CSV is parsed with the standard library's ``csv`` module, not ``polars.read_csv``: polars fills
short rows with nulls and truncates or rejects long ones for the whole file, and cannot say
which record held bytes that are not UTF-8. Everything after the parse is polars.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.errors import InputError
from valign_ray.survey.instrument import Instrument
from valign_ray.survey.row_checks import (
    META_COLUMNS,
    answer_checks,
    count_rows,
    judge_rows,
    quarantine_rows,
    respondent_checks,
    with_items,
)
from valign_ray.survey.tables import ANSWER_COLUMNS

_SURROGATE = re.compile("[\udc80-\udcff]")  # undecodable bytes under errors="surrogateescape"


@dataclass(frozen=True)
class IngestResult:
    """Kept rows as canonical tables (pseudonymised ids), the quarantine, and counts."""

    respondents: pl.DataFrame
    answers: pl.DataFrame
    quarantine: pl.DataFrame  # source, row, field, reason, message
    # role -> source, rows_in, kept, quarantined, by_reason (answers: also refused)
    counts: dict[str, dict[str, Any]]

    def format_counts(self) -> str:
        """The counts as a few aligned lines for the terminal."""
        lines = []
        for role, c in self.counts.items():
            lines.append(
                f"{role:<12} {c['source']}: {c['rows_in']} rows in, {c['kept']} kept, "
                f"{c['quarantined']} quarantined"
                + (f", {c['refused']} refusals dropped" if c.get("refused") else "")
            )
            lines += [f"    {reason:<22} {n}" for reason, n in c["by_reason"].items()]
        return "\n".join(lines)


def pseudonymise(raw_ids: list[str], salt: str) -> dict[str, str]:
    """Map raw ids to ``sha256(salt + raw_id)`` hex cut to 16 chars (64 bits).

    The salt keeps the mapping from being rebuilt by hashing guessed ids; a collision between
    two raw ids (odds about n^2 / 2^65) is an error rather than a silent merge.
    """
    if not salt:
        raise InputError("salt must be a non-empty string: unsalted hashes of ids are reversible")
    mapping = {r: hashlib.sha256((salt + r).encode("utf-8")).hexdigest()[:16] for r in raw_ids}
    if len(set(mapping.values())) != len(mapping):
        raise InputError("two respondent ids hash to the same pseudonym: use another salt")
    return mapping


def ingest_survey(
    instrument: Instrument,
    respondents_path: str | Path,
    answers_path: str | Path,
    *,
    quarantine_dir: str | Path,
    salt: str,
    strict: bool = False,
) -> IngestResult:
    """Read, check and pseudonymise a survey; write the quarantine; return the kept tables.

    ``strict=True`` raises ValueError at the first bad row (file, row, field, reason, message)
    instead of quarantining it, and writes nothing.
    """
    respondents_path, answers_path = Path(respondents_path), Path(answers_path)
    demo = list(instrument.demographics)
    resp_cols = ["respondent_id", *demo, "group", "base_weight"]
    resp = _read(respondents_path, resp_cols, ["respondent_id", *demo])
    ans = _read(answers_path, list(ANSWER_COLUMNS), ["respondent_id", "item_id", "kind", "value"])
    return ingest_frames(
        instrument,
        resp,
        ans,
        sources=(respondents_path, answers_path),
        quarantine_dir=quarantine_dir,
        salt=salt,
        strict=strict,
    )


def ingest_frames(
    instrument: Instrument,
    resp: pl.DataFrame,
    ans: pl.DataFrame,
    *,
    sources: tuple[Path, Path],
    quarantine_dir: str | Path,
    salt: str,
    strict: bool = False,
) -> IngestResult:
    """:func:`ingest_survey` from tables already read: string columns plus ``_row`` and the
    problems found while reading (``_reason``/``_field``/``_message``, null when none), as the
    platform importers build them; an optional ``_column`` names the source column a row came
    from, and is the quarantine's ``field``. ``sources`` are the files the rows are from."""
    respondents_path, answers_path = sources
    demo = list(instrument.demographics)
    resp = judge_rows(resp, respondent_checks(instrument, resp.columns), respondents_path, strict)
    for col in ANSWER_COLUMNS:  # optional columns that were absent are all-null
        if col not in ans.columns:
            ans = ans.with_columns(pl.lit(None, pl.String).alias(col))
    ans, refused = drop_refusals(ans, instrument)
    kept_raw = resp.filter(pl.col("_reason").is_null())["respondent_id"]
    checks = answer_checks(kept_raw, resp["respondent_id"])
    ans = judge_rows(with_items(ans, instrument), checks, answers_path, strict)

    kept_resp = resp.filter(pl.col("_reason").is_null())
    kept_ans = ans.filter(pl.col("_reason").is_null())
    ids = pseudonymise(kept_resp["respondent_id"].to_list(), salt)
    pseudo = pl.col("respondent_id").replace_strict(ids, return_dtype=pl.String)
    keep = ["respondent_id", *demo] + [c for c in ("group", "base_weight") if c in resp.columns]
    respondents = kept_resp.select(keep).with_columns(pseudo)
    if "base_weight" in respondents.columns:
        respondents = respondents.with_columns(pl.col("base_weight").cast(pl.Float64))
    answers = kept_ans.select(list(ANSWER_COLUMNS)).with_columns(
        pseudo, pl.col("value").cast(pl.Int64)
    )

    quarantine = pl.concat(
        [quarantine_rows(resp, respondents_path), quarantine_rows(ans, answers_path)]
    )
    counts = {
        "respondents": count_rows(resp, respondents_path),
        "answers": count_rows(ans, answers_path),
    }
    counts["answers"]["rows_in"] += refused
    counts["answers"]["refused"] = refused
    qdir = Path(quarantine_dir)
    qdir.mkdir(parents=True, exist_ok=True)
    quarantine.write_csv(qdir / "quarantine.csv")
    (qdir / "quarantine_counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    return IngestResult(respondents, answers, quarantine, counts)


def drop_refusals(answers: pl.DataFrame, instrument: Instrument) -> tuple[pl.DataFrame, int]:
    """The answers without likert answers coded as a refusal of their item, and how many.

    ``value`` may still be text (as read): it is compared as an integer.
    """
    codes = instrument.refusal_codes()
    if not codes:
        return answers, 0
    keys = [f"{item}:{code}" for item, item_codes in codes.items() for code in item_codes]
    value = pl.col("value").cast(pl.String).str.strip_chars().cast(pl.Int64, strict=False)
    key = pl.concat_str(pl.col("item_id"), pl.lit(":"), value.cast(pl.String))
    refused = ((pl.col("kind") == "likert") & key.is_in(keys)).fill_null(False)
    kept = answers.filter(~refused)
    return kept, answers.height - kept.height


# --- reading: every file becomes string columns plus _row and any parse-time problem ---

Problem = tuple[str | None, str | None, str | None]  # reason, field, message; "*" = whole row
Record = tuple[int, dict[str, str | None], Problem]
_FINE: Problem = (None, None, None)


def _read(path: Path, allowed: list[str], required: list[str]) -> pl.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".parquet"):
        raise InputError(f"unknown format {suffix!r}; use .csv, .parquet or .jsonl", path=path)
    if not path.is_file():
        raise InputError("survey file not found" if not path.exists() else "not a file", path=path)
    if suffix == ".csv":
        records, columns = _read_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        records, columns = _read_jsonl(path, allowed)
    else:
        records, columns = _read_parquet(path)
    unknown = [c for c in columns if c not in allowed]
    if unknown:
        raise InputError(f"{path}: unknown columns {unknown}; valid columns: {allowed}")
    # A JSONL row without a required key is one bad row; a table without the column is bad.
    missing = [c for c in required if c not in columns]
    if missing and suffix not in (".jsonl", ".ndjson"):
        raise InputError(f"{path}: missing columns {missing}")
    columns = [c for c in allowed if c in columns or c in required]
    schema = dict.fromkeys(columns, pl.String) | {"_row": pl.Int64}
    schema |= dict.fromkeys(META_COLUMNS[1:], pl.String)
    rows = [[rec.get(c) for c in columns] + [row, *problem] for row, rec, problem in records]
    return pl.DataFrame(rows, schema=schema, orient="row")


def _read_csv(path: Path) -> tuple[list[Record], list[str]]:
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    # surrogateescape keeps undecodable bytes as lone surrogates, so each record can be judged.
    text = io.StringIO(data.decode("utf-8", "surrogateescape"), newline="")
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: empty file, no CSV header") from None
    except csv.Error as e:
        raise InputError(f"{path}: unreadable CSV header ({e})") from e
    if any(_SURROGATE.search(h) for h in header) or len(set(header)) != len(header):
        raise InputError(f"{path}: the header has bytes that are not UTF-8, or repeated names")
    records: list[Record] = []
    row = 0
    while True:
        row += 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # the reader resumes at the next line
            records.append((row, {}, ("malformed_row", "*", f"CSV quoting error: {e}")))
            continue
        rec = {h: (f if f != "" else None) for h, f in zip(header, fields, strict=False)}
        problem = _FINE
        if len(fields) != len(header):
            n, m = len(fields), len(header)
            problem = ("malformed_row", "*", f"{n} fields; the header has {m}")
        records.append((row, rec, _utf8_problem(rec) or problem))
    return records, header


def _read_jsonl(path: Path, allowed: list[str]) -> tuple[list[Record], list[str]]:
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    records: list[Record] = []
    seen: set[str] = set()
    for row, raw in enumerate(lines, start=1):
        line = raw.removesuffix(b"\r").decode("utf-8", "surrogateescape")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            what = "a blank line" if not line.strip() else f"not valid JSON ({e.msg})"
            problem = _utf8_problem({"*": line}) or ("malformed_row", "*", what)
            records.append((row, {}, problem))
            continue
        if not isinstance(obj, dict):
            records.append((row, {}, ("malformed_row", "*", "not a JSON object")))
            continue
        rec: dict[str, str | None] = {}
        problem = _FINE
        for key, val in obj.items():
            if isinstance(val, (bool, list, dict)):
                what = f"a JSON {type(val).__name__} where a string or number belongs"
                problem = ("bad_type", key, what)
            elif isinstance(val, (int, float)):
                rec[key] = repr(val)
            else:
                rec[key] = val if val != "" else None
        unknown = sorted(k for k in obj if k not in allowed)
        if unknown:
            problem = ("malformed_row", "*", f"unknown keys {unknown}; valid keys: {allowed}")
        seen.update(k for k in obj if k in allowed)
        records.append((row, rec, _utf8_problem(rec) or problem))
    return records, [c for c in allowed if c in seen]


def _read_parquet(path: Path) -> tuple[list[Record], list[str]]:
    try:
        df = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"not a readable Parquet file ({what})", path=path) from None
    for name, dtype in df.schema.items():
        if not (dtype == pl.String or dtype == pl.Null or dtype.is_numeric()):
            raise InputError(f"{path}: column {name!r} has type {dtype}; need text or numbers")
    # Empty text counts as missing, as it must in CSV.
    text = {c: pl.col(c).cast(pl.String) for c in df.columns}
    df = df.select(pl.when(e != "").then(e).alias(c) for c, e in text.items())
    rows = enumerate(df.iter_rows(named=True), start=1)
    return [(k, rec, _FINE) for k, rec in rows], df.columns


def _utf8_problem(rec: dict[str, str | None]) -> Problem | None:
    """Name the first field holding undecodable bytes, and turn them into U+FFFD in ``rec``."""
    problem = None
    for key, val in rec.items():
        if val is not None and _SURROGATE.search(val):
            problem = problem or ("non_utf8", key, "bytes that are not valid UTF-8")
            rec[key] = val.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return problem
