"""What a weighting run reports: the diagnostics record, its margin table, and its text and
JSON forms.

Kept apart from the fitting in :mod:`valign_ray.survey.weighting` (which re-exports these
names) so that module reads as the two weighting methods alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True)
class WeightingDiagnostics:
    """What a weighting run did, without respondent-level data.

    ``margins`` has one row per (variable, category): ``n`` respondents, ``sample_share``
    (unweighted), ``base_share`` (weighted by the base weights, i.e. before), ``weighted_share``
    (after) and ``target``. ``max_margin_error`` is max |weighted share - target| over those rows
    (for post-stratification: over the joint cells). ``cap_binding`` is True when trimming could
    not meet the cap and the margins both: the cap then holds and the margins only approximately.
    """

    method: str
    n: int
    ess: float
    deff: float
    weight_min: float
    weight_max: float
    weight_mean: float
    weight_cv: float
    iterations: int
    converged: bool
    max_margin_error: float
    trim_max: float | None
    cap_binding: bool
    margins: pl.DataFrame
    notes: tuple[str, ...] = ()  # what was adjusted on the way (renormalised margins, cap raised)


def margin_rows(
    variables: list[str],
    categories: dict[str, list[str]],
    cell: np.ndarray,
    cell_codes: list[np.ndarray],
    base: np.ndarray,
    w: np.ndarray,
    targets: list[np.ndarray],
) -> tuple[pl.DataFrame, float]:
    """The per-(variable, category) diagnostics table, from cell totals, and its max error.

    ``cell`` is each respondent's cell index, ``cell_codes[j]`` variable j's category code per
    cell, ``base`` and ``w`` the weights before and after, ``targets[j]`` variable j's target
    shares. Shares are totals over a category's cells divided by the grand total; the error is
    max |weighted share - target| over all rows.
    """
    size = len(cell_codes[0])
    per_cell = [np.bincount(cell, weights=x, minlength=size) for x in (None, base, w)]
    rows, error = [], 0.0
    for v, code, target in zip(variables, cell_codes, targets, strict=True):
        n_k, b_k, w_k = (np.bincount(code, weights=x, minlength=len(target)) for x in per_cell)
        n_k, b_k, w_k = n_k.astype(np.int64), b_k / b_k.sum(), w_k / w_k.sum()
        error = max(error, float(np.abs(w_k - target).max()))
        for k, category in enumerate(categories[v]):
            rows.append((v, category, int(n_k[k]), n_k[k] / len(cell), b_k[k], w_k[k], target[k]))
    shares = ("sample_share", "base_share", "weighted_share", "target")
    schema = {"variable": pl.Utf8, "category": pl.Utf8, "n": pl.Int64} | dict.fromkeys(
        shares, pl.Float64
    )
    return pl.DataFrame(rows, schema=schema, orient="row"), error


def margin_misses(diag: WeightingDiagnostics, above: float) -> dict[str, float]:
    """``{"variable=category": weighted share - target}`` for the margins missed by more than
    ``above``, largest miss first."""
    misses = {
        f"{r['variable']}={r['category']}": float(r["weighted_share"] - r["target"])
        for r in diag.margins.iter_rows(named=True)
        if abs(r["weighted_share"] - r["target"]) > above
    }
    return dict(sorted(misses.items(), key=lambda kv: -abs(kv[1])))


def format_diagnostics(diag: WeightingDiagnostics) -> str:
    """A fixed-width, terminal-readable summary: weight statistics then one row per margin."""
    trim = ""
    if diag.trim_max is not None:
        state = "binding: margins approximate" if diag.cap_binding else "met with margins"
        trim = f"  trim cap {diag.trim_max:g} x mean ({state})"
    lines = [
        f"weighting by {diag.method}: n={diag.n}  ESS={diag.ess:.1f}  deff={diag.deff:.3f}",
        f"weights: min {diag.weight_min:.4f}  max {diag.weight_max:.4f}  "
        f"mean {diag.weight_mean:.4f}  cv {diag.weight_cv:.4f}",
        f"iterations {diag.iterations}  converged {'yes' if diag.converged else 'NO'}  "
        f"max margin error {diag.max_margin_error:.2e}{trim}",
    ]
    lines += [f"note: {note}" for note in diag.notes]
    table = diag.margins
    wv = max(8, *(len(s) for s in table["variable"]))
    wc = max(8, *(len(s) for s in table["category"]))
    head = ("n", "sample", "base", "weighted", "target")
    lines.append(f"{'variable':<{wv}}  {'category':<{wc}}" + "".join(f"{h:>10}" for h in head))
    for r in table.iter_rows(named=True):
        nums = (r["sample_share"], r["base_share"], r["weighted_share"], r["target"])
        lines.append(
            f"{r['variable']:<{wv}}  {r['category']:<{wc}}{r['n']:>10d}"
            + "".join(f"{x:>10.4f}" for x in nums)
        )
    return "\n".join(lines)


def diagnostics_to_dict(diag: WeightingDiagnostics) -> dict:
    """JSON-serialisable diagnostics (plain floats/ints/str; margins as a list of row dicts)."""
    out = {
        k: getattr(diag, k)
        for k in ("method", "n", "iterations", "converged", "trim_max", "cap_binding")
    }
    for k in ("ess", "deff", "weight_min", "weight_max", "weight_mean", "weight_cv"):
        out[k] = float(getattr(diag, k))
    out["max_margin_error"] = float(diag.max_margin_error)
    out["notes"] = list(diag.notes)
    out["margins"] = diag.margins.to_dicts()
    return out
