"""The end-to-end method as stages: survey -> weights -> datasets -> model -> reference ->
train -> evaluate. ``run_pipeline`` runs them in order under one run directory.

Stages are plain functions of the config and the run directory; the Ray edges are imported from
:mod:`valign_ray.distributed` where a stage needs them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from valign_ray.config import PipelineConfig, public_config_dict
from valign_ray.config_loader import to_dict


@dataclass
class RunState:
    """What the stages hand each other, and the timings for the summary."""

    cfg: PipelineConfig
    run_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    model_path: Path | None = None
    aligned_path: Path | None = None


def _stage(state: RunState, name: str, fn: Callable[[RunState], None]) -> None:
    print(f"[{name}] ...", flush=True)
    t0 = time.perf_counter()
    fn(state)
    state.timings[name] = round(time.perf_counter() - t0, 2)
    print(f"[{name}] done in {state.timings[name]:.1f} s", flush=True)


def stage_survey(state: RunState) -> None:
    """Get the survey as files (generating the synthetic one), then ingest them for real."""
    from valign_ray.survey.ingest import ingest_survey
    from valign_ray.survey.instrument import Instrument, load_instrument, save_instrument

    cfg, out = state.cfg.survey, state.run_dir / "survey"
    if cfg.source == "polis":
        _import_polis(state)
        return
    if cfg.source == "synthetic":
        survey = _generate(state)
        raw = out / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        inst = Instrument.from_tables(
            "synthetic", survey.demographics, survey.items, survey.candidates
        )
        save_instrument(inst, raw / "instrument.yaml")
        survey.respondents.write_csv(raw / "respondents.csv")
        survey.answers.write_csv(raw / "answers.csv")
        survey.truth.write_parquet(out / "truth.parquet")
        paths = (raw / "instrument.yaml", raw / "respondents.csv", raw / "answers.csv")
    else:
        paths = (Path(cfg.files.instrument), Path(cfg.files.respondents), Path(cfg.files.answers))
    inst = load_instrument(paths[0])
    result = ingest_survey(
        inst, paths[1], paths[2], quarantine_dir=out, salt=cfg.salt, strict=cfg.strict
    )
    print(result.format_counts(), flush=True)
    state.tables.update(
        respondents=result.respondents,
        answers=result.answers,
        items=inst.items_table(),
        candidates=inst.candidates_table(),
    )
    state.summary["survey"] = {
        role: {k: v for k, v in c.items() if k != "source"} for role, c in result.counts.items()
    }


def _import_polis(state: RunState) -> None:
    from valign_ray.survey.polis import import_polis

    imported = import_polis(state.cfg.survey.polis_dir, salt=state.cfg.survey.salt)
    out = state.run_dir / "survey"
    out.mkdir(parents=True, exist_ok=True)
    (out / "polis_import.json").write_text(json.dumps(imported.report, indent=2, default=str))
    print(f"Polis import: {json.dumps(imported.report, default=str)[:400]}", flush=True)
    state.tables.update(
        respondents=imported.respondents,
        answers=imported.answers,
        items=imported.items,
        candidates=imported.candidates,
    )
    state.summary["survey"] = {"source": "polis", "report": imported.report}


def _generate(state: RunState) -> Any:
    from valign_ray.survey.margins import load_margins
    from valign_ray.survey.synthetic import generate_synthetic

    margins = load_margins(state.cfg.weighting.margins)
    return generate_synthetic(
        state.cfg.survey.synthetic, margins, variables=state.cfg.weighting.variables
    )


def stage_weights(state: RunState) -> None:
    """Rake respondents to the population margins (or weight 1 when weighting is off)."""
    from valign_ray.survey.margins import load_margins, select_margins
    from valign_ray.survey.weighting import (
        diagnostics_to_dict,
        format_diagnostics,
        rake_to_margins,
    )

    wcfg, resp = state.cfg.weighting, state.tables["respondents"]
    out = state.run_dir / "weights"
    out.mkdir(parents=True, exist_ok=True)
    if not wcfg.enabled:
        state.tables["respondents"] = resp.with_columns(pl.lit(1.0).alias("weight"))
        state.summary["weighting"] = {"method": "none", "n": resp.height, "ess": resp.height}
        print("weighting disabled: every respondent weighs 1", flush=True)
        return
    margins = select_margins(load_margins(wcfg.margins), list(wcfg.variables))
    result = rake_to_margins(
        resp,
        margins,
        base_weight="base_weight" if "base_weight" in resp.columns else None,
        tol=wcfg.tol,
        max_iter=wcfg.max_iter,
        trim_max=wcfg.trim_max,
    )
    print(format_diagnostics(result.diagnostics), flush=True)
    state.tables["respondents"] = result.respondents
    diag = diagnostics_to_dict(result.diagnostics)
    (out / "diagnostics.json").write_text(json.dumps(diag, indent=2) + "\n")
    # Weights are respondent-level: kept in the run directory, never logged to W&B.
    result.respondents.select("respondent_id", "weight").write_parquet(out / "weights.parquet")
    state.summary["weighting"] = {
        k: diag[k] for k in ("method", "n", "ess", "deff", "weight_min", "weight_max")
    }


def stage_constitution(state: RunState) -> None:
    """Statements with weighted consensus across groups -> ``constitution.yaml``."""
    from valign_ray.survey.constitution import build_constitution

    ccfg, t = state.cfg.constitution, state.tables
    has_statements = (t["items"]["kind"] == "statement").any()
    if not ccfg.enabled or not has_statements:
        print("no constitution: disabled or the survey has no statements", flush=True)
        return
    group_col = ccfg.group_column or (
        "group" if "group" in t["respondents"].columns else state.cfg.data.group_column
    )
    const = build_constitution(
        t["items"],
        t["answers"],
        t["respondents"],
        group_col=group_col,
        weight_col="weight",
        threshold=ccfg.threshold,
        min_votes_per_group=ccfg.min_votes_per_group,
    )
    const.to_yaml(state.run_dir / "constitution.yaml")
    top = "\n".join(
        f"  {p.rank}. [{p.item_id}] {p.text[:70]}  "
        + " ".join(f"{g}:{v:.2f}" for g, v in p.support.items())
        for p in const.principles[:5]
    )
    print(f"constitution: {len(const.principles)} principles by {group_col}\n{top}")
    state.summary["constitution"] = {
        "principles": len(const.principles),
        "group_column": group_col,
        "groups": list(const.groups),
    }


def stage_datasets(state: RunState) -> None:
    """Split by respondent and item; build the training rows with Ray Data; cards."""
    from valign_ray.data import builders
    from valign_ray.data.cards import dataset_card, write_card
    from valign_ray.data.splits import split_respondents_items
    from valign_ray.distributed.data import build_rows
    from valign_ray.distributed.session import init_ray

    cfg, out = state.cfg, state.run_dir / "datasets"
    init_ray(cfg.ray)
    t = state.tables
    splits = split_respondents_items(
        t["answers"],
        holdout_respondents=cfg.data.holdout_respondents,
        holdout_items=cfg.data.holdout_items,
        seed=cfg.data.split_seed,
    )
    out.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        part.write_parquet(out / f"answers_{name}.parquet")
    lookups = dict(
        items=t["items"],
        candidates=t["candidates"],
        respondents=t["respondents"],
        group_column=cfg.data.group_column,
    )
    name = cfg.loss.name
    if cfg.data.answers == "likert":
        from valign_ray.data.likert import build_likert_kto_rows

        if name != "kto":
            raise ValueError("data.answers=likert trains with loss.name=kto")
        rows = build_likert_kto_rows(
            splits["train"],
            t["items"],
            t["respondents"],
            group_column=cfg.data.group_column,
            options=_likert_options(cfg),
        )
        rows = builders.assign_kl_completions(rows.sort(rows.columns), seed=cfg.data.split_seed)
        rows = rows.with_row_index("row_idx")
    elif name == "sft":  # an aggregate over respondents: one polars pass, not per batch
        rows = builders.build_sft_rows(splits["train"], **lookups).sort("item_id")
        rows = rows.with_row_index("row_idx").with_columns(pl.lit("all").alias("group"))
    else:
        builder = builders.build_kto_rows if name == "kto" else builders.build_dpo_pairs
        rows = build_rows(
            out / "answers_train.parquet",
            builder,
            out / name,
            whole_respondents=name == "dpo",
            **lookups,
        )
        if name == "kto":
            rows = builders.assign_kl_completions(rows, seed=cfg.data.split_seed)
        if name == "dpo" and cfg.loss.soft_labels:
            rows = builders.aggregate_pairs(rows.drop("row_idx")).with_row_index("row_idx")
    (out / name).mkdir(parents=True, exist_ok=True)
    rows.write_parquet(out / name / "rows.parquet")  # exactly the rows training sees
    card = dataset_card(rows, f"{name}-train", label_column="label" if name == "kto" else None)
    write_card(card, out / name)
    t["train_rows"], t["heldout_answers"] = rows, splits["heldout_respondents"]
    state.summary["datasets"] = {
        "train_rows": rows.height,
        "train_ess": card["ess"],
        **{f"answers_{k}": v.height for k, v in splits.items()},
    }
    if cfg.data.answers == "ratings":
        heldout = builders.build_dpo_pairs(splits["heldout_respondents"], **lookups)
        heldout.write_parquet(out / "eval_pairs.parquet")
        t["eval_pairs"] = heldout
        state.summary["datasets"]["eval_pairs"] = heldout.height


def _likert_options(cfg: PipelineConfig) -> dict[int, str]:
    from valign_ray.data.likert import POLIS_OPTIONS

    return dict(cfg.data.likert_options or POLIS_OPTIONS)


def stage_model(state: RunState) -> None:
    """The base model: a local folder, or the tiny one built from the survey's own text."""
    from valign_ray.models import build_tiny_model, count_parameters, load_model

    cfg = state.cfg.model
    if cfg.path is not None:
        state.model_path = Path(cfg.path)
    else:
        texts = (
            state.tables["items"]["text"].to_list() + state.tables["candidates"]["text"].to_list()
        )
        state.model_path = build_tiny_model(state.run_dir / "base_model", texts, cfg.tiny)
    n = count_parameters(load_model(state.model_path))
    print(f"base model {state.model_path}: {n / 1e6:.2f} M parameters", flush=True)
    state.summary["model"] = {"path": str(state.model_path), "parameters": n}


def stage_reference(state: RunState) -> None:
    """Reference log-probs by Ray Data batch inference, cached by (model, data, tokenisation)."""
    from valign_ray.distributed.data import score_reference_ray
    from valign_ray.train.reference import (
        REFERENCE_COLUMNS,
        cache_key,
        cache_path,
        frame_fingerprint,
        model_fingerprint,
    )

    cfg, rows = state.cfg, state.tables["train_rows"]
    if not REFERENCE_COLUMNS[cfg.loss.name]:
        state.summary["reference"] = {"cache": "not needed"}
        return
    # Keyed on the texts scored, not on weights or groups: weighted and unweighted runs share it.
    texts = sorted({c for cols in REFERENCE_COLUMNS[cfg.loss.name] for c in cols[:2]})
    key = cache_key(
        model_fingerprint(state.model_path),
        frame_fingerprint(rows.select(texts)),
        cfg.loss.name,
        cfg.data.max_length,
    )
    path = cache_path(Path(cfg.output_dir) / ".cache" / "reference", key)
    hit = path.exists()
    ref_cols = [c for _, _, c in REFERENCE_COLUMNS[cfg.loss.name]]
    if hit:
        scored = pl.read_parquet(path)
    else:
        scored = score_reference_ray(
            rows, str(state.model_path), cfg.loss.name, max_length=cfg.data.max_length
        ).select(ref_cols)
        path.parent.mkdir(parents=True, exist_ok=True)
        scored.write_parquet(path)
    print(f"reference cache {'hit' if hit else 'miss (computed)'}: {path.name}", flush=True)
    # Same texts in the same order (the key says so): the cached columns line up row by row.
    state.tables["train_rows"] = rows.hstack(scored)
    state.summary["reference"] = {"cache": "hit" if hit else "miss", "key": key}


def stage_train(state: RunState) -> None:
    """Ray Train + DeepSpeed; the final checkpoint's Hugging Face export becomes ``model/``."""
    from valign_ray.distributed.trainer import fit
    from valign_ray.train.reference import frame_fingerprint
    from valign_ray.train.worker import HF_EXPORT, TrainJob

    cfg, rows = state.cfg, state.tables["train_rows"]
    job = TrainJob(
        config=cfg,
        model_path=str(state.model_path.resolve()),
        wandb_dir=str((state.run_dir / "wandb").resolve()),
        metrics_path=str((state.run_dir / "train_metrics.jsonl").resolve()),
        dataset_card=state.summary.get("datasets"),
    )
    # Same config and data -> same name -> Ray Train resumes an interrupted run from its latest
    # checkpoint; anything different starts afresh beside it.
    # Keys that only steer how a run is supervised may change between a run and its resume.
    steering = {"max_failures", "report_every", "checkpoint_every"}
    train_keys = {k: v for k, v in to_dict(cfg.train).items() if k not in steering}
    fingerprint = hashlib.sha256(
        json.dumps([train_keys, to_dict(cfg.loss), to_dict(cfg.model)]).encode()
        + frame_fingerprint(rows).encode()
        + str(state.model_path.resolve()).encode()
    ).hexdigest()[:10]
    name = f"train-{fingerprint}"
    print(f"training run {name} (rerun the same command to resume it)", flush=True)
    result = fit(job, rows, storage_path=state.run_dir / "ray_train", name=name)
    ckpt = state.run_dir / "checkpoint"
    shutil.rmtree(ckpt, ignore_errors=True)
    result.checkpoint.to_directory(str(ckpt))
    aligned = state.run_dir / "model"
    shutil.rmtree(aligned, ignore_errors=True)
    shutil.copytree(ckpt / HF_EXPORT, aligned)
    state.aligned_path = aligned
    state.summary["train"] = {
        k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)
    }


def stage_eval(state: RunState) -> None:
    """Held-out respondents: weighted preference accuracy and margin, base vs aligned."""
    from valign_ray.eval.heldout import evaluate_pairs
    from valign_ray.models import load_model, load_tokenizer

    cfg, t = state.cfg, state.tables
    tok = load_tokenizer(state.model_path)
    results = {}
    for name, path in (("base", state.model_path), ("aligned", state.aligned_path)):
        model = load_model(path)
        if cfg.data.answers == "likert":
            from valign_ray.data.likert import evaluate_likert

            results[name] = evaluate_likert(
                model,
                tok,
                t["items"],
                t["heldout_answers"],
                t["respondents"],
                options=_likert_options(cfg),
                group_column=cfg.data.group_column,
                max_length=cfg.data.max_length,
            )
        else:
            results[name] = evaluate_pairs(
                model,
                tok,
                t["eval_pairs"],
                max_length=cfg.data.max_length,
                batch_size=cfg.eval.batch_size,
            )
    state.summary["eval"] = results


STAGES: list[tuple[str, Callable[[RunState], None]]] = [
    ("survey", stage_survey),
    ("weights", stage_weights),
    ("constitution", stage_constitution),
    ("datasets", stage_datasets),
    ("model", stage_model),
    ("reference", stage_reference),
    ("train", stage_train),
    ("eval", stage_eval),
]


def run_pipeline(cfg: PipelineConfig, *, stages: list[str] | None = None) -> dict[str, Any]:
    """Run the stages (all by default) under ``cfg.run_dir``; write and return the summary."""
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    # Without the salt: the run directory sits next to pseudonymised ids (config.py).
    (run_dir / "config.yaml").write_text(yaml.safe_dump(public_config_dict(cfg), sort_keys=False))
    state = RunState(cfg=cfg, run_dir=run_dir)
    t0 = time.perf_counter()
    for name, fn in STAGES:
        if stages is None or name in stages:
            _stage(state, name, fn)
    state.timings["total"] = round(time.perf_counter() - t0, 2)
    summary_path = run_dir / "summary.json"
    # A partial run (e.g. `valign prepare`) updates the stages it ran and keeps the others.
    earlier = json.loads(summary_path.read_text()) if stages and summary_path.exists() else {}
    summary = {**earlier, "name": cfg.name, "run_dir": str(run_dir), **state.summary}
    summary["wall_s"] = {**earlier.get("wall_s", {}), **state.timings}
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(format_summary(summary), flush=True)
    if stages is None or "report" in stages:
        from valign_ray.eval.report import write_report

        # Last, because the report reads summary.json.
        print(f"report: {write_report(run_dir)['html']}", flush=True)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The final table: the evaluation side by side, then the stage times."""
    lines = ["", f"== summary: {summary['run_dir']} =="]
    ev = summary.get("eval")
    if ev:
        lines.append(f"{'held-out metric':<28}{'base':>10}{'aligned':>10}")
        for metric, value in ev["base"].items():
            if isinstance(value, float) and metric != "weight_total":
                lines.append(f"{metric:<28}{value:>10.4f}{ev['aligned'][metric]:>10.4f}")
        for group, value in ev["base"].get("groups", {}).items():
            other = ev["aligned"]["groups"][group]
            lines.append(f"{'A, group ' + group:<28}{value:>10.4f}{other:>10.4f}")
        if "n_pairs" in ev["base"]:
            lines.append(f"{'pairs (held-out respondents)':<28}{ev['base']['n_pairs']:>10}")
    w = summary.get("weighting")
    if w and "ess" in w:
        lines.append(f"weighting: n={w['n']} ESS={w['ess']:.1f}")
    lines.append("wall time: " + ", ".join(f"{k} {v:.1f}s" for k, v in summary["wall_s"].items()))
    return "\n".join(lines)
