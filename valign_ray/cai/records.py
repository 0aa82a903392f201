"""The records CAI generation runs on: each request with its principle, seed and template hash.

A record carries everything that decides its completion apart from the model: the rendered
``prompt`` sent to the model, its ``seed`` (from the sampling seed and the record's key) and the
hash of the template that rendered it, plus the sampled ``principle_id``, so a finished data set
can be traced back to the constitution and the template file that produced it.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from valign_ray.cai.constitution import CaiConstitution, sample_principles
from valign_ray.cai.generate import record_seed
from valign_ray.cai.templates import CaiTemplates


def critique_requests(
    pairs: pl.DataFrame,
    constitution: CaiConstitution,
    templates: CaiTemplates,
    tokenizer: Any | None,
    *,
    principle_sampling: str,
    seed: int,
) -> pl.DataFrame:
    """One critique request per ``pairs`` row (``row_idx``, ``question``, ``response``):
    the row plus ``principle_id``, ``prompt`` (the rendered ``critique_request``), ``seed`` and
    ``template_hash``. A row's principle and seed depend only on ``seed`` and its ``row_idx``."""
    missing = {"row_idx", "question", "response"} - set(pairs.columns)
    if missing:
        raise ValueError(f"critique_requests: pairs lack column(s) {sorted(missing)}")
    seeds = [record_seed(seed, f"critique:{i}") for i in pairs["row_idx"]]
    ids = sample_principles(constitution.principles, principle_sampling, seeds)
    texts = {p.id: p.text for p in constitution.principles}
    prompts = [
        templates.render("critique_request", tokenizer, principle=texts[pid], prompt=q, response=r)
        for pid, q, r in zip(ids, pairs["question"], pairs["response"], strict=True)
    ]
    return pairs.with_columns(
        pl.Series("principle_id", ids, dtype=pl.String),
        pl.Series("prompt", prompts, dtype=pl.String),
        pl.Series("seed", seeds, dtype=pl.Int64),
        pl.lit(templates.hash("critique_request")).alias("template_hash"),
    )
