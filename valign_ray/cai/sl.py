"""SL-CAI (Bai et al. 2022, section 3): answer, then R rounds of (sample a principle, critique the
answer against it, revise), then fine-tune on (prompt, final revision).

Plain functions of tables: the model is reached only through ``generate_fn``, which takes rows
(``row_idx``, ``prompt``, ``seed``, carried columns) and returns them with ``completion``,
``completion_ids`` and ``finish_reason`` in ``row_idx`` order:
:func:`valign_ray.distributed.generation.generate_ray` on Ray Data actors, or
:func:`valign_ray.cai.generate.generate` in one process (the tests).

Every record (one generation) keeps its ``prompt_id``, ``kind`` (answer, critique, revision),
``round`` (0 for the answer), ``principle_id``, ``seed``, ``template_hash`` and the generating
model's fingerprint. A round's principle draw and seeds depend only on the sampling seed, the
round and the prompt's ``row_idx``, never on which other prompts are in the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from valign_ray.cai.constitution import CaiConstitution
from valign_ray.cai.generate import record_seed
from valign_ray.cai.records import critique_requests
from valign_ray.cai.templates import CaiTemplates

GenerateFn = Callable[[pl.DataFrame], pl.DataFrame]
RECORD_COLUMNS = (
    "row_idx",
    "prompt_id",
    "kind",
    "round",
    "principle_id",
    "request",
    "completion",
    "n_tokens",
    "finish_reason",
    "seed",
    "template_hash",
    "model_fingerprint",
)


def _records(gen: pl.DataFrame, kind: str, round_: int, fingerprint: str) -> pl.DataFrame:
    out = gen.with_columns(
        pl.lit(kind).alias("kind"),
        pl.lit(round_, dtype=pl.Int64).alias("round"),
        pl.col("prompt").alias("request"),
        pl.col("completion_ids").list.len().cast(pl.Int64).alias("n_tokens"),
        pl.lit(fingerprint).alias("model_fingerprint"),
    )
    if "principle_id" not in out.columns:
        out = out.with_columns(pl.lit(None, dtype=pl.String).alias("principle_id"))
    if "template_hash" not in out.columns:
        out = out.with_columns(pl.lit(None, dtype=pl.String).alias("template_hash"))
    return out.select(RECORD_COLUMNS)


def answer_requests(prompts: pl.DataFrame, tokenizer: Any, seed: int, key: str) -> pl.DataFrame:
    """A generation request per prompt (``row_idx``, ``prompt_id``, ``question``): the question
    formatted as training formats prompts (``format_prompt``), so the fine-tuned model is asked
    exactly what it was trained on; the seed keyed on ``key`` and the prompt id."""
    from valign_ray.train.logprobs import format_prompt

    return prompts.select("row_idx", "prompt_id", "question").with_columns(
        pl.Series("prompt", [format_prompt(tokenizer, q) for q in prompts["question"]]),
        pl.Series(
            "seed", [record_seed(seed, f"{key}:{p}") for p in prompts["prompt_id"]], pl.Int64
        ),
    )


def sl_cai_records(
    prompts: pl.DataFrame,
    constitution: CaiConstitution,
    templates: CaiTemplates,
    tokenizer: Any,
    generate_fn: GenerateFn,
    *,
    rounds: int,
    principle_sampling: str,
    seed: int,
    model_fingerprint: str,
) -> pl.DataFrame:
    """Every generation of SL-CAI (module docstring), in (round, kind, row_idx) order:
    ``prompts`` (``row_idx``, ``prompt_id``, ``question``) answered once, then critiqued and
    revised ``rounds`` times, each round against a freshly sampled principle."""
    texts = {p.id: p.text for p in constitution.principles}
    answers = generate_fn(answer_requests(prompts, tokenizer, seed, "answer"))
    records = [_records(answers, "answer", 0, model_fingerprint)]
    response = answers.select("row_idx", "prompt_id", "question", pl.col("completion"))
    for r in range(1, rounds + 1):
        round_seed = record_seed(seed, f"sl-round:{r}")
        requests = critique_requests(
            response.rename({"completion": "response"}),
            constitution,
            templates,
            tokenizer,
            principle_sampling=principle_sampling,
            seed=round_seed,
        )
        critiques = generate_fn(requests)
        records.append(_records(critiques, "critique", r, model_fingerprint))
        revision = critiques.select(
            "row_idx",
            "prompt_id",
            "question",
            "principle_id",
            pl.Series(
                "prompt",
                [
                    templates.render(
                        "revision_request",
                        tokenizer,
                        principle=texts[pid],
                        prompt=q,
                        response=resp,
                        critique=crit,
                    )
                    for pid, q, resp, crit in zip(
                        critiques["principle_id"],
                        critiques["question"],
                        critiques["response"],
                        critiques["completion"],
                        strict=True,
                    )
                ],
                dtype=pl.String,
            ),
            pl.Series(
                "seed",
                [record_seed(round_seed, f"revision:{i}") for i in critiques["row_idx"]],
                pl.Int64,
            ),
            pl.lit(templates.hash("revision_request")).alias("template_hash"),
        )
        revised = generate_fn(revision)
        records.append(_records(revised, "revision", r, model_fingerprint))
        response = revised.select("row_idx", "prompt_id", "question", "completion")
    return pl.concat(records)


def sft_rows(
    prompts: pl.DataFrame, records: pl.DataFrame, constitution: CaiConstitution, weight: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(rows, quarantine)``: one SFT row per prompt, (``prompt`` = the question,
    ``completion`` = its final revision), ``weight`` = the overall support of the last round's
    principle (``weight="support"``) or 1 (``"one"``), ``group`` = that principle's id, with
    the provenance of the revision; a prompt whose final revision is empty is quarantined."""
    last = int(records["round"].max())
    final = records.filter((pl.col("kind") == "revision") & (pl.col("round") == last))
    support = {p.id: p.overall_support for p in constitution.principles}
    principles = (
        records.filter(pl.col("kind") == "critique")
        .group_by("prompt_id")
        .agg(pl.col("principle_id").sort_by("round").alias("principle_ids"))
    )
    rows = (
        final.join(prompts.select("prompt_id", "source", "question"), on="prompt_id")
        .join(principles, on="prompt_id")
        .select(
            "prompt_id",
            "source",
            pl.col("question").alias("prompt"),
            "completion",
            pl.col("principle_id").replace_strict(support, return_dtype=pl.Float64).alias("w"),
            pl.col("principle_id").alias("group"),
            "principle_ids",
            "round",
            "seed",
            "template_hash",
            "model_fingerprint",
        )
        .with_columns(
            pl.col("w").alias("weight") if weight == "support" else pl.lit(1.0).alias("weight")
        )
        .drop("w")
    )
    empty = rows["completion"].str.strip_chars().str.len_chars() == 0
    quarantine = rows.filter(empty).select(
        "prompt_id", pl.lit("empty final revision").alias("reason")
    )
    kept = rows.filter(~empty).sort("prompt_id").with_row_index("row_idx")
    return kept, quarantine


def generation_stats(records: pl.DataFrame, seconds: float) -> dict[str, float]:
    """Records, tokens generated and tokens per second of wall time."""
    tokens = int(records["n_tokens"].sum()) if records.height else 0
    return {
        "records": records.height,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else 0.0,
    }
