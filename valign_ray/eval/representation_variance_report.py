"""The variance experiment's results page: the interval arithmetic, the table, the plots and
what the numbers support (:mod:`valign_ray.eval.representation_variance` makes the runs).

Three kinds of uncertainty, kept apart and named in the page:

- **runs** (both sources): the mean over a variant's runs (every sample draw x train seed)
  with a 95% Student t-interval over the run-level values, ``mean +- t(0.975, n-1) sd / sqrt(n)``.
  It treats the runs as independent; runs sharing a sample draw are not, so next to it
- **draws**: the t-interval over the per-draw means (``D - 1`` degrees of freedom), which is
  valid when the draws are the independent units (its width includes the train-seed noise
  through each draw's mean), and the two spreads apart: the SD between draw means and the
  within-draw SD between train seeds (root mean of the within-draw variances);
- **item bootstrap**: percentiles over resampled items of one run (the first draw and train
  seed), conditional on that run: which items were asked, nothing else.

The respondent bootstrap with re-raking (each run's ``eval.*.preference_accuracy_lo``/``_hi``,
:mod:`valign_ray.eval.respondent_bootstrap`) is another conditional interval, of a different
metric; the page quotes it for the same run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ALPHA = 0.05
# (a, b, the metric the question is about): a - b on runs matched by draw and train seed
COMPARISONS = (
    ("dpo_hard", "dpo_unweighted", "population"),
    ("dpo_oracle", "dpo_hard", "population"),
    ("dpo_soft", "dpo_hard", "population"),
    ("dpo_balanced", "dpo_hard", "worst_group"),
    ("dpo_balanced", "dpo_hard", "population"),
)
TRADEOFF = {
    "dpo_unweighted": "none",
    "dpo_hard": "population",
    "dpo_balanced": "group-balanced",
    "dpo_oracle": "oracle (simple random sample)",
}
LABELS = {
    "population": "A(population)",
    "worst_group": "worst-group A",
    "skill": "skill",
    "majority_agreement": "majority agreement",
}


def t_interval(values: Any, alpha: float = ALPHA) -> tuple[float, float, float]:
    """(mean, lo, hi): ``mean +- t(1 - alpha/2, n - 1) * sd / sqrt(n)`` with the sample SD
    (ddof 1); lo = hi = NaN for a single value."""
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf(1 - alpha / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def variance_components(draws: Any, values: Any) -> dict[str, float]:
    """Per-draw means and the spreads: ``sd_draws`` (SD of the draw means, ddof 1),
    ``sd_seeds`` (root of the mean within-draw variance over train seeds, ddof 1 in each draw),
    and the t-interval over draw means (``draw_mean``, ``draw_lo``, ``draw_hi``). NaN where a
    spread needs two values it does not have."""
    frame = pl.DataFrame({"draw": list(draws), "value": list(values)}, strict=False)
    per = frame.group_by("draw").agg(
        pl.col("value").mean().alias("mean"), pl.col("value").var(ddof=1).alias("var")
    )
    means = per["mean"].to_numpy()
    variances = per["var"].drop_nulls().drop_nans().to_numpy()
    mean, lo, hi = t_interval(means)
    return {
        "sd_draws": float(means.std(ddof=1)) if means.size > 1 else math.nan,
        "sd_seeds": float(math.sqrt(variances.mean())) if variances.size else math.nan,
        "draw_mean": mean,
        "draw_lo": lo,
        "draw_hi": hi,
    }


def summarise(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per (variant, items, metric): ``n_runs``, ``mean``, ``run_lo``/``run_hi`` (the
    t-interval over runs), the :func:`variance_components`, and ``item_est``/``item_lo``/
    ``item_hi`` (the item bootstrap of the variant's first run: lowest draw, lowest seed)."""
    out = []
    keys = ("variant", "items", "metric")
    for key, g in rows.group_by(keys, maintain_order=True):
        g = g.sort("draw", "train_seed", nulls_last=True)
        mean, lo, hi = t_interval(g["estimate"].to_numpy())
        draws = g["draw"].fill_null(-1).to_list()
        ref = g.row(0, named=True)
        out.append(
            dict(zip(keys, key, strict=True))
            | {"n_runs": g.height, "mean": mean, "run_lo": lo, "run_hi": hi}
            | variance_components(draws, g["estimate"].to_list())
            | {"item_run": ref["run"], "item_est": ref["estimate"]}
            | {"item_lo": ref["lo"], "item_hi": ref["hi"]}
        )  # fmt: skip
    return pl.DataFrame(out, infer_schema_length=None)


def paired_differences(rows: pl.DataFrame) -> list[dict[str, Any]]:
    """For each :data:`COMPARISONS` entry whose variants both ran, per item set: a - b on runs
    matched by (draw, train seed), with the t-interval over the paired differences."""
    out = []
    for a, b, metric in COMPARISONS:
        for items in ("seen", "unseen"):

            def pick(v: str, items: str = items, metric: str = metric) -> pl.DataFrame:
                return rows.filter(
                    (pl.col("variant") == v) & (pl.col("items") == items)
                    & (pl.col("metric") == metric)
                ).select("draw", "train_seed", "estimate")  # fmt: skip

            both = pick(a).join(pick(b), on=["draw", "train_seed"], suffix="_b")
            if both.height == 0:
                continue
            diff = (both["estimate"] - both["estimate_b"]).to_numpy()
            mean, lo, hi = t_interval(diff)
            out.append(
                {"a": a, "b": b, "metric": metric, "items": items, "n_pairs": both.height}
                | {"mean": mean, "lo": lo, "hi": hi}
            )
    return out


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _cell(mean: float, lo: float, hi: float) -> str:
    return f"{_fmt(mean)} [{_fmt(lo)}, {_fmt(hi)}]"


def headline_markdown(summary: pl.DataFrame) -> str:
    """variant x (metric, seen / unseen): "mean [t-interval over runs]"."""
    cols = [(m, i) for m in LABELS for i in ("seen", "unseen")]
    head = "| variant | runs | " + " | ".join(f"{LABELS[m]}, {i}" for m, i in cols) + " |"
    lines = [head, "|---|---|" + "---|" * len(cols)]
    for variant in summary["variant"].unique(maintain_order=True):
        s = summary.filter(pl.col("variant") == variant)
        cells = []
        for m, i in cols:
            r = s.filter((pl.col("metric") == m) & (pl.col("items") == i)).row(0, named=True)
            cells.append(_cell(r["mean"], r["run_lo"], r["run_hi"]))
        n = s["n_runs"][0]
        lines.append(f"| {variant} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def variance_markdown(summary: pl.DataFrame, metric: str) -> str:
    """Per variant and item set: the three intervals and the two spreads of one metric."""
    head = (
        "| variant | items | mean | 95% t, runs (both sources) | 95% t, draw means | "
        "SD between draws | SD between train seeds | item bootstrap, one run (run) |"
    )
    lines = [f"#### {LABELS[metric]}", "", head, "|---|---|---|---|---|---|---|---|"]
    for r in (
        summary.filter(pl.col("metric") == metric)
        .sort("items", maintain_order=True)
        .rows(named=True)
    ):
        lines.append(
            f"| {r['variant']} | {r['items']} | {_fmt(r['mean'])} | "
            f"[{_fmt(r['run_lo'])}, {_fmt(r['run_hi'])}] | "
            f"[{_fmt(r['draw_lo'])}, {_fmt(r['draw_hi'])}] | {_fmt(r['sd_draws'])} | "
            f"{_fmt(r['sd_seeds'])} | {_cell(r['item_est'], r['item_lo'], r['item_hi'])} "
            f"({r['item_run']}) |"
        )
    return "\n".join(lines)


def tradeoff_markdown(summary: pl.DataFrame) -> str:
    """Population A next to worst-group A per weighting (unseen and seen items)."""
    head = "| weighting | variant | items | A(population) | worst-group A |"
    lines = [head, "|---|---|---|---|---|"]
    for variant, weighting in TRADEOFF.items():
        for items in ("seen", "unseen"):
            s = summary.filter((pl.col("variant") == variant) & (pl.col("items") == items))
            if s.height == 0:
                continue
            pop, worst = (
                s.filter(pl.col("metric") == m).row(0, named=True)
                for m in ("population", "worst_group")
            )
            lines.append(
                f"| {weighting} | {variant} | {items} | "
                f"{_cell(pop['mean'], pop['run_lo'], pop['run_hi'])} | "
                f"{_cell(worst['mean'], worst['run_lo'], worst['run_hi'])} |"
            )
    return "\n".join(lines)


def evidence_text(summary: pl.DataFrame, diffs: list[dict[str, Any]]) -> str:
    """What the evidence supports, written from the numbers: a comparison is called a
    difference only when its paired t-interval excludes 0."""
    lines = []
    for d in diffs:
        what = f"{d['a']} - {d['b']}, {LABELS[d['metric']]} on {d['items']} items"
        num = f"{d['mean']:+.3f} [{_fmt(d['lo'])}, {_fmt(d['hi'])}] over {d['n_pairs']} runs"
        if math.isnan(d["lo"]):
            verdict = "one run only: no interval, no claim"
        elif d["lo"] > 0:
            verdict = f"supports {d['a']} higher"
        elif d["hi"] < 0:
            verdict = f"supports {d['b']} higher"
        else:
            verdict = "the interval includes 0: no difference shown"
        lines.append(f"- {what}: {num}; {verdict}.")
    gaps = []
    for variant in summary["variant"].unique(maintain_order=True):
        s = summary.filter((pl.col("variant") == variant) & (pl.col("metric") == "population"))
        by = {r["items"]: r["mean"] for r in s.rows(named=True)}
        if "seen" in by and "unseen" in by:
            gaps.append(f"{variant} {by['unseen'] - by['seen']:+.3f}")
    if gaps:
        lines.append(
            f"- A(population), unseen minus seen items (mean over runs): {', '.join(gaps)}."
        )
    return "\n".join(lines)


def write_variance_report(
    rows: pl.DataFrame,
    exp: Path,
    *,
    spec: Any,
    summaries: dict[str, Any] | None = None,
) -> str:
    """``variance_summary.csv``, ``variance.json``, ``results.md`` and the four plots."""
    from valign_ray.eval.representation_variance_plots import plot_variance

    summary = summarise(rows)
    diffs = paired_differences(rows)
    summary.write_csv(exp / "variance_summary.csv", float_precision=6)
    (exp / "variance.json").write_text(
        json.dumps({"summary": summary.to_dicts(), "paired_differences": diffs}, indent=2) + "\n"
    )
    plots = plot_variance(rows, summary, exp)
    text = results_markdown(summary, diffs, spec, _respondent_line(summaries or {}), plots)
    (exp / "results.md").write_text(text + "\n")
    print(text, flush=True)
    return text


def _respondent_line(summaries: dict[str, Any]) -> str:
    """The respondent bootstrap (re-raked) of one run's aligned model (the first dpo_hard run
    when there is one), as its summary reports it."""
    for run, s in sorted(
        summaries.items(), key=lambda kv: (not kv[0].startswith("dpo_hard"), kv[0])
    ):
        m = (s.get("eval") or {}).get("aligned", {})
        if "preference_accuracy_lo" in m:
            acc = _cell(*(m[f"preference_accuracy{k}"] for k in ("", "_lo", "_hi")))
            note = (m.get("bootstrap") or {}).get("note")
            return (
                f"Respondent bootstrap with re-raking, run {run} (held-out respondents, "
                f"conditional on that run): preference accuracy {acc}"
                + (f" ({note})." if note else ".")
            )
    return "Respondent bootstrap: not in the runs' summaries."


NOTE = (
    "Intervals. **95% t, runs (both sources)**: Student t-interval over every run of a variant "
    "(sample draws x train seeds), treating the runs as independent. **95% t, draw means**: "
    "t-interval over the per-draw means (D - 1 degrees of freedom), valid when only the draws "
    "are independent; it includes the train-seed noise through each draw's mean. **SD between "
    "draws**: SD of the draw means; **SD between train seeds**: root mean within-draw variance. "
    "**Item bootstrap, one run**: percentiles over resampled items of the named run, "
    "conditional on that run (its sample, weights and seed): it is not run-to-run variance. "
    "The population truth is exact; the base model is untrained and shared, so it has one run."
)


def results_markdown(
    summary: pl.DataFrame, diffs: list[dict[str, Any]], spec: Any, respondent: str, plots: list
) -> str:
    """The page: the design, the headline table, the variance tables, the trade-off, the
    evidence, the plots."""
    draws, seeds = list(spec.sample_seeds), list(spec.train_seeds)
    parts = [
        f"# Representation of the population, with variance ({spec.form} preference)",
        f"Population fixed; sample draws (survey.synthetic.sample_seed) {draws} x train seeds "
        f"(train.seed) {seeds}: {len(draws) * len(seeds)} runs per trained variant. Seen items: "
        "the prompt items a run trained on; unseen: those held out by data.holdout_items. "
        "skill = (A - A_indifferent) / (1 - A_indifferent).",
        NOTE,
        "## Headline: mean [95% t-interval over runs, both sources]",
        headline_markdown(summary),
        "## Variance: which interval is which",
        *(variance_markdown(summary, m) for m in LABELS),
        "## Population vs worst group (mean [95% t over runs])",
        tradeoff_markdown(summary),
        "## What the evidence supports",
        "Paired over runs with the same sample draw and train seed; a difference is claimed "
        "only when the 95% t-interval of the paired differences excludes 0.",
        evidence_text(summary, diffs) or "- no comparison had both of its variants.",
        respondent,
        "## Plots",
        *(f"![{name}]({name})" for name in plots),
    ]
    return "\n\n".join(parts)
