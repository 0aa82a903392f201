"""AI feedback for RL-CAI: a soft label P(response_a is better) for each pair of answers.

Two ways to label a pair (Bai et al. 2022, "Constitutional AI: Harmlessness from AI Feedback",
section 4.1, with the RL step replaced by the project's soft-label DPO or KTO):

- :func:`choice_labels` (the paper's): a feedback model reads the ``comparison_prompt`` (a
  principle, the question, both answers as options A and B) and the label is its normalised
  probability of the option naming ``response_a``. Each option's continuation (``"(A)"``,
  ``"(B)"``) is scored as a whole token sequence, since it may take several tokens. Language
  models prefer a position (often "A"), so every pair is asked twice, once with the answers
  swapped, and the two answers' probabilities are averaged; then averaged over ``M`` principles
  sampled from the constitution (the paper ensembles over principles), and optionally clamped
  (the paper clamps chain-of-thought labels to [0.4, 0.6] so they are not over-confident).
- :func:`implicit_reward_labels`: a survey-aligned DPO model is a reward model,
  ``r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))`` (Rafailov et al. 2023), and the label is
  the Bradley-Terry probability ``sigmoid(r(x, a) - r(x, b))``.

The arithmetic is split into small functions of log-prob tensors (:func:`option_probability`,
:func:`two_order_labels`, :func:`principle_average`, :func:`clamp_labels`) so it is tested by
hand; the scoring reuses the training tokenisation (:mod:`valign_ray.train.logprobs`): prompt
and continuation are tokenised separately and their ids concatenated, so an option's tokens are
the same after every prompt (byte-level BPE would otherwise merge across the boundary, e.g. a
prompt's trailing space with ``"(A"``). No Ray, no config objects.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import polars as pl

from valign_ray.cai.constitution import CaiConstitution, sample_principles
from valign_ray.cai.generate import encode_prompts, record_seed
from valign_ray.cai.templates import CaiTemplates
from valign_ray.train.logprobs import Encoded, collate, completion_logps
from valign_ray.train.reference import score_reference

if TYPE_CHECKING:
    import torch

PAIR_COLUMNS = ("pair_id", "question", "response_a", "response_b")
OPTIONS_KEY = "cai.feedback.options"
CLAMP_KEY = "cai.feedback.clamp"


# ------------------------------------------------------------------------- label arithmetic


def option_probability(logps: torch.Tensor) -> torch.Tensor:
    """P(the first option) among the two, from their sequence log-probs ``logps`` [..., 2].

    The options do not exhaust the vocabulary, so their probabilities are renormalised over the
    two (Bai et al. 2022, 4.1: "the normalized probabilities of the options")::

        p = exp(l_0) / (exp(l_0) + exp(l_1)) = sigmoid(l_0 - l_1)

    ``l = [log 0.6, log 0.2] -> 0.6 / 0.8 = 0.75``.
    """
    import torch

    return torch.sigmoid(logps[..., 0] - logps[..., 1])


def two_order_labels(
    logps_ab: torch.Tensor, logps_ba: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(label, label_ab, label_ba)``: P(response_a better) from each order and their mean.

    ``logps_ab`` [..., 2] scores options (first, second) when the first option shows
    ``response_a``; ``logps_ba`` the same options after the swapped prompt, where the *second*
    option shows ``response_a``. Averaging the two cancels a preference for a position::

        label_ab = sigmoid(l_ab[0] - l_ab[1])
        label_ba = sigmoid(l_ba[1] - l_ba[0])
        label    = (label_ab + label_ba) / 2

    ``l_ab = [log 0.6, log 0.2] -> 0.75``; ``l_ba = [log 0.3, log 0.3] -> 0.5``; label 0.625.
    """
    label_ab = option_probability(logps_ab)
    label_ba = option_probability(logps_ba.flip(-1))
    return (label_ab + label_ba) / 2, label_ab, label_ba


def principle_average(labels: torch.Tensor) -> torch.Tensor:
    """Mean over the last dimension: ``M`` labels per pair [N, M], one per sampled principle,
    to one label [N] (the paper's ensemble over principles). ``[0.625, 0.825] -> 0.725``."""
    return labels.mean(dim=-1)


def clamp_labels(labels: torch.Tensor, clamp: tuple[float, float] | None) -> torch.Tensor:
    """Labels limited to ``[lo, hi]`` (unchanged when ``clamp`` is None). Bai et al. clamp
    chain-of-thought labels to [0.4, 0.6]: near-certain AI labels made the policy over-fit.
    ``[0.1, 0.5, 0.9]`` with ``(0.2, 0.8)`` -> ``[0.2, 0.5, 0.8]``."""
    if clamp is None:
        return labels
    lo, hi = check_clamp(clamp)
    return labels.clamp(min=lo, max=hi)


def check_clamp(clamp: Sequence[float]) -> tuple[float, float]:
    """``(lo, hi)`` with ``0 <= lo <= hi <= 1``, or a ValueError naming ``cai.feedback.clamp``."""
    try:
        lo, hi = (float(x) for x in clamp)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not 0 <= lo <= hi <= 1:
        raise ValueError(
            f"{CLAMP_KEY}={list(clamp)!r}: give two probabilities [lo, hi] with "
            "0 <= lo <= hi <= 1 (the paper clamps to [0.4, 0.6]), or null for no clamping"
        )
    return lo, hi


# ------------------------------------------------------------------------------ scoring


def option_token_ids(tokenizer: Any, options: Sequence[str]) -> list[list[int]]:
    """Each option's token ids, tokenised on its own (no special tokens). An empty option, or
    two that are equal as strings or as tokens, raises a ValueError naming
    ``cai.feedback.options``: the label would say nothing about the answers."""
    if len(options) != 2:
        raise ValueError(f"{OPTIONS_KEY}={list(options)!r}: give exactly two option strings")
    if any(not isinstance(o, str) or not o.strip() for o in options):
        raise ValueError(
            f"{OPTIONS_KEY}={list(options)!r}: an option is empty; give two non-empty "
            'continuations that name the options, e.g. ["(A)", "(B)"]'
        )
    if options[0] == options[1]:
        raise ValueError(
            f"{OPTIONS_KEY}={list(options)!r}: the two options are identical, so the label "
            'would always be 0.5; give two different strings, e.g. ["(A)", "(B)"]'
        )
    ids = [list(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in options]
    if not all(ids) or ids[0] == ids[1]:
        raise ValueError(
            f"{OPTIONS_KEY}={list(options)!r}: the feedback tokenizer encodes them to "
            f"{ids}; give two options with different, non-empty token sequences"
        )
    return ids


def option_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    options: Sequence[str],
    batch_size: int = 16,
) -> torch.Tensor:
    """[N, 2] float64: ``sum_t log p(option token_t | prompt, option tokens_<t)`` per prompt
    and option, the whole option sequence scored after the (already rendered) prompt.

    Prompts are tokenised as generation tokenises them (:func:`~valign_ray.cai.generate.
    encode_prompts`: no special tokens added, an empty prompt becomes BOS) and not cut; option
    ids are tokenised on their own and appended (no EOS: the option begins the answer), as
    training appends completion ids, so BPE cannot merge the prompt's last characters with the
    option's first and every prompt scores the same option tokens. Rows are
    right-padded with an attention mask, ``batch_size`` prompts (``2 x batch_size`` sequences)
    per forward, prompts of similar length together; the numbers do not depend on the batch
    size beyond float rounding (tested to 1e-5).
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    opt_ids = option_token_ids(tokenizer, options)
    prompt_ids = encode_prompts(tokenizer, prompts, max_prompt_tokens=sys.maxsize)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = torch.zeros((len(prompts), len(opt_ids)), dtype=torch.float64)
    order = sorted(range(len(prompts)), key=lambda i: (len(prompt_ids[i]), i))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = [Encoded(prompt_ids[i], o) for i in chunk for o in opt_ids]
        with torch.inference_mode():
            sums, _ = completion_logps(model, collate(enc, pad))
        out[chunk] = sums.double().cpu().view(len(chunk), len(opt_ids))
    return out


def _check_pairs(pairs: pl.DataFrame, who: str) -> None:
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"{who}: pairs lack column(s) {missing}; need {list(PAIR_COLUMNS)}")


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
    """``pairs`` (``pair_id``, ``question``, ``response_a``, ``response_b``) plus the feedback
    model's label (module docstring): ``label`` (P(response_a better), both orders and
    ``principles_per_pair`` principles averaged, then clamped), ``label_ab`` and ``label_ba``
    (P(response_a better) from the prompt showing it first / second, each averaged over the
    principles, unclamped), ``principle_ids`` (the M sampled ids) and ``template_hash``.

    Principle ``m`` of a pair is drawn with :func:`sample_principles` from
    ``record_seed(seed, f"feedback:{pair_id}:{m}")``, so it depends on nothing but the pair.
    """
    _check_pairs(pairs, "choice_labels")
    option_token_ids(tokenizer, options)  # fail on bad options before any rendering
    if clamp is not None:
        check_clamp(clamp)
    if principles_per_pair < 1:
        raise ValueError(f"principles_per_pair={principles_per_pair} must be >= 1")
    n, m = pairs.height, principles_per_pair
    seeds = [record_seed(seed, f"feedback:{pid}:{k}") for pid in pairs["pair_id"] for k in range(m)]
    ids = sample_principles(constitution.principles, principle_sampling, seeds)
    texts = {p.id: p.text for p in constitution.principles}
    prompts = []
    for row, (q, a, b) in enumerate(pairs.select(PAIR_COLUMNS[1:]).iter_rows()):
        for k in range(m):
            principle = texts[ids[row * m + k]]
            for first, second in ((a, b), (b, a)):
                prompts.append(
                    templates.render(
                        "comparison_prompt",
                        tokenizer,
                        principle=principle,
                        prompt=q,
                        response_a=first,
                        response_b=second,
                    )
                )
    logps = option_logprobs(model, tokenizer, prompts, options, batch_size).view(n, m, 2, 2)
    label, label_ab, label_ba = two_order_labels(logps[:, :, 0], logps[:, :, 1])
    final = clamp_labels(principle_average(label), clamp)
    return pairs.with_columns(
        pl.Series("label", final.tolist(), dtype=pl.Float64),
        pl.Series("label_ab", principle_average(label_ab).tolist(), dtype=pl.Float64),
        pl.Series("label_ba", principle_average(label_ba).tolist(), dtype=pl.Float64),
        pl.Series(
            "principle_ids", [ids[r * m : (r + 1) * m] for r in range(n)], dtype=pl.List(pl.String)
        ),
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
    max_length: int = 1024,
) -> pl.DataFrame:
    """``pairs`` plus ``reward_a``, ``reward_b`` (the beta-free implicit reward
    ``sum log pi(y|x) - sum log pi_ref(y|x)`` of each response after the question) and
    ``label = sigmoid(beta * (reward_a - reward_b))``.

    Scoring is the reference cache's (:func:`~valign_ray.train.reference.score_reference`): the
    question through ``format_prompt``, the response tokenised on its own with EOS appended,
    cut to ``max_length`` as training cuts (pass the DPO run's ``data.max_length``), so a reward
    is the quantity the DPO loss moved. ``policy is reference`` gives every label exactly 0.5.
    """
    import torch

    _check_pairs(pairs, "implicit_reward_labels")
    if isinstance(beta, bool) or not (isinstance(beta, int | float) and 0 < beta < math.inf):
        raise ValueError(f"beta={beta!r} must be a positive number (the DPO model's beta)")
    rows = pl.DataFrame(
        {"prompt": pairs["question"], "a": pairs["response_a"], "b": pairs["response_b"]}
    )
    cols = [("a", "logp_a"), ("b", "logp_b")]
    # batch_size rows at full length: the same memory bound as the choice labels' batches.
    kw = dict(max_length=max_length, batch_tokens=batch_size * max_length)
    pol = score_reference(policy, tokenizer, rows, cols, **kw)
    ref = score_reference(reference, tokenizer, rows, cols, **kw)
    reward_a = pol["logp_a"] - ref["logp_a"]
    reward_b = pol["logp_b"] - ref["logp_b"]
    diff = torch.tensor((reward_a - reward_b).to_list(), dtype=torch.float64)
    return pairs.with_columns(
        reward_a.alias("reward_a"),
        reward_b.alias("reward_b"),
        pl.Series("label", torch.sigmoid(beta * diff).tolist(), dtype=pl.Float64),
    )
