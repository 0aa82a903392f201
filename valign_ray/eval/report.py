"""The run report: ``report.md`` and a self-contained ``report.html`` in the run directory, and
the same tables and plots in a W&B run (offline unless the run's config says otherwise).

Every section is built only from files in the run directory; a section (or part of one) whose
input is missing says so in one line. Everything shown is an aggregate: weights are drawn as a
histogram, never listed, and no respondent id is read except by the tests that check for it.

Sections and their inputs:

1. Summary: ``config.yaml`` (loss, beta, lambdas, workers, ZeRO stage...), ``summary.json``
   (``name``, ``model.parameters``, ``wall_s``).
2. Survey and weighting: ``survey/quarantine_counts.json`` (else ``summary.json`` ``survey``,
   e.g. a Polis import report: its scalars, and lists by their length only),
   ``weights/diagnostics.json`` (with its ``margins`` rows), ``weights/weights.parquet``
   (column ``weight``).
3. Training data: ``datasets/<loss>/card.json`` (see :mod:`valign_ray.data.cards`).
4. Training curves: ``train_metrics.jsonl``, one JSON object per optimizer step with ``step``;
   a step logged twice (a resumed run replays steps after its checkpoint) keeps its last line.
5. Evaluation: ``summary.json`` ``eval``, shaped as::

       {
         "<model>": {                           # one entry per model, e.g. "base", "aligned"
           "preference_accuracy": 0.62,         # any numeric metrics: each is a table column,
           "margin": 1.18, "n_pairs": 464,      # and those of HEADLINE_METRICS that every
           "groups": {"<group>": 0.81, ...},    # model has are plotted; optional "groups": a
                                                # per-group metric (A per group)
           "unseen_items": {...}                # optional: the same metrics on the items held
         },                                     # out of training (data.holdout_items > 0)
         "groups": {                            # optional: an alignment metric per group
           "<model>": {"<group>": 0.64, ...}    # a number, or {"estimate", "lo", "hi"}
         },
         "representation": {                    # optional: per model, the dict returned by
           "<model>": {                         # eval.representation.representation_table
             "groups": [{"group": "age_band=65+", "estimate": 0.79, "lo": 0.74, "hi": 0.85},
                        ...],                   # required; lo/hi optional
             "worst_group": {"group": "age_band=65+", "estimate": 0.78, "lo": .., "hi": ..},
             "population": {"estimate": .., "lo": .., "hi": ..},   # optional, like the rest:
             "spread": {..}, "majority_agreement": {..}, "majority_agreement_flipped": {..},
             "uncertainty": "how the intervals were made"
           }
         }
       }

   Each per-group metric gets a bar chart per model, its worst group in red: the given
   ``worst_group``, else the lowest estimate (first by name on ties).

6. Constitution: ``constitution.yaml`` as written by
   :meth:`valign_ray.survey.constitution.Constitution.to_yaml` (``principles``: ``id``,
   ``text``, ``support`` {group: share}; ``rank``, ``consensus``, ``overall_support`` optional).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.eval import plots
from valign_ray.eval.report_constitution import constitution_section
from valign_ray.eval.report_inputs import (
    eval_group_table,
    flatten_scalars,
    is_number,
    load_run_config,
    load_train_metrics,
    lowest_group,
    read_json,
    representation_tables,
)
from valign_ray.eval.report_render import (
    PLOT_DIR,
    Plot,
    Section,
    Table,
    log_to_wandb,
    missing,
    render_html,
    render_markdown,
)
from valign_ray.eval.small_groups import shown_group_metrics
from valign_ray.results import RunSummary

RESERVED_EVAL_KEYS = ("groups", "representation")
# Plotted side by side when every model has them (the table shows every numeric metric).
HEADLINE_METRICS = ("preference_accuracy", "margin", "A_population", "worst_group", "spread")


def write_report(run_dir: Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``report_plots/*.png`` into ``run_dir``, then log
    the same tables and plots to W&B as the run's ``config.yaml`` says (``wandb.enabled``,
    ``wandb.mode``; no config, no W&B).

    Returns the paths written: ``md``, ``html``, ``plots`` and, when logged, ``wandb`` (the
    folder of the report's W&B run).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        from valign_ray.errors import InputError

        raise InputError("run directory not found", path=run_dir)
    cfg = load_run_config(run_dir)
    path = run_dir / "summary.json"
    name = cfg.name if cfg else run_dir.name
    summary = RunSummary.load(path) if path.exists() else RunSummary(name, str(run_dir))
    name = summary.name
    sections = build_sections(run_dir, cfg, summary)
    plot_dir = run_dir / PLOT_DIR
    plot_dir.mkdir(exist_ok=True)
    for plot in _plots(sections):
        (plot_dir / f"{plot.key}.png").write_bytes(plot.png)
    out = {"md": run_dir / "report.md", "html": run_dir / "report.html", "plots": plot_dir}
    out["md"].write_text(render_markdown(sections, f"Run report: {name}"))
    out["html"].write_text(render_html(sections, f"Run report: {name}"))
    # Files first: a W&B failure (say, mode online without a network) leaves the report on disk.
    if cfg is not None and cfg.wandb.enabled and cfg.wandb.mode != "disabled":
        out["wandb"] = log_to_wandb(sections, cfg, run_dir / "wandb", name)
    return out


def build_sections(run_dir: Path, cfg: Any, summary: RunSummary) -> list[Section]:
    """The six sections, in order, from whatever files the run directory holds (and a
    seventh, Constitutional AI, after ``valign cai``)."""
    from valign_ray.eval.report_cai import cai_section

    sections = [
        _summary_section(run_dir, cfg, summary),
        _survey_section(run_dir, summary),
        _data_section(run_dir, summary),
        _curves_section(run_dir / "train_metrics.jsonl"),
        _eval_section(summary),
        constitution_section(run_dir / "constitution.yaml"),
    ]
    cai = cai_section(run_dir, summary)
    return sections + ([cai] if cai is not None else [])


# ---------------------------------------------------------------- sections


def _summary_section(run_dir: Path, cfg: Any, summary: RunSummary) -> Section:
    sec = Section("Summary")
    name = summary.name
    sec.blocks.append(f"Run: {name} ({run_dir.resolve()})")
    if cfg is None:
        sec.blocks.append(missing("config.yaml"))
    else:
        loss, tr, m = cfg.loss, cfg.train, cfg.model
        from valign_ray.methods import get_method

        rows: list[list[Any]] = get_method(loss.name).report_rows(loss)
        model = summary.results.get("model")  # absent until the model stage has run
        params = model.parameters if model is not None else None
        base = m.path or f"tiny {m.tiny.arch} ({m.tiny.num_layers} layers x {m.tiny.hidden_size})"
        rows += [
            ["model", base],
            ["model parameters", f"{params:,}" if isinstance(params, int) else "not recorded"],
            ["LoRA", f"r={m.lora.r}" if m.lora.enabled else "off"],
            ["workers", tr.num_workers],
            ["ZeRO stage", tr.zero_stage],
            ["precision", tr.precision],
            ["batch (per worker x accumulation)", f"{tr.batch_size} x {tr.grad_accum}"],
            ["epochs / max_steps", f"{tr.epochs} / {tr.max_steps or '-'}"],
            ["lr (schedule)", f"{tr.lr:g} ({tr.schedule})"],
            ["weighted loss", tr.weighted],
            ["weighting", ", ".join(cfg.weighting.variables) if cfg.weighting.enabled else "off"],
        ]
        sec.blocks.append(Table("config", "Configuration highlights", ["setting", "value"], rows))
    wall = summary.wall_s
    if wall:
        rows = [[stage, float(s)] for stage, s in wall.items()]
        sec.blocks.append(Table("wall_time", "Wall time per stage", ["stage", "seconds"], rows))
    else:
        sec.blocks.append(missing("summary.json (wall_s)"))
    return sec


def _survey_section(run_dir: Path, summary: RunSummary) -> Section:
    sec = Section("Survey and weighting")
    qpath = run_dir / "survey" / "quarantine_counts.json"
    survey = summary.results.get("survey")
    counts = read_json(qpath) if qpath.exists() else survey and survey.to_json()
    if counts and all(isinstance(c, dict) and "rows_in" in c for c in counts.values()):
        rows = [
            [role, c["rows_in"], c["kept"], c["quarantined"]]
            + [", ".join(f"{r}: {n}" for r, n in c.get("by_reason", {}).items()) or "none"]
            for role, c in counts.items()
        ]
        cols = ["table", "rows in", "kept", "quarantined", "quarantine reasons"]
        sec.blocks.append(Table("ingestion", "Ingestion", cols, rows))
    elif counts:  # another importer's report (e.g. Polis): its scalars, lists by length
        title = "Ingestion (summary.json survey)"
        sec.blocks.append(Table("ingestion", title, ["field", "value"], flatten_scalars(counts)))
    else:
        sec.blocks.append(missing("survey/quarantine_counts.json (or summary.json survey)"))
    dpath = run_dir / "weights" / "diagnostics.json"
    if dpath.exists():
        d = read_json(dpath)
        keys = ("method", "n", "ess", "deff", "weight_min", "weight_max", "weight_mean")
        keys += ("weight_cv", "iterations", "converged", "trim_max", "cap_binding")
        keys += ("on_cap_binding", "max_margin_error")
        rows = [[k, d[k]] for k in keys if k in d]
        rows += [["note", note] for note in d.get("notes", [])]
        sec.blocks.append(Table("weighting", "Weighting diagnostics", ["metric", "value"], rows))
        margins = d.get("margins") or []
        cols = ["variable", "category", "n", "sample_share", "weighted_share", "target"]
        rows = [[mg.get(c) for c in cols] for mg in margins]
        sec.blocks.append(Table("margins", "Margins: sample, weighted, target", cols, rows))
        if margins:
            fig = plots.margins_chart(margins)
            sec.blocks.append(_plot("margins", "Share per category: sample, weighted, target", fig))
    elif (w := summary.results.get("weighting")) is not None and w.method == "none":
        sec.blocks.append("Weighting disabled: every respondent weighs 1.")
    else:
        sec.blocks.append(missing("weights/diagnostics.json"))
    wpath = run_dir / "weights" / "weights.parquet"
    if wpath.exists():
        columns = list(pl.read_parquet_schema(wpath))
        if "weight" not in columns:
            raise ValueError(f"{wpath}: no column 'weight' (columns: {columns})")
        # Only the weights are read: the ids beside them never enter the report's process.
        weights = pl.read_parquet(wpath, columns=["weight"])["weight"].to_numpy()
        fig = plots.weights_histogram(weights)
        sec.blocks.append(_plot("weights_histogram", "Distribution of the survey weights", fig))
    else:
        sec.blocks.append(missing("weights/weights.parquet"))
    return sec


def _data_section(run_dir: Path, summary: RunSummary) -> Section:
    sec = Section("Training data")
    if (datasets := summary.results.get("datasets")) is not None:
        rows = [[k, v] for k, v in datasets.to_json().items()]
        title = "Dataset sizes (summary.json)"
        sec.blocks.append(Table("dataset_sizes", title, ["quantity", "value"], rows))
    cards = sorted((run_dir / "datasets").glob("*/card.json"))
    if not cards:
        sec.blocks.append(missing("datasets/<loss>/card.json"))
    for path in cards:
        card, key = read_json(path), path.parent.name
        rows = [[k, card[k]] for k in ("rows", "items", "weight_total", "ess") if k in card]
        title = f"Dataset card: {card.get('name', key)}"
        sec.blocks.append(Table(f"card_{key}", title, ["field", "value"], rows))
        for what in ("group", "label"):
            shares = card.get(f"weighted_share_by_{what}") or {}
            if shares:
                rows = [[k, v] for k, v in shares.items()]
                sec.blocks.append(
                    Table(
                        f"card_{key}_{what}",
                        f"{title}: weighted share per {what}",
                        [what, "weighted share"],
                        rows,
                    )
                )
    return sec


def _curves_section(path: Path) -> Section:
    sec = Section("Training curves")
    if not path.exists():
        sec.blocks.append(missing(path.name))
        return sec
    metrics, replaced = load_train_metrics(path)
    if replaced:
        sec.blocks.append(
            f"{replaced} step record(s) logged again after a resume: the last of each is kept."
        )
    rows = []
    for c in metrics.columns:
        if c != "step" and metrics[c].dtype.is_numeric():
            s = metrics[c].drop_nulls().cast(pl.Float64)
            if len(s):
                rows.append([c, s[0], s[-1], s.min(), s.max()])
    steps = f"steps {metrics['step'].min()}-{metrics['step'].max()}"
    cols = ["metric", "first", "last", "min", "max"]
    sec.blocks.append(Table("train_metrics", f"Training metrics ({steps})", cols, rows))
    fig = plots.training_curves(metrics)
    sec.blocks.append(_plot("training_curves", "Training metrics per optimizer step", fig))
    return sec


def _eval_section(summary: RunSummary) -> Section:
    sec = Section("Evaluation")
    result = summary.results.get("eval")
    ev = result.models if result is not None else None
    if not ev:
        sec.blocks.append(missing("summary.json (eval)"))
        return sec
    models = {k: v for k, v in ev.items() if k not in RESERVED_EVAL_KEYS}
    bad = [k for k, v in models.items() if not isinstance(v, dict)]
    if bad:
        raise ValueError(f"summary.json eval.{bad[0]}: expected an object of metrics")
    hidden = sorted({g for m in models.values() for g in m.get("suppressed_groups") or ()})
    models = {k: shown_group_metrics(v) for k, v in models.items()}  # report.min_group_n
    if hidden:
        sec.blocks.append(
            f"Per-group metrics not shown for {', '.join(hidden)}: fewer held-out respondents "
            "than report.min_group_n."
        )
    metrics = list(dict.fromkeys(k for m in models.values() for k, v in m.items() if is_number(v)))
    if metrics:
        rows = [[name, *(m.get(k) for k in metrics)] for name, m in models.items()]
        title = "Held-out respondents: metrics per model"
        sec.blocks.append(Table("eval", title, ["model", *metrics], rows))
        shown = [k for k in HEADLINE_METRICS if all(is_number(m.get(k)) for m in models.values())]
        if shown:
            fig = plots.model_comparison(models, shown)
            sec.blocks.append(_plot("eval_models", "Held-out metrics per model", fig))
    sec.blocks += _bootstrap_note(models) + _unseen_blocks(models)
    nested = {k: m["groups"] for k, m in models.items() if isinstance(m.get("groups"), dict)}
    if nested:  # likert runs: representativeness A per group inside each model's entry
        table = eval_group_table(nested, "eval.<model>.groups")
        title = (
            "Representativeness A per group"
            if all("A_population" in models[k] for k in nested)
            else "Per-group metric"
        )
        sec.blocks += _group_blocks("eval_model_groups", title, table, lowest_group(table))
    if "groups" in ev:
        table = eval_group_table(ev["groups"])
        sec.blocks += _group_blocks(
            "eval_groups", "Alignment per group", table, lowest_group(table)
        )
    if "representation" in ev:
        table, stats, worst = representation_tables(ev["representation"])
        title = "Representativeness A per group (population truth)"
        sec.blocks += _group_blocks("representation", title, table, worst)
        cols = ["model", "statistic", "estimate", "lo", "hi"]
        title = "Representativeness: population, worst group, spread, majority agreement"
        sec.blocks.append(Table("representation_stats", title, cols, stats.rows()))
        notes = {e.get("uncertainty") for e in ev["representation"].values()} - {None}
        sec.blocks += sorted(f"Intervals: {n}." for n in notes)
    return sec


def _bootstrap_note(models: dict[str, dict[str, Any]]) -> list:
    """How ``preference_accuracy_lo`` / ``_hi`` were made (``eval.<model>.bootstrap``)."""
    boot = next(
        (m["bootstrap"] for m in models.values() if isinstance(m.get("bootstrap"), dict)), None
    )
    if boot is None:
        return []
    level = 100 * (1 - boot.get("alpha", 0.05))
    text = (
        f"preference_accuracy_lo / _hi: {level:g}% respondent bootstrap ({boot.get('n_boot')} "
        f"replicates of the {boot.get('n_respondents')} held-out respondents, re-weighted per "
        f"replicate by scheme {boot.get('reweighted')}; {boot.get('failed')} could not be)."
    )
    return [text + (f" {boot['note']}." if boot.get("note") else "")]


def _unseen_blocks(models: dict[str, dict[str, Any]]) -> list:
    """``eval.<model>.unseen_items`` (data.holdout_items > 0): the held-out respondents on the
    items training never saw, reported apart from the trained items; A per group beside."""
    unseen = {k: m["unseen_items"] for k, m in models.items() if "unseen_items" in m}
    if not unseen:
        return []
    metrics = list(dict.fromkeys(k for m in unseen.values() for k, v in m.items() if is_number(v)))
    rows = [[name, *(m.get(k) for k in metrics)] for name, m in unseen.items()]
    title = "Unseen items (held out of training), held-out respondents: metrics per model"
    blocks: list = [Table("eval_unseen_items", title, ["model", *metrics], rows)]
    nested = {k: m["groups"] for k, m in unseen.items() if isinstance(m.get("groups"), dict)}
    if nested:
        table = eval_group_table(nested, "eval.<model>.unseen_items.groups")
        title = "Representativeness A per group, unseen items"
        blocks += _group_blocks("eval_unseen_groups", title, table, lowest_group(table))
    return blocks


def _group_blocks(key: str, title: str, table: pl.DataFrame, worst: dict[str, str]) -> list:
    cols = ["model", "group", "value", "lo", "hi"]
    fig = plots.group_bars(table, ylabel=title.split(" per ")[0], worst=worst)
    caption = f"{title} (worst group in red); error bars: interval [lo, hi] where given"
    headers = ["model", "group", "estimate", "lo", "hi"]
    return [Table(key, title, headers, table.select(cols).rows()), _plot(key, caption, fig)]


def _plot(key: str, caption: str, fig: Any) -> Plot:
    return Plot(key, caption, plots.figure_png(fig))


def _plots(sections: list[Section]) -> list[Plot]:
    return [b for s in sections for b in s.blocks if isinstance(b, Plot)]
