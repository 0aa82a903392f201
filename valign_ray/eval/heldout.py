"""Held-out preference evaluation: does the model favour what each held-out respondent chose?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from valign_ray.eval.metrics import preference_accuracy, weighted_margin
from valign_ray.eval.preferences import pair_preference, score_completions


def evaluate_pairs(
    model: Any, tokenizer: Any, pairs: pl.DataFrame, *, max_length: int, batch_size: int = 64
) -> dict[str, float]:
    """Survey-weighted preference accuracy and mean length-normalised log-prob margin.

    ``pairs`` has ``prompt``, ``chosen`` (rated desirable or chosen), ``rejected`` and
    ``weight``. Each distinct (prompt, completion) is scored once, however many respondents
    rated it: on survey data most pairs repeat across respondents.
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
    joined = pairs.join(
        scored.rename({"completion": "chosen", "logp": "logp_chosen"}), on=["prompt", "chosen"]
    ).join(
        scored.rename({"completion": "rejected", "logp": "logp_rejected"}),
        on=["prompt", "rejected"],
    )
    a, b = joined["logp_chosen"].to_numpy(), joined["logp_rejected"].to_numpy()
    w = joined["weight"].to_numpy()
    return {
        "preference_accuracy": float(preference_accuracy(pair_preference(a, b), w)),
        "margin": float(weighted_margin(a - b, w)),
        "n_pairs": int(joined.height),
        "weight_total": float(np.sum(w)),
    }


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
