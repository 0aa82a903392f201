"""Held-out splits by respondent and by item, stable under row order and batch boundaries.

A unit goes to the held-out side when a salted hash of its id falls below the held-out share, so
a respondent's (or item's) answers land on one side whichever batch or worker sees them.
"""

from __future__ import annotations

import hashlib

import polars as pl


def holdout_mask(ids: pl.Series, share: float, seed: int) -> pl.Series:
    """Boolean Series: True where the id is held out (about ``share`` of distinct ids)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"held-out share must be in [0, 1), got {share}")
    # sha256 rather than polars' hash, which is only stable within one polars version: an
    # upgrade must not move respondents across the split.
    unique = ids.cast(pl.String).unique()
    position = {
        u: int.from_bytes(hashlib.sha256(f"{seed}:{u}".encode()).digest()[:4], "big") / 2**32
        for u in unique.to_list()
    }
    return ids.cast(pl.String).replace_strict(position, return_dtype=pl.Float64) < share


def item_seed(split_seed: int) -> int:
    """The seed of the item draw (the respondent draw uses ``split_seed`` itself)."""
    return split_seed + 1


def heldout_item_ids(item_ids: pl.Series, share: float, split_seed: int) -> list[str]:
    """The ids among ``item_ids`` that :func:`split_respondents_items` keeps out of training
    with ``holdout_items=share`` and ``seed=split_seed`` (sorted, distinct)."""
    ids = item_ids.cast(pl.String).unique()
    return sorted(ids.filter(holdout_mask(ids, share, item_seed(split_seed))).to_list())


def split_respondents_items(
    answers: pl.DataFrame,
    *,
    holdout_respondents: float,
    holdout_items: float,
    seed: int,
) -> dict[str, pl.DataFrame]:
    """Split answers into ``train`` (neither held out), ``heldout_respondents`` (held-out people,
    seen items), ``heldout_items`` (seen people, held-out items) and ``heldout_both``.

    No respondent of a held-out side appears in train, and no held-out item does.
    """
    r_out = holdout_mask(answers["respondent_id"], holdout_respondents, seed)
    i_out = holdout_mask(answers["item_id"], holdout_items, item_seed(seed))
    marked = answers.with_columns(r_out.alias("_r"), i_out.alias("_i"))
    parts = {
        "train": marked.filter(~pl.col("_r") & ~pl.col("_i")),
        "heldout_respondents": marked.filter(pl.col("_r") & ~pl.col("_i")),
        "heldout_items": marked.filter(~pl.col("_r") & pl.col("_i")),
        "heldout_both": marked.filter(pl.col("_r") & pl.col("_i")),
    }
    return {k: v.drop("_r", "_i") for k, v in parts.items()}
