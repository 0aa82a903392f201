"""The synthetic survey's sampling design: who is likely to answer, and where that bias is
made to flip a majority (points 4 and 6 of :mod:`valign_ray.survey.synthetic`).

Selection propensity is the product of ``oversample`` odds and ``response_rate`` over a
person's categories; contested items get thresholds between the population median and the
sample's expected (propensity-weighted) median. Plain functions of arrays and the config.
"""

from __future__ import annotations

import numpy as np

from valign_ray.config import SyntheticConfig

MIN_CONTESTED_SHIFT = 0.03  # expected sample-vs-population share shift to place contested items
Margins = dict[str, dict[str, float]]


def design_factors(spec: SyntheticConfig, shares: Margins) -> tuple[Margins, Margins]:
    """``(oversample, response_rate)`` checked against the margins' variables and categories;
    a config's null means the default bias: 65+ x3, South Island x2, men answer at 0.6."""
    oversample = spec.oversample
    if oversample is None:
        oversample = {"age_band": {"65+": 3.0}, "region_group": {"South Island": 2.0}}
    response_rate = {"gender": {"male": 0.6}} if spec.response_rate is None else spec.response_rate
    _check_factors(oversample, shares, "oversample", upper=None)
    _check_factors(response_rate, shares, "response_rate", upper=1.0)
    return oversample, response_rate


def _check_factors(scheme: Margins, shares: Margins, name: str, upper: float | None) -> None:
    where = f"survey.synthetic.{name}"
    for v, factors in scheme.items():
        if v not in shares:
            raise ValueError(f"{where}: unknown variable {v!r} (have {list(shares)})")
        for c, x in factors.items():
            if c not in shares[v]:
                raise ValueError(f"{where}[{v!r}]: unknown category {c!r} (have {list(shares[v])})")
            if not (x > 0 and (upper is None or x <= upper)):
                raise ValueError(f"{where}[{v!r}][{c!r}]={x} must be in (0, {upper}]")


def selection_propensity(
    shares: Margins, codes: dict[str, np.ndarray], schemes: tuple[Margins, ...]
) -> np.ndarray:
    """Per person, the product of every scheme's factor for their categories (1 if unlisted)."""
    n_pop = len(next(iter(codes.values())))
    propensity = np.ones(n_pop)
    for scheme in schemes:
        for v, factors in scheme.items():
            propensity *= np.array([factors.get(c, 1.0) for c in shares[v]])[codes[v]]
    return propensity


def place_thresholds(
    rng: np.random.Generator,
    spec: SyntheticConfig,
    latent: np.ndarray,
    item_dim: np.ndarray,
    propensity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``tau`` per item (:mod:`~valign_ray.survey.synthetic`, point 4), and which are contested.

    A contested item's ``tau`` lies a fraction (k + 1) / (c + 1) of the way from the
    population median of ``theta_d + L`` to its propensity-weighted median (the sample's
    expected median): the population majority is on one side, the expected sample majority on
    the other.
    """
    n_dims = int(item_dim.max()) + 1
    pop_median = np.median(latent, axis=0)
    w = propensity / propensity.sum()
    above = w @ (latent > pop_median)  # expected sample share above the population median
    shift = np.array([above[item_dim == d].mean() - 0.5 for d in range(n_dims)])
    per_dim = allocate_contested(shift, spec)
    tau, contested = np.empty(latent.shape[1]), np.zeros(latent.shape[1], dtype=bool)
    for d in range(n_dims):
        c = per_dim[d]
        grid = np.linspace(*spec.share_range, spec.items_per_dimension - c)
        # a share of exactly 1/2 has no majority to get right or wrong
        grid = np.where(np.abs(grid - 0.5) < 0.02, np.where(grid < 0.5, 0.48, 0.52), grid)
        order = np.flatnonzero(item_dim == d)[rng.permutation(spec.items_per_dimension)]
        for k, i in enumerate(order):
            if k >= c:
                tau[i] = np.quantile(latent[:, i], 1.0 - grid[k - c])
                continue
            by_value = np.argsort(latent[:, i])
            cum = np.cumsum(w[by_value])
            sample_median = latent[by_value[np.searchsorted(cum, 0.5)], i]
            tau[i] = pop_median[i] + (sample_median - pop_median[i]) * (k + 1) / (c + 1)
            contested[i] = True
    return tau, contested


def allocate_contested(shift: np.ndarray, spec: SyntheticConfig) -> np.ndarray:
    """Contested items per dimension: ``contested_fraction`` of all items, dealt round-robin
    to the dimensions whose expected share shift is at least ``MIN_CONTESTED_SHIFT`` (largest
    first, at most half of a dimension's items): where the bias barely moves the sample, a
    "contested" item would sit at a share of 1/2 and flip by chance, not by bias."""
    left = round(spec.contested_fraction * len(shift) * spec.items_per_dimension)
    cap = spec.items_per_dimension // 2
    eligible = [d for d in np.argsort(-np.abs(shift)) if abs(shift[d]) >= MIN_CONTESTED_SHIFT]
    counts = np.zeros(len(shift), dtype=int)
    while left > 0 and any(counts[d] < cap for d in eligible):
        for d in eligible:
            if left > 0 and counts[d] < cap:
                counts[d] += 1
                left -= 1
    return counts
