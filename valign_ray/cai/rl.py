"""RL-CAI data (Bai et al. 2022, section 4), learned through DPO or KTO instead of PPO: K answers
per prompt from the SL-CAI model, every two of them a pair, a soft label per pair from the
feedback (:mod:`valign_ray.cai.feedback`), and the labelled pairs as training rows.

Plain functions of tables; the model is reached through the same ``generate_fn`` as SL-CAI.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import polars as pl

from valign_ray.cai.sl import GenerateFn, answer_requests

PAIR_COLUMNS = ("pair_id", "prompt_id", "question", "response_a", "response_b", "seed_a", "seed_b")


def sample_answers(
    prompts: pl.DataFrame, tokenizer: Any, generate_fn: GenerateFn, *, k: int, seed: int
) -> pl.DataFrame:
    """``k`` answers per prompt (``row_idx``, ``prompt_id``, ``question``): the rows of
    :func:`~valign_ray.cai.sl.answer_requests` for each sample index, each with its own seed."""
    parts = [
        answer_requests(prompts, tokenizer, seed, f"rl-sample:{s}").with_columns(
            pl.lit(s, dtype=pl.Int64).alias("sample")
        )
        for s in range(k)
    ]
    requests = pl.concat(parts).drop("row_idx").with_row_index("row_idx")
    return generate_fn(requests)


def make_pairs(samples: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(pairs, quarantine)``: every two answers to one prompt, ``a`` the lower sample index.
    A pair whose answers are the same text, or where one is empty, says nothing about which is
    better: it is quarantined with that reason."""
    rows: dict[str, list] = {c: [] for c in PAIR_COLUMNS}
    bad: dict[str, list] = {"pair_id": [], "reason": []}
    for (pid,), group in samples.sort("prompt_id", "sample").group_by(
        "prompt_id", maintain_order=True
    ):
        answers = list(group.iter_rows(named=True))
        for a, b in combinations(answers, 2):
            pair_id = f"{pid}:{a['sample']}-{b['sample']}"
            ta, tb = a["completion"], b["completion"]
            if not ta.strip() or not tb.strip():
                bad["pair_id"].append(pair_id)
                bad["reason"].append("an empty answer")
                continue
            if ta == tb:
                bad["pair_id"].append(pair_id)
                bad["reason"].append("identical answers")
                continue
            for col, value in zip(
                PAIR_COLUMNS,
                (pair_id, pid, a["question"], ta, tb, a["seed"], b["seed"]),
                strict=True,
            ):
                rows[col].append(value)
    schema = {c: pl.Int64 if c.startswith("seed") else pl.String for c in PAIR_COLUMNS}
    return pl.DataFrame(rows, schema=schema), pl.DataFrame(
        bad, schema={"pair_id": pl.String, "reason": pl.String}
    )


def survey_item_pairs(
    items: pl.DataFrame, candidates: pl.DataFrame, item_ids: list[str]
) -> pl.DataFrame:
    """RL-CAI pairs from the survey's own candidate responses (``cai.rl_candidates:
    survey_items``): for each prompt item of ``item_ids``, every two of its candidates, ``a``
    the lower ``response_id``; ``pair_id`` ``survey:<item>:<a>-<b>``, no sampling seeds.

    A tiny model's sampled answers are not the texts the survey asks people to choose
    between, so labels on them cannot move the model's preference between those; labels on
    the candidates themselves can. An item id that is not a prompt item with at least two
    candidates raises a ValueError naming it (nothing to pair).
    """
    prompts = items.filter(pl.col("kind") == "prompt").select("item_id", "text")
    text_of = dict(prompts.iter_rows())
    rows: dict[str, list] = {c: [] for c in PAIR_COLUMNS}
    for item_id in sorted(set(item_ids)):
        cands = candidates.filter(pl.col("item_id") == item_id).sort("response_id")
        if item_id not in text_of or cands.height < 2:
            raise ValueError(
                f"cai.rl_candidates=survey_items: item {item_id!r} is not a prompt item with "
                f"two or more candidate responses ({cands.height} found)"
            )
        for a, b in combinations(cands.select("response_id", "text").iter_rows(), 2):
            values = (f"survey:{item_id}:{a[0]}-{b[0]}", f"survey:{item_id}")
            values += (text_of[item_id], a[1], b[1], None, None)
            for col, value in zip(PAIR_COLUMNS, values, strict=True):
                rows[col].append(value)
    schema = {c: pl.Int64 if c.startswith("seed") else pl.String for c in PAIR_COLUMNS}
    return pl.DataFrame(rows, schema=schema)


def dpo_rows(labelled: pl.DataFrame) -> pl.DataFrame:
    """Soft-label DPO rows: ``chosen`` the answer the label favours, ``share`` = its label
    (>= 0.5; the dpo method's soft labels smooth by 1 - share), weight 1."""
    a_wins = pl.col("label") >= 0.5
    return (
        labelled.select(
            pl.col("pair_id").alias("item_id"),
            pl.col("question").alias("prompt"),
            pl.when(a_wins).then("response_a").otherwise("response_b").alias("chosen"),
            pl.when(a_wins).then("response_b").otherwise("response_a").alias("rejected"),
            pl.lit(1.0).alias("weight"),
            pl.when(a_wins).then("label").otherwise(1 - pl.col("label")).alias("share"),
            pl.lit("all").alias("group"),
        )
        .sort("item_id")
        .with_row_index("row_idx")
    )


def kto_rows(labelled: pl.DataFrame, seed: int) -> pl.DataFrame:
    """KTO rows: each answer desirable with weight P(it is the better one) and undesirable with
    weight P(it is the worse one), so a pair's label splits both answers' weight; each row's
    KL completion as the kto method assigns them."""
    from valign_ray.data.builders import assign_kl_completions, canonical_order

    p = pl.col("label")
    sides = []
    for response, p_better in (("response_a", p), ("response_b", 1 - p)):
        for desirable, weight in ((True, p_better), (False, 1 - p_better)):
            sides.append(
                labelled.select(
                    pl.col("pair_id").alias("item_id"),
                    pl.col("question").alias("prompt"),
                    pl.col(response).alias("completion"),
                    pl.lit(desirable).alias("label"),
                    weight.cast(pl.Float64).alias("weight"),
                    pl.lit("all").alias("group"),
                )
            )
    rows = pl.concat(sides).filter(pl.col("weight") > 0)
    return assign_kl_completions(canonical_order(rows), seed=seed)


def label_histogram(labels: pl.Series, bins: int = 10) -> list[int]:
    """Counts of labels in ``bins`` equal bins over [0, 1] (1.0 in the last)."""
    counts, _ = np.histogram(labels.to_numpy(), bins=bins, range=(0.0, 1.0))
    return [int(c) for c in counts]


def format_histogram(counts: list[int], width: int = 30) -> str:
    """A text histogram, one line per bin: ``[0.0, 0.1)  ###  3``."""
    top = max(counts) if counts and max(counts) > 0 else 1
    n = len(counts)
    lines = []
    for k, c in enumerate(counts):
        close = "]" if k == n - 1 else ")"
        bar = "#" * round(width * c / top)
        lines.append(f"  [{k / n:.1f}, {(k + 1) / n:.1f}{close} {bar:<{width}} {c}")
    return "\n".join(lines)


def principle_means(labelled: pl.DataFrame) -> dict[str, float]:
    """Mean label per principle (a pair with M principles counts once for each)."""
    if "principle_ids" not in labelled.columns or labelled.height == 0:
        return {}
    per = labelled.select("label", "principle_ids").explode("principle_ids")
    agg = per.group_by("principle_ids").agg(pl.col("label").mean()).sort("principle_ids")
    return {str(k): float(v) for k, v in agg.iter_rows()}
