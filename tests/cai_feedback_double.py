"""TEST-ONLY stand-in for ``valign_ray.cai.feedback`` (another branch writes the real module).

``tests/test_cai_pipeline.py`` installs it as ``valign_ray.cai.feedback`` ONLY when that module
cannot be imported, so the CAI stages can be run end to end before the real one lands. Remove
this file (and the fallback in the test) once ``valign_ray/cai/feedback.py`` is merged. The
signatures are the agreed interface; the arithmetic is a plain, unbatched version of it.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import torch

from valign_ray.cai.constitution import CaiConstitution, sample_principles
from valign_ray.cai.generate import record_seed
from valign_ray.cai.templates import CaiTemplates
from valign_ray.train.logprobs import format_prompt


def _logp(model: Any, tokenizer: Any, prompt: str, completion: str) -> float:
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(p) - 1 : -1].float()
    return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(c)[:, None]).sum())


def choice_labels(
    pairs: pl.DataFrame,
    constitution: CaiConstitution,
    templates: CaiTemplates,
    model: Any,
    tokenizer: Any,
    *,
    options: tuple[str, str] = ("(A)", "(B)"),
    principles_per_pair: int = 1,
    principle_sampling: str = "population_support",
    seed: int = 0,
    clamp: tuple[float, float] | None = None,
    batch_size: int = 16,
) -> pl.DataFrame:
    texts = {p.id: p.text for p in constitution.principles}
    out: dict[str, list] = {"label": [], "principle_ids": [], "label_ab": [], "label_ba": []}
    for pid, q, a, b in pairs.select("pair_id", "question", "response_a", "response_b").iter_rows():
        seeds = [record_seed(seed, f"feedback:{pid}:{m}") for m in range(principles_per_pair)]
        ids = sample_principles(constitution.principles, principle_sampling, seeds)
        ab, ba = [], []
        for i in ids:
            for first, second, store, flip in ((a, b, ab, False), (b, a, ba, True)):
                prompt = templates.render(
                    "comparison_prompt",
                    tokenizer,
                    principle=texts[i],
                    prompt=q,
                    response_a=first,
                    response_b=second,
                )
                la, lb = (_logp(model, tokenizer, prompt, o) for o in options)
                p_first = 1 / (1 + math.exp(lb - la))
                store.append(1 - p_first if flip else p_first)
        label = (sum(ab) + sum(ba)) / (2 * len(ids))
        if clamp is not None:
            label = min(max(label, clamp[0]), clamp[1])
        out["label"].append(label)
        out["principle_ids"].append(ids)
        out["label_ab"].append(sum(ab) / len(ab))
        out["label_ba"].append(sum(ba) / len(ba))
    return pairs.with_columns(
        pl.Series("label", out["label"], pl.Float64),
        pl.Series("principle_ids", out["principle_ids"], pl.List(pl.String)),
        pl.Series("label_ab", out["label_ab"], pl.Float64),
        pl.Series("label_ba", out["label_ba"], pl.Float64),
        pl.lit(templates.hash("comparison_prompt")).alias("template_hash"),
    )


def implicit_reward_labels(
    pairs: pl.DataFrame,
    policy: Any,
    reference: Any,
    tokenizer: Any,
    *,
    beta: float,
    batch_size: int = 16,
) -> pl.DataFrame:
    rewards: dict[str, list[float]] = {"reward_a": [], "reward_b": []}
    for q, a, b in pairs.select("question", "response_a", "response_b").iter_rows():
        prompt = format_prompt(tokenizer, q)
        for key, resp in (("reward_a", a), ("reward_b", b)):
            rewards[key].append(
                _logp(policy, tokenizer, prompt, resp) - _logp(reference, tokenizer, prompt, resp)
            )
    labels = [
        1 / (1 + math.exp(-beta * (ra - rb)))
        for ra, rb in zip(rewards["reward_a"], rewards["reward_b"], strict=True)
    ]
    return pairs.with_columns(
        pl.Series("reward_a", rewards["reward_a"], pl.Float64),
        pl.Series("reward_b", rewards["reward_b"], pl.Float64),
        pl.Series("label", labels, pl.Float64),
    )
