"""How well an aligned model represents the population and each subgroup, on held-out answers.

Everything here is a plain function of numpy arrays or polars frames; the model's side arrives
already scored (see :mod:`valign_ray.eval.preferences`). Distributions over ordered options
(Likert answers) are compared with the 1-Wasserstein distance, as in OpinionQA (Santurkar et al.
2023, "Whose opinions do language models reflect?"): representativeness A = 1 - W1 / (N - 1),
so 1 means identical and 0 means all mass at opposite ends. The functions here are point
estimates only. Intervals come from two places: the held-out preference accuracy's from a
respondent bootstrap with re-weighting per replicate (:mod:`valign_ray.eval.respondent_bootstrap`,
since one respondent's answers are not independent and weights raked on one sample are not a
replicate's), and the representation headline's from an *item* bootstrap
(:mod:`valign_ray.eval.representation`), over which items were asked.

A rewards hedging: a model indifferent between the options of every item already scores high
(about 0.875 on the Polis runs), so mean A is reported next to the skill score over that
indifferent model (:func:`skill_score`) and majority agreement (:func:`majority_agreement`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

_SUM_TOL = 1e-6


def _as_distribution(p: Any, name: str) -> np.ndarray:
    """A 1-D finite, non-negative vector summing to 1 (within 1e-6), else ValueError."""
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"{name}: expected a 1-D distribution over >= 2 options, got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name}: probabilities must be finite and >= 0, got {arr.tolist()}")
    if abs(arr.sum() - 1.0) > _SUM_TOL:
        raise ValueError(f"{name}: probabilities must sum to 1, got sum {arr.sum():.8g}")
    return arr


def _as_weights(weights: Any, n: int, name: str = "weights") -> np.ndarray:
    """Weights of length ``n`` (ones when None): finite, >= 0, positive total."""
    if weights is None:
        return np.ones(n, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{name}: weights must be finite and >= 0")
    if w.sum() <= 0:
        raise ValueError(f"{name}: weights sum to 0")
    return w


def _as_vector(x: Any, name: str, *, lo: float = -np.inf, hi: float = np.inf) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < lo) or np.any(arr > hi):
        raise ValueError(f"{name}: values must be finite and within [{lo}, {hi}]")
    return arr


def _as_positions(positions: Any, n: int) -> np.ndarray:
    """Option positions on the line: 1..n when None, else n finite, distinct-ended values."""
    if positions is None:
        return np.arange(1.0, n + 1.0)
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (n,) or not np.all(np.isfinite(pos)):
        raise ValueError(f"positions: expected {n} finite values, got {np.asarray(positions)}")
    if pos.max() == pos.min():
        raise ValueError(f"positions: the options need at least two positions, got {pos}")
    return pos


def wasserstein_ordinal(p: Any, q: Any, positions: Any = None) -> float:
    """1-Wasserstein distance between two distributions over N ordered options.

    On a line W1 = sum_k |F_p(x_k) - F_q(x_k)| (x_{k+1} - x_k), with the options sorted by
    position x and F the CDFs; it charges moving mass from "strongly agree" to "strongly
    disagree" more than to "agree", unlike total variation. ``positions`` (default 1..N, one
    apart) places option k at ``positions[k]``: OpinionQA puts a "neither / not sure" coded 3
    of a yes/no item at 1.5, between yes (1) and no (2), not after no.
    """
    a, b = _as_distribution(p, "p"), _as_distribution(q, "q")
    if a.shape != b.shape:
        raise ValueError(f"p and q have different numbers of options: {a.size} vs {b.size}")
    x = _as_positions(positions, a.size)
    order = np.argsort(x, kind="stable")
    gaps = np.diff(x[order])
    return float(np.sum(np.abs(np.cumsum(a[order]) - np.cumsum(b[order]))[:-1] * gaps))


def representativeness(p_model: Any, p_population: Any, positions: Any = None) -> float:
    """A = 1 - W1(p_model, p_population) / (x_max - x_min) for one item, in [0, 1].

    x_max - x_min (N - 1 with the default positions 1..N) is the largest possible W1 (all mass
    at opposite ends), so A is comparable across items with different numbers of options.
    With two options A = 1 - |p_model - p_pop|.
    """
    w1 = wasserstein_ordinal(p_model, p_population, positions)
    x = _as_positions(positions, np.asarray(p_model).size)
    return 1.0 - w1 / (x.max() - x.min())


def indifferent_representativeness(p_population: Any, positions: Any = None) -> float:
    """A of the model indifferent between the options (uniform 1/N on each) for one item."""
    n = np.asarray(p_population).size
    return representativeness(np.full(n, 1.0 / n), p_population, positions)


def skill_score(a_model: float, a_indifferent: float) -> float:
    """Skill over indifference: S = (A - A_0) / (1 - A_0), on item means.

    A is the model's mean representativeness over items and A_0 that of the model indifferent
    between the options of every item (:func:`indifferent_representativeness`, averaged over
    the same items). Like a forecast skill score, S = 1 is a perfect model, S = 0 one no
    better than hedging, S < 0 one worse than hedging; A alone cannot tell skill from
    indifference. ValueError when A_0 = 1 (the population is itself uniform: S is undefined).
    """
    if not (np.isfinite(a_model) and np.isfinite(a_indifferent)):
        raise ValueError(f"skill_score: non-finite A {a_model} or A_0 {a_indifferent}")
    if a_indifferent >= 1.0:
        raise ValueError("skill_score: the indifferent model already scores A_0 = 1")
    return float((a_model - a_indifferent) / (1.0 - a_indifferent))


def mean_representativeness(p_model: Any, p_population: Any) -> float:
    """Mean over items of :func:`representativeness`; both arrays are [items, N]."""
    pm, pp = np.asarray(p_model, dtype=np.float64), np.asarray(p_population, dtype=np.float64)
    if pm.ndim != 2 or pm.shape != pp.shape or pm.shape[0] == 0:
        raise ValueError(
            f"p_model and p_population must both be [items, N] with items >= 1, "
            f"got {pm.shape} and {pp.shape}"
        )
    return float(np.mean([representativeness(pm[i], pp[i]) for i in range(pm.shape[0])]))


def mean_skill_score(p_model: Any, p_population: Any) -> float:
    """:func:`skill_score` of mean A over items against the uniform model's mean A; [items, N]."""
    pp = np.asarray(p_population, dtype=np.float64)
    a0 = float(np.mean([indifferent_representativeness(row) for row in pp]))
    return skill_score(mean_representativeness(p_model, pp), a0)


def weighted_distribution(values: Any, weights: Any, n_options: int) -> np.ndarray:
    """Survey-weighted share of each option: share_k = sum(w_i [v_i = k]) / sum(w_i).

    ``values`` are 1-based Likert codes (1..n_options), as in the canonical answers table.
    """
    if n_options < 2:
        raise ValueError(f"n_options must be >= 2, got {n_options}")
    v = np.asarray(values)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values: expected a non-empty 1-D array, got shape {v.shape}")
    if not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"values: expected integer Likert codes, got dtype {v.dtype}")
    bad = (v < 1) | (v > n_options)
    if bad.any():
        raise ValueError(f"values: {v[bad][:5].tolist()} outside 1..{n_options}")
    w = _as_weights(weights, v.size)
    return np.bincount(v - 1, weights=w, minlength=n_options) / w.sum()


def group_representativeness(
    model_dist: Mapping[str, Any],
    answers: pl.DataFrame,
    respondents: pl.DataFrame,
    group_col: str | None,
    *,
    weight_col: str | None = "weight",
    positions: Mapping[str, Any] | None = None,
) -> pl.DataFrame:
    """Mean representativeness of the model per group of respondents, on Likert answers.

    For each group g and each statement item it answered, the group's survey-weighted answer
    distribution is compared with ``model_dist[item_id]``; A_g is the unweighted mean over those
    items (each item counts once, as in OpinionQA). ``group_col=None`` scores the whole sample as
    one group ``"all"``. Only ``kind == "likert"`` answers are used (ratings and pairwise answers
    are scored with :func:`preference_accuracy`). Every likert item needs a model distribution
    and every model distribution needs answers; otherwise ValueError.

    ``positions`` (item id -> one position per option, default 1..N) places the options on
    the line (:func:`wasserstein_ordinal`).

    Returns columns ``group`` (str), ``n_respondents``, ``n_items`` (i64),
    ``representativeness``, ``representativeness_indifferent`` (mean A of the uniform model),
    ``skill`` (:func:`skill_score` of the two; null where the group's answers are uniform on
    every item) and ``majority_agreement`` (equal weight per item) (f64), sorted by group.
    """
    joined = _likert_with_respondents(model_dist, answers, respondents, group_col, weight_col)
    dists = {k: _as_distribution(v, f"model_dist[{k!r}]") for k, v in model_dist.items()}
    positions = dict(positions or {})
    rows = []
    for (group,), frame in sorted(joined.group_by("_group"), key=lambda t: t[0][0]):
        try:
            scores = _scores_per_item(frame, dists, positions)
        except ValueError as err:
            raise ValueError(f"group {group!r}, {err}") from err
        a, a0, top = np.mean(scores, axis=0)
        rows.append(
            {
                "group": group,
                "n_respondents": frame["respondent_id"].n_unique(),
                "n_items": len(scores),
                "representativeness": float(a),
                "representativeness_indifferent": float(a0),
                "skill": skill_score(a, a0) if a0 < 1.0 else None,
                "majority_agreement": float(top),
            }
        )
    schema = {
        "group": pl.Utf8,
        "n_respondents": pl.Int64,
        "n_items": pl.Int64,
        "representativeness": pl.Float64,
        "representativeness_indifferent": pl.Float64,
        "skill": pl.Float64,
        "majority_agreement": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def _likert_with_respondents(
    model_dist: Mapping[str, Any],
    answers: pl.DataFrame,
    respondents: pl.DataFrame,
    group_col: str | None,
    weight_col: str | None,
) -> pl.DataFrame:
    """The likert answers with each respondent's ``_group`` and weight ``_w``, checked against
    the model's items (see :func:`group_representativeness`)."""
    for col in ("respondent_id", "item_id", "kind", "value"):
        if col not in answers.columns:
            raise ValueError(f"answers: missing column {col!r}")
    need = ["respondent_id"] + [c for c in (group_col, weight_col) if c is not None]
    for col in need:
        if col not in respondents.columns:
            raise ValueError(f"respondents: missing column {col!r}")
    if respondents["respondent_id"].is_duplicated().any():
        raise ValueError("respondents: duplicate respondent_id")
    resp = respondents.select(
        pl.col("respondent_id"),
        (pl.col(group_col).cast(pl.Utf8) if group_col else pl.lit("all")).alias("_group"),
        (pl.col(weight_col).cast(pl.Float64) if weight_col else pl.lit(1.0)).alias("_w"),
    )
    if resp["_group"].null_count():
        raise ValueError(f"respondents: null values in group column {group_col!r}")

    likert = answers.filter(pl.col("kind") == "likert")
    answered, modelled = set(likert["item_id"].to_list()), set(model_dist)
    if answered - modelled:
        raise ValueError(
            f"answers: likert items without a model distribution: {sorted(answered - modelled)[:5]}"
        )
    if modelled - answered:
        raise ValueError(
            f"model_dist: items with no likert answers: {sorted(modelled - answered)[:5]}"
        )
    joined = likert.join(resp, on="respondent_id", how="left")
    if joined["_w"].null_count():
        missing = joined.filter(pl.col("_w").is_null())["respondent_id"].unique().to_list()
        raise ValueError(f"answers: respondent_id not in respondents: {sorted(missing)[:5]}")
    if joined["value"].null_count():
        raise ValueError("answers: null value in a likert answer")
    return joined


def _scores_per_item(
    frame: pl.DataFrame, dists: Mapping[str, np.ndarray], positions: Mapping[str, Any]
) -> list[tuple[float, float, float]]:
    """Per item of one group's answers: (A of the model, A of the uniform model, majority
    agreement), the weighted answer distribution compared with the model's."""
    scores = []
    for (item,), sub in sorted(frame.group_by("item_id"), key=lambda t: t[0][0]):
        n_opt, pos = dists[item].size, positions.get(item)
        try:
            pop = weighted_distribution(sub["value"].to_numpy(), sub["_w"].to_numpy(), n_opt)
        except ValueError as err:
            raise ValueError(f"item {item!r}: {err}") from err
        scores.append(
            (
                representativeness(dists[item], pop, pos),
                indifferent_representativeness(pop, pos),
                majority_agreement(dists[item][None, :], pop[None, :]),
            )
        )
    return scores


def worst_group(table: pl.DataFrame, value_col: str = "representativeness") -> tuple[str, float]:
    """The group with the lowest score (first by group name on ties) and that score."""
    if table.height == 0 or value_col not in table.columns or "group" not in table.columns:
        raise ValueError(f"table: need a non-empty frame with columns 'group' and {value_col!r}")
    row = table.sort([value_col, "group"]).row(0, named=True)
    return str(row["group"]), float(row[value_col])


def spread(table: pl.DataFrame, value_col: str = "representativeness") -> float:
    """max - min of the per-group score: how unequally the model represents the groups."""
    if table.height == 0 or value_col not in table.columns:
        raise ValueError(f"table: need a non-empty frame with column {value_col!r}")
    return float(table[value_col].max() - table[value_col].min())


def preference_accuracy(p_model_prefers_desirable: Any, weights: Any = None) -> float:
    """Weighted share of answers where the model prefers what the respondent chose.

    acc = sum(w_i * c_i) / sum(w_i), c_i = 1 if p_i > 0.5, 0 if p_i < 0.5 and 1/2 if p_i = 0.5
    exactly: a tie is a coin flip, so an indifferent model scores 0.5, not 0 or 1.
    """
    p = _as_vector(p_model_prefers_desirable, "p_model_prefers_desirable", lo=0.0, hi=1.0)
    w = _as_weights(weights, p.size)
    correct = np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))
    return float(np.sum(w * correct) / w.sum())


def weighted_margin(margins: Any, weights: Any = None) -> float:
    """Weighted mean margin sum(w_i m_i) / sum(w_i), e.g. of (logp_chosen - logp_rejected)."""
    m = _as_vector(margins, "margins")
    w = _as_weights(weights, m.size)
    return float(np.sum(w * m) / w.sum())


def majority_agreement(p_model: Any, p_population: Any, weights: Any = None) -> float:
    """Weighted share of items where the model's favourite option is the population majority's.

    1-D inputs are P(option a) per item (treated as [p, 1 - p]); 2-D inputs are [items, N]
    distributions. Ties on either side are broken uniformly at random, in expectation: an item
    scores |M & P| / (|M| |P|), with M and P the sets of tied top options, so a model at exactly
    0.5 on a two-option item scores 1/2. ``weights`` weight items (default equal).
    """
    pm, pp = np.asarray(p_model, dtype=np.float64), np.asarray(p_population, dtype=np.float64)
    if pm.shape != pp.shape or pm.ndim not in (1, 2) or pm.shape[0] == 0:
        raise ValueError(
            f"p_model and p_population: need equal 1-D or 2-D shapes, got {pm.shape} and {pp.shape}"
        )
    if pm.ndim == 1:
        pm, pp = np.stack([pm, 1.0 - pm], 1), np.stack([pp, 1.0 - pp], 1)
    for name, arr in (("p_model", pm), ("p_population", pp)):
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name}: probabilities must be finite and >= 0")
    top_m = pm == pm.max(axis=1, keepdims=True)
    top_p = pp == pp.max(axis=1, keepdims=True)
    score = (top_m & top_p).sum(1) / (top_m.sum(1) * top_p.sum(1))
    w = _as_weights(weights, score.size)
    return float(np.sum(w * score) / w.sum())


def calibration(p_pred: Any, outcomes: Any, weights: Any = None, n_bins: int = 10) -> pl.DataFrame:
    """Reliability table: equal-width bins of predicted probability vs observed frequency.

    Bin b covers [b/n_bins, (b+1)/n_bins); p = 1 falls in the last bin. Per bin: ``n``,
    ``weight`` (sum of weights), ``mean_pred`` = sum(w p)/sum(w) and ``frac_pos`` =
    sum(w y)/sum(w); both are null in empty bins, which are kept so the table has n_bins rows.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p = _as_vector(p_pred, "p_pred", lo=0.0, hi=1.0)
    y = _as_vector(outcomes, "outcomes", lo=0.0, hi=1.0)
    if y.size != p.size:
        raise ValueError(f"outcomes: length {y.size} != p_pred length {p.size}")
    w = _as_weights(weights, p.size)
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    n = np.bincount(b, minlength=n_bins)
    wsum = np.bincount(b, weights=w, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(b, weights=w * p, minlength=n_bins) / wsum
        frac_pos = np.bincount(b, weights=w * y, minlength=n_bins) / wsum
    empty = wsum == 0
    return pl.DataFrame(
        {
            "bin": np.arange(n_bins, dtype=np.int64),
            "lo": np.arange(n_bins) / n_bins,
            "hi": np.arange(1, n_bins + 1) / n_bins,
            "n": n.astype(np.int64),
            "weight": wsum,
            "mean_pred": np.where(empty, np.nan, mean_pred),
            "frac_pos": np.where(empty, np.nan, frac_pos),
        }
    ).with_columns(pl.col("mean_pred", "frac_pos").fill_nan(None))


def expected_calibration_error(
    p_pred: Any, outcomes: Any, weights: Any = None, n_bins: int = 10
) -> float:
    """ECE = sum_b (W_b / W) * |mean_pred_b - frac_pos_b| over non-empty bins (weighted)."""
    table = calibration(p_pred, outcomes, weights, n_bins).drop_nulls("mean_pred")
    gap = (table["mean_pred"] - table["frac_pos"]).abs()
    return float((table["weight"] * gap).sum() / table["weight"].sum())
