"""The model's preferences, read off its log-probabilities: scored completions, pairwise
preference probabilities and Likert answer distributions (OpinionQA style).

Scoring uses the training tokenisation (:func:`valign_ray.train.logprobs.encode_pairs`: prompt
and completion tokenised separately, EOS appended), so evaluation measures the same quantity
the KTO/DPO losses moved. torch is imported inside functions to keep ``import valign_ray`` light.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from valign_ray.train.logprobs import collate, completion_logps, encode_pairs

# The prompt shown for each statement; each option is scored as the completion " " + option.
# The leading space matches how answers follow "Answer:" in running text, and EOS after the
# option marks it as the whole answer ("agree" must not borrow mass from "agree strongly").
DEFAULT_LIKERT_TEMPLATE = "Statement: {text}\nDo you agree? Answer:"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only, so large |x| neither overflows nor warns.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _finite(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite")
    return arr


def score_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    max_length: int = 256,
    batch_size: int = 32,
    add_eos: bool = True,
) -> pl.DataFrame:
    """Log-probability of each completion after its prompt, one row per (prompt, completion).

    Columns: ``logp_sum`` = sum_t log p(c_t | prompt, c_<t) over completion tokens (EOS
    included when ``add_eos``), ``n_tokens`` (i64) and ``logp_mean`` = logp_sum / n_tokens,
    the length-normalised score that compares completions of different lengths fairly.
    Runs under ``torch.no_grad()`` with the model in eval mode (its mode is restored after).
    """
    import torch

    if len(prompts) != len(completions):
        raise ValueError(f"prompts ({len(prompts)}) and completions ({len(completions)}) differ")
    if batch_size < 1 or max_length < 2:
        raise ValueError(
            f"need batch_size >= 1 and max_length >= 2, got {batch_size}, {max_length}"
        )
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; load it with models.load_tokenizer")
    encoded = encode_pairs(tokenizer, prompts, completions, max_length=max_length, add_eos=add_eos)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: list[float] = []
    counts: list[int] = []
    try:
        with torch.no_grad():
            for start in range(0, len(encoded), batch_size):
                batch = collate(encoded[start : start + batch_size], tokenizer.pad_token_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                logp, n = completion_logps(model, batch)
                sums.extend(logp.double().cpu().tolist())
                counts.extend(int(x) for x in n.cpu().tolist())
    finally:
        model.train(was_training)
    logp_sum = np.asarray(sums, dtype=np.float64)
    n_tokens = np.asarray(counts, dtype=np.int64)
    return pl.DataFrame(
        {"logp_sum": logp_sum, "n_tokens": n_tokens, "logp_mean": logp_sum / n_tokens},
        schema={"logp_sum": pl.Float64, "n_tokens": pl.Int64, "logp_mean": pl.Float64},
    )


def pair_preference(logp_a: Any, logp_b: Any, *, temperature: float = 1.0) -> np.ndarray:
    """P(model prefers a over b) = sigmoid((logp_a - logp_b) / temperature), elementwise.

    Pass length-normalised log-probs (``logp_mean``) so a longer answer is not penalised for
    its length alone; ``temperature`` > 0 softens (> 1) or sharpens (< 1) the preference.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    a, b = _finite(logp_a, "logp_a"), _finite(logp_b, "logp_b")
    if a.shape != b.shape:
        raise ValueError(f"logp_a and logp_b shapes differ: {a.shape} vs {b.shape}")
    return _sigmoid((a - b) / temperature)


def implicit_reward_preference(
    policy_a: Any, ref_a: Any, policy_b: Any, ref_b: Any, beta: float
) -> np.ndarray:
    """P(a preferred) under DPO's implicit reward r = beta * (log pi - log pi_ref).

    Bradley-Terry on the implicit rewards (Rafailov et al. 2023):
    P = sigmoid(beta * ((policy_a - ref_a) - (policy_b - ref_b))), with summed log-probs as in
    training. It measures what alignment changed, not the base model's prior.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    arrays = [
        _finite(x, name)
        for x, name in (
            (policy_a, "policy_a"),
            (ref_a, "ref_a"),
            (policy_b, "policy_b"),
            (ref_b, "ref_b"),
        )
    ]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"shapes differ: {[a.shape for a in arrays]}")
    pa, ra, pb, rb = arrays
    return _sigmoid(beta * ((pa - ra) - (pb - rb)))


def likert_distribution(
    model: Any,
    tokenizer: Any,
    statements: Sequence[str],
    options: Sequence[str],
    *,
    template: str = DEFAULT_LIKERT_TEMPLATE,
    length_normalise: bool = True,
    max_length: int = 256,
    batch_size: int = 32,
) -> np.ndarray:
    """The model's answer distribution over Likert ``options`` for each statement.

    For statement s the prompt is ``template.format(text=s)`` (default
    ``"Statement: {text}\\nDo you agree? Answer:"``) and option k is scored as the completion
    ``" " + options[k]`` followed by EOS; P(k | s) = softmax_k(score_k), with score the
    length-normalised log-prob (``logp_mean``) or, if ``length_normalise=False``, the sum.
    Options go in Likert order (index 0 = value 1 = least agreement), matching the answers
    table, so rows compare directly with :func:`metrics.weighted_distribution`.
    Returns an array [n_statements, n_options] whose rows sum to 1.
    """
    if "{text}" not in template:
        raise ValueError(f"template must contain '{{text}}', got {template!r}")
    if len(options) < 2 or len(set(options)) != len(options):
        raise ValueError(f"options: need >= 2 distinct options, got {list(options)}")
    if not statements:
        raise ValueError("statements: empty")
    prompts = [template.format(text=s) for s in statements for _ in options]
    completions = [" " + o for _ in statements for o in options]
    scores = score_completions(
        model, tokenizer, prompts, completions, max_length=max_length, batch_size=batch_size
    )
    col = "logp_mean" if length_normalise else "logp_sum"
    logits = scores[col].to_numpy().reshape(len(statements), len(options))
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)
