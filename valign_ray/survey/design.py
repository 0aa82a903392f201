"""Collection design: quotas from population margins, and the precision a sample will give.

Plain functions of shares and counts (the ``valign design`` command writes and prints them):

- **Quotas.** Each variable's N respondents are split in proportion to its population shares,
  with a minimum for subgroups of interest, by largest-remainder rounding (floors first, then
  one each to the largest fractional parts), so every variable's targets add up to N exactly.
- **Design effect.** Weighting corrects unequal response: a cell that answers at relative
  propensity r_c is over-represented by r_c and weighted by 1/r_c. Kish's design effect of
  those weights over the achieved sample (n_c proportional to pi_c r_c) is
  ``deff = n sum(w^2) / (sum w)^2 = (sum_c pi_c r_c) (sum_c pi_c / r_c)``.
- **Margin of error** of a weighted share at p = 0.5 in a subgroup of n_g respondents:
  ``z sqrt(deff p (1 - p) / n_g)`` with z = 1.96 (95 %), and its inverse, the n_g a target
  margin needs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

Z_95 = 1.96  # two-sided 95 % normal quantile
P_WORST = 0.5  # the share whose estimate varies most: p (1 - p) is largest at 0.5


def largest_remainder(shares: Sequence[float], n: int) -> list[int]:
    """Integers proportional to ``shares`` that add up to ``n``: the floors of n * share, then
    one more each to the largest remainders (ties: the earlier category).

    Shares .5/.3/.2 of 7: 3.5, 2.1, 1.4 -> floors 3, 2, 1 (6), the one left goes to the largest
    remainder .5: 4, 2, 1.
    """
    s = np.asarray(shares, dtype=np.float64)
    if n < 0 or len(s) == 0 or (s < 0).any() or not s.sum() > 0:
        raise ValueError(f"need n >= 0 and non-negative shares with a positive sum: {shares}, {n}")
    exact = s / s.sum() * n
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    order = sorted(range(len(s)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:short]:
        counts[i] += 1
    return [int(c) for c in counts]


def allocate(shares: Sequence[float], n: int, minimum: Sequence[int] | None = None) -> list[int]:
    """Split ``n`` in proportion to ``shares`` with at least ``minimum[k]`` in category k.

    Categories whose proportional share falls below their minimum are fixed at it; the rest of
    n is shared among the others in proportion, again until none falls below its minimum; the
    free categories are then rounded by :func:`largest_remainder`.

    Raises:
        ValueError: the minimums add up to more than ``n``.
    """
    mins = [0] * len(shares) if minimum is None else list(minimum)
    if sum(mins) > n:
        raise ValueError(f"the minimums add up to {sum(mins)}, more than n={n}")
    fixed: set[int] = set()
    while True:
        free = [k for k in range(len(shares)) if k not in fixed]
        left = n - sum(mins[k] for k in fixed)
        total = sum(shares[k] for k in free)
        below = [k for k in free if total <= 0 or left * shares[k] / total < mins[k]]
        if not below:
            break
        fixed.update(below)
        if len(fixed) == len(shares):
            break
    counts = [mins[k] if k in fixed else 0 for k in range(len(shares))]
    free = [k for k in range(len(shares)) if k not in fixed]
    left = n - sum(counts)
    if free:
        for k, c in zip(free, largest_remainder([shares[k] for k in free], left), strict=True):
            counts[k] = c
    elif left:  # every category at its minimum and some n left: proportional on top
        counts = [m + c for m, c in zip(mins, largest_remainder(shares, left), strict=True)]
    return counts


def kish_deff_cells(population: Sequence[float], propensity: Sequence[float]) -> float:
    """Kish's design effect of weights 1/r_c on a sample where cell c (population share pi_c)
    answers at relative propensity r_c: ``(sum pi r)(sum pi / r)`` for shares summing to 1.

    Shares .5/.5, propensities 1 and .5: (.5 + .25)(.5 + 1) = 1.125; the same as a sample of
    2 + 1 respondents weighted 1, 1, 2: 3 (1 + 1 + 4) / 4^2 = 1.125.
    """
    pi = np.asarray(population, dtype=np.float64)
    r = np.asarray(propensity, dtype=np.float64)
    if pi.shape != r.shape or (r <= 0).any() or (pi < 0).any() or not pi.sum() > 0:
        raise ValueError("need matching shares >= 0 (positive sum) and propensities > 0")
    pi = pi / pi.sum()
    return float((pi * r).sum() * (pi / r).sum())


def propensity_deff(
    margins: Mapping[str, Mapping[str, float]],
    propensity: Mapping[str, Mapping[str, float]],
    *,
    exclude: str | None = None,
) -> float:
    """The design effect expected from response propensities per variable (unlisted categories
    answer at 1; the propensity of a person is the product over variables, cells assume
    independence). ``exclude``: a variable held fixed, as within one of its subgroups."""
    variables = [v for v in propensity if v != exclude]
    unknown = [v for v in variables if v not in margins]
    if unknown:
        raise ValueError(f"propensity: unknown variable(s) {unknown}; margins: {list(margins)}")
    deff = 1.0
    for v in variables:  # independent cells: the cell sums factorise per variable
        cats = list(margins[v])
        bad = [c for c in propensity[v] if c not in margins[v]]
        if bad:
            raise ValueError(f"propensity[{v!r}]: unknown categories {bad}; have {cats}")
        pi = [margins[v][c] for c in cats]
        deff *= kish_deff_cells(pi, [propensity[v].get(c, 1.0) for c in cats])
    return deff


def margin_of_error(n: float, deff: float = 1.0, p: float = P_WORST, z: float = Z_95) -> float:
    """Half-width of the 95 % interval of a weighted share: ``z sqrt(deff p (1 - p) / n)``.

    n = 100, deff 1: 1.96 * sqrt(.25 / 100) = 0.098; deff 2: 0.098 * sqrt 2 = 0.1386.
    """
    if n <= 0:
        return math.inf
    return z * math.sqrt(deff * p * (1 - p) / n)


def n_for_margin(moe: float, deff: float = 1.0, p: float = P_WORST, z: float = Z_95) -> int:
    """The smallest n with ``margin_of_error(n, deff) <= moe``: ceil(z^2 deff p (1 - p) / moe^2).

    moe .05, deff 1: 3.8416 * .25 / .0025 = 384.16 -> 385.
    """
    if not 0 < moe < 1:
        raise ValueError(f"target margin of error must be in (0, 1), got {moe}")
    exact = z * z * deff * p * (1 - p) / (moe * moe)
    return math.ceil(exact - 1e-9)  # a hair of float noise must not add a respondent


def interlocked_shares(
    margins: Mapping[str, Mapping[str, float]],
    variables: Sequence[str],
    joint: Mapping[tuple[str, ...], float] | None = None,
) -> dict[tuple[str, ...], float]:
    """Population share of every cell of ``variables``: from ``joint`` (cell -> share) when
    given, else the product of the margins (independence)."""
    cells = list(itertools.product(*(list(margins[v]) for v in variables)))
    if joint is None:
        return {
            c: math.prod(margins[v][k] for v, k in zip(variables, c, strict=True)) for c in cells
        }
    unknown = [c for c in joint if c not in set(cells)]
    if unknown:
        raise ValueError(f"joint table: cells {unknown[:5]} are not categories of {variables}")
    total = math.fsum(joint.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"joint table: shares sum to {total:.10g}, not 1")
    return {c: joint.get(c, 0.0) / total for c in cells}
