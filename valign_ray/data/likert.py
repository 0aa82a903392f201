"""Likert answers (agreement with statements; Polis votes) as KTO rows.

A statement is asked with the same template the evaluation scores
(:data:`valign_ray.eval.preferences.DEFAULT_LIKERT_TEMPLATE`): the option a respondent chose is a
desirable completion, the other modelled options undesirable ones. Trained this way, the
model's probability of each option moves towards the weighted share choosing it. Answers whose
value is not a modelled option (e.g. Polis "pass") are counted and left out, never hidden.
The evaluation against the same answers is :func:`valign_ray.eval.likert.evaluate_likert`.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from valign_ray.data.builders import KTO_SCHEMA
from valign_ray.eval.preferences import DEFAULT_LIKERT_TEMPLATE

POLIS_OPTIONS = {1: "disagree", 3: "agree"}  # Polis votes: disagree 1, pass 2, agree 3


def likert_answers(answers: pl.DataFrame, options: Mapping[int, str]) -> tuple[pl.DataFrame, int]:
    """Likert answers whose value is a modelled option, and how many others were left out."""
    likert = answers.filter(pl.col("kind") == "likert")
    kept = likert.filter(pl.col("value").is_in(list(options)))
    return kept, likert.height - kept.height


def build_likert_kto_rows(
    answers: pl.DataFrame,
    items: pl.DataFrame,
    respondents: pl.DataFrame,
    *,
    group_column: str,
    options: Mapping[int, str],
    template: str = DEFAULT_LIKERT_TEMPLATE,
) -> pl.DataFrame:
    """One KTO row per (answer, modelled option): desirable for the chosen option."""
    kept, _ = likert_answers(answers, options)
    weight = pl.col("weight") if "weight" in respondents.columns else pl.lit(1.0)
    lookup = respondents.select(
        "respondent_id",
        weight.alias("weight"),
        pl.col(group_column).cast(pl.String).fill_null("ungrouped").alias("group"),
    )
    texts = items.select(
        "item_id",
        pl.col("text")
        .map_elements(lambda t: template.format(text=t), return_dtype=pl.String)
        .alias("prompt"),
    )
    opts = pl.DataFrame(
        {"option": list(options), "completion": [" " + v for v in options.values()]},
        schema={"option": pl.Int64, "completion": pl.String},
    )
    rows = (
        kept.join(texts, on="item_id")
        .join(lookup, on="respondent_id")
        .join(opts, how="cross")
        .with_columns((pl.col("value") == pl.col("option")).alias("label"))
        .sort("respondent_id", "item_id", "option")
    )
    if rows.height != kept.height * len(options):
        raise ValueError("likert answers reference unknown items or respondents")
    # KL completions are assigned once over the whole frame (methods/kto.py).
    return rows.select(list(KTO_SCHEMA)).cast(KTO_SCHEMA)
