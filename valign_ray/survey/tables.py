"""The canonical survey tables every importer produces and every builder consumes.

All tables are polars DataFrames. Importers (CSV/Parquet/JSONL ingestion, Polis, synthetic)
produce them; weighting adds ``weight`` to the respondents; builders turn them into training
rows. Respondent ids are pseudonymised (salted hash) at ingestion: raw ids never get here.

respondents
    ``respondent_id`` (str), one column per demographic variable (str category), optional
    ``group`` (str: an opinion group, e.g. a Polis cluster), optional ``base_weight`` (f64,
    design weight), after weighting ``weight`` (f64, mean 1 over the respondents).
items
    ``item_id`` (str), ``kind`` (str: ``prompt`` = a prompt with candidate responses, answered
    by ``rating`` or ``pairwise``; ``statement`` = a value statement, answered by ``likert``),
    ``text`` (str: the prompt or the statement), ``dimension`` (str or null: the value dimension
    the item measures, where known), ``n_options`` (i64: Likert options for statements, else 0).
candidates
    ``item_id`` (str), ``response_id`` (str), ``text`` (str): candidate responses to prompts.
answers
    ``respondent_id`` (str), ``item_id`` (str), ``kind`` (str: ``rating`` | ``pairwise`` |
    ``likert``), ``response_id`` (str or null), ``response_b_id`` (str or null), ``value``
    (i64), ``free_text`` (str or null).

    - ``rating``: the respondent saw ``response_id`` and rated it desirable (``value`` 1) or
      undesirable (``value`` 0).
    - ``pairwise``: the respondent preferred ``response_id`` over ``response_b_id``
      (``value`` 1 always).
    - ``likert``: agreement with a statement item, ``value`` in 1..n_options (n_options =
      most agreement). Polis votes map to 3 options: disagree 1, pass 2, agree 3.
"""

from __future__ import annotations

RESPONDENT_ID = "respondent_id"
ANSWER_KINDS = ("rating", "pairwise", "likert")
ITEM_KINDS = ("prompt", "statement")

RESPONDENT_COLUMNS = {"respondent_id": "str"}  # plus demographics, optional group/base_weight
ITEM_COLUMNS = {
    "item_id": "str",
    "kind": "str",
    "text": "str",
    "dimension": "str",
    "n_options": "i64",
}
CANDIDATE_COLUMNS = {"item_id": "str", "response_id": "str", "text": "str"}
ANSWER_COLUMNS = {
    "respondent_id": "str",
    "item_id": "str",
    "kind": "str",
    "response_id": "str",
    "response_b_id": "str",
    "value": "i64",
    "free_text": "str",
}


def polars_schema(columns: dict[str, str]) -> dict:
    """The polars dtypes of one of the column maps above (``str`` -> String, ``i64`` -> Int64)."""
    import polars as pl

    return {c: pl.Int64 if t == "i64" else pl.String for c, t in columns.items()}
