"""Survey weights that make a sample look like the population: raking and post-stratification.

Both methods work on the *cell table*: respondents are grouped by the combination of their
weighting variables and only the per-cell totals are fitted (numpy), so the cost of a fit
depends on the number of occupied cells, not on the number of respondents; the per-cell
factor is then mapped back to the rows. Weights are normalised to mean 1 over respondents
(sum = n), the convention of ``valign_ray.survey.tables``.

Categories are compared as strings: a respondents' column is cast to ``str`` before it is
matched with the category names of the margins.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from valign_ray.survey.margins import SUM_TOLERANCE, Margins, check_margins
from valign_ray.survey.weighting_report import (
    WeightingDiagnostics,
    diagnostics_to_dict,
    format_diagnostics,
    margin_rows,
)

WEIGHT_COLUMN = "weight"
RENORMALISE_NOTE = 1e-10  # shares summing to 1 within this are renormalised silently
# the report names live in weighting_report; importers of this module keep finding them here
__all__ = [
    "WEIGHT_COLUMN",
    "WeightingDiagnostics",
    "WeightingResult",
    "design_effect",
    "diagnostics_to_dict",
    "format_diagnostics",
    "kish_ess",
    "poststratify",
    "rake_to_margins",
]


@dataclass(frozen=True)
class WeightingResult:
    """The respondents with a ``weight`` (f64, mean 1) column, and the run's diagnostics."""

    respondents: pl.DataFrame
    diagnostics: WeightingDiagnostics


def kish_ess(weights: Sequence[float] | np.ndarray | pl.Series) -> float:
    """Kish's effective sample size, ESS = (sum w)^2 / sum w^2.

    The number of equally weighted respondents that would give the same variance of a weighted
    mean; n for equal weights, smaller the more unequal the weights.
    """
    w = _check_weights(weights)
    return float(w.sum() ** 2 / np.square(w).sum())


def design_effect(weights: Sequence[float] | np.ndarray | pl.Series) -> float:
    """Kish's design effect from weighting, deff = n / ESS = n * sum w^2 / (sum w)^2 >= 1."""
    w = _check_weights(weights)
    return float(len(w) / kish_ess(w))


def rake_to_margins(
    respondents: pl.DataFrame,
    margins: Margins,
    *,
    base_weight: str | None = None,
    tol: float = 1e-10,
    max_iter: int = 1000,
    trim_max: float | None = None,
    trim_rounds: int = 10,
) -> WeightingResult:
    """Rake (iterative proportional fitting) the sample to population margins.

    Each sweep rescales the cell totals t_c so that, for each variable j in turn, the weighted
    share of every category k matches its target: t_c <- t_c * target_jk / sum_{c in k} t_c.
    Sweeps repeat until max |weighted share - target| <= ``tol``. A respondent's weight is
    base_i * (fitted t_c / initial t_c) * n / sum(base), so weights have mean 1.

    Trimming (``trim_max``): weights above ``trim_max`` x mean are capped (the others rescaled
    to keep mean 1), then raked again, up to ``trim_rounds`` times until cap and margins both
    hold. If they never both hold, the last weights are capped once more: the cap is then exact
    and the margins only approximate; ``diagnostics.cap_binding`` is True and
    ``max_margin_error`` says by how much they miss. Cap-then-rerake converges only linearly:
    if the cap binds with a small error, more ``trim_rounds`` (30-50) may meet both.

    Raises:
        ValueError: naming the variable and category, for margins that do not sum to 1, a
            missing column, null values, a respondent category without a target, a target
            category without respondents (or a zero target with respondents), bad base
            weights, and non-convergence within ``max_iter`` (with the largest margin error).
    """
    check_margins(margins)
    if not margins:
        raise ValueError("margins: no variables to rake to")
    if trim_max is not None and not trim_max > 1.0:
        raise ValueError(f"trim_max must be > 1 (weights have mean 1), got {trim_max}")
    variables = list(margins)
    categories = {v: list(margins[v]) for v in variables}
    base = _base_weights(respondents, base_weight)
    codes = _encode(respondents, categories)
    targets, notes = _normalised_targets(margins)
    cell, cell_codes = _cells(codes, [len(t) for t in targets])
    cell_count = np.bincount(cell)
    for v, code, target in zip(variables, cell_codes, targets, strict=True):
        counts = np.bincount(code, weights=cell_count, minlength=len(target)).astype(np.int64)
        for k, category in enumerate(categories[v]):
            if counts[k] == 0 and target[k] > 0:
                raise ValueError(
                    f"margin {v}={category} has target share {target[k]:.6g} but no respondents"
                )
            if counts[k] > 0 and target[k] == 0:
                raise ValueError(
                    f"margin {v}={category} has target share 0 but {counts[k]} respondents "
                    "(their weights would be 0); drop them or give a target"
                )
    n = len(base)
    cell_base = np.bincount(cell, weights=base, minlength=len(cell_codes[0]))
    fit = _Fit(variables, categories, cell_codes, targets, tol, max_iter)
    factor, iterations = fit.ipf(cell_base / cell_base.sum())
    w = base * factor[cell] * (n / base.sum())
    cap_binding = False
    if trim_max is not None:
        for _ in range(trim_rounds):
            if w.max() <= trim_max * (1 + 1e-12):
                w = np.minimum(w, trim_max)  # drop rounding noise above the cap
                break
            w = _cap(w, trim_max)
            cell_w = np.bincount(cell, weights=w, minlength=len(cell_codes[0]))
            factor, more = fit.ipf(cell_w / cell_w.sum())
            iterations += more
            w = w * factor[cell]
            w *= n / w.sum()
        else:
            cap_binding = bool(w.max() > trim_max * (1 + 1e-12))
            w = _cap(w, trim_max) if cap_binding else np.minimum(w, trim_max)
    rows, error = margin_rows(variables, categories, cell, cell_codes, base, w, targets)
    diag = _diagnostics("raking", w, rows, iterations, error <= tol, error, trim_max, cap_binding)
    diag = dataclasses.replace(diag, notes=notes)
    return WeightingResult(respondents.with_columns(pl.Series(WEIGHT_COLUMN, w)), diag)


def poststratify(
    respondents: pl.DataFrame, joint: pl.DataFrame, *, base_weight: str | None = None
) -> WeightingResult:
    """Weight each cell of a full joint target table to its population share.

    ``joint`` has one column per variable plus ``share`` (shares sum to 1). Within cell c the
    base weights are scaled by share_c * n / B_c, where B_c is the cell's base-weight total, so
    the weighted cell shares equal the targets exactly and the weights have mean 1.

    Raises:
        ValueError: naming the cell for duplicate or empty (no respondents) cells, respondents
            in a cell absent from the table, nulls, and shares that do not sum to 1.
    """
    if "share" not in joint.columns or joint.width < 2:
        raise ValueError(f"joint table needs variable columns and 'share', got {joint.columns}")
    if not joint["share"].dtype.is_numeric():
        raise ValueError(f"joint table column 'share' is {joint['share'].dtype}, not numeric")
    variables = [c for c in joint.columns if c != "share"]
    if joint.null_count().sum_horizontal().item() > 0:
        raise ValueError("joint table has null cells; every row needs every variable and share")
    table = joint.select(*(pl.col(v).cast(pl.Utf8) for v in variables), pl.col("share"))
    share = table["share"].cast(pl.Float64).to_numpy()
    if math.isnan(share.sum()) or abs(math.fsum(share) - 1.0) > SUM_TOLERANCE or share.min() < 0:
        raise ValueError(f"joint shares must be >= 0 and sum to 1, they sum to {share.sum():.10g}")
    categories = {v: table[v].unique(maintain_order=True).to_list() for v in variables}
    base = _base_weights(respondents, base_weight)
    codes = _encode(respondents, categories)
    sizes = [len(categories[v]) for v in variables]
    joint_codes = _encode(table, categories, what="joint table")
    joint_key = _key(joint_codes, sizes)
    if len(np.unique(joint_key)) != len(joint_key):
        raise ValueError("joint table has duplicate cells (same combination of categories twice)")
    key = _key(codes, sizes)
    order = np.argsort(joint_key)
    pos = order[np.clip(np.searchsorted(joint_key, key, sorter=order), 0, len(order) - 1)]
    missing = joint_key[pos] != key
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise ValueError(
            f"respondents in cell {_cell_name(respondents.row(i, named=True), variables)} "
            f"({int(missing.sum())} rows in cells absent from the joint table)"
        )
    count = np.bincount(pos, minlength=len(share))
    for j in np.flatnonzero((count == 0) != (share == 0)):
        raise ValueError(
            f"joint cell {_cell_name(table.row(int(j), named=True), variables)} has target "
            f"share {share[j]:.6g} but {count[j]} respondents (each needs the other)"
        )
    base_c = np.bincount(pos, weights=base, minlength=len(share))
    n = len(base)
    w = base * (share * n / np.where(base_c > 0, base_c, 1.0))[pos]
    cell_error = np.abs(np.bincount(pos, weights=w, minlength=len(share)) / w.sum() - share)
    targets = [
        np.bincount(c, weights=share, minlength=s) for c, s in zip(joint_codes, sizes, strict=True)
    ]
    rows, _ = margin_rows(variables, categories, pos, joint_codes, base, w, targets)
    error = float(cell_error.max())
    diag = _diagnostics("poststratification", w, rows, 0, True, error, None, False)
    return WeightingResult(respondents.with_columns(pl.Series(WEIGHT_COLUMN, w)), diag)


class _Fit:
    """IPF on cell totals; holds what stays fixed across the (re-)rakes of one call."""

    def __init__(self, variables, categories, cell_codes, targets, tol, max_iter):
        self.variables, self.categories = variables, categories
        self.cell_codes, self.targets = cell_codes, targets
        self.tol, self.max_iter = tol, max_iter

    def _worst(self, t: np.ndarray) -> tuple[float, int, int]:
        worst = (0.0, 0, 0)
        for j, (c, target) in enumerate(zip(self.cell_codes, self.targets, strict=True)):
            err = np.abs(np.bincount(c, weights=t, minlength=len(target)) - target)
            k = int(err.argmax())
            if err[k] > worst[0] or j == 0:
                worst = (float(err[k]), j, k)
        return worst

    def ipf(self, totals: np.ndarray) -> tuple[np.ndarray, int]:
        """Factors f_c with totals*f on the margins (totals sum to 1), and sweeps used."""
        factor = np.ones_like(totals)
        for it in range(self.max_iter + 1):
            fitted = totals * factor
            err, j, k = self._worst(fitted)
            if err <= self.tol:
                return factor, it
            if it == self.max_iter:
                break
            for c, target in zip(self.cell_codes, self.targets, strict=True):
                share = np.bincount(c, weights=totals * factor, minlength=len(target))
                # A target-0 category has no cells (checked above): its 0/0 is never used.
                ratio = np.divide(target, share, out=np.zeros_like(target), where=share > 0)
                factor *= ratio[c]
        v = self.variables[j]
        raise ValueError(
            f"raking did not converge in {self.max_iter} iterations: max margin error "
            f"{err:.3g} at {v}={self.categories[v][k]} (tol {self.tol:g}); the sample may "
            "lack the category combinations these margins need, or max_iter is too small"
        )


def _normalised_targets(margins: Margins) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """Each variable's target shares divided by their sum, and a note per variable whose sum
    was off by more than ``RENORMALISE_NOTE``: shares that ``check_margins`` accepts (within
    1e-6) but that raking to 1e-10 could never meet, since every variable would pull the total
    weight to a different value."""
    targets, notes = [], []
    for v, shares in margins.items():
        total = math.fsum(shares.values())
        if abs(total - 1.0) > RENORMALISE_NOTE:
            notes.append(f"margins of {v!r} sum to {total:.12g}; renormalised to 1")
        targets.append(np.array(list(shares.values()), dtype=np.float64) / total)
    return targets, tuple(notes)


def _check_weights(weights: Sequence[float] | np.ndarray | pl.Series) -> np.ndarray:
    w = np.asarray(weights.to_numpy() if isinstance(weights, pl.Series) else weights, float)
    if w.ndim != 1 or len(w) == 0:
        raise ValueError(f"weights must be a non-empty 1-d sequence, got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, >= 0 and not all 0")
    return w


def _base_weights(respondents: pl.DataFrame, column: str | None) -> np.ndarray:
    if respondents.height == 0:
        raise ValueError("respondents: no rows to weight")
    if WEIGHT_COLUMN in respondents.columns:
        raise ValueError(f"respondents already have a '{WEIGHT_COLUMN}' column; drop it first")
    if column is None:
        return np.ones(respondents.height)
    if column not in respondents.columns:
        raise ValueError(f"base weight column '{column}' not in respondents")
    if not respondents[column].dtype.is_numeric():
        raise ValueError(f"base weight column '{column}' is {respondents[column].dtype}")
    w = respondents[column].cast(pl.Float64).to_numpy()
    bad = ~np.isfinite(w) | (w <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"base weight column '{column}': {int(bad.sum())} null/non-finite/non-positive "
            f"values, first at row {i}: {w[i]}"
        )
    return w


def _encode(df: pl.DataFrame, categories: dict[str, list[str]], what: str = "respondents"):
    """Per variable, the category index of each row (int64), with every bad value named."""
    missing = [v for v in categories if v not in df.columns]
    if missing:
        raise ValueError(f"{what}: raking column(s) {missing} missing; columns: {df.columns}")
    codes = []
    for v, cats in categories.items():
        col = df[v].cast(pl.Utf8)
        if col.null_count():
            i = int(col.is_null().arg_true()[0])
            raise ValueError(f"{what}: column '{v}' has {col.null_count()} nulls, first at row {i}")
        code = col.cast(pl.Enum(cats), strict=False)  # unknown categories become null
        if code.null_count():
            unknown = col.filter(code.is_null()).unique(maintain_order=True).to_list()
            raise ValueError(
                f"{what}: variable '{v}' has categories {unknown[:10]} with no target "
                f"(targets: {cats})"
            )
        codes.append(code.to_physical().cast(pl.Int64).to_numpy())
    return codes


def _key(codes: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """Mixed-radix cell number: sum_j code_j * prod_{l<j} size_l."""
    if math.prod(sizes) >= 2**62:
        raise ValueError(f"too many category combinations ({math.prod(sizes):.3g}) to index")
    key = np.zeros(len(codes[0]), dtype=np.int64)
    stride = 1
    for code, size in zip(codes, sizes, strict=True):
        key += code * stride
        stride *= size
    return key


def _cells(codes: list[np.ndarray], sizes: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each row's occupied-cell index, and each variable's category code per occupied cell."""
    key = _key(codes, sizes)
    total = math.prod(sizes)
    if total <= max(4 * len(key), 1 << 20):  # dense table: O(n) instead of a sort
        cell_keys = np.flatnonzero(np.bincount(key, minlength=total))
        lookup = np.zeros(total, dtype=np.int64)
        lookup[cell_keys] = np.arange(len(cell_keys))
        cell = lookup[key]
    else:
        cell_keys, cell = np.unique(key, return_inverse=True)
    strides = np.cumprod([1, *sizes[:-1]])
    return cell, [(cell_keys // s) % size for s, size in zip(strides, sizes, strict=True)]


def _cell_name(row: dict, variables: list[str]) -> str:
    return "(" + ", ".join(f"{v}={row[v]}" for v in variables) + ")"


def _cap(w: np.ndarray, cap: float) -> np.ndarray:
    """Cap weights (mean 1) at ``cap`` and rescale the uncapped ones so the mean stays 1.

    Rescaling can lift other weights over the cap, so the capped set grows until stable.
    """
    n = len(w)
    capped = w > cap
    while True:
        scale = (n - cap * capped.sum()) / w[~capped].sum()
        over = ~capped & (w * scale > cap)
        if not over.any():
            return np.where(capped, cap, w * scale)
        capped |= over


def _diagnostics(method, w, rows, iterations, converged, error, trim_max, cap_binding):
    mean = float(w.mean())
    return WeightingDiagnostics(
        method=method,
        n=len(w),
        ess=kish_ess(w),
        deff=design_effect(w),
        weight_min=float(w.min()),
        weight_max=float(w.max()),
        weight_mean=mean,
        weight_cv=float(w.std() / mean),
        iterations=int(iterations),
        converged=bool(converged),
        max_margin_error=float(error),
        trim_max=trim_max,
        cap_binding=cap_binding,
        margins=rows,
    )
