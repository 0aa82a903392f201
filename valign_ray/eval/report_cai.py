"""The report's Constitutional AI section (runs of ``valign cai``): counts per stage, the AI
label histogram, mean label per principle, the held-out table of base / SL-CAI / RL-CAI, and a
few critique-revision examples from ``cai/sl/records.parquet``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.eval import plots
from valign_ray.eval.report_render import Plot, Section, Table, missing
from valign_ray.results import RunSummary

EXAMPLES = 3  # prompts shown with their answer, critique and revision
CHARS = 240  # characters of each text shown


def label_figure(counts: list[int]) -> Any:
    """Bar chart of the label histogram (equal bins over [0, 1])."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    n = len(counts)
    ax.bar([(k + 0.5) / n for k in range(n)], counts, width=0.9 / n, color="#4c72b0")
    ax.set_xlim(0, 1)
    ax.set_xlabel("label: P(answer A is better)")
    ax.set_ylabel("pairs")
    ax.set_title(f"RL-CAI feedback labels ({sum(counts)} pairs)")
    return fig


def _short(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= CHARS else text[: CHARS - 1] + "…"


def examples_table(records: pl.DataFrame) -> Table:
    """The first prompts' answer, then per round the principle, critique and revision."""
    rows = []
    for pid in records["prompt_id"].unique(maintain_order=True).head(EXAMPLES):
        own = records.filter(pl.col("prompt_id") == pid).sort("round", "kind")
        for r in own.iter_rows(named=True):
            rows.append([pid, r["round"], r["kind"], r["principle_id"], _short(r["completion"])])
    cols = ["prompt", "round", "kind", "principle", "text"]
    return Table("cai_examples", "Critique and revision examples", cols, rows)


def cai_section(run_dir: Path, summary: RunSummary) -> Section | None:
    """The section, or None for a run that never ran ``valign cai``."""
    sl, rl, ev = (summary.results.get(k) for k in ("cai_sl", "cai_rl", "cai_eval"))
    if sl is None and rl is None:
        return None
    sec = Section("Constitutional AI")
    if sl is not None:
        sec.blocks.append(
            f"SL-CAI: prompts {sl.prompts}, generations {sl.records}, {sl.sft_rows} SFT rows, "
            f"quarantined {sl.quarantined or 'none'}; "
            f"{sl.generation.get('tokens_per_s', 0):.1f} generated tokens/s."
        )
    if rl is not None:
        sec.blocks.append(
            f"RL-CAI: {rl.samples} answers, {rl.pairs} labelled pairs ({rl.feedback_mode}), "
            f"quarantined {rl.quarantined or 'none'}, {rl.train_rows} {rl.loss} rows; "
            f"mean label {rl.label_mean:.3f}."
        )
        fig = label_figure(rl.label_histogram)
        sec.blocks.append(Plot("cai_labels", "AI feedback labels", plots.figure_png(fig)))
        if rl.principle_means:
            rows = [[k, v] for k, v in rl.principle_means.items()]
            sec.blocks.append(
                Table("cai_principles", "Mean label per principle", ["principle", "mean"], rows)
            )
    if ev is not None and ev.models:
        metrics = [k for k, v in next(iter(ev.models.values())).items() if isinstance(v, float)]
        rows = [[name, *(m.get(k) for k in metrics)] for name, m in ev.models.items()]
        sec.blocks.append(Table("cai_eval", "Held-out respondents", ["model", *metrics], rows))
    records = run_dir / "cai" / "sl" / "records.parquet"
    if records.exists():
        sec.blocks.append(examples_table(pl.read_parquet(records)))
    else:
        sec.blocks.append(missing("cai/sl/records.parquet"))
    return sec
