"""Survey tables -> training rows, as pure polars functions.

Each builder takes a batch of canonical ``answers`` (see :mod:`valign_ray.survey.tables`) plus
the small lookup tables (items, candidates, weighted respondents) and returns training rows, so
Ray Data can apply it per batch with ``map_batches`` and a test can call it directly. Rows carry
no respondent id: only the weight and the group the respondent belongs to.
"""

from __future__ import annotations

import numpy as np
import polars as pl

KTO_SCHEMA = {
    "item_id": pl.String,
    "prompt": pl.String,
    "completion": pl.String,
    "label": pl.Boolean,
    "weight": pl.Float64,
    "group": pl.String,
}
DPO_SCHEMA = {
    "item_id": pl.String,
    "prompt": pl.String,
    "chosen": pl.String,
    "rejected": pl.String,
    "weight": pl.Float64,
    "share": pl.Float64,
    "group": pl.String,
}


def _respondent_lookup(respondents: pl.DataFrame, group_column: str) -> pl.DataFrame:
    if group_column not in respondents.columns:
        raise ValueError(
            f"group column '{group_column}' is not a respondent column; "
            f"available: {', '.join(respondents.columns)}"
        )
    weight = pl.col("weight") if "weight" in respondents.columns else pl.lit(1.0)
    return respondents.select(
        "respondent_id",
        weight.cast(pl.Float64).alias("weight"),
        # Respondents outside every group (e.g. Polis participants the clustering left out)
        # still train; they are reported as one more group.
        pl.col(group_column).cast(pl.String).fill_null("ungrouped").alias("group"),
    )


def _rated(
    answers: pl.DataFrame,
    items: pl.DataFrame,
    candidates: pl.DataFrame,
    respondents: pl.DataFrame,
    group_column: str,
) -> pl.DataFrame:
    """Rating answers joined to prompt text, response text, weight and group."""
    rated = answers.filter(pl.col("kind") == "rating").select(
        "respondent_id", "item_id", "response_id", "value"
    )
    # Keep the answers' order: KTO's kl_completion pairs each row with the next one, and polars
    # gives no order guarantee for joins unless asked.
    joined = (
        rated.join(
            items.select("item_id", pl.col("text").alias("prompt")),
            on="item_id",
            maintain_order="left",
        )
        .join(
            candidates.select("item_id", "response_id", pl.col("text").alias("completion")),
            on=["item_id", "response_id"],
            maintain_order="left",
        )
        .join(
            _respondent_lookup(respondents, group_column),
            on="respondent_id",
            maintain_order="left",
        )
    )
    if joined.height != rated.height:
        # Ingestion validates references, so a mismatch here is a bug upstream, not bad data.
        raise ValueError(
            f"{rated.height - joined.height} rating answers reference an unknown item, response "
            "or respondent; ingest the survey through valign_ray.survey.ingest first"
        )
    return joined


def mismatched_completions(prompts_item: pl.Series, completions: pl.Series) -> pl.Series:
    """For each row, a completion from another row whose prompt differs (KTO's KL pairs).

    Rows are paired with the next row (cyclically), as TRL pairs each prompt with the next
    example's completion; where that row shares the item, the shift grows until it does not.
    That is: a row in a run of equal items takes the first row after the run; the last run
    wraps to row 0, or past the first run when that run has the same item. Computed per run
    (linear time): a plain scan is quadratic on answers sorted by item.
    A batch with a single item has no mismatched completion and is an error.
    """
    n = len(completions)
    items = np.asarray(prompts_item.to_list(), dtype=object)
    if n and len(set(items.tolist())) < 2:
        raise ValueError("KL pairs need at least two different prompts in a batch")
    if n == 0:
        return pl.Series("kl_completion", [], dtype=pl.String)
    new_run = np.concatenate([[True], items[1:] != items[:-1]])
    run_end = np.append(np.flatnonzero(new_run)[1:], n)  # one past each run's last row
    target = run_end[np.cumsum(new_run) - 1]
    wraps = target == n
    target[wraps] = 0 if items[0] != items[-1] else run_end[0]
    return completions.gather(target).cast(pl.String).rename("kl_completion")


def canonical_order(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows sorted on every column, numbered by ``row_idx``: the order (hence training batches)
    is a function of the rows' content, not of how Ray Data scheduled or cut the batches."""
    return rows.sort(rows.columns).with_row_index("row_idx")


def assign_kl_completions(rows: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Pair every row (KTO's ``kl_completion``) with a completion of another prompt, over the
    whole frame, in a seeded random order: done once, after the rows are in canonical order, so
    independent of how Ray Data cut the batches, and not biased to whichever completion happens
    to sort first (Likert rows share their option texts)."""
    if rows.height == 0:
        return rows
    order = np.random.default_rng(seed).permutation(rows.height)
    shuffled = rows[order.tolist()]
    kl = mismatched_completions(shuffled["item_id"], shuffled["completion"]).to_numpy()
    out = np.empty(rows.height, dtype=object)
    out[order] = kl
    return rows.with_columns(pl.Series("kl_completion", out.tolist(), dtype=pl.String))


def build_kto_rows(
    answers: pl.DataFrame,
    items: pl.DataFrame,
    candidates: pl.DataFrame,
    respondents: pl.DataFrame,
    *,
    group_column: str,
) -> pl.DataFrame:
    """KTO rows: one per rating; desirable (value 1) or undesirable (0), weighted by respondent.

    The KL completions of KTO's reference point are assigned afterwards, once, over the whole
    frame (:func:`assign_kl_completions`): a per-batch pairing would depend on batch cuts.
    """
    rows = _rated(answers, items, candidates, respondents, group_column)
    rows = rows.with_columns((pl.col("value") == 1).alias("label"))
    return rows.select(list(KTO_SCHEMA)).cast(KTO_SCHEMA)


def build_dpo_pairs(
    answers: pl.DataFrame,
    items: pl.DataFrame,
    candidates: pl.DataFrame,
    respondents: pl.DataFrame,
    *,
    group_column: str,
    respondent_id: bool = False,
) -> pl.DataFrame:
    """DPO pairs from pairwise choices, and from ratings where one respondent rated two
    responses to one prompt differently (desirable beats undesirable). Pair weight = the
    respondent's weight; ``share`` is 1 (a hard label) until :func:`aggregate_pairs`.
    ``respondent_id=True`` keeps whose pair it is (held-out pairs, for the respondent
    bootstrap); training rows never carry it.
    """
    lookup = _respondent_lookup(respondents, group_column)
    text = candidates.select("item_id", "response_id", "text")
    pairwise = answers.filter(pl.col("kind") == "pairwise").select(
        "respondent_id",
        "item_id",
        pl.col("response_id").alias("chosen_id"),
        pl.col("response_b_id").alias("rejected_id"),
    )
    rated = answers.filter(pl.col("kind") == "rating")
    good = rated.filter(pl.col("value") == 1).select(
        "respondent_id", "item_id", pl.col("response_id").alias("chosen_id")
    )
    bad = rated.filter(pl.col("value") == 0).select(
        "respondent_id", "item_id", pl.col("response_id").alias("rejected_id")
    )
    from_ratings = good.join(bad, on=["respondent_id", "item_id"])
    pairs = pl.concat([pairwise, from_ratings.select(pairwise.columns)])
    out = (
        pairs.join(items.select("item_id", pl.col("text").alias("prompt")), on="item_id")
        .join(
            text.rename({"response_id": "chosen_id", "text": "chosen"}), on=["item_id", "chosen_id"]
        )
        .join(
            text.rename({"response_id": "rejected_id", "text": "rejected"}),
            on=["item_id", "rejected_id"],
        )
        .join(lookup, on="respondent_id")
        .with_columns(pl.lit(1.0).alias("share"))
    )
    if out.height != pairs.height:
        raise ValueError(
            f"{pairs.height - out.height} pairs reference unknown items or respondents"
        )
    keep = (["respondent_id"] if respondent_id else []) + list(DPO_SCHEMA)
    return out.select(keep).cast(DPO_SCHEMA)


def aggregate_pairs(pairs: pl.DataFrame) -> pl.DataFrame:
    """One soft-labelled pair per (prompt, two responses): ``share`` = the weighted share that
    preferred ``chosen`` (oriented so share >= 0.5), ``weight`` = the total weight behind it.

    Used with DPO label smoothing 1 - share, the optimum matches the population's split rather
    than only its majority.
    """
    oriented = pairs.with_columns(
        pl.min_horizontal("chosen", "rejected").alias("a"),
        pl.max_horizontal("chosen", "rejected").alias("b"),
    ).with_columns((pl.col("chosen") == pl.col("a")).cast(pl.Float64).alias("prefers_a"))
    agg = oriented.group_by("item_id", "prompt", "a", "b").agg(
        (pl.col("prefers_a") * pl.col("weight")).sum().alias("w_a"),
        pl.col("weight").sum().alias("weight"),
    )
    share_a = pl.col("w_a") / pl.col("weight")
    a_wins = share_a >= 0.5
    return agg.select(
        "item_id",
        "prompt",
        pl.when(a_wins).then("a").otherwise("b").alias("chosen"),
        pl.when(a_wins).then("b").otherwise("a").alias("rejected"),
        "weight",
        pl.when(a_wins).then(share_a).otherwise(1 - share_a).alias("share"),
        pl.lit("all").alias("group"),
    ).sort("item_id", "chosen", "rejected")


def build_sft_rows(
    answers: pl.DataFrame,
    items: pl.DataFrame,
    candidates: pl.DataFrame,
    respondents: pl.DataFrame,
    *,
    group_column: str,
) -> pl.DataFrame:
    """SFT demonstrations: each prompt with its response of highest weighted approval.

    Approval = weighted share of raters who found the response desirable; ties go to the
    smaller response id so the result does not depend on row order. ``weight`` = the total
    weight of the raters of that response.
    """
    rows = _rated(answers, items, candidates, respondents, group_column)
    approval = (
        rows.group_by("item_id", "prompt", "response_id", "completion")
        .agg(
            ((pl.col("value") == 1).cast(pl.Float64) * pl.col("weight")).sum().alias("w_yes"),
            pl.col("weight").sum().alias("weight"),
        )
        .with_columns((pl.col("w_yes") / pl.col("weight")).alias("approval"))
        .sort(["item_id", "approval", "response_id"], descending=[False, True, False])
    )
    return (
        approval.group_by("item_id", maintain_order=True)
        .first()
        .select("item_id", "prompt", "completion", "approval", "weight")
    )
