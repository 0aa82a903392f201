"""The survey stages: ingest (or generate, or import), weight, and the constitution.

Each writes its outputs through the run layout and returns a typed result; the canonical
tables go to ``survey/tables/`` so that later stages (and reruns that skip this one) read them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from valign_ray.provenance import file_hash
from valign_ray.results import ConstitutionResult, SurveyResult, WeightingResult
from valign_ray.run_layout import write_parquet_atomic, write_text_atomic
from valign_ray.stages.base import Stage, StageContext

if TYPE_CHECKING:
    from valign_ray.survey.weighting_report import WeightingDiagnostics

TABLES = ("respondents", "answers", "items", "candidates")


def _save_tables(ctx: StageContext, tables: dict[str, pl.DataFrame]) -> None:
    for name in TABLES:
        write_parquet_atomic(tables[name], ctx.layout.survey_table(name))


def run_survey(ctx: StageContext) -> SurveyResult:
    """Get the survey as files (generating the synthetic one), then ingest them for real."""
    from valign_ray.config import survey_salt
    from valign_ray.survey.ingest import ingest_survey
    from valign_ray.survey.instrument import load_instrument

    cfg = ctx.cfg.survey
    if cfg.source == "polis":
        return _import_polis(ctx)
    if cfg.source == "synthetic":
        paths = _write_synthetic(ctx)
    else:
        paths = (Path(cfg.files.instrument), Path(cfg.files.respondents), Path(cfg.files.answers))
    inst = load_instrument(paths[0])
    platform_files = [k for k in ("responses", "panel", "mapping") if getattr(cfg.files, k)]
    if cfg.source == "files" and cfg.files.platform == "canonical" and platform_files:
        from valign_ray.config_loader import ConfigError

        keys = ", ".join(f"survey.files.{k}" for k in platform_files)
        raise ConfigError(f"{keys} are read only with survey.files.platform qualtrics|limesurvey")
    if cfg.source == "files" and cfg.files.platform != "canonical":
        from valign_ray.survey.platforms.convert import ingest_platform

        result = ingest_platform(
            inst,
            cfg.files,
            quarantine_dir=ctx.layout.survey_dir,
            salt=survey_salt(cfg),
            strict=cfg.strict,
        )
    else:
        result = ingest_survey(
            inst,
            paths[1],
            paths[2],
            quarantine_dir=ctx.layout.survey_dir,
            salt=survey_salt(cfg),
            strict=cfg.strict,
        )
    print(result.format_counts(), flush=True)
    _save_tables(
        ctx,
        dict(
            respondents=result.respondents,
            answers=result.answers,
            items=inst.items_table(),
            candidates=inst.candidates_table(),
        ),
    )
    counts = {
        role: {k: v for k, v in c.items() if k != "source"} for role, c in result.counts.items()
    }
    return SurveyResult(source=cfg.source, counts=counts)


def _write_synthetic(ctx: StageContext) -> tuple[Path, Path, Path]:
    from valign_ray.survey.instrument import Instrument, save_instrument
    from valign_ray.survey.margins import load_margins
    from valign_ray.survey.synthetic import generate_synthetic

    cfg = ctx.cfg
    survey = generate_synthetic(
        cfg.survey.synthetic,
        load_margins(cfg.weighting.margins),
        variables=cfg.weighting.variables,
    )
    raw = ctx.layout.raw_survey_dir
    raw.mkdir(parents=True, exist_ok=True)
    inst = Instrument.from_tables("synthetic", survey.demographics, survey.items, survey.candidates)
    save_instrument(inst, raw / "instrument.yaml")
    survey.respondents.write_csv(raw / "respondents.csv")
    survey.answers.write_csv(raw / "answers.csv")
    write_parquet_atomic(survey.truth, ctx.layout.truth)
    return raw / "instrument.yaml", raw / "respondents.csv", raw / "answers.csv"


def _import_polis(ctx: StageContext) -> SurveyResult:
    from valign_ray.config import survey_salt
    from valign_ray.survey.polis import import_polis

    imported = import_polis(ctx.cfg.survey.polis_dir, salt=survey_salt(ctx.cfg.survey))
    write_text_atomic(ctx.layout.polis_report, json.dumps(imported.report, indent=2, default=str))
    print(f"Polis import: {json.dumps(imported.report, default=str)[:400]}", flush=True)
    for warning in imported.report["warnings"]:
        print(f"warning: {warning}", flush=True)
    _save_tables(
        ctx,
        dict(
            respondents=imported.respondents,
            answers=imported.answers,
            items=imported.items,
            candidates=imported.candidates,
        ),
    )
    return SurveyResult(source="polis", report=imported.report)


def survey_inputs(ctx: StageContext) -> dict[str, Any]:
    """The survey section (the salt only as a hash) and the content of the input files."""
    from valign_ray.config import survey_salt
    from valign_ray.config_loader import to_dict

    cfg = ctx.cfg
    section = to_dict(cfg.survey)
    section["salt"] = hashlib.sha256(survey_salt(cfg.survey).encode()).hexdigest()[:16]
    files: dict[str, str] = {}
    if cfg.survey.source == "files":
        fcfg = cfg.survey.files
        keys = ("responses", "panel", "mapping") if fcfg.platform != "canonical" else TABLES[:2]
        files = {f"survey.files.{k}": getattr(fcfg, k) for k in keys if getattr(fcfg, k)}
        files["survey.files.instrument"] = fcfg.instrument
    elif cfg.survey.source == "polis":
        files = {"survey.polis_dir": cfg.survey.polis_dir}
    else:  # the generator draws demographics from the margins
        files = {"weighting.margins": cfg.weighting.margins}
        section["variables"] = list(cfg.weighting.variables)
    hashes = {k: file_hash(v, key=k) for k, v in files.items()}
    ctx.input_files.update(hashes)
    return {"survey": section, "files": hashes}


def run_weights(ctx: StageContext) -> WeightingResult:
    """Rake respondents to the population margins (or, ``balanced``, to equal shares of each
    variable's categories), or give each opinion group its target share (``weighting.scheme``),
    or weight 1 when weighting is off."""
    from valign_ray.survey.cap_policy import rake_as_configured
    from valign_ray.survey.margins import balanced_margins, load_margins, select_margins
    from valign_ray.survey.weighting import diagnostics_to_dict, format_diagnostics

    wcfg, resp = ctx.cfg.weighting, ctx.survey_table("respondents")
    if not wcfg.enabled:
        write_parquet_atomic(
            resp.select("respondent_id", pl.lit(1.0).alias("weight")), ctx.layout.weights
        )
        print("weighting disabled: every respondent weighs 1", flush=True)
        return WeightingResult(method="none", n=resp.height, ess=float(resp.height))
    if wcfg.scheme == "opinion_groups":
        return _weight_opinion_groups(ctx, resp)
    margins = select_margins(load_margins(wcfg.margins), list(wcfg.variables))
    if wcfg.scheme == "balanced":  # the margins' categories, each an equal share
        margins = balanced_margins(margins)
    result = rake_as_configured(
        resp,
        margins,
        wcfg,
        base_weight="base_weight" if "base_weight" in resp.columns else None,
    )
    print(format_diagnostics(result.diagnostics), flush=True)
    diag = diagnostics_to_dict(result.diagnostics)
    diag["on_cap_binding"] = wcfg.on_cap_binding
    write_text_atomic(ctx.layout.weight_diagnostics, json.dumps(diag, indent=2) + "\n")
    # Weights are respondent-level: kept in the run directory, never logged to W&B.
    write_parquet_atomic(result.respondents.select("respondent_id", "weight"), ctx.layout.weights)
    return weighting_result(result.diagnostics, wcfg.on_cap_binding)


def weighting_result(diag: WeightingDiagnostics, on_cap_binding: str) -> WeightingResult:
    """The summary's record of a raking run: its statistics, the cap used, whether the margins
    were met (and, when not, by how much each was missed)."""
    from valign_ray.survey.cap_policy import MARGIN_MET
    from valign_ray.survey.weighting_report import margin_misses

    misses = margin_misses(diag, MARGIN_MET)
    return WeightingResult(
        method=diag.method,
        n=diag.n,
        ess=float(diag.ess),
        deff=float(diag.deff),
        weight_min=float(diag.weight_min),
        weight_max=float(diag.weight_max),
        converged=diag.converged,
        max_margin_error=float(diag.max_margin_error),
        trim_max=diag.trim_max,
        cap_binding=diag.cap_binding,
        on_cap_binding=on_cap_binding if diag.trim_max is not None else None,
        margin_errors=misses or None,
        notes=list(diag.notes) or None,
    )


def _weight_opinion_groups(ctx: StageContext, resp: pl.DataFrame) -> WeightingResult:
    """weighting.scheme opinion_groups: each opinion group its target share (equal: null)."""
    from valign_ray.survey.opinion_weights import opinion_group_weights
    from valign_ray.survey.weighting import design_effect, kish_ess

    wcfg = ctx.cfg.weighting
    weighted = opinion_group_weights(
        resp,
        shares=wcfg.group_shares,
        base_weight="base_weight" if "base_weight" in resp.columns else None,
    )
    w = weighted["weight"]
    shares = (
        weighted.filter(pl.col("group").is_not_null())
        .group_by("group")
        .agg((pl.col("weight").sum()).alias("total"), pl.len().alias("n"))
    )
    total = float(shares["total"].sum())
    diag = {
        "method": "opinion_groups",
        "n": weighted.height,
        "ess": kish_ess(w),
        "deff": design_effect(w),
        "weight_min": float(w.min()),
        "weight_max": float(w.max()),
        "weight_mean": float(w.mean()),
        "without_group": int(weighted["group"].null_count()),
        "groups": {
            str(g): {"n": int(n), "weighted_share": float(t) / total}
            for g, t, n in shares.sort("group").select("group", "total", "n").iter_rows()
        },
    }
    print(f"opinion-group weights: {json.dumps(diag)[:400]}", flush=True)
    write_text_atomic(ctx.layout.weight_diagnostics, json.dumps(diag, indent=2) + "\n")
    write_parquet_atomic(weighted.select("respondent_id", "weight"), ctx.layout.weights)
    return WeightingResult(
        **{k: diag[k] for k in ("method", "n", "ess", "deff", "weight_min", "weight_max")}
    )


def weights_inputs(ctx: StageContext) -> dict[str, Any]:
    from valign_ray.config_loader import to_dict

    w = ctx.cfg.weighting
    raking = w.enabled and w.scheme != "opinion_groups"  # raking, balanced read the margins
    hashes = {"weighting.margins": file_hash(w.margins, key="weighting.margins")} if raking else {}
    ctx.input_files.update(hashes)
    return {"weighting": to_dict(w), "files": hashes}


def run_constitution(ctx: StageContext) -> ConstitutionResult:
    """Statements with weighted consensus across groups -> ``constitution.yaml``."""
    from valign_ray.survey.constitution import build_constitution

    ccfg, items = ctx.cfg.constitution, ctx.survey_table("items")
    if not ccfg.enabled or not (items["kind"] == "statement").any():
        print("no constitution: disabled or the survey has no statements", flush=True)
        return ConstitutionResult(principles=0, skipped="disabled or no statements")
    respondents = ctx.weighted_respondents()
    group_col = ccfg.group_column or (
        "group" if "group" in respondents.columns else ctx.cfg.data.group_column
    )
    const = build_constitution(
        items,
        ctx.survey_table("answers"),
        respondents,
        group_col=group_col,
        weight_col="weight",
        threshold=ccfg.threshold,
        min_votes_per_group=ccfg.min_votes_per_group,
    )
    const.to_yaml(ctx.layout.constitution)
    top = "\n".join(
        f"  {p.rank}. [{p.item_id}] {p.text[:70]}  "
        + " ".join(f"{g}:{v:.2f}" for g, v in p.support.items())
        for p in const.principles[:5]
    )
    print(f"constitution: {len(const.principles)} principles by {group_col}\n{top}")
    return ConstitutionResult(
        principles=len(const.principles), group_column=group_col, groups=list(const.groups)
    )


def _constitution_outputs(ctx: StageContext) -> list[Path]:
    result = ctx.results.get("constitution")
    return [] if result is None or result.skipped else [ctx.layout.constitution]


def _cfg_section(*names: str) -> Any:
    from valign_ray.config_loader import to_dict

    return lambda ctx: {n: to_dict(getattr(ctx.cfg, n)) for n in names}


SURVEY = Stage(
    "survey",
    "survey",
    run_survey,
    survey_inputs,
    upstream=(),
    outputs=lambda ctx: [ctx.layout.survey_table(t) for t in TABLES],
)
WEIGHTS = Stage(
    "weights",
    "weighting",
    run_weights,
    weights_inputs,
    upstream=("survey",),
    outputs=lambda ctx: [ctx.layout.weights],
)
CONSTITUTION = Stage(
    "constitution",
    "constitution",
    run_constitution,
    lambda ctx: {
        "constitution": _cfg_section("constitution")(ctx)["constitution"],
        "group_column": ctx.cfg.data.group_column,
    },
    upstream=("weights",),
    outputs=_constitution_outputs,
)
