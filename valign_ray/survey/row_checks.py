"""Row checks for survey ingestion: which rows are bad, why, and the quarantine they go to.

A check is ``(field, reason, condition, message)``; a row is quarantined once, for the first
check whose condition holds (:func:`judge_rows`). Conditions are polars expressions over the
string columns that :mod:`valign_ray.survey.ingest` reads, plus ``_row`` and any problem found
at parse time. Messages quote no value the instrument has not vouched for (no respondent id, no
free text, not even a mistyped category): the row number finds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.errors import InputError
from valign_ray.survey.instrument import ANSWER_KINDS_FOR_ITEM, Instrument
from valign_ray.survey.tables import ANSWER_KINDS

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
# Set while converting a platform's export (survey/platforms/responses.py), before the checks.
PLATFORM_REASONS = (
    "no_panel_row",  # the participant is on no (or several) rows of the panel export
    "panel_status",  # the panel row's status is not one the mapping accepts
    "unmapped_value",  # an answer the mapping or the question's choices (text or code) lack
)
QUARANTINE_SCHEMA = {"source": pl.String, "row": pl.Int64} | dict.fromkeys(
    ("field", "reason", "message"), pl.String
)
# The row number and any problem found at parse, next to the data columns of every read table.
META_COLUMNS = ("_row", "_reason", "_field", "_message")


# --- checks: (field, reason, condition, message); the first true condition names the reason ---

Check = tuple[str, str, pl.Expr, pl.Expr]


def _msg(*parts: str | pl.Expr) -> pl.Expr:
    """A message from literal text and expressions (no format braces to trip on)."""
    exprs = [pl.lit(p) if isinstance(p, str) else p.cast(pl.String) for p in parts]
    return pl.concat_str(exprs, ignore_nulls=True)


def _rows_sharing(*key: str) -> pl.Expr:
    return pl.col("_row").cast(pl.String).str.join(", ").over(key)


def respondent_checks(inst: Instrument, columns: list[str]) -> list[Check]:
    """Respondent checks; ``base_weight`` is checked only when the file has that column."""
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


def with_items(ans: pl.DataFrame, inst: Instrument) -> pl.DataFrame:
    """Attach each answer's item kind, Likert option count and candidate ids (null if unknown)."""
    items = inst.items_table().select(
        pl.col("item_id"), pl.col("kind").alias("_item_kind"), pl.col("n_options").alias("_n")
    )
    cands = inst.candidates_table().group_by("item_id").agg(pl.col("response_id").alias("_cands"))
    joined = ans.join(items, on="item_id", how="left", maintain_order="left")
    return joined.join(cands, on="item_id", how="left", maintain_order="left")


def answer_checks(kept_ids: pl.Series, all_ids: pl.Series) -> list[Check]:
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


def judge_rows(df: pl.DataFrame, checks: list[Check], path: Path, strict: bool) -> pl.DataFrame:
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
            row, reason, field, message = bad.select(META_COLUMNS).row(0)
            raise InputError(f"{reason}: {message}", path=path, row=row, field=field)
    return df


def quarantine_rows(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """The judged rows that failed a check, as quarantine records of ``path``."""
    return (
        df.filter(pl.col("_reason").is_not_null())
        .select(
            pl.lit(str(path)).alias("source"),
            pl.col("_row").alias("row"),
            # a platform import names the export's column the row came from
            pl.coalesce(pl.col(c) for c in ("_column", "_field") if c in df.columns).alias("field"),
            pl.col("_reason").alias("reason"),
            pl.col("_message").alias("message"),
        )
        .cast(QUARANTINE_SCHEMA)
    )


def count_rows(df: pl.DataFrame, path: Path) -> dict[str, Any]:
    """Rows in, kept and quarantined (by reason, in check order) of one judged file."""
    by_reason = df["_reason"].drop_nulls().value_counts()
    by = dict(zip(by_reason["_reason"].to_list(), by_reason["count"].to_list(), strict=True))
    quarantined = sum(by.values())
    return {
        "source": str(path),
        "rows_in": df.height,
        "kept": df.height - quarantined,
        "quarantined": quarantined,
        "by_reason": {r: by[r] for r in PLATFORM_REASONS + REASONS if r in by},
    }
