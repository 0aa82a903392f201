"""``valign design``: the quota and precision tables of a collection plan, or of a collected
sample (``--from RUN_DIR``), written to ``quotas.csv`` and ``precision.csv`` and printed.

The arithmetic is :mod:`valign_ray.survey.design`; this module picks the groups, builds the
tables and says what was assumed.

Expected design effect of a subgroup: the product, over the variables not fixed within it, of
the Kish design effects that weighting will bring. A quota variable's sample composition is
fixed by its quotas, so its factor comes from the allocation (sum pi^2 / q, 1 when quotas are
proportional, above 1 when a minimum over-samples a subgroup); any other variable answers at
its configured propensities, so its factor is (sum pi r)(sum pi / r).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from valign_ray.config import DesignConfig
from valign_ray.survey import design
from valign_ray.survey.margins import Margins, load_margins, select_margins

QUOTA_SCHEMA = {
    "variable": pl.Utf8,
    "category": pl.Utf8,
    "population_share": pl.Float64,
    "target": pl.Int64,
}
PRECISION_SCHEMA = {
    "group": pl.Utf8,
    "n": pl.Int64,
    "deff": pl.Float64,
    "margin_of_error": pl.Float64,
}


@dataclass(frozen=True)
class DesignPlan:
    quotas: pl.DataFrame  # variable, category, population_share, target (+ achieved: --from)
    precision: pl.DataFrame  # group, n, deff, margin_of_error
    n: int
    target_moe: float
    required_n: int | None = None  # the N giving target_moe in every subgroup (a plan only)
    notes: list[str] = field(default_factory=list)


def plan_design(cfg: DesignConfig, n: int) -> DesignPlan:
    """Quotas for ``n`` respondents and the margin of error each subgroup can expect."""
    margins = _margins(cfg)
    quotas, notes = quota_table(cfg, margins, n)
    precision = expected_precision(cfg, margins, quotas)
    required = required_n(cfg, margins)
    if cfg.propensity:
        fixed = [v for v in cfg.propensity if v in cfg.variables]
        if fixed:
            notes.append(
                f"propensities of quota variables {fixed} do not change the design effect: "
                "their quotas fix the sample's composition"
            )
    return DesignPlan(quotas, precision, n, cfg.target_moe, required, notes)


def observed_design(cfg: DesignConfig, run_dir: str | Path) -> DesignPlan:
    """The same tables from a run's collected respondents and their weights."""
    run_dir = Path(run_dir)
    wpath = run_dir / "weights" / "weights.parquet"
    rpath = run_dir / "survey" / "tables" / "respondents.parquet"
    for path in (wpath, rpath):
        if not path.exists():
            raise FileNotFoundError(f"--from {run_dir}: {path} not found (run `valign prepare`)")
    resp = pl.read_parquet(rpath).join(
        pl.read_parquet(wpath, columns=["respondent_id", "weight"]), on="respondent_id"
    )
    margins = _margins(cfg)
    missing = [v for v in (*cfg.variables, *cfg.interlock) if v not in resp.columns]
    if missing:
        raise ValueError(f"--from {run_dir}: respondents have no column(s) {missing}")
    quotas, notes = quota_table(cfg, margins, resp.height)
    achieved = [
        resp.filter(_cell_filter(v, c)).height
        for v, c in zip(quotas["variable"], quotas["category"], strict=True)
    ]
    quotas = quotas.with_columns(achieved=pl.Series(achieved, dtype=pl.Int64))
    rows = [("all", resp)] + [
        (_group_name(v, c), resp.filter(_cell_filter(v, c)))
        for v, c in zip(quotas["variable"], quotas["category"], strict=True)
    ]
    table = [(name, g.height, *_observed_deff_moe(g["weight"].to_numpy())) for name, g in rows]
    precision = pl.DataFrame(table, schema=PRECISION_SCHEMA, orient="row")
    notes.append(f"from {run_dir}: n, deff and margin of error of the collected, weighted sample")
    return DesignPlan(quotas, precision, resp.height, cfg.target_moe, None, notes)


def quota_table(cfg: DesignConfig, margins: Margins, n: int) -> tuple[pl.DataFrame, list[str]]:
    """Per quota variable, its categories' targets (with minimums) adding up to ``n``; then the
    interlocked cells', scaled by any over-sampling the minimums cause."""
    _check_minimums(cfg, margins)
    rows, notes, quota_share = [], [], {}
    for v in cfg.variables:
        cats = list(margins[v])
        shares = [margins[v][c] for c in cats]
        mins = [cfg.minimum.get(v, {}).get(c, 0) for c in cats]
        targets = design.allocate(shares, n, mins)
        quota_share[v] = {c: t / n if n else 0.0 for c, t in zip(cats, targets, strict=True)}
        rows += [(v, c, s, t) for c, s, t in zip(cats, shares, targets, strict=True)]
    if cfg.interlock:
        cells = design.interlocked_shares(margins, cfg.interlock, _joint(cfg))
        if cfg.joint is None:
            notes.append(
                f"interlocked cells of {' x '.join(cfg.interlock)} assume independence "
                "(population shares are products of the margins; give design.joint for real ones)"
            )
        scaled = {
            cell: share
            * math.prod(
                _oversampling(quota_share, margins, v, c)
                for v, c in zip(cfg.interlock, cell, strict=True)
            )
            for cell, share in cells.items()
        }
        targets = design.largest_remainder(list(scaled.values()), n)
        name = " x ".join(cfg.interlock)
        rows += [
            (name, " x ".join(cell), cells[cell], t)
            for cell, t in zip(scaled, targets, strict=True)
        ]
    return pl.DataFrame(rows, schema=QUOTA_SCHEMA, orient="row"), notes


def expected_precision(cfg: DesignConfig, margins: Margins, quotas: pl.DataFrame) -> pl.DataFrame:
    """One row per subgroup (all, each quota category, each interlocked cell): its quota n,
    expected design effect and margin of error at p = 0.5."""
    n = int(quotas.filter(pl.col("variable") == cfg.variables[0])["target"].sum())
    shares = _quota_shares(quotas, cfg.variables, n)
    rows = [("all", n, _expected_deff(cfg, margins, shares, fixed=()))]
    for r in quotas.filter(pl.col("population_share") > 0).iter_rows(named=True):
        fixed = tuple(r["variable"].split(" x "))
        rows.append(
            (
                _group_name(r["variable"], r["category"]),
                r["target"],
                _expected_deff(cfg, margins, shares, fixed),
            )
        )
    table = [(g, k, d, design.margin_of_error(k, d)) for g, k, d in rows]
    return pl.DataFrame(table, schema=PRECISION_SCHEMA, orient="row")


def required_n(cfg: DesignConfig, margins: Margins) -> int:
    """The smallest N whose quotas give every subgroup a margin of error <= ``target_moe``
    (doubling, then bisection: N only grows the subgroups)."""

    def worst(n: int) -> float:
        quotas, _ = quota_table(cfg, margins, n)
        moe = expected_precision(cfg, margins, quotas)["margin_of_error"]
        return float(moe.max())  # inf while some subgroup has no quota yet

    low = max(sum(sum(m.values()) for m in cfg.minimum.values()), 1)
    high = low
    while worst(high) > cfg.target_moe:
        low, high = high, high * 2
        if high > 10**9:
            raise ValueError(f"no N up to 1e9 gives margin of error {cfg.target_moe}")
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if worst(mid) > cfg.target_moe else (low, mid)
    return high if worst(low) > cfg.target_moe else low


def _expected_deff(cfg: DesignConfig, margins: Margins, shares: Margins, fixed: tuple) -> float:
    deff = 1.0
    for v in cfg.variables:
        if v in fixed:
            continue
        pi = [margins[v][c] for c in margins[v]]
        q = [shares[v][c] for c in margins[v]]
        if any(qk <= 0 < pk for qk, pk in zip(q, pi, strict=True)):
            return math.inf  # a category with people but no quota: no weight can stand in
        deff *= design.kish_deff_cells(
            pi, [qk / pk if pk else 1.0 for qk, pk in zip(q, pi, strict=True)]
        )
    free = {v: r for v, r in cfg.propensity.items() if v not in cfg.variables and v not in fixed}
    return deff * design.propensity_deff(margins, free)


def _quota_shares(quotas: pl.DataFrame, variables: tuple[str, ...], n: int) -> Margins:
    out: Margins = {}
    for r in quotas.filter(pl.col("variable").is_in(list(variables))).iter_rows(named=True):
        out.setdefault(r["variable"], {})[r["category"]] = r["target"] / n if n else 0.0
    return out


def _oversampling(quota_share: Margins, margins: Margins, v: str, c: str) -> float:
    if v not in quota_share or margins[v][c] == 0:
        return 1.0
    return quota_share[v][c] / margins[v][c]


def _observed_deff_moe(w: np.ndarray) -> tuple[float, float]:
    from valign_ray.survey.weighting import design_effect

    if len(w) == 0:
        return math.nan, math.inf
    deff = design_effect(w)
    return deff, design.margin_of_error(len(w), deff)


def _group_name(variable: str, category: str) -> str:
    return ", ".join(
        f"{v}={c}" for v, c in zip(variable.split(" x "), category.split(" x "), strict=True)
    )


def _cell_filter(variable: str, category: str) -> pl.Expr:
    parts = zip(variable.split(" x "), category.split(" x "), strict=True)
    return pl.all_horizontal(pl.col(v).cast(pl.Utf8) == c for v, c in parts)


def _margins(cfg: DesignConfig) -> Margins:
    names = list(dict.fromkeys([*cfg.variables, *cfg.interlock, *cfg.propensity]))
    return select_margins(load_margins(cfg.margins), names)


def _check_minimums(cfg: DesignConfig, margins: Margins) -> None:
    for v, mins in cfg.minimum.items():
        if v not in cfg.variables:
            raise ValueError(f"design.minimum: {v!r} is not a quota variable {list(cfg.variables)}")
        bad = [c for c in mins if c not in margins[v]]
        if bad:
            raise ValueError(
                f"design.minimum[{v!r}]: unknown categories {bad}; have {list(margins[v])}"
            )


def _joint(cfg: DesignConfig) -> dict[tuple[str, ...], float] | None:
    if cfg.joint is None:
        return None
    table = pl.read_csv(cfg.joint, infer_schema_length=0)
    expected = {*cfg.interlock, "share"}
    if set(table.columns) != expected:
        raise ValueError(f"{cfg.joint}: columns must be {sorted(expected)}, got {table.columns}")
    share = table["share"].cast(pl.Float64)
    keys = table.select(cfg.interlock).rows()
    if len(set(keys)) != len(keys):
        raise ValueError(f"{cfg.joint}: a cell is listed twice")
    return dict(zip(keys, share.to_list(), strict=True))


def write_design(plan: DesignPlan, out_dir: str | Path) -> list[Path]:
    """``quotas.csv`` and ``precision.csv`` under ``out_dir`` (written atomically)."""
    from valign_ray.run_layout import write_text_atomic

    out = Path(out_dir)
    paths = [out / "quotas.csv", out / "precision.csv"]
    for table, path in zip((plan.quotas, plan.precision), paths, strict=True):
        write_text_atomic(path, table.write_csv(float_precision=6))
    return paths


def format_design(plan: DesignPlan) -> str:
    """The quota table, then the margins of error, then the notes, for the terminal."""
    q, p = plan.quotas, plan.precision
    wv = max(8, *(len(s) for s in q["variable"]))
    wc = max(8, *(len(s) for s in q["category"]))
    extra = "achieved" in q.columns
    lines = [f"quotas for N = {plan.n}"]
    head = f"{'variable':<{wv}}  {'category':<{wc}}{'population':>11}{'target':>8}"
    lines.append(head + (f"{'achieved':>10}" if extra else ""))
    for r in q.iter_rows(named=True):
        line = f"{r['variable']:<{wv}}  {r['category']:<{wc}}{r['population_share']:>11.4f}"
        line += f"{r['target']:>8d}" + (f"{r['achieved']:>10d}" if extra else "")
        lines.append(line)
    wg = max(5, *(len(s) for s in p["group"]))
    lines += ["", "margin of error (95 %, weighted share at p = 0.5)"]
    lines.append(f"{'group':<{wg}}{'n':>8}{'deff':>8}{'moe':>8}")
    for r in p.iter_rows(named=True):
        moe = r["margin_of_error"]
        text = f"{moe:>8.4f}" if math.isfinite(moe) else f"{'-':>8}"
        lines.append(f"{r['group']:<{wg}}{r['n']:>8d}{r['deff']:>8.3f}{text}")
    finite = p.filter(pl.col("margin_of_error").is_finite())
    if finite.height:
        worst = finite.sort("margin_of_error", descending=True).row(0, named=True)
        lines.append(
            f"largest margin of error: {worst['margin_of_error']:.4f} in {worst['group']} "
            f"(n={worst['n']})"
        )
    if plan.required_n is not None:
        lines.append(
            f"N needed for margin of error <= {plan.target_moe:g} in every subgroup "
            f"(the smallest included): {plan.required_n}"
        )
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)
