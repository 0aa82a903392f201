"""A sweep's summary: the trial table (best first), as text, CSV and Markdown, and a plot of the
objective over each swept key.

Plain functions of the trial records Tune returned (:mod:`valign_ray.distributed.tune`); nothing
here imports Ray. ``write_summary`` writes ``results.csv``, ``results.md`` and ``objective.png``
into the sweep folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

LOSS_COLUMNS = ("beta", "lambda_d", "lambda_u")  # the resolved numbers every trial reports
# What a trial reports after training, besides the training metrics: evaluate_model_dir's
# scalars prefixed eval_, and the lowest per-group A (eval_worst_group_A).
EVAL_METRICS = (
    "eval_preference_accuracy",
    "eval_margin",
    "eval_A_population",
    "eval_worst_group_A",
    "eval_skill",
    "eval_majority_agreement",
)
# eval_A_group.<group>: one group's A. Not "/": Tune reads "a/b" back as nested {"a": {"b"}}.
GROUP_PREFIX = "eval_A_group."


def eval_columns(ev: dict[str, Any], hidden: tuple[str, ...] = ()) -> dict[str, float]:
    """A trial's held-out results (``evaluate_model_dir``) as flat report columns: each number
    as ``eval_<name>``, each group's A as ``eval_A_group.<group>`` and the lowest of them as
    ``eval_worst_group_A`` (the group the model represents least well). ``hidden`` groups
    (under ``report.min_group_n`` respondents) are left out of both."""
    out = {
        f"eval_{k}": v
        for k, v in ev.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    groups = {g: a for g, a in (ev.get("groups") or {}).items() if g not in hidden}
    out |= {f"{GROUP_PREFIX}{g}": float(a) for g, a in groups.items()}
    if groups:
        out["eval_worst_group_A"] = float(min(groups.values()))
    return out


def rank_trials(
    records: list[dict[str, Any]], keys: list[str], metric: str, mode: str
) -> pl.DataFrame:
    """One row per trial, best first: ``trial_id``, ``status``, the swept keys, the resolved
    loss numbers, the metrics, each group's A, ``error``. Trials that failed or were stopped
    early (``status`` ``error`` / ``stopped``) stay in the table (last), never dropped.
    """
    groups = sorted({k for rec in records for k in rec if k.startswith(GROUP_PREFIX)})
    columns = ["trial_id", "status", *keys, *LOSS_COLUMNS, *EVAL_METRICS, "loss", *groups, "error"]
    rows = [{c: rec.get(c) for c in columns} for rec in records]
    schema = {c: pl.String if c in ("trial_id", "status", "error") else pl.Float64 for c in columns}
    for row in rows:  # "auto" lambdas were resolved into LOSS_COLUMNS; keep the raw choice
        for key in keys:
            if isinstance(row[key], str):
                schema[key] = pl.String
    table = pl.DataFrame(rows, schema=schema, orient="row")
    # Only finished trials are ranked: a stopped trial's last training loss is not its result.
    rank = pl.when(pl.col("status") == "ok").then(pl.col(metric))
    return table.sort(rank, descending=mode == "max", nulls_last=True, maintain_order=True)


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _shown(table: pl.DataFrame) -> list[str]:
    """The columns worth showing: not the error text, not all-empty, group columns last."""
    shown = [c for c in table.columns if c != "error" and table[c].null_count() < table.height]
    return ["trial_id", *(c for c in shown if c != "trial_id")]


def format_table(table: pl.DataFrame, metric: str) -> str:
    """The table as aligned text, for the terminal."""
    shown = _shown(table)
    width = {c: max(len(c), *(len(_cell(v)) for v in table[c])) for c in shown}
    lines = [f"== sweep: {table.height} trials, best {metric} first =="]
    lines.append("  ".join(c.rjust(width[c]) for c in shown))
    for row in table.select(shown).iter_rows():
        lines.append("  ".join(_cell(v).rjust(width[c]) for c, v in zip(shown, row, strict=True)))
    return "\n".join(lines)


def markdown_table(table: pl.DataFrame, metric: str, mode: str) -> str:
    """The table as Markdown (best first), with errors listed under it."""
    shown = _shown(table)
    best = "highest" if mode == "max" else "lowest"
    lines = [f"# Sweep: {table.height} trials, {best} `{metric}` first", ""]
    lines.append("| " + " | ".join(f"`{c}`" for c in shown) + " |")
    lines.append(
        "|" + "|".join("---" if c in ("trial_id", "status") else "--:" for c in shown) + "|"
    )
    for row in table.select(shown).iter_rows():
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    failed = table.filter(pl.col("error").is_not_null())
    if failed.height:
        lines += ["", "## Errors", ""]
        lines += [
            f"- `{t}`: {e.splitlines()[0]}" for t, e in failed.select("trial_id", "error").rows()
        ]
    return "\n".join(lines) + "\n"


def objective_plot(
    table: pl.DataFrame, keys: list[str], metric: str, *, log_keys: tuple[str, ...] = ()
) -> Any:
    """One panel per swept key: ``metric`` of each finished trial over the value it drew for
    that key (log x for ``log_keys``), the best trial ringed. A ``matplotlib`` Figure (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = table.filter((pl.col("status") == "ok") & pl.col(metric).is_not_null())
    fig = Figure(figsize=(3.6 * len(keys), 3.0), layout="constrained")
    FigureCanvasAgg(fig)  # Agg: renders the same headless, in a worker or a test
    axes = fig.subplots(1, len(keys), squeeze=False).ravel()
    y = done[metric].to_list()
    for ax, key in zip(axes, keys, strict=True):
        x = done[key].to_list()
        numeric = all(isinstance(v, int | float) for v in x)
        pos = x if numeric else [str(v) for v in x]
        ax.scatter(pos, y, color="#1f77b4", zorder=3)
        if done.height:  # the table is best first: ring the best trial in every panel
            ax.scatter(pos[:1], y[:1], s=160, facecolors="none", edgecolors="#d62728", zorder=4)
        if key in log_keys and numeric:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    fig.suptitle(f"{metric}: {done.height} finished trials (best ringed)")
    return fig


def write_summary(
    table: pl.DataFrame,
    out: Path,
    *,
    keys: list[str],
    metric: str,
    mode: str,
    log_keys: tuple[str, ...] = (),
) -> dict[str, Path]:
    """``results.csv``, ``results.md`` and ``objective.png`` in ``out``; returns their paths."""
    paths = {
        "results_csv": out / "results.csv",
        "results_md": out / "results.md",
        "plot": out / "objective.png",
    }
    table.write_csv(paths["results_csv"])
    paths["results_md"].write_text(markdown_table(table, metric, mode))
    objective_plot(table, keys, metric, log_keys=log_keys).savefig(paths["plot"], dpi=110)
    return paths
