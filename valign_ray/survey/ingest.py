"""Survey ingestion: read respondents and answers, check every row, quarantine the bad ones.

Files are CSV, Parquet or JSONL (chosen by extension). Every field is read as a string first,
so a wrong type is one bad row, not a failed read. Each row is checked against the instrument;
a bad row goes to ``quarantine_dir/quarantine.csv`` with its file, 1-based row number (the
data record; the CSV header is not counted, a JSONL row is its line), field, reason code and
message. Messages quote no value the instrument has not vouched for (no respondent id, no free
text, not even a mistyped category): the row number finds it. Nothing is dropped silently:
per file, rows in = rows kept + rows quarantined.

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

from valign_ray.survey.instrument import ANSWER_KINDS_FOR_ITEM, Instrument
from valign_ray.survey.tables import ANSWER_COLUMNS, ANSWER_KINDS

# Reason codes, in the order rows are checked: a bad row is quarantined once, for the first.
# "bad_type" is also given at parse time to a JSON list/object/boolean value.
RESPONDENT_REASONS = (
    "non_utf8",  # the record holds bytes that are not valid UTF-8
    "malformed_row",  # wrong number of CSV fields, broken quoting, bad JSON, unknown JSON key
    "missing_value",  # an empty respondent_id, demographic or base_weight
    "bad_type",  # base_weight is not a positive finite number
    "unknown_category",  # a demographic value that the instrument does not list
    "duplicate_respondent",  # the respondent id is on several rows: all of them go
)
ANSWER_REASONS = (
    "non_utf8",
    "malformed_row",
    "missing_value",  # empty respondent_id/item_id/kind/value, or a response id the kind needs
    "unknown_kind",  # kind is not rating | pairwise | likert
    "unexpected_value",  # a response id the kind does not take (likert has none)
    "bad_type",  # value is not an integer
    "unknown_respondent",  # not in the respondents file, or that respondent was quarantined
    "unknown_item",  # item_id is not in the instrument
    "kind_mismatch",  # prompts take rating/pairwise, statements take likert
    "unknown_response",  # a response id that is not a candidate of the item
    "same_response",  # pairwise with response_id == response_b_id
    "out_of_range",  # rating not 0/1, pairwise not 1, likert not in 1..n_options
    "empty_text",  # free_text given but blank
    "duplicate_answer",  # same respondent, item, kind, response ids on several rows: all go
)
REASONS = tuple(dict.fromkeys(RESPONDENT_REASONS + ANSWER_REASONS))
QUARANTINE_SCHEMA = {"source": pl.String, "row": pl.Int64} | dict.fromkeys(
    ("field", "reason", "message"), pl.String
)
_META = ("_row", "_reason", "_field", "_message")  # row number and any problem found at parse
_SURROGATE = re.compile("[\udc80-\udcff]")  # undecodable bytes under errors="surrogateescape"


@dataclass(frozen=True)
class IngestResult:
    """Kept rows as canonical tables (pseudonymised ids), the quarantine, and counts."""

    respondents: pl.DataFrame
    answers: pl.DataFrame
    quarantine: pl.DataFrame  # source, row, field, reason, message
    counts: dict[str, dict[str, Any]]  # role -> source, rows_in, kept, quarantined, by_reason

    def format_counts(self) -> str:
        """The counts as a few aligned lines for the terminal."""
        lines = []
        for role, c in self.counts.items():
            lines.append(
                f"{role:<12} {c['source']}: {c['rows_in']} rows in, {c['kept']} kept, "
                f"{c['quarantined']} quarantined"
            )
            lines += [f"    {reason:<22} {n}" for reason, n in c["by_reason"].items()]
        return "\n".join(lines)


def pseudonymise(raw_ids: list[str], salt: str) -> dict[str, str]:
    """Map raw ids to ``sha256(salt + raw_id)`` hex cut to 16 chars (64 bits).

    The salt keeps the mapping from being rebuilt by hashing guessed ids; a collision between
    two raw ids (odds about n^2 / 2^65) is an error rather than a silent merge.
    """
    if not salt:
        raise ValueError("salt must be a non-empty string: unsalted hashes of ids are reversible")
    mapping = {r: hashlib.sha256((salt + r).encode("utf-8")).hexdigest()[:16] for r in raw_ids}
    if len(set(mapping.values())) != len(mapping):
        raise ValueError("two respondent ids hash to the same pseudonym: use another salt")
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
    resp = _judge(resp, _respondent_checks(instrument, resp.columns), respondents_path, strict)
    ans = _read(answers_path, list(ANSWER_COLUMNS), ["respondent_id", "item_id", "kind", "value"])
    for col in ANSWER_COLUMNS:  # optional columns that were absent are all-null
        if col not in ans.columns:
            ans = ans.with_columns(pl.lit(None, pl.String).alias(col))
    kept_raw = resp.filter(pl.col("_reason").is_null())["respondent_id"]
    checks = _answer_checks(kept_raw, resp["respondent_id"])
    ans = _judge(_with_items(ans, instrument), checks, answers_path, strict)

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
        [_quarantine_rows(resp, respondents_path), _quarantine_rows(ans, answers_path)]
    )
    counts = {
        "respondents": _count(resp, respondents_path),
        "answers": _count(ans, answers_path),
    }
    qdir = Path(quarantine_dir)
    qdir.mkdir(parents=True, exist_ok=True)
    quarantine.write_csv(qdir / "quarantine.csv")
    (qdir / "quarantine_counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    return IngestResult(respondents, answers, quarantine, counts)


# --- checks: (field, reason, condition, message); the first true condition names the reason ---

Check = tuple[str, str, pl.Expr, pl.Expr]


def _msg(*parts: str | pl.Expr) -> pl.Expr:
    """A message from literal text and expressions (no format braces to trip on)."""
    exprs = [pl.lit(p) if isinstance(p, str) else p.cast(pl.String) for p in parts]
    return pl.concat_str(exprs, ignore_nulls=True)


def _rows_sharing(*key: str) -> pl.Expr:
    return pl.col("_row").cast(pl.String).str.join(", ").over(key)


def _respondent_checks(inst: Instrument, columns: list[str]) -> list[Check]:
    required = ["respondent_id", *inst.demographics]
    if "base_weight" in columns:
        required.append("base_weight")
    checks = [(c, "missing_value", pl.col(c).is_null(), _msg(f"{c} is empty")) for c in required]
    if "base_weight" in columns:
        w = pl.col("base_weight").cast(pl.Float64, strict=False)
        bad_w = w.is_null() | ~w.is_finite() | (w <= 0)
        msg = _msg("base_weight is not a positive number")
        checks.append(("base_weight", "bad_type", bad_w, msg))
    for var, cats in inst.demographics.items():
        msg = _msg(f"not a category of {var}; allowed: {', '.join(cats)}")
        checks.append((var, "unknown_category", ~pl.col(var).is_in(list(cats)), msg))
    dup = pl.col("respondent_id").is_not_null() & (pl.len().over("respondent_id") > 1)
    msg = _msg("the same respondent id is on rows ", _rows_sharing("respondent_id"))
    checks.append(("respondent_id", "duplicate_respondent", dup, msg))
    return checks


def _with_items(ans: pl.DataFrame, inst: Instrument) -> pl.DataFrame:
    """Attach each answer's item kind, Likert option count and candidate ids (null if unknown)."""
    items = inst.items_table().select(
        pl.col("item_id"), pl.col("kind").alias("_item_kind"), pl.col("n_options").alias("_n")
    )
    cands = inst.candidates_table().group_by("item_id").agg(pl.col("response_id").alias("_cands"))
    joined = ans.join(items, on="item_id", how="left", maintain_order="left")
    return joined.join(cands, on="item_id", how="left", maintain_order="left")


def _answer_checks(kept_ids: pl.Series, all_ids: pl.Series) -> list[Check]:
    """Answer checks; ``kept_ids``/``all_ids`` are the raw ids kept / read from the respondents."""
    kind, value = pl.col("kind"), pl.col("value").cast(pl.Int64, strict=False)
    rid, rid_b = pl.col("response_id"), pl.col("response_b_id")
    pairwise, likert = kind == "pairwise", kind == "likert"
    needs_a = kind.is_in(["rating", "pairwise"])
    allowed = [f"{ik}:{ak}" for ik, aks in ANSWER_KINDS_FOR_ITEM.items() for ak in aks]

    not_cand = {
        c: ~pl.col("_cands").list.contains(pl.col(c)).fill_null(False)
        for c in ("response_id", "response_b_id")
    }
    out_of_range = (
        ((kind == "rating") & ~value.is_in([0, 1]))
        | (pairwise & (value != 1))
        | (likert & ((value < 1) | (value > pl.col("_n"))))
    )
    range_msg = (
        pl.when(likert)
        .then(_msg("likert value ", value, " is outside 1..", pl.col("_n")))
        .when(pairwise)
        .then(_msg("pairwise value ", value, " is not 1"))
        .otherwise(_msg("rating value ", value, " is not 0 or 1"))
    )
    known = pl.col("respondent_id").is_in(all_ids.implode())
    who_msg = (
        pl.when(known)
        .then(pl.lit("the respondent's row in the respondents file was quarantined"))
        .otherwise(pl.lit("the respondent is not in the respondents file"))
    )
    key = ("respondent_id", "item_id", "kind", "response_id", "response_b_id")
    dup = pl.all_horizontal(pl.col(key[:3]).is_not_null()) & (pl.len().over(key) > 1)
    blank = pl.col("free_text").str.strip_chars() == ""
    checks: list[Check] = [
        (c, "missing_value", pl.col(c).is_null(), _msg(f"{c} is empty"))
        for c in ("respondent_id", "item_id", "kind", "value")
    ]
    # fmt: off
    checks += [
        ("kind", "unknown_kind", ~kind.is_in(ANSWER_KINDS),
         _msg(f"kind is not one of {', '.join(ANSWER_KINDS)}")),
        ("response_id", "missing_value", needs_a & rid.is_null(),
         _msg("a ", kind, " answer needs response_id")),
        ("response_b_id", "missing_value", pairwise & rid_b.is_null(),
         _msg("a pairwise answer needs response_b_id")),
        ("response_id", "unexpected_value", likert & rid.is_not_null(),
         _msg("a likert answer has no response_id")),
        ("response_b_id", "unexpected_value", ~pairwise & rid_b.is_not_null(),
         _msg("a ", kind, " answer has no response_b_id")),
        ("value", "bad_type", value.is_null(),
         _msg("value is not an integer")),
        ("respondent_id", "unknown_respondent", ~pl.col("respondent_id").is_in(kept_ids.implode()),
         who_msg),
        ("item_id", "unknown_item", pl.col("_item_kind").is_null(),
         _msg("item_id is not in the instrument")),
        ("kind", "kind_mismatch", ~pl.concat_str("_item_kind", pl.lit(":"), kind).is_in(allowed),
         _msg("a ", pl.col("_item_kind"), " item does not take ", kind, " answers")),
        ("response_id", "unknown_response", needs_a & not_cand["response_id"],
         _msg("response_id is not a candidate of item ", pl.col("item_id"))),
        ("response_b_id", "unknown_response", pairwise & not_cand["response_b_id"],
         _msg("response_b_id is not a candidate of item ", pl.col("item_id"))),
        ("response_b_id", "same_response", pairwise & (rid == rid_b),
         _msg("a pairwise answer compares two different responses")),
        ("value", "out_of_range", out_of_range, range_msg),
        ("free_text", "empty_text", blank, _msg("free_text is blank: leave it empty or fill it")),
        ("respondent_id", "duplicate_answer", dup,
         _msg("the same answer is on rows ", _rows_sharing(*key))),
    ]
    # fmt: on
    return checks


def _judge(df: pl.DataFrame, checks: list[Check], path: Path, strict: bool) -> pl.DataFrame:
    """Fill ``_reason``/``_field``/``_message`` from the first failing check of each row."""
    hits = [
        (pl.when(cond.fill_null(False)), field, reason, msg) for field, reason, cond, msg in checks
    ]
    df = df.with_columns(
        pl.coalesce(pl.col("_reason"), *[h.then(pl.lit(r)) for h, _, r, _ in hits]),
        pl.coalesce(pl.col("_field"), *[h.then(pl.lit(f)) for h, f, _, _ in hits]),
        pl.coalesce(pl.col("_message"), *[h.then(m) for h, _, _, m in hits]),
    )
    if strict:
        bad = df.filter(pl.col("_reason").is_not_null()).sort("_row")
        if bad.height:
            row, reason, field, message = bad.select(_META).row(0)
            raise ValueError(f"{path} row {row}, field {field!r}: {reason}: {message}")
    return df


def _quarantine_rows(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    return (
        df.filter(pl.col("_reason").is_not_null())
        .select(
            pl.lit(str(path)).alias("source"),
            pl.col("_row").alias("row"),
            pl.col("_field").alias("field"),
            pl.col("_reason").alias("reason"),
            pl.col("_message").alias("message"),
        )
        .cast(QUARANTINE_SCHEMA)
    )


def _count(df: pl.DataFrame, path: Path) -> dict[str, Any]:
    by_reason = df["_reason"].drop_nulls().value_counts()
    by = dict(zip(by_reason["_reason"].to_list(), by_reason["count"].to_list(), strict=True))
    quarantined = sum(by.values())
    return {
        "source": str(path),
        "rows_in": df.height,
        "kept": df.height - quarantined,
        "quarantined": quarantined,
        "by_reason": {r: by[r] for r in REASONS if r in by},
    }


# --- reading: every file becomes string columns plus _row and any parse-time problem ---

Problem = tuple[str | None, str | None, str | None]  # reason, field, message; "*" = whole row
Record = tuple[int, dict[str, str | None], Problem]
_FINE: Problem = (None, None, None)


def _read(path: Path, allowed: list[str], required: list[str]) -> pl.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        records, columns = _read_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        records, columns = _read_jsonl(path, allowed)
    elif suffix == ".parquet":
        records, columns = _read_parquet(path)
    else:
        raise ValueError(f"{path}: unknown format {suffix!r}; use .csv, .parquet or .jsonl")
    unknown = [c for c in columns if c not in allowed]
    if unknown:
        raise ValueError(f"{path}: unknown columns {unknown}; valid columns: {allowed}")
    # A JSONL row without a required key is one bad row; a table without the column is bad.
    missing = [c for c in required if c not in columns]
    if missing and suffix not in (".jsonl", ".ndjson"):
        raise ValueError(f"{path}: missing columns {missing}")
    columns = [c for c in allowed if c in columns or c in required]
    schema = dict.fromkeys(columns, pl.String) | {"_row": pl.Int64}
    schema |= dict.fromkeys(_META[1:], pl.String)
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
        raise ValueError(f"{path}: empty file, no CSV header") from None
    except csv.Error as e:
        raise ValueError(f"{path}: unreadable CSV header ({e})") from e
    if any(_SURROGATE.search(h) for h in header) or len(set(header)) != len(header):
        raise ValueError(f"{path}: the header has bytes that are not UTF-8, or repeated names")
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
    df = pl.read_parquet(path)
    for name, dtype in df.schema.items():
        if not (dtype == pl.String or dtype == pl.Null or dtype.is_numeric()):
            raise ValueError(f"{path}: column {name!r} has type {dtype}; need text or numbers")
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
