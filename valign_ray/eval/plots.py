"""The run report's figures: matplotlib on the Agg canvas, from aggregates only.

Each function takes plain data (numpy, polars, dicts) and returns a ``Figure``; nothing here
reads files or touches pyplot's global state (figures are built with the object API on an Agg
canvas, so they render the same in a worker, a test or a headless server). ``figure_png`` turns
a figure into PNG bytes for the HTML report and W&B.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

# One colour per role, the same in every figure, so a reader learns them once.
SAMPLE, WEIGHTED, TARGET = "#9e9e9e", "#1f77b4", "#d62728"
MODEL_COLOURS = ("#7f7f7f", "#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b")
WORST = "#d62728"
# Metrics that live in [0, 1] share that y range, so bars of different runs compare by eye.
UNIT_INTERVAL = ("preference_accuracy", "A_population", "worst_group")

# Small multiples of the training log: panel title -> metric columns (rewards/* added apart).
TRAINING_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss",)),
    ("z0 (KTO reference point)", ("z0",)),
    ("grad_norm", ("grad_norm",)),
    ("learning rate", ("lr",)),
    ("tokens / s", ("tokens_per_s",)),
)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, *, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (Agg), at a dpi that keeps labels legible in a browser."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def weights_histogram(weights: np.ndarray, *, bins: int = 30) -> Figure:
    """Histogram of the survey weights, normalised to mean 1 so the x axis reads "times the
    average respondent"; the title carries n and Kish's ESS = (sum w)^2 / sum w^2."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError("weights: need a non-empty 1-D array of finite positive weights")
    rel = w / w.mean()
    ess = w.sum() ** 2 / np.square(w).sum()
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.hist(rel, bins=bins, color=WEIGHTED, edgecolor="white")
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="mean weight")
    ax.set_xlabel("weight / mean weight")
    ax.set_ylabel("respondents")
    ax.set_title(f"Survey weights: n = {w.size}, ESS = {ess:.1f} ({ess / w.size:.0%} of n)")
    ax.legend(frameon=False)
    return fig


def margins_chart(margins: Sequence[Mapping[str, object]]) -> Figure:
    """Per raking variable, the share of each category in the sample, after weighting, and in
    the population target: weighting worked where the blue bar meets the red one."""
    frame = pl.DataFrame(list(margins))
    need = ("variable", "category", "sample_share", "weighted_share", "target")
    missing = [c for c in need if c not in frame.columns]
    if frame.height == 0 or missing:
        raise ValueError(f"margins: need rows with {need}; missing {missing}")
    variables = list(dict.fromkeys(frame["variable"].to_list()))
    sizes = [frame.filter(pl.col("variable") == v).height for v in variables]
    fig = _figure(max(6.4, 1.1 * sum(sizes) + 1.5), 3.8)
    axes = fig.subplots(1, len(variables), squeeze=False, width_ratios=sizes, sharey=True)[0]
    for ax, var in zip(axes, variables, strict=True):
        sub = frame.filter(pl.col("variable") == var)
        x = np.arange(sub.height)
        for k, (col, colour, label) in enumerate(
            (
                ("sample_share", SAMPLE, "sample"),
                ("weighted_share", WEIGHTED, "weighted"),
                ("target", TARGET, "target"),
            )
        ):
            ax.bar(x + (k - 1) * 0.27, sub[col].to_numpy(), width=0.27, color=colour, label=label)
        ax.set_xticks(x, [str(c) for c in sub["category"]], rotation=30, ha="right")
        ax.set_title(str(var))
    axes[0].set_ylabel("share")
    axes[-1].legend(frameon=False, fontsize="small")
    return fig


def training_curves(metrics: pl.DataFrame) -> Figure:
    """Small multiples of the per-step training log against ``step``: loss, z0, rewards/*,
    rewards/group/* (their own panel), grad_norm, lr, tokens/s; panels whose columns are absent
    or all null are left out. Past 30 steps each line also gets a centred rolling mean over
    max(3, steps // 20) steps."""
    if "step" not in metrics.columns or metrics.height == 0:
        raise ValueError("training metrics: need a non-empty frame with a 'step' column")
    by_group = tuple(c for c in metrics.columns if c.startswith("rewards/group/"))
    rewards = tuple(c for c in metrics.columns if c.startswith("rewards/") and c not in by_group)
    panels = [p for p in TRAINING_PANELS[:2]]
    panels += [("rewards", rewards)] if rewards else []
    panels += [("rewards per group", by_group)] if by_group else []
    panels += list(TRAINING_PANELS[2:])

    def plottable(c: str) -> bool:
        return c in metrics.columns and metrics[c].null_count() < metrics.height

    panels = [(t, tuple(c for c in cols if plottable(c))) for t, cols in panels]
    panels = [(t, cols) for t, cols in panels if cols]
    if not panels:
        raise ValueError(f"training metrics: no plottable column in {metrics.columns}")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(4.2 * ncols, 2.8 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
    step = metrics["step"].to_numpy()
    marker = "o" if len(step) <= 30 else None
    # Per-step metrics of small batches are noisy: past 30 steps the raw line is drawn faint and
    # a centred rolling mean over ~5% of the run on top, so the trend reads at a glance.
    window = max(3, len(step) // 20) if marker is None else 1
    for ax, (title, cols) in zip(axes, panels, strict=False):
        for k, c in enumerate(cols):
            y = metrics[c].cast(pl.Float64)
            colour = f"C{k % 10}"
            label = c.removeprefix("rewards/group/").removeprefix("rewards/")
            if window == 1 or c == "lr":
                ax.plot(step, y.to_numpy(), marker=marker, ms=3, color=colour, label=label)
                continue
            ax.plot(step, y.to_numpy(), color=colour, alpha=0.3, linewidth=0.8)
            smooth = y.rolling_mean(window, center=True, min_samples=1).to_numpy()
            ax.plot(step, smooth, color=colour, linewidth=1.8, label=label)
        if len(cols) > 1 or cols[0].startswith("rewards/"):
            ax.axhline(0.0, color="black", linewidth=0.6)
            ax.legend(frameon=False, fontsize="small")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[max(0, len(panels) - ncols) : len(panels)]:
        ax.set_xlabel("optimizer step")
        ax.tick_params(labelbottom=True)
    return fig


def model_comparison(models: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> Figure:
    """One panel per metric, one bar per model (base vs aligned), value written on the bar."""
    if not models or not metrics:
        raise ValueError("model comparison: need at least one model and one metric")
    fig = _figure(3.4 * len(metrics) + 0.6, 3.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    names = list(models)
    colours = [MODEL_COLOURS[i % len(MODEL_COLOURS)] for i in range(len(names))]
    for ax, metric in zip(axes, metrics, strict=True):
        values = [float(models[m][metric]) for m in names]
        bars = ax.bar(names, values, color=colours)
        ax.bar_label(bars, fmt="%.3f", fontsize="small")
        if metric == "preference_accuracy":
            ax.axhline(0.5, color="black", linestyle="--", linewidth=1, label="chance")
            ax.legend(frameon=False, fontsize="small", loc="lower right")
        if metric in UNIT_INTERVAL:
            ax.set_ylim(0, 1.05)
        else:
            ax.axhline(0.0, color="black", linewidth=0.6)
            ax.margins(y=0.15)
        ax.set_title(metric)
    fig.suptitle("Held-out respondents (survey-weighted)")
    return fig


def group_bars(
    table: pl.DataFrame, *, ylabel: str, worst: Mapping[str, str] | None = None
) -> Figure:
    """Per-group bars, one panel per model (shared y axis), with the interval [lo, hi] as error
    bars where given and each model's worst group in red.

    ``table`` has columns ``model``, ``group``, ``value``, ``lo``, ``hi`` (lo/hi may be null).
    """
    need = ("model", "group", "value", "lo", "hi")
    if table.height == 0 or any(c not in table.columns for c in need):
        raise ValueError(f"group bars: need a non-empty frame with columns {need}")
    models = list(dict.fromkeys(table["model"].to_list()))
    groups = list(dict.fromkeys(table["group"].to_list()))
    fig = _figure(max(4.5, (0.7 * len(groups) + 1.2) * len(models)), 3.8)
    axes = fig.subplots(1, len(models), squeeze=False, sharey=True)[0]
    for ax, model in zip(axes, models, strict=True):
        sub = table.filter(pl.col("model") == model)
        v = sub["value"].cast(pl.Float64).to_numpy()
        lo = sub["lo"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        hi = sub["hi"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        bad = (v < lo) | (v > hi)
        if np.any(bad):
            raise ValueError(f"group bars: model {model!r}: value outside [lo, hi] for a group")
        err = np.nan_to_num(np.vstack([v - lo, hi - v]), nan=0.0)
        names = [str(g) for g in sub["group"]]
        colours = [WORST if worst and worst.get(model) == g else WEIGHTED for g in names]
        ax.bar(names, v, yerr=err, capsize=4, color=colours)
        ax.set_title(str(model))
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(ylabel)
    if worst:
        axes[-1].legend(handles=[Patch(color=WORST, label="worst group")], frameon=False)
    return fig


def support_heatmap(labels: Sequence[str], groups: Sequence[str], support: np.ndarray) -> Figure:
    """Principles (rows) x groups (columns), cell = share of the group that agrees, annotated."""
    s = np.asarray(support, dtype=np.float64)
    if s.shape != (len(labels), len(groups)) or s.size == 0:
        raise ValueError(f"support: shape {s.shape} != ({len(labels)}, {len(groups)})")
    fig = _figure(max(5.0, 1.1 * len(groups) + 3.5), 0.42 * len(labels) + 1.6)
    ax = fig.add_subplot()
    image = ax.imshow(s, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(groups)), [str(g) for g in groups], rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), list(labels))
    for (i, j), value in np.ndenumerate(s):
        ax.text(
            j,
            i,
            f"{value:.0%}",
            ha="center",
            va="center",
            fontsize="small",
            color="white" if value < 0.6 else "black",
        )
    fig.colorbar(image, ax=ax, label="share agreeing")
    ax.set_title("Support for each principle, by group")
    return fig
