"""Respondent bootstrap with re-raking for the held-out preference accuracy.

The point estimate is the weighted share of held-out pairs where the model prefers what the
respondent chose. Its interval comes from resampling the *held-out respondents* (all their
pairs together, since one person's answers are correlated) with replacement, re-weighting each
replicate by the run's own scheme (raking to the same margins with the same cap policy, or
opinion-group shares; fixed weights when weighting is off), and recomputing the accuracy of
every model from the per-pair scores the eval stage already has: no model is run again. All
models share the same replicates, so their intervals are comparable.

This is conditional on the trained model (one training seed) and on which respondents were
held out; it is not the item bootstrap of :mod:`valign_ray.eval.representation`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import polars as pl

from valign_ray.config import WeightingConfig

Reweigh = Callable[[pl.DataFrame], np.ndarray]
MAX_FAILED_SHARE = 0.1  # more replicates than this that cannot be re-weighted: no interval


def replicate_weigher(wcfg: WeightingConfig) -> Reweigh | None:
    """How a replicate's drawn respondents (duplicates included) get their weights: the run's
    ``weighting`` scheme applied to them alone; None when weighting is off (weights stay 1)."""
    if not wcfg.enabled:
        return None

    def base(resp: pl.DataFrame) -> str | None:
        return "base_weight" if "base_weight" in resp.columns else None

    if wcfg.scheme == "opinion_groups":
        from valign_ray.survey.opinion_weights import opinion_group_weights

        def by_group(resp: pl.DataFrame) -> np.ndarray:
            resp = resp.drop("weight", strict=False)  # the run's weights, replaced here
            out = opinion_group_weights(resp, shares=wcfg.group_shares, base_weight=base(resp))
            return out["weight"].to_numpy()

        return by_group
    from valign_ray.survey.cap_policy import rake_as_configured
    from valign_ray.survey.margins import balanced_margins, load_margins, select_margins

    margins = select_margins(load_margins(wcfg.margins), list(wcfg.variables))
    if wcfg.scheme == "balanced":
        margins = balanced_margins(margins)

    def rake(resp: pl.DataFrame) -> np.ndarray:
        result = rake_as_configured(
            resp.drop("weight", strict=False),  # the run's weights, replaced here
            margins,
            wcfg,
            base_weight=base(resp),
        )
        return result.respondents["weight"].to_numpy()

    return rake


def respondent_bootstrap(
    correct: Mapping[str, np.ndarray],
    respondent_ids: np.ndarray,
    respondents: pl.DataFrame,
    *,
    reweigh: Reweigh | None,
    n_boot: int,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Percentile intervals of the weighted accuracy sum(w c) / sum(w) of each model.

    ``correct``: model -> per-pair credit c (1, 0, or 1/2 for a tie), aligned with
    ``respondent_ids`` (one per pair). ``respondents``: one row per respondent with
    ``respondent_id``, ``weight`` (used as is when ``reweigh`` is None) and whatever
    ``reweigh`` needs. A replicate draws as many respondents as there are, with replacement;
    ``reweigh`` gets their rows (a respondent drawn twice appears twice) and returns one
    weight each; a respondent's pairs carry its weight. A replicate that cannot be re-weighted
    (say, no drawn respondent in a raked category) is skipped and counted in ``failed``; more
    than ``MAX_FAILED_SHARE`` of them and ``lo``/``hi`` are None, with the reason in ``note``.

    Returns ``{"models": {model: (lo, hi)}, "n_boot", "failed", "alpha", "seed", "note"}``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    ids = np.asarray(respondent_ids)
    units = respondents["respondent_id"].to_numpy()
    unit_of = {u: k for k, u in enumerate(units)}
    if len(unit_of) != units.size:
        raise ValueError("respondents: duplicate respondent_id")
    missing = sorted({str(i) for i in ids if i not in unit_of})
    if missing:
        raise ValueError(f"pairs of respondents not in respondents: {missing[:5]}")
    row_unit = np.array([unit_of[i] for i in ids], dtype=np.int64)
    pairs_of = np.bincount(row_unit, minlength=units.size)  # pairs per respondent
    credit = {m: np.bincount(row_unit, weights=c, minlength=units.size) for m, c in correct.items()}
    fixed = respondents["weight"].to_numpy().astype(np.float64) if reweigh is None else None
    rng = np.random.default_rng(seed)
    reps: dict[str, list[float]] = {m: [] for m in correct}
    failed = 0
    for _ in range(n_boot):
        drawn = rng.integers(0, units.size, units.size)
        if reweigh is None:
            w = fixed[drawn]
        else:
            try:
                w = np.asarray(reweigh(respondents[drawn]), dtype=np.float64)
            except ValueError:
                failed += 1
                continue
        total = float(np.sum(w * pairs_of[drawn]))
        if total <= 0:
            failed += 1
            continue
        for m, c in credit.items():
            reps[m].append(float(np.sum(w * c[drawn])) / total)
    out: dict[str, Any] = {"n_boot": n_boot, "failed": failed, "alpha": alpha, "seed": seed}
    if failed > MAX_FAILED_SHARE * n_boot:
        out["note"] = f"{failed} of {n_boot} replicates could not be re-weighted: no interval"
        out["models"] = dict.fromkeys(correct, (None, None))
        return out
    q = [alpha / 2, 1 - alpha / 2]
    out["models"] = {m: tuple(float(x) for x in np.quantile(r, q)) for m, r in reps.items()}
    return out


def pair_credit(p: np.ndarray) -> np.ndarray:
    """1 where the model prefers the chosen response (p > 1/2), 0 below, 1/2 on a tie, as in
    :func:`valign_ray.eval.metrics.preference_accuracy`."""
    return np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))


def add_intervals(
    models: dict[str, dict[str, Any]],
    scored: Mapping[str, pl.DataFrame],
    respondents: pl.DataFrame,
    wcfg: WeightingConfig,
    *,
    n_boot: int,
    seed: int,
) -> None:
    """Put ``preference_accuracy_lo`` / ``_hi`` and a ``bootstrap`` record into each model's
    entry of ``models``, from its :func:`~valign_ray.eval.heldout.score_pairs` frame
    (``respondent_id`` and ``p``); the pairs' respondents are the ones resampled."""
    frames = list(scored.values())
    ids = frames[0]["respondent_id"].to_numpy()
    for frame in frames[1:]:
        if not np.array_equal(frame["respondent_id"].to_numpy(), ids):
            raise ValueError("models were scored on different held-out pairs")
    held = respondents.filter(pl.col("respondent_id").is_in(np.unique(ids).tolist()))
    boot = respondent_bootstrap(
        {m: pair_credit(f["p"].to_numpy()) for m, f in scored.items()},
        ids,
        held,
        reweigh=replicate_weigher(wcfg),
        n_boot=n_boot,
        seed=seed,
    )
    scheme = "none" if not wcfg.enabled else wcfg.scheme
    record = {k: boot[k] for k in ("n_boot", "failed", "alpha", "seed")}
    record |= {"kind": "respondent", "reweighted": scheme, "n_respondents": held.height}
    if "note" in boot:
        record["note"] = boot["note"]
    for m, (lo, hi) in boot["models"].items():
        models[m]["preference_accuracy_lo"] = lo
        models[m]["preference_accuracy_hi"] = hi
        models[m]["bootstrap"] = dict(record)
