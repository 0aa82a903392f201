"""Population margins: the target shares that survey weighting rakes to.

A margins file is a CSV with exactly the columns ``variable,category,share,year,source``, one
row per (variable, category). The shares of each variable are population proportions and must
sum to 1 (within ``SUM_TOLERANCE``). ``year`` and ``source`` are required so that every target
can be traced to where it came from; ``data/margins/README.md`` describes the shipped file.

Loaded margins are a plain ``dict[variable, dict[category, share]]``, the input of
:func:`valign_ray.survey.weighting.rake_to_margins`.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from valign_ray.errors import InputError, read_utf8

MARGIN_COLUMNS = ("variable", "category", "share", "year", "source")
SUM_TOLERANCE = 1e-6

Margins = dict[str, dict[str, float]]


def load_margins(path: str | Path) -> Margins:
    """Read a margins CSV into ``{variable: {category: share}}``.

    Strict on purpose: a misspelt column, a blank cell, a duplicate category or shares that do
    not sum to 1 would otherwise bias every weight downstream without any visible error.

    Raises:
        ValueError: naming the file and row (or the variable and its sum) for unknown or
            missing columns, blank cells, non-numeric or out-of-range shares, a non-integer
            year, duplicate (variable, category) rows, or shares of a variable that do not sum
            to 1 within 1e-6.
    """
    path = Path(path)
    text = read_utf8(path, "margins file")
    try:
        return _parse_margins(path, text)
    except InputError:
        raise
    except (ValueError, csv.Error) as exc:  # every message already names the file
        raise InputError(str(exc)) from None


def _parse_margins(path: Path, text: str) -> Margins:
    margins: Margins = {}
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        if header is None:
            raise ValueError(f"{path}: empty file, expected header {','.join(MARGIN_COLUMNS)}")
        unknown = [c for c in header if c not in MARGIN_COLUMNS]
        missing = [c for c in MARGIN_COLUMNS if c not in header]
        if unknown or missing:
            raise ValueError(
                f"{path}: header must be {','.join(MARGIN_COLUMNS)}; "
                f"unknown columns {unknown}, missing columns {missing}"
            )
        for row in reader:
            where = f"{path} row {reader.line_num}"
            # DictReader puts surplus cells under the key None and fills short rows with None.
            if None in row:
                raise ValueError(f"{where}: more cells than header columns: {row[None]}")
            blank = [c for c in MARGIN_COLUMNS if row[c] is None or not row[c].strip()]
            if blank:
                raise ValueError(f"{where}: blank cell(s) in column(s) {blank}")
            variable, category = row["variable"].strip(), row["category"].strip()
            share = _parse_share(row["share"], where)
            if not row["year"].strip().isdigit():
                raise ValueError(f"{where}: year must be an integer, got {row['year']!r}")
            categories = margins.setdefault(variable, {})
            if category in categories:
                raise ValueError(f"{where}: duplicate row for {variable}={category}")
            categories[category] = share
    if not margins:
        raise ValueError(f"{path}: no margin rows")
    check_margins(margins, source=str(path))
    return margins


def check_margins(margins: Margins, *, source: str = "margins") -> None:
    """Check variables and categories are strings, and every variable's shares are in [0, 1]
    and sum to 1 within ``SUM_TOLERANCE`` (raking renormalises what remains of the gap).

    Raking to shares that sum to s != 1 cannot converge (every variable would pull the total
    weight to a different value), so this is checked before any fitting.
    """
    for variable, categories in margins.items():
        _check_string_keys(variable, categories, source)
        if not categories:
            raise ValueError(f"{source}: variable {variable!r} has no categories")
        for category, share in categories.items():
            if not (0.0 <= share <= 1.0) or math.isnan(share):
                raise ValueError(
                    f"{source}: share of {variable}={category} is {share}, not in [0, 1]"
                )
        total = math.fsum(categories.values())
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ValueError(
                f"{source}: shares of variable {variable!r} sum to {total:.10g}, not 1 "
                f"(tolerance {SUM_TOLERANCE})"
            )


def _check_string_keys(variable: object, categories: object, source: str) -> None:
    """Respondents' columns are matched to categories as strings, so a margin keyed by 1
    (not "1") could never match; say so instead of failing deep inside polars."""
    if not isinstance(variable, str):
        raise ValueError(
            f"{source}: variable names must be strings, got {variable!r} "
            f"({type(variable).__name__})"
        )
    if not isinstance(categories, dict):
        raise ValueError(f"{source}: variable {variable!r} needs a {{category: share}} mapping")
    for category in categories:
        if not isinstance(category, str):
            raise ValueError(
                f"{source}: categories of {variable!r} must be strings (respondents' values "
                f"are compared as strings), got {category!r} ({type(category).__name__}); "
                f"write {str(category)!r}"
            )


def select_margins(margins: Margins, variables: list[str]) -> Margins:
    """Return the margins of ``variables`` only, in that order (a copy).

    Small samples cannot support every margin (e.g. all 16 regions), so callers pick the
    subset to rake to. An unknown variable is an error that lists the available ones.
    """
    unknown = [v for v in variables if v not in margins]
    if unknown:
        raise ValueError(f"unknown margin variable(s) {unknown}; available: {sorted(margins)}")
    if len(set(variables)) != len(variables):
        raise ValueError(f"variables listed twice: {variables}")
    return {v: dict(margins[v]) for v in variables}


def balanced_margins(margins: Margins) -> Margins:
    """Every category of each variable an equal share, 1 / (its number of categories): raking
    to these makes each group of every raking variable count equally (``weighting.scheme:
    balanced``), the population shares being ignored; the categories stay the margins'."""
    return {v: dict.fromkeys(cats, 1.0 / len(cats)) for v, cats in margins.items()}


def _parse_share(text: str, where: str) -> float:
    try:
        share = float(text)
    except ValueError:
        raise ValueError(f"{where}: share {text!r} is not a number") from None
    if math.isnan(share) or not (0.0 <= share <= 1.0):
        raise ValueError(f"{where}: share {text!r} is not in [0, 1]")
    return share
