"""The end-to-end method as stages: survey -> weights -> constitution -> datasets -> model ->
reference -> train -> evaluate (:mod:`valign_ray.stages`). ``run_pipeline`` runs them in
order under one run directory; ``prepare_training_inputs`` runs them up to the reference
log-probs and hands back a typed handle (sweeps and experiments start from it).

Every stage records a fingerprint of its inputs (config sections, upstream fingerprints, input
file hashes). A rerun skips a stage whose fingerprint matches the recorded one and whose
outputs exist, and says so; each run's manifest (git commit, packages, input hashes) goes into
``summary.json`` and the W&B config.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import yaml

from valign_ray.config import PipelineConfig, public_config_dict
from valign_ray.eval.small_groups import shown_group_metrics
from valign_ray.methods import get_method
from valign_ray.output import is_verbose
from valign_ray.privacy import personal_data_logging
from valign_ray.provenance import manifest
from valign_ray.results import PreparedInputs, RunSummary, SummaryError
from valign_ray.run_layout import RunLayout, write_text_atomic
from valign_ray.stages import STAGES, Stage, StageContext

PREPARE_STAGES = ("survey", "weights", "constitution", "datasets", "model", "reference")


def layout_of(cfg: PipelineConfig) -> RunLayout:
    return RunLayout.of(cfg.output_dir, cfg.name)


def recorded_summary(layout: RunLayout) -> RunSummary | None:
    if not layout.summary.exists():
        return None
    try:
        return RunSummary.load(layout.summary)
    except (SummaryError, KeyError, ValueError) as exc:
        print(f"note: {layout.summary} is unreadable ({exc}); every stage runs", flush=True)
        return None


def _take_recorded(stage: Stage, ctx: StageContext, earlier: RunSummary | None) -> bool:
    """Fingerprint ``stage`` into ``ctx``; when ``earlier`` recorded the same fingerprint and
    the stage's outputs exist, take its recorded result into ``ctx`` and return True."""
    fp = stage.fingerprint(ctx)
    ctx.fingerprints[stage.name] = fp
    if earlier is None or earlier.fingerprints.get(stage.name) != fp:
        return False
    recorded = earlier.results.get(stage.section)
    if recorded is None:
        return False
    ctx.results[stage.section] = recorded  # outputs may depend on it (e.g. the cache key)
    if all(p.exists() for p in stage.outputs(ctx)):
        return True
    del ctx.results[stage.section]
    return False


def _run_or_skip(
    stage: Stage, ctx: StageContext, earlier: RunSummary | None, run: bool
) -> float | None:
    """Run ``stage`` (or take its recorded result when its fingerprint matches and its outputs
    exist); returns the seconds spent, None when skipped."""
    if _take_recorded(stage, ctx, earlier):
        fp = ctx.fingerprints[stage.name]
        print(f"[{stage.name}] skipped: fingerprint {fp} matches the recorded run")
        return None
    if not run:
        raise ValueError(
            f"stage {stage.name!r} has no up-to-date result in {ctx.layout.run_dir}; "
            "run the stages before it first"
        )
    print(f"[{stage.name}] ...", flush=True)
    t0 = time.perf_counter()
    ctx.results[stage.section] = stage.run(ctx)
    seconds = round(time.perf_counter() - t0, 2)
    if is_verbose():  # by default one line per stage; the summary lists every stage's time
        print(f"[{stage.name}] done in {seconds:.1f} s", flush=True)
    return seconds


def _run_stages(
    cfg: PipelineConfig, names: tuple[str, ...], stages: tuple[Stage, ...] = STAGES
) -> tuple[StageContext, RunSummary]:
    # Messages of every stage withhold personal values unless the config opts in (privacy.py).
    with personal_data_logging(cfg.privacy.log_personal_data):
        return _run_each_stage(cfg, names, stages)


def _run_each_stage(
    cfg: PipelineConfig, names: tuple[str, ...], stages: tuple[Stage, ...]
) -> tuple[StageContext, RunSummary]:
    get_method(cfg.loss.name).check(cfg)
    layout = layout_of(cfg)
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    # Without the salt: the run directory sits next to pseudonymised ids (config.py).
    write_text_atomic(
        layout.config_snapshot, yaml.safe_dump(public_config_dict(cfg), sort_keys=False)
    )
    earlier = recorded_summary(layout)
    ctx = StageContext(cfg=cfg, layout=layout)
    summary = RunSummary(name=cfg.name, run_dir=str(layout.run_dir))
    wall: dict[str, float] = {}
    skipped = []
    t0 = time.perf_counter()
    last = max(i for i, s in enumerate(stages) if s.name in names)
    for stage in stages[: last + 1]:
        seconds = _run_or_skip(stage, ctx, earlier, run=stage.name in names)
        if seconds is None:  # skipped: keep the time the recorded run took
            skipped.append(stage.name)
            seconds = earlier.wall_s.get(stage.name, 0.0) if earlier else 0.0
        wall[stage.name] = seconds
        # Saved after every stage: a run killed later resumes after its last finished stage.
        summary = RunSummary(
            name=cfg.name,
            run_dir=str(layout.run_dir),
            results={**(earlier.results if earlier else {}), **ctx.results},
            wall_s={
                **(earlier.wall_s if earlier else {}),
                **wall,
                "total": round(time.perf_counter() - t0, 2),
            },
            fingerprints={**(earlier.fingerprints if earlier else {}), **ctx.fingerprints},
            manifest=manifest(ctx.input_files),
            skipped=skipped,
        )
        summary.save(layout.summary)
    return ctx, summary


def run_is_current(cfg: PipelineConfig, stages: tuple[Stage, ...] = STAGES) -> bool:
    """True when ``cfg``'s run directory holds a finished run whose every stage fingerprint
    matches what ``cfg`` and its input files give now (so ``run_pipeline`` would skip it all;
    ``stages``: another command's list, e.g. ``cai_pipeline.cai_stages(cfg)``)."""
    layout = layout_of(cfg)
    earlier = recorded_summary(layout)
    if earlier is None:
        return False
    ctx = StageContext(cfg=cfg, layout=layout)
    return all(_take_recorded(stage, ctx, earlier) for stage in stages)


def run_pipeline(cfg: PipelineConfig, *, stages: list[str] | None = None) -> RunSummary:
    """Run the stages (all, then the report, by default) under ``cfg.run_dir``; write and
    return the summary. Stages before the requested ones are checked by fingerprint (and
    must be up to date); a partial run keeps the other stages' recorded results."""
    names = tuple(s.name for s in STAGES) if stages is None else tuple(stages)
    unknown = sorted(set(names) - {s.name for s in STAGES} - {"report"})
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; valid: {[s.name for s in STAGES]}")
    _, summary = _run_stages(cfg, names)
    print(format_summary(summary), flush=True)
    if stages is None or "report" in stages:
        from valign_ray.eval.report import write_report

        # Last, because the report reads summary.json.
        print(f"report: {write_report(summary_dir(summary))['html']}", flush=True)
    return summary


def summary_dir(summary: RunSummary) -> Path:
    return Path(summary.run_dir)


def prepare_training_inputs(cfg: PipelineConfig) -> PreparedInputs:
    """Run (or skip by fingerprint) the stages up to the reference log-probs and return the
    typed handle a training run needs."""
    from valign_ray.stages.training import base_model_path, scored_rows

    ctx, summary = _run_stages(cfg, PREPARE_STAGES)
    ref = summary.results["reference"]
    pairs = ctx.layout.eval_pairs
    return PreparedInputs(
        config=cfg,
        layout=ctx.layout,
        rows=scored_rows(ctx),
        eval_pairs=pl.read_parquet(pairs) if cfg.data.answers == "ratings" else None,
        base_model=base_model_path(ctx).resolve(),
        reference_cache=ctx.layout.reference_cache(ref.key) if ref.key else None,
        summary=summary,
    )


_CI = ("_lo", "_hi")  # interval ends, shown under their metric


def _interval_line(metric: str, *models: dict) -> list[str]:
    """``  95% respondent bootstrap   [0.57, 0.62]  [0.58, 0.64]`` under a metric with lo/hi."""
    ends = [(m.get(metric + "_lo"), m.get(metric + "_hi")) for m in models]
    if all(lo is None for lo, _ in ends):
        return []
    shown = [f"[{lo:.2f}, {hi:.2f}]" if lo is not None else "-" for lo, hi in ends]
    alpha = models[0].get("bootstrap", {}).get("alpha", 0.05)
    label = f"  {100 * (1 - alpha):g}% respondent bootstrap"
    return [f"{label:<28}" + "".join(f"{x:>14}" for x in shown)]


def format_summary(summary: RunSummary) -> str:
    """The final table: the evaluation side by side, then the stage times."""
    lines = ["", f"== summary: {summary.run_dir} =="]
    ev = summary.results.get("eval")
    if ev is not None:
        # Groups under report.min_group_n are left out of every per-group line.
        base, aligned = (shown_group_metrics(ev.models[k]) for k in ("base", "aligned"))
        lines.append(f"{'held-out metric':<28}{'base':>10}{'aligned':>10}")
        for metric, value in base.items():
            if isinstance(value, float) and metric != "weight_total" and metric[-3:] not in _CI:
                lines.append(f"{metric:<28}{value:>10.4f}{aligned[metric]:>10.4f}")
                lines += _interval_line(metric, base, aligned)
        for group, value in base.get("groups", {}).items():  # likert runs only
            lines.append(
                f"{'A, group ' + group:<28}{value:>10.4f}{aligned['groups'][group]:>10.4f}"
            )
        if "n_pairs" in base:  # ratings runs only
            lines.append(f"{'pairs (held-out respondents)':<28}{base['n_pairs']:>10}")
        unseen = base.get("unseen_items", {})  # data.holdout_items > 0 only
        for metric, value in unseen.items():
            if isinstance(value, float) and metric != "weight_total":
                other = aligned["unseen_items"].get(metric)
                shown = f"{other:>10.4f}" if isinstance(other, float) else f"{'-':>10}"
                lines.append(f"{'unseen ' + metric:<28}{value:>10.4f}{shown}")
        hidden = ev.models["base"].get("suppressed_groups")
        if hidden:
            lines.append(f"groups not shown (fewer respondents than report.min_group_n): {hidden}")
    w = summary.results.get("weighting")
    if w is not None:
        line = f"weighting: n={w.n} ESS={w.ess:.1f}"
        if w.trim_max is not None:
            line += f" trim cap {w.trim_max:g} ({w.on_cap_binding})"
        if w.cap_binding:
            line += f" CAP BINDING: margins off by up to {w.max_margin_error:.2e}"
        lines.append(line + "".join(f"\n  note: {note}" for note in w.notes or []))
    times = [
        f"{k} {v:.1f}s" + (" (skipped)" if k in summary.skipped else "")
        for k, v in summary.wall_s.items()
    ]
    lines.append("wall time: " + ", ".join(times))
    return "\n".join(lines)
