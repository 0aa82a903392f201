"""Reading the CSV files of a Polis export, so that every problem names the file (and the line).

polars reads the files fast but its errors name no file (``NoDataError: empty CSV``,
``ComputeError: invalid utf-8 sequence``) and no line. Here the bytes are checked first (empty,
not UTF-8), and when polars cannot parse them the standard library's ``csv`` module finds the
record that broke (typically a quoted field cut off by a truncated download).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.errors import InputError, decode_utf8


def read_polis_csv(
    path: Path, required: tuple[str, ...], *, rows: str = "data rows"
) -> pl.DataFrame:
    """``path`` as text columns; an InputError naming the file for a missing or empty file,
    bytes that are not UTF-8 (with the first bad line), an unparsable record (with its line),
    missing columns, or a header with no ``rows`` under it."""
    if not path.is_file():
        raise InputError("file not found (a Polis export needs it)", path=path)
    data = path.read_bytes()
    if not data.strip():
        raise InputError(
            f"empty file ({len(data)} bytes); expected a header with {', '.join(required)}",
            path=path,
        )
    text = decode_utf8(data, path)
    try:
        # Everything as text: Polis ids are opaque and group ids must stay "0", not 0.0.
        frame = pl.read_csv(io.StringIO(text), infer_schema_length=0)
    except pl.exceptions.PolarsError as exc:
        raise InputError(_parse_problem(text, exc), path=path) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}; found {frame.columns}", path=path)
    if frame.height == 0:
        raise InputError(f"a header and no {rows}", path=path)
    return frame


def _parse_problem(text: str, exc: Exception) -> str:
    """Where the standard CSV parser stops on ``text``, or polars' first line of complaint."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    start = 1
    try:
        for fields in reader:
            if header is None:
                header = fields
            elif len(fields) != len(header):
                return (
                    f"line {start}: {len(fields)} fields; the header has {len(header)} "
                    "(a truncated or hand-edited file?)"
                )
            start = reader.line_num + 1
    except csv.Error as err:
        if "end of data" in str(err) or "EOF" in str(err):
            return f"line {start}: a quoted field opened here is never closed (a truncated file?)"
        return f"line {start}: not valid CSV ({err})"
    return f"not a readable CSV: {str(exc).splitlines()[0]}"


def matrix_shortfall(
    matrix_raw: pl.DataFrame, matrix_votes: pl.DataFrame, kept_ids: pl.Series, path: Path
) -> dict[str, Any]:
    """How many votes the matrix's own ``n-votes`` tallies count that its cells do not hold, and
    the kept statements (``kept_ids``) that have no column in the matrix, with a warning if any.

    Without ``votes.csv`` those votes are lost; the importer reports them instead of dropping
    them silently (an export cut short, or statements Polis left out of the matrix)."""
    tallied = None
    if "n-votes" in matrix_raw.columns:
        counts = matrix_raw["n-votes"].str.strip_chars().cast(pl.Int64, strict=False)
        tallied = int(counts.fill_null(0).sum())
    columns = {c.strip() for c in matrix_raw.columns if c.strip().lstrip("-").isdigit()}
    no_column = sorted(int(c) for c in kept_ids.to_list() if str(c) not in columns)
    missing = max(tallied - matrix_votes.height, 0) if tallied is not None else None
    short: dict[str, Any] = {
        "tallied": tallied,
        "in_matrix": matrix_votes.height,
        "missing": missing,
        "statements_without_column": no_column,
    }
    if missing or no_column:
        short["warning"] = (
            f"{path}: the n-votes tallies count {tallied} votes, the cells hold "
            f"{matrix_votes.height} ({missing} missing); kept statements with no column: "
            f"{no_column or 'none'}; add the export's votes.csv to import every vote"
        )
    return short
