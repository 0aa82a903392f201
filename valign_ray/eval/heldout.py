"""Held-out preference evaluation: does the model favour what each held-out respondent chose,
and does it represent how the held-out respondents split on each comparison?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from valign_ray.eval.metrics import (
    majority_agreement,
    preference_accuracy,
    skill_score,
    weighted_margin,
)
from valign_ray.eval.preferences import pair_preference, score_completions


def evaluate_pairs(
    model: Any, tokenizer: Any, pairs: pl.DataFrame, *, max_length: int, batch_size: int = 64
) -> dict[str, float]:
    """Survey-weighted preference accuracy and mean length-normalised log-prob margin, then
    the representation of each comparison's split (:func:`pair_representation`): the metrics
    (:func:`pair_metrics`) of :func:`score_pairs`."""
    return pair_metrics(
        score_pairs(model, tokenizer, pairs, max_length=max_length, batch_size=batch_size)
    )


def score_pairs(
    model: Any, tokenizer: Any, pairs: pl.DataFrame, *, max_length: int, batch_size: int = 64
) -> pl.DataFrame:
    """``pairs`` in their own row order with ``logp_chosen``, ``logp_rejected`` and ``p``, the
    model's P(chosen over rejected).

    ``pairs`` has ``prompt``, ``chosen`` (rated desirable or chosen), ``rejected`` and
    ``weight`` (``item_id`` and ``group`` for the representation, ``respondent_id`` for the
    respondent bootstrap). Each distinct (prompt, completion) is scored once, however many
    respondents rated it: on survey data most pairs repeat across respondents.
    """
    if pairs.height == 0:
        raise ValueError("no held-out pairs to evaluate")
    texts = pl.concat(
        [
            pairs.select("prompt", pl.col("chosen").alias("completion")),
            pairs.select("prompt", pl.col("rejected").alias("completion")),
        ]
    ).unique(maintain_order=True)
    scores = score_completions(
        model,
        tokenizer,
        texts["prompt"].to_list(),
        texts["completion"].to_list(),
        max_length=max_length,
        batch_size=batch_size,
    )
    scored = texts.with_columns(scores["logp_mean"].alias("logp"))
    joined = (
        pairs.with_row_index("_row")
        .join(
            scored.rename({"completion": "chosen", "logp": "logp_chosen"}),
            on=["prompt", "chosen"],
        )
        .join(
            scored.rename({"completion": "rejected", "logp": "logp_rejected"}),
            on=["prompt", "rejected"],
        )
        .sort("_row")
        .drop("_row")
    )
    a, b = joined["logp_chosen"].to_numpy(), joined["logp_rejected"].to_numpy()
    return joined.with_columns(pl.Series("p", pair_preference(a, b)))


def pair_metrics(scored: pl.DataFrame) -> dict[str, Any]:
    """Accuracy, margin, counts and (with ``item_id``) the representation of
    :func:`score_pairs`'s output."""
    a, b = scored["logp_chosen"].to_numpy(), scored["logp_rejected"].to_numpy()
    w, p = scored["weight"].to_numpy(), scored["p"].to_numpy()
    out: dict[str, Any] = {
        "preference_accuracy": float(preference_accuracy(p, w)),
        "margin": float(weighted_margin(a - b, w)),
        "n_pairs": int(scored.height),
        "weight_total": float(np.sum(w)),
    }
    if "item_id" in scored.columns:
        out |= pair_representation(scored)
    return out


def pair_representation(pairs: pl.DataFrame) -> dict[str, Any]:
    """How well the model's P(prefers one response) matches the respondents' weighted split,
    per comparison (``item_id`` and the two responses, in either order).

    ``pairs``: one row per respondent's choice with ``item_id``, ``chosen``, ``rejected``,
    ``weight``, ``p`` (the model's P(chosen over rejected)) and optionally ``group``. For a
    comparison with responses a < b (by text), q = the weighted share choosing a and p_a the
    model's P(a over b); A = mean over comparisons of 1 - |p_a - q| (two options), A_0 the
    same for the indifferent model (p_a = 1/2), ``skill`` = (A - A_0) / (1 - A_0) and
    ``majority_agreement`` (equal weight per comparison). ``groups``: A per group, each
    group's own split on the comparisons it answered.
    """
    a_first = pl.col("chosen") < pl.col("rejected")
    canon = pairs.select(
        "item_id",
        pl.when(a_first).then("chosen").otherwise("rejected").alias("_a"),
        pl.when(a_first).then("rejected").otherwise("chosen").alias("_b"),
        pl.col("group").cast(pl.String) if "group" in pairs.columns else pl.lit("all"),
        "weight",
        a_first.cast(pl.Float64).alias("_chose_a"),
        pl.when(a_first).then(pl.col("p")).otherwise(1.0 - pl.col("p")).alias("_p_a"),
    )

    def split(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        per = frame.group_by("item_id", "_a", "_b").agg(
            ((pl.col("_chose_a") * pl.col("weight")).sum() / pl.col("weight").sum()).alias("q"),
            pl.col("_p_a").first().alias("p"),
        )
        return per["p"].to_numpy(), per["q"].to_numpy()

    def score(p: np.ndarray, q: np.ndarray) -> float:  # two options: A = 1 - |p - q|
        return float(np.mean(1.0 - np.abs(p - q)))

    p, q = split(canon)
    a, a0 = score(p, q), score(np.full_like(p, 0.5), q)
    out: dict[str, Any] = {
        "A_population": a,
        "A_indifferent": a0,
        "skill": skill_score(a, a0) if a0 < 1.0 else None,
        "majority_agreement": majority_agreement(p, q),
        "n_comparisons": int(p.size),
    }
    if "group" in pairs.columns:
        groups = sorted(canon.partition_by("group", as_dict=True).items())
        out["groups"] = {str(key[0]): score(*split(frame)) for key, frame in groups}
    return out


def evaluate_model_dir(
    model_dir: str | Path, pairs: pl.DataFrame, *, max_length: int, batch_size: int = 64
) -> dict[str, float]:
    """:func:`evaluate_pairs` for the model and tokenizer saved in a local folder."""
    from valign_ray.models import load_model, load_tokenizer

    return evaluate_pairs(
        load_model(model_dir),
        load_tokenizer(model_dir),
        pairs,
        max_length=max_length,
        batch_size=batch_size,
    )
