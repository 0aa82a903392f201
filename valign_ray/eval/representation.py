"""Does the aligned model represent the *population* (and each subgroup), judged against truth?

On the synthetic survey (:mod:`valign_ray.survey.synthetic`) the population's preferences are
known, so the headline question "does training with survey weights make the model represent the
population better?" is checked against that truth rather than against another sample. Per
prompt item the model's P(prefers the pole-positive response) is compared with the population
share preferring it:

- A(model, population) = mean over items of 1 - |p_model - p_pop|, the two-option case of
  OpinionQA's 1 - W1 / (N - 1) (:func:`metrics.representativeness`); the same per demographic
  group, the worst group and the spread (max - min);
- majority agreement: share of items where the model prefers what the population majority
  prefers, overall and on the *flipped* items (biased-sample majority != population majority),
  the items where an unweighted sample points the wrong way.

Uncertainty: the population truth is exact (a finite simulated population, no sampling error),
and the model's preferences are deterministic, so the only randomness left is *which items*
were asked. Intervals are an *item bootstrap*: percentiles over resampled items
(:func:`valign_ray.eval.bootstrap.bootstrap_ci`, each item its own unit), and model comparisons
use paired item bootstraps over the same items. They are conditional on the one biased sample,
its weights and the one training seed; the respondent bootstrap with re-raking is the held-out
evaluation's (:mod:`valign_ray.eval.respondent_bootstrap`).
torch is used only through :mod:`valign_ray.eval.preferences`. What runs the headline experiment
around these metrics (variants, the oracle survey, scoring saved models, the results table) is
in :mod:`valign_ray.eval.representation_runs`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import polars as pl

from valign_ray.eval.bootstrap import bootstrap_ci
from valign_ray.eval.metrics import majority_agreement, representativeness, skill_score
from valign_ray.eval.preferences import (
    implicit_reward_preference,
    pair_preference,
    score_completions,
)

UNCERTAINTY_NOTE = (
    "population truth is known exactly; intervals are an item bootstrap (percentiles over "
    "resampled prompt items: the uncertainty is over which items were asked, conditional on "
    "one sample, its weights and one training seed)"
)


def pole_pairs(items: pl.DataFrame, candidates: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """Per prompt item: ``item_id``, ``prompt``, ``pos_id``/``neg_id`` and their texts.

    The pole-positive response is the ``response_id`` of the item's ``kind == "pairwise"``,
    ``variable == "all"`` truth row; the other candidate is the negative one. Every prompt item
    needs exactly two candidates and one such truth row, else ValueError naming the item.
    """
    prompts = items.filter(pl.col("kind") == "prompt").select("item_id", "text")
    if prompts.height == 0:
        raise ValueError("items: no rows with kind == 'prompt'")
    pos = truth.filter((pl.col("kind") == "pairwise") & (pl.col("variable") == "all"))
    if pos["item_id"].is_duplicated().any():
        dup = pos.filter(pl.col("item_id").is_duplicated())["item_id"].unique().sort()
        raise ValueError(f"truth: several pairwise 'all' rows for items {dup.to_list()[:5]}")
    pos_of = dict(zip(pos["item_id"].to_list(), pos["response_id"].to_list(), strict=True))
    texts: dict[str, dict[str, str]] = {}
    for item_id, response_id, text in candidates.select(
        "item_id", "response_id", "text"
    ).iter_rows():
        texts.setdefault(item_id, {})[response_id] = text
    rows = []
    for item_id, prompt in prompts.iter_rows():
        cands = texts.get(item_id, {})
        if len(cands) != 2:
            raise ValueError(f"candidates: item {item_id!r} has {len(cands)} responses, need 2")
        if item_id not in pos_of:
            raise ValueError(f"truth: no pairwise row with variable 'all' for item {item_id!r}")
        pos_id = pos_of[item_id]
        if pos_id not in cands:
            raise ValueError(
                f"truth: item {item_id!r}: pole-positive {pos_id!r} is not one of {sorted(cands)}"
            )
        (neg_id,) = set(cands) - {pos_id}
        rows.append((item_id, prompt, pos_id, neg_id, cands[pos_id], cands[neg_id]))
    schema = ["item_id", "prompt", "pos_id", "neg_id", "pos_text", "neg_text"]
    return pl.DataFrame(rows, schema=schema, orient="row")


def model_pair_preferences(
    model: Any,
    tokenizer: Any,
    items: pl.DataFrame,
    candidates: pl.DataFrame,
    truth: pl.DataFrame,
    *,
    reference: Any = None,
    beta: float | None = None,
    max_length: int = 96,
    batch_size: int = 64,
) -> pl.DataFrame:
    """The model's P(prefers the pole-positive response) per prompt item.

    ``p_logprob`` = sigmoid(logp_mean(pos) - logp_mean(neg)) with length-normalised log-probs
    (:func:`preferences.pair_preference`): what the model itself favours. With a ``reference``
    model and ``beta``, also ``p_implicit`` = sigmoid(beta * ((pi_pos - ref_pos) - (pi_neg -
    ref_neg))) on summed log-probs (:func:`preferences.implicit_reward_preference`): what
    alignment changed, the quantity DPO fits (soft-label DPO's optimum is p_implicit = share).
    Columns: ``item_id``, ``pos_id``, ``neg_id``, ``logp_mean_pos``/``_neg``,
    ``logp_sum_pos``/``_neg``, ``p_logprob`` [, ``ref_logp_sum_pos``/``_neg``, ``p_implicit``].
    """
    if (reference is None) != (beta is None):
        raise ValueError("pass both reference and beta for the implicit-reward form, or neither")
    pairs = pole_pairs(items, candidates, truth)
    prompts = pairs["prompt"].to_list() * 2
    completions = pairs["pos_text"].to_list() + pairs["neg_text"].to_list()
    n = pairs.height

    def scored(m: Any) -> pl.DataFrame:
        return score_completions(
            m, tokenizer, prompts, completions, max_length=max_length, batch_size=batch_size
        )

    s = scored(model)
    out = pairs.select("item_id", "pos_id", "neg_id").with_columns(
        logp_mean_pos=s["logp_mean"][:n],
        logp_mean_neg=s["logp_mean"][n:],
        logp_sum_pos=s["logp_sum"][:n],
        logp_sum_neg=s["logp_sum"][n:],
    )
    out = out.with_columns(
        p_logprob=pl.Series(
            pair_preference(out["logp_mean_pos"].to_numpy(), out["logp_mean_neg"].to_numpy())
        )
    )
    if reference is None:
        return out
    r = scored(reference)
    out = out.with_columns(ref_logp_sum_pos=r["logp_sum"][:n], ref_logp_sum_neg=r["logp_sum"][n:])
    p_implicit = implicit_reward_preference(
        out["logp_sum_pos"].to_numpy(),
        out["ref_logp_sum_pos"].to_numpy(),
        out["logp_sum_neg"].to_numpy(),
        out["ref_logp_sum_neg"].to_numpy(),
        beta,
    )
    return out.with_columns(p_implicit=pl.Series(p_implicit))


def _aligned(
    p_model: pl.DataFrame, truth: pl.DataFrame, variables: Sequence[str], column: str
) -> tuple[list[str], np.ndarray, np.ndarray, list[str], np.ndarray, list[str]]:
    """Item ids, p_model, population shares, group labels, group shares [groups, items], and
    the groups left out because nobody in the population belongs to them (NaN shares)."""
    for col in ("item_id", column):
        if col not in p_model.columns:
            raise ValueError(f"p_model: missing column {col!r}")
    if p_model["item_id"].is_duplicated().any():
        raise ValueError("p_model: duplicate item_id")
    pairwise = truth.filter(pl.col("kind") == "pairwise")
    known = set(pairwise["variable"].unique().to_list()) - {"all"}
    for v in variables:
        if v not in known:
            raise ValueError(f"truth: no pairwise rows for variable {v!r} (have {sorted(known)})")
    items = sorted(p_model["item_id"].to_list())
    p = p_model.sort("item_id")[column].to_numpy().astype(np.float64)
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p_model: column {column!r} must hold probabilities in [0, 1]")

    def shares(frame: pl.DataFrame, what: str) -> np.ndarray:
        got = dict(zip(frame["item_id"].to_list(), frame["share"].to_list(), strict=True))
        missing = [i for i in items if i not in got]
        if missing or len(got) != len(items):
            extra = sorted(set(got) - set(items))
            raise ValueError(f"truth ({what}): items missing {missing[:5]}, not scored {extra[:5]}")
        return np.array([got[i] for i in items], dtype=np.float64)

    q = shares(pairwise.filter(pl.col("variable") == "all"), "variable 'all'")
    if not np.all(np.isfinite(q)):
        raise ValueError("truth: NaN population share in a pairwise 'all' row")
    labels, rows, empty = [], [], []
    groups = pairwise.filter(pl.col("variable").is_in(list(variables)))
    for (v, c), frame in sorted(groups.group_by("variable", "category"), key=lambda t: t[0]):
        g = shares(frame, f"{v}={c}")
        if np.all(np.isnan(g)):
            empty.append(f"{v}={c}")
            continue
        if np.any(np.isnan(g)):
            raise ValueError(f"truth: group {v}={c} has NaN shares on some items only")
        labels.append(f"{v}={c}")
        rows.append(g)
    group_q = np.array(rows).reshape(len(rows), len(items))
    return items, p, q, labels, group_q, empty


def _interval(estimate_lo_hi: tuple[float, float, float]) -> dict[str, float]:
    est, lo, hi = estimate_lo_hi
    return {"estimate": est, "lo": lo, "hi": hi}


def _item_scores(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-item A = 1 - W1 / (N - 1) of [p, 1 - p] vs [q, 1 - q]; A over items is their mean,
    so bootstrapping items resamples these scores."""
    return np.array([representativeness([a, 1 - a], [b, 1 - b]) for a, b in zip(p, q, strict=True)])


def representation_table(
    p_model: pl.DataFrame,
    truth: pl.DataFrame,
    *,
    variables: Sequence[str],
    flipped: Collection[str] = (),
    column: str = "p_logprob",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """How well the model's pairwise preferences represent the population and its groups.

    ``p_model``: ``item_id`` and ``column`` (P(prefers the pole-positive response));
    ``truth``: the synthetic population truth (``kind == "pairwise"`` rows are used, with
    ``variable == "all"`` for the population and the groups of ``variables``).
    Returns ``population`` (mean A), ``population_indifferent`` (mean A of the model at
    p = 0.5 on every item), ``skill`` (:func:`metrics.skill_score` of the two, on item means),
    each entry of ``groups`` (``group`` = "variable=category"),
    ``worst_group`` and ``spread`` (max - min over groups of A_g), ``majority_agreement``
    (equal weight per item), ``majority_agreement_margin_weighted`` (items weighted by the
    majority's size |2 q - 1|, so near-even splits count little) and
    ``majority_agreement_flipped`` (on the ``flipped`` items; None without any), each as
    ``{estimate, lo, hi}``, plus ``n_items``, ``n_flipped`` and ``groups_without_people``.
    Same ``seed`` -> the same item resamples for every statistic (and every model).
    """
    items, p, q, labels, group_q, empty = _aligned(p_model, truth, variables, column)
    unknown = sorted(set(flipped) - set(items))
    if unknown:
        raise ValueError(f"flipped: items not in p_model: {unknown[:5]}")
    if not labels:
        raise ValueError(f"truth: no populated groups for variables {list(variables)}")
    boot = {"n_boot": n_boot, "alpha": alpha, "seed": seed}
    n = len(items)

    a_pop = _item_scores(p, q)
    a_group = np.array([_item_scores(p, g) for g in group_q])  # [groups, items]

    def by_group(idx: np.ndarray) -> np.ndarray:
        return a_group[:, idx].mean(axis=1)

    def ci(statistic: Any, size: int = n) -> dict[str, float]:
        return _interval(bootstrap_ci(statistic, size, **boot))

    groups = [
        {"group": label, **ci(lambda idx, k=k: a_group[k, idx].mean())}
        for k, label in enumerate(labels)
    ]
    worst = int(np.argmin([g["estimate"] for g in groups]))
    margin = np.abs(2 * q - 1)
    a_ind = _item_scores(np.full(n, 0.5), q)  # the model indifferent on every item
    out: dict[str, Any] = {
        "n_items": n,
        "population": ci(lambda idx: a_pop[idx].mean()),
        "population_indifferent": ci(lambda idx: a_ind[idx].mean()),
        "skill": ci(lambda idx: skill_score(a_pop[idx].mean(), a_ind[idx].mean())),
        "groups": groups,
        "worst_group": {"group": labels[worst], **ci(lambda idx: by_group(idx).min())},
        "spread": ci(lambda idx: np.ptp(by_group(idx))),
        "majority_agreement": ci(lambda idx: majority_agreement(p[idx], q[idx])),
        "majority_agreement_margin_weighted": ci(
            lambda idx: majority_agreement(p[idx], q[idx], margin[idx] + 1e-12)
        ),
        "n_flipped": len(set(flipped)),
        "majority_agreement_flipped": None,
        "groups_without_people": empty,
        "uncertainty": UNCERTAINTY_NOTE,
    }
    if flipped:
        f = np.array([i in set(flipped) for i in items])
        pf, qf = p[f], q[f]
        out["majority_agreement_flipped"] = ci(
            lambda idx: majority_agreement(pf[idx], qf[idx]), int(f.sum())
        )
    return out


def paired_difference(
    p_a: pl.DataFrame,
    p_b: pl.DataFrame,
    truth: pl.DataFrame,
    *,
    column: str = "p_logprob",
    flipped: Collection[str] = (),
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Model a minus model b on the same items: A(population) and majority agreement (overall
    and on ``flipped``), each ``{estimate, lo, hi}`` from one paired bootstrap over items.

    Paired, because both models face the same items: item difficulty cancels, and the
    interval of the difference is much narrower than the two separate intervals suggest.
    """
    items, pa, q, *_ = _aligned(p_a, truth, [], column)
    items_b, pb, *_ = _aligned(p_b, truth, [], column)
    if items != items_b:
        raise ValueError("p_a and p_b score different items")
    if set(flipped) - set(items):
        raise ValueError(f"flipped: items not scored: {sorted(set(flipped) - set(items))[:5]}")
    boot = {"n_boot": n_boot, "alpha": alpha, "seed": seed}
    n = len(items)
    diff = _item_scores(pa, q) - _item_scores(pb, q)
    out: dict[str, Any] = {
        "population": _interval(bootstrap_ci(lambda i: diff[i].mean(), n, **boot)),
        "majority_agreement": _interval(
            bootstrap_ci(
                lambda i: majority_agreement(pa[i], q[i]) - majority_agreement(pb[i], q[i]),
                n,
                **boot,
            )
        ),
        "majority_agreement_flipped": None,
    }
    if flipped:
        f = np.array([i in set(flipped) for i in items])
        fa, fb, fq = pa[f], pb[f], q[f]
        out["majority_agreement_flipped"] = _interval(
            bootstrap_ci(
                lambda i: majority_agreement(fa[i], fq[i]) - majority_agreement(fb[i], fq[i]),
                int(f.sum()),
                **boot,
            )
        )
    return out


def data_preferences(
    answers: pl.DataFrame, pairs: pl.DataFrame, weights: pl.DataFrame | None = None
) -> pl.DataFrame:
    """What a training set says: per item, the weighted share of its comparisons preferring the
    pole-positive response, as ``item_id``, ``p_data``, ``n`` (comparisons).

    Comparisons are pairwise answers plus rating pairs where a respondent rated the two
    responses differently (ties carry no preference), the pairs DPO trains on. ``weights``
    (``respondent_id``, ``weight``; None: all 1) are the run's survey weights. Scored with
    :func:`representation_table` (``column="p_data"``), it is the ceiling of a model that
    learns its data's majorities exactly: how far the *data* already points the wrong way.
    """
    pos = pairs.select("item_id", "pos_id")
    rated = (
        answers.filter(pl.col("kind") == "rating")
        .join(pos, on="item_id")
        .group_by("respondent_id", "item_id")
        .agg(
            pl.col("value").filter(pl.col("response_id") == pl.col("pos_id")).first().alias("a"),
            pl.col("value").filter(pl.col("response_id") != pl.col("pos_id")).first().alias("b"),
        )
        .filter(pl.col("a") != pl.col("b"))
        .select("respondent_id", "item_id", (pl.col("a") > pl.col("b")).alias("prefers_pos"))
    )
    chosen = answers.filter(pl.col("kind") == "pairwise").join(pos, on="item_id")
    both = pl.concat(
        [
            rated,
            chosen.select(
                "respondent_id",
                "item_id",
                (pl.col("response_id") == pl.col("pos_id")).alias("prefers_pos"),
            ),
        ]
    )
    if weights is None:
        both = both.with_columns(pl.lit(1.0).alias("weight"))
    else:
        both = both.join(weights.select("respondent_id", "weight"), on="respondent_id", how="left")
        if both["weight"].null_count():
            raise ValueError("weights: respondents of the answers have no weight")
    return (
        both.group_by("item_id")
        .agg(
            (
                (pl.col("prefers_pos").cast(pl.Float64) * pl.col("weight")).sum()
                / pl.col("weight").sum()
            ).alias("p_data"),
            pl.len().cast(pl.Int64).alias("n"),
        )
        .sort("item_id")
    )
