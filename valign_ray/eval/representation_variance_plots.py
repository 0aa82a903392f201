"""The variance experiment's plots, one per question (PNG files in the experiment folder):

- ``seen_vs_unseen.png``: A(population) on seen vs unseen items per variant (mean, 95% t over
  runs);
- ``variance_bands.png``: every run's A(population) per variant, coloured by sample draw, with
  the mean and its 95% t band over runs (seen and unseen panels);
- ``skill.png``: skill per variant, seen and unseen (mean, 95% t over runs);
- ``population_vs_worst_group.png``: A(population) against worst-group A (unseen items) for
  no weighting, population weighting, group-balanced weighting and the oracle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from valign_ray.eval.representation_variance_report import TRADEOFF


def _save(fig: Any, path: Path) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path.name


def _stat(summary: pl.DataFrame, variant: str, items: str, metric: str) -> dict[str, Any]:
    return summary.filter(
        (pl.col("variant") == variant) & (pl.col("items") == items) & (pl.col("metric") == metric)
    ).row(0, named=True)


def _err(rows: list[dict[str, Any]]) -> np.ndarray:
    """yerr for matplotlib; a variant with one run (NaN interval) gets no bar."""
    lo = [r["mean"] - r["run_lo"] for r in rows]
    hi = [r["run_hi"] - r["mean"] for r in rows]
    return np.nan_to_num(np.array([lo, hi]), nan=0.0)


def _paired_bars(summary: pl.DataFrame, metric: str, ylabel: str, exp: Path, name: str) -> str:
    from matplotlib.figure import Figure

    variants = summary["variant"].unique(maintain_order=True).to_list()
    fig = Figure(figsize=(8, 3.8))
    ax = fig.subplots()
    x = np.arange(len(variants))
    for k, items in enumerate(("seen", "unseen")):
        rows = [_stat(summary, v, items, metric) for v in variants]
        ax.bar(
            x + (k - 0.5) * 0.38,
            [r["mean"] for r in rows],
            0.38,
            yerr=_err(rows),
            capsize=3,
            label=f"{items} items",
        )
    ax.set_xticks(x, variants, rotation=25, ha="right")
    ax.set(ylabel=ylabel, title=f"{ylabel}: seen vs unseen items (mean, 95% t over runs)")
    if metric != "skill":  # A and agreement: zoom in on the range the models span
        s = summary.filter(pl.col("metric") == metric)
        low = np.nanmin(np.concatenate([s["mean"].to_numpy(), s["run_lo"].to_numpy()]))
        ax.set_ylim(max(0.0, float(low) - 0.05), 1.0)
    ax.legend(fontsize=8)
    return _save(fig, exp / name)


def _bands(rows: pl.DataFrame, summary: pl.DataFrame, exp: Path) -> str:
    from matplotlib.figure import Figure

    variants = summary["variant"].unique(maintain_order=True).to_list()
    draws = sorted(d for d in rows["draw"].unique().to_list() if d is not None)
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, items in zip(axes, ("seen", "unseen"), strict=True):
        pop = rows.filter((pl.col("metric") == "population") & (pl.col("items") == items))
        for i, v in enumerate(variants):
            s = _stat(summary, v, items, "population")
            if not np.isnan(s["run_lo"]):
                ax.fill_between([i - 0.3, i + 0.3], s["run_lo"], s["run_hi"], alpha=0.25)
            ax.hlines(s["mean"], i - 0.3, i + 0.3, colors="black")
            for j, d in enumerate(draws):
                ys = pop.filter((pl.col("variant") == v) & (pl.col("draw") == d))["estimate"]
                xs = np.full(len(ys), i - 0.15 + 0.3 * j / max(1, len(draws) - 1))
                ax.scatter(xs, ys, s=12, color=f"C{j}", label=f"draw {d}" if i == 0 else None)
            if v == "base":
                ax.scatter([i], [s["mean"]], s=12, color="grey")
        ax.set_xticks(range(len(variants)), variants, rotation=25, ha="right")
        ax.set(title=f"{items} items: runs, mean, 95% t band")
    axes[0].set(ylabel="A(population)")
    fig.suptitle("A(population) per run, coloured by sample draw")
    axes[0].legend(fontsize=7)
    return _save(fig, exp / "variance_bands.png")


def _tradeoff(summary: pl.DataFrame, exp: Path) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    for k, (variant, weighting) in enumerate(TRADEOFF.items()):
        if summary.filter(pl.col("variant") == variant).height == 0:
            continue
        p = _stat(summary, variant, "unseen", "population")
        w = _stat(summary, variant, "unseen", "worst_group")
        ax.errorbar(
            p["mean"],
            w["mean"],
            xerr=_err([p]),
            yerr=_err([w]),
            fmt="o",
            color=f"C{k}",
            capsize=3,
            label=f"{weighting} ({variant})",
        )
    ax.set(
        xlabel="A(population), unseen items",
        ylabel="worst-group A, unseen items",
        title="population vs worst group (mean, 95% t over runs)",
    )
    ax.legend(fontsize=7)
    return _save(fig, exp / "population_vs_worst_group.png")


def plot_variance(rows: pl.DataFrame, summary: pl.DataFrame, exp: Path) -> list[str]:
    """The four plots of the module docstring; returns their file names."""
    return [
        _paired_bars(summary, "population", "A(population)", exp, "seen_vs_unseen.png"),
        _bands(rows, summary, exp),
        _paired_bars(summary, "skill", "skill", exp, "skill.png"),
        _tradeoff(summary, exp),
    ]
