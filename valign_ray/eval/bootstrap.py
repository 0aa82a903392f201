"""Respondent-level (cluster) bootstrap intervals for the evaluation metrics.

One respondent's answers are not independent, so a replicate resamples respondents (all their
rows together), optionally re-raking the weights of each replicate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def bootstrap_ci(
    statistic: Callable[..., float],
    respondent_ids: Sequence[Any] | np.ndarray | int,
    *,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    reweight: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[float, float, float]:
    """Respondent-level (cluster) bootstrap with a percentile interval: (estimate, lo, hi).

    ``respondent_ids`` is either the number of rows n (each row its own respondent) or one id
    per row (rows of the same respondent are resampled together, since one person's answers
    are correlated). Each replicate draws as many respondents as there are, with replacement,
    and calls ``statistic(idx)`` with the row indices of the drawn respondents (a respondent
    drawn twice contributes its rows twice). The estimate is ``statistic(arange(n))``.

    Re-raking: weights raked on the full sample are not the weights a resampled sample would
    get, and ignoring that understates (or misstates) the variance. With ``reweight`` given,
    each replicate first calls ``reweight(drawn)``, where ``drawn`` holds the drawn respondents
    (their ids; positions 0..n-1 when an int was passed), duplicates included, and must return
    one weight per drawn respondent, aligned; rows inherit their respondent's weight and the
    statistic is called as ``statistic(idx, row_weights)``. The estimate then uses
    ``reweight`` on the full set of respondents (each once, in first-appearance order).

    The interval is the (alpha/2, 1 - alpha/2) quantiles of the replicate statistics.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if isinstance(respondent_ids, int | np.integer):
        if respondent_ids < 1:
            raise ValueError(f"respondent_ids: need at least one row, got n={respondent_ids}")
        unit_of_row = np.arange(int(respondent_ids))
        units = unit_of_row.copy()
    else:
        ids = np.asarray(respondent_ids)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"respondent_ids: expected a non-empty 1-D array, got {ids.shape}")
        uniq, first, unit_of_row = np.unique(ids, return_index=True, return_inverse=True)
        order = np.argsort(first)  # units in first-appearance order
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        unit_of_row, units = rank[unit_of_row], uniq[order]
    n_units = units.size
    rows_by_unit = np.argsort(unit_of_row, kind="stable")
    starts = np.searchsorted(unit_of_row[rows_by_unit], np.arange(n_units + 1))

    def call(drawn: np.ndarray) -> float:
        sizes = starts[drawn + 1] - starts[drawn]
        # Row k of the replicate is row (k - offset of its unit) of that unit, vectorised.
        offsets = np.repeat(np.cumsum(sizes) - sizes, sizes)
        idx = rows_by_unit[np.repeat(starts[drawn], sizes) + np.arange(sizes.sum()) - offsets]
        if reweight is None:
            value = statistic(idx)
        else:
            w_units = np.asarray(reweight(units[drawn]), dtype=np.float64)
            if w_units.shape != drawn.shape:
                raise ValueError(
                    f"reweight returned shape {w_units.shape}, "
                    f"expected {drawn.shape} (one weight per drawn respondent)"
                )
            value = statistic(idx, np.repeat(w_units, sizes))
        value = float(value)
        if not np.isfinite(value):
            raise ValueError(f"statistic returned a non-finite value {value}")
        return value

    estimate = call(np.arange(n_units))
    rng = np.random.default_rng(seed)
    reps = np.array([call(rng.integers(0, n_units, n_units)) for _ in range(n_boot)])
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return estimate, float(lo), float(hi)
