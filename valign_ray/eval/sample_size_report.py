"""The sample-size study's answer: the recommendation table and the plots against n.

Per bias level, :func:`smallest_n` finds the smallest n from which a criterion holds at that n
and at every larger n of the grid (a lucky small n followed by a failing larger one is not a
recommendation), judged on the mean over seeds:

- ``n_share``: the weighted worst-group share error is at most ``share_error_max``;
- ``n_model``: the weighted model's A(population) is at least the oracle's minus
  ``a_tolerance``.

None means no n of the grid meets it (or, for the model, that the layer has no runs or no
oracle for that bias). Plots: each measure against n on a log axis, a line per bias level and
arm (weighted solid, unweighted dashed) with a band from the lowest to the highest seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

DATA_MEASURES = {
    "share_mean_error": "mean |share error| (population)",
    "share_worst_group_error": "worst-group mean |share error|",
    "constitution_jaccard": "constitution Jaccard vs true consensus",
}
MODEL_MEASURES = {
    "a_population": "A(model, population)",
    "worst_group_a": "worst-group A",
    "majority_agreement": "majority agreement",
}
RECOMMENDATION_COLUMNS = (
    "bias",
    "n_share",
    "share_error_at_n",
    "n_model",
    "model_runs",
    "oracle_a",
)


def smallest_n(means: dict[int, float], ok: Any) -> int | None:
    """The smallest n with ``ok(mean)`` true there and at every larger n; None if none.

    >>> smallest_n({50: 0.09, 100: 0.04, 200: 0.06, 400: 0.03}, lambda e: e <= 0.05)
    400
    """
    best = None
    for n in sorted(means, reverse=True):
        if means[n] is None or not ok(means[n]):
            break
        best = n
    return best


def seed_means(table: pl.DataFrame, column: str, by: Sequence[str]) -> pl.DataFrame:
    """Mean, min and max of ``column`` over seeds per ``by`` (nulls left out; ``n_seeds``
    counts the seeds with a value)."""
    return (
        table.group_by(*by)
        .agg(
            pl.col(column).mean().alias("mean"),
            pl.col(column).min().alias("lo"),
            pl.col(column).max().alias("hi"),
            pl.col(column).count().alias("n_seeds"),
        )
        .sort(*by)
    )


def recommendation(
    data: pl.DataFrame,
    models: pl.DataFrame,
    *,
    share_error_max: float,
    a_tolerance: float,
) -> pl.DataFrame:
    """One row per bias level of ``data``: ``n_share`` and the mean error there, ``n_model``, the
    weighted model runs it rests on (``model_runs``) and the oracle's A (module docstring)."""
    share = seed_means(data, "weighted_share_worst_group_error", ("bias", "n"))
    oracle = models.filter(pl.col("arm") == "oracle")["a_population"] if models.height else None
    oracle_a = float(oracle.mean()) if oracle is not None and oracle.len() else None
    rows = []
    for bias in data["bias"].unique(maintain_order=True).sort().to_list():
        means = dict(share.filter(pl.col("bias") == bias).select("n", "mean").iter_rows())
        n_share = smallest_n(means, lambda e: e <= share_error_max)
        n_model, arm = None, models.clear()
        if models.height:
            arm = models.filter((pl.col("arm") == "weighted") & (pl.col("bias") == bias))
        if oracle_a is not None and arm.height:
            a = dict(seed_means(arm, "a_population", ("n",)).select("n", "mean").iter_rows())
            n_model = smallest_n(a, lambda v: v >= oracle_a - a_tolerance)
        rows.append(
            {
                "bias": bias,
                "n_share": n_share,
                "share_error_at_n": means.get(n_share) if n_share else None,
                "n_model": n_model,
                "model_runs": arm.height,
                "oracle_a": oracle_a,
            }
        )
    schema = {"bias": pl.String, "n_share": pl.Int64, "share_error_at_n": pl.Float64}
    schema |= {"n_model": pl.Int64, "model_runs": pl.Int64, "oracle_a": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def recommendation_markdown(rec: pl.DataFrame, share_error_max: float, a_tolerance: float) -> str:
    """The table of ``recommendation.md``."""

    def cell(x: Any, fmt: str = "{}") -> str:
        return "none in the grid" if x is None else fmt.format(x)

    lines = [
        "| sampling bias | n: weighted worst-group share error "
        f"<= {share_error_max:g} | error there | n: weighted model A within {a_tolerance:g} "
        "of the oracle | oracle A |",
        "|---|---|---|---|---|",
    ]
    for r in rec.iter_rows(named=True):
        oracle = "no oracle run" if r["oracle_a"] is None else f"{r['oracle_a']:.3f}"
        n_model = "n/a: no oracle run" if r["oracle_a"] is None else cell(r["n_model"])
        n_model = n_model if r["model_runs"] else "n/a: no model runs"
        lines.append(
            f"| {r['bias']} | {cell(r['n_share'])} | {cell(r['share_error_at_n'], '{:.3f}')} | "
            f"{n_model} | {oracle} |"
        )
    note = (
        "Smallest n from which the criterion holds at every larger n of the grid, on the mean "
        "over seeds (valign_ray/eval/sample_size_report.py)."
    )
    return "\n".join(["# How many respondents?", "", *lines, "", note]) + "\n"


def plot_against_n(
    table: pl.DataFrame, measures: dict[str, str], out_dir: Path, *, oracle: pl.DataFrame | None
) -> list[Path]:
    """One PNG per measure: mean over seeds against n (log axis), band = min..max over seeds,
    per bias level and arm; the oracle's value (model measures) as a horizontal line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for measure, label in measures.items():
        fig = Figure(figsize=(6, 3.8))
        ax = fig.subplots()
        for k, bias in enumerate(table["bias"].unique().sort().to_list()):
            for arm, style in (("weighted", "-"), ("unweighted", "--")):
                column = measure if "arm" in table.columns else f"{arm}_{measure}"
                rows = table.filter(pl.col("bias") == bias)
                if "arm" in table.columns:
                    rows = rows.filter(pl.col("arm") == arm)
                if rows.is_empty() or rows[column].count() == 0:
                    continue
                s = seed_means(rows, column, ("n",))
                color = f"C{k}"
                ax.plot(s["n"], s["mean"], style, marker="o", color=color, label=f"{bias} {arm}")
                ax.fill_between(s["n"], s["lo"], s["hi"], color=color, alpha=0.15)
        if oracle is not None and oracle.height:
            ax.axhline(float(oracle[measure].mean()), color="k", lw=1, ls=":", label="oracle")
        ax.set_xscale("log")
        ax.set(xlabel="respondents n (log)", ylabel=label, title=label)
        ax.legend(fontsize=7)
        FigureCanvasAgg(fig)
        path = out_dir / f"{measure}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        paths.append(path)
    return paths


def write_report(study: Any, data: pl.DataFrame, models: pl.DataFrame, exp: Path) -> pl.DataFrame:
    """``recommendation.csv`` / ``.md`` and ``plots/*.png`` in ``exp``; returns the table."""
    opts = {"share_error_max": study.share_error_max, "a_tolerance": study.a_tolerance}
    rec = recommendation(data, models, **opts)
    rec.write_csv(exp / "recommendation.csv", float_precision=4)
    text = recommendation_markdown(rec, **opts)
    (exp / "recommendation.md").write_text(text)
    plot_against_n(data, DATA_MEASURES, exp / "plots", oracle=None)
    if models.height:
        trained = models.filter(pl.col("arm") != "oracle")
        oracle = models.filter(pl.col("arm") == "oracle")
        plot_against_n(trained, MODEL_MEASURES, exp / "plots", oracle=oracle)
    print(text, flush=True)
    return rec
