"""``valign cai``: Constitutional AI from the survey's constitution, as pipeline stages.

survey -> weights -> constitution -> datasets -> model -> reference [-> train, only for
``implicit_reward`` feedback] -> cai_sl (SL-CAI) -> cai_rl (RL-CAI) -> cai_eval. Stages run and
skip by fingerprint exactly as in ``valign run`` (:mod:`valign_ray.pipeline`), in the same run
directory, so ``valign run`` and ``valign cai`` on one config share the survey, weights,
datasets, base model and reference log-probs.
"""

from __future__ import annotations

from pathlib import Path

from valign_ray.config import PipelineConfig
from valign_ray.results import RunSummary
from valign_ray.stages import Stage


def cai_stages(cfg: PipelineConfig) -> tuple[Stage, ...]:
    """The stages ``valign cai`` runs for ``cfg``, in order."""
    from valign_ray.stages.cai_eval import cai_eval_stage
    from valign_ray.stages.cai_rl import cai_rl_stage, needs_train
    from valign_ray.stages.cai_sl import CAI_SL
    from valign_ray.stages.survey import CONSTITUTION, SURVEY, WEIGHTS
    from valign_ray.stages.training import DATASETS, MODEL, REFERENCE, TRAIN

    before = (SURVEY, WEIGHTS, CONSTITUTION, DATASETS, MODEL, REFERENCE)
    before += (TRAIN,) if needs_train(cfg) else ()
    return (*before, CAI_SL, cai_rl_stage(cfg), cai_eval_stage(cfg))


def check_cai(cfg: PipelineConfig) -> None:
    """What can be checked before any stage runs: option strings, the clamp, the templates,
    a user constitution and the prompt files (each error names the key or file to fix)."""
    from valign_ray.cai.constitution import load_constitution
    from valign_ray.cai.feedback import check_clamp
    from valign_ray.cai.templates import load_templates
    from valign_ray.errors import InputError

    a, b = cfg.cai.feedback.options
    if not a.strip() or not b.strip() or a == b:
        raise ValueError(
            f"cai.feedback.options {list(cfg.cai.feedback.options)}: the two option strings "
            'must be different and non-empty (e.g. ["(A)", "(B)"])'
        )
    if cfg.cai.feedback.clamp is not None:
        check_clamp(cfg.cai.feedback.clamp)
    load_templates(cfg.cai.templates)
    if cfg.cai.constitution is not None:
        load_constitution(cfg.cai.constitution)
    p = cfg.cai.prompts
    for key, path in (("cai.prompts.file", p.file), ("cai.prompts.hh_rlhf", p.hh_rlhf)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"not found ({key})", path=path)


def run_cai(cfg: PipelineConfig) -> RunSummary:
    """Run (or skip by fingerprint) every stage of :func:`cai_stages`; print the summary."""
    from valign_ray.pipeline import _run_stages

    check_cai(cfg)
    stages = cai_stages(cfg)
    _, summary = _run_stages(cfg, tuple(s.name for s in stages), stages)
    print(format_cai_summary(summary), flush=True)
    from valign_ray.eval.report import write_report

    # Last, because the report reads summary.json (its Constitutional AI section included).
    print(f"report: {write_report(Path(summary.run_dir))['html']}", flush=True)
    return summary


def format_cai_summary(summary: RunSummary) -> str:
    """Counts per stage, the label histogram, the held-out table and the wall times."""
    from valign_ray.cai.rl import format_histogram

    sl, rl, ev = (summary.results.get(k) for k in ("cai_sl", "cai_rl", "cai_eval"))
    lines = ["", f"== cai: {summary.run_dir} =="]
    if sl is not None:
        lines.append(
            f"SL-CAI: prompts {sl.prompts}, records {sl.records}, SFT rows {sl.sft_rows}, "
            f"quarantined {sl.quarantined or 0}, {sl.generation['tokens_per_s']:.1f} tokens/s"
        )
    if rl is not None:
        lines.append(
            f"RL-CAI: samples {rl.samples}, pairs {rl.pairs}, quarantined {rl.quarantined or 0}, "
            f"{rl.loss} rows {rl.train_rows}, {rl.generation['tokens_per_s']:.1f} tokens/s, "
            f"feedback ({rl.feedback_mode}) {rl.feedback_s:.1f} s"
        )
        lines.append(f"labels (P(answer A better)), mean {rl.label_mean:.3f}:")
        lines.append(format_histogram(rl.label_histogram))
    if ev is not None:
        names = list(ev.models)
        lines.append(f"{'held-out metric':<28}" + "".join(f"{n:>10}" for n in names))
        first = ev.models[names[0]]
        for metric, value in first.items():
            if isinstance(value, float) and metric != "weight_total":
                row = [ev.models[n].get(metric) for n in names]
                lines.append(f"{metric:<28}" + "".join(f"{v:>10.4f}" for v in row))
        if "n_pairs" in first:
            lines.append(f"{'pairs (held-out respondents)':<28}{first['n_pairs']:>10}")
        if ev.feedback_agreement:
            fa = ev.feedback_agreement
            lines.append(
                f"feedback labels vs held-out preferences: agreement {fa['agreement']:.4f}, "
                f"mean label {fa['mean_label']:.4f} ({fa['n_pairs']:.0f} pairs)"
            )
    times = [
        f"{k} {v:.1f}s" + (" (skipped)" if k in summary.skipped else "")
        for k, v in summary.wall_s.items()
    ]
    lines.append("wall time: " + ", ".join(times))
    return "\n".join(lines)
