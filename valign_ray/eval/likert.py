"""Likert evaluation: how well the model's option distribution represents the survey answers.

Each statement is scored with the template the training rows use
(:func:`valign_ray.data.likert.build_likert_kto_rows`), so the evaluation asks the question the
model was trained on. Answers whose value is not a modelled option are left out, as in training,
and counted in ``answers_left_out``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from valign_ray.data.likert import likert_answers
from valign_ray.eval.metrics import group_representativeness
from valign_ray.eval.preferences import DEFAULT_LIKERT_TEMPLATE, likert_distribution


def evaluate_likert(
    model: Any,
    tokenizer: Any,
    items: pl.DataFrame,
    answers: pl.DataFrame,
    respondents: pl.DataFrame,
    *,
    options: Mapping[int, str],
    group_column: str | None,
    max_length: int,
    template: str = DEFAULT_LIKERT_TEMPLATE,
    positions: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Representativeness A = 1 - W1/(K-1) of the model's option distribution against the
    weighted answers, for everyone and per group (worst group, spread), next to A of the
    model indifferent between the options (``A_indifferent``), the skill over it
    (``skill``, :func:`~valign_ray.eval.metrics.skill_score`) and ``majority_agreement``;
    per group in ``groups`` (A), ``groups_skill`` and ``groups_majority_agreement``.

    ``positions`` (item id -> the position of each of its option codes 1..n, e.g.
    :meth:`Instrument.option_positions`) places the modelled options on the line; items not
    in it use 1..K in code order. W1 is then normalised by the first-to-last distance."""
    kept, left_out = likert_answers(answers, options)
    codes = {v: i + 1 for i, v in enumerate(sorted(options))}  # option values -> 1..K
    kept = kept.with_columns(pl.col("value").replace_strict(codes, return_dtype=pl.Int64))
    statements = items.filter(pl.col("item_id").is_in(kept["item_id"].unique().to_list()))
    dist = likert_distribution(
        model,
        tokenizer,
        statements["text"].to_list(),
        [options[v] for v in sorted(options)],
        template=template,
        max_length=max_length,
    )
    model_dist = dict(zip(statements["item_id"].to_list(), dist, strict=True))
    item_pos = {
        item: [pos[code - 1] for code in sorted(options)]
        for item, pos in (positions or {}).items()
        if item in model_dist
    }
    overall = group_representativeness(model_dist, kept, respondents, None, positions=item_pos)
    out: dict[str, Any] = {
        "A_population": float(overall["representativeness"][0]),
        "A_indifferent": float(overall["representativeness_indifferent"][0]),
        "skill": overall["skill"][0],
        "majority_agreement": float(overall["majority_agreement"][0]),
        "n_items": statements.height,
        "answers_left_out": left_out,
        "mean_p_agree": float(np.mean(dist[:, -1])),
    }
    if group_column is not None:
        resp = respondents.filter(pl.col(group_column).is_not_null())
        table = group_representativeness(
            model_dist,
            kept.filter(pl.col("respondent_id").is_in(resp["respondent_id"])),
            resp,
            group_column,
            positions=item_pos,
        )

        def per_group(col: str) -> dict[str, float]:
            return dict(zip(table["group"].to_list(), table[col].to_list(), strict=True))

        groups = per_group("representativeness")
        out["groups"] = groups
        out["groups_skill"] = per_group("skill")
        out["groups_majority_agreement"] = per_group("majority_agreement")
        out["worst_group"] = min(groups.values())
        out["spread"] = max(groups.values()) - min(groups.values())
    return out
