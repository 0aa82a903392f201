"""The sample-size study end to end (``experiments/sample_size.py``): how many respondents does
a survey need before weighting recovers the population, and before the aligned model is as
good as one trained on the whole population?

A study file has two sections: ``study`` (:class:`StudyConfig`: the grid) and ``pipeline`` (a
pipeline config: the synthetic population, weighting, constitution and soft-label DPO
training). :func:`run_sample_size_study` builds the population once (``EXP/population``), runs
the data layer (:mod:`valign_ray.eval.sample_size`) as one Ray Tune trial per (bias, n) with
all its seeds (``EXP/data/*.parquet``), the model layer through the experiment runner
(:mod:`valign_ray.eval.sample_size_models`) and writes the recommendation and plots
(:mod:`valign_ray.eval.sample_size_report`). Grid points already written are not run again.
"""

from __future__ import annotations

import json
import time
from dataclasses import field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field
from pydantic.dataclasses import dataclass

from valign_ray.config import Factors, PipelineConfig
from valign_ray.config_loader import (
    STRICT,
    ConfigError,
    Float,
    Int,
    Str,
    apply_overrides,
    from_dict,
    load_yaml,
    to_dict,
)


@dataclass(frozen=True, config=STRICT)
class BiasLevel:
    oversample: Factors | None = None  # relative inclusion odds; null: the simulator's default
    response_rate: Factors | None = None  # probability of answering; null: the default


@dataclass(frozen=True, config=STRICT)
class StudyConfig:
    n: tuple[Int, ...] = (50, 100, 200, 400, 800, 1600, 3200)  # sample sizes, data layer
    biases: dict[Str, BiasLevel] = field(default_factory=dict)  # name -> sampling bias
    seeds: Int = Field(5, ge=1)  # data layer: samples per (bias, n), seeds 0..seeds-1
    model_n: tuple[Int, ...] = (100, 400, 1600)  # sample sizes of the model layer
    model_seeds: Int = Field(3, ge=1)  # model layer: samples per (bias, n)
    model_biases: tuple[Str, ...] = ("default",)  # bias levels of the model layer
    share_error_max: Float = Field(0.05, gt=0)  # recommendation: weighted worst-group error
    a_tolerance: Float = Field(0.01, ge=0)  # recommendation: model A within this of the oracle
    smoke_n: tuple[Int, Int] = (100, 400)  # --smoke: these two n, seed 0, one model run
    smoke_max_steps: Int = Field(20, ge=1)  # --smoke: optimizer steps of its one model run
    max_concurrent: Int = Field(1, ge=1)  # training trials at once
    data_concurrent: Int = Field(1, ge=1)  # data-layer trials at once (1 CPU each)


@dataclass(frozen=True, config=STRICT)
class StudyFile:
    study: StudyConfig = field(default_factory=StudyConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


def load_study(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyFile:
    """Load a study file strictly; an override ``study.x=v`` names its section, any other key is
    a pipeline key (as with sweep files)."""
    routed = [
        o if o.split(".", 1)[0].split("=", 1)[0] in ("study", "pipeline") else f"pipeline.{o}"
        for o in overrides
    ]
    try:
        spec = from_dict(StudyFile, apply_overrides(load_yaml(path), routed))
        _validate(spec)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return spec


def _validate(spec: StudyFile) -> None:
    s, n_pop = spec.study, spec.pipeline.survey.synthetic.n_population
    if not s.biases:
        raise ConfigError("study.biases: name at least one bias level")
    for key in ("n", "model_n", "smoke_n"):
        bad = [n for n in getattr(s, key) if not 2 <= n <= n_pop]
        if bad or not getattr(s, key):
            raise ConfigError(f"study.{key}: sizes {bad} not in [2, n_population={n_pop}]")
    unknown = [b for b in s.model_biases if b not in s.biases]
    if unknown:
        raise ConfigError(f"study.model_biases: {unknown} not in study.biases {list(s.biases)}")
    if spec.pipeline.survey.source != "synthetic":
        raise ConfigError("pipeline.survey.source: the study needs the synthetic population")


def study_plan(study: StudyConfig, smoke: bool) -> dict[str, Any]:
    """What to run: data-layer n and seeds, model-layer (bias, n, seed) cells, whether the
    oracle and the unweighted arm run. ``smoke``: two n, seed 0, one weighted model run."""
    if smoke:
        cells = [(study.model_biases[0], study.smoke_n[0], 0)]
        return {"n": list(study.smoke_n), "seeds": [0], "cells": cells, "full": False}
    cells = [
        (b, n, seed)
        for b in study.model_biases
        for n in study.model_n
        for seed in range(study.model_seeds)
    ]
    return {"n": list(study.n), "seeds": list(range(study.seeds)), "cells": cells, "full": True}


def _population(spec: StudyFile, exp: Path) -> Path:
    """``EXP/population``, built unless it holds this very synthetic spec already."""
    from valign_ray.eval.sample_size import build_population

    pop_dir = exp / "population"
    key = json.dumps(
        {"synthetic": to_dict(spec.pipeline.survey.synthetic), **_weighting_key(spec)},
        sort_keys=True,
    )
    stamp = pop_dir / "spec.json"
    if not (stamp.exists() and stamp.read_text() == key):
        build_population(spec.pipeline, pop_dir)
        stamp.write_text(key)
    return pop_dir


def _weighting_key(spec: StudyFile) -> dict[str, Any]:
    w = spec.pipeline.weighting
    return {"margins": w.margins, "variables": list(w.variables)}


def data_trial(point: dict[str, Any]) -> dict[str, Any]:
    """One data-layer trial: every seed of one (bias, n), written to ``point["out"]``."""
    from valign_ray.eval.sample_size import bias_factors, draw_sample, load_population, score_sample
    from valign_ray.survey.margins import load_margins, select_margins

    cfg: PipelineConfig = point["config"]
    pop = load_population(point["population"])
    margins = select_margins(load_margins(cfg.weighting.margins), list(cfg.weighting.variables))
    factors = bias_factors(point["oversample"], point["response_rate"], margins)
    rows = []
    for seed in point["seeds"]:
        start = time.perf_counter()
        sample = draw_sample(pop["respondents"], factors, point["n"], seed, stream=point["bias"])
        row = {"bias": point["bias"], "n": point["n"], "seed": seed}
        row |= score_sample(pop, cfg, margins, sample)
        rows.append(row | {"seconds": time.perf_counter() - start})
    pl.DataFrame(rows, infer_schema_length=None).write_parquet(point["out"])
    return {"out": point["out"]}


def run_data_layer(spec: StudyFile, exp: Path, plan: dict[str, Any], name: str) -> pl.DataFrame:
    """One Tune trial per (bias, n) not yet written; returns ``EXP/data.csv``'s table."""
    from valign_ray.distributed.grid import run_grid

    pop_dir = _population(spec, exp)
    out_dir = exp / "data"
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = "-".join(map(str, plan["seeds"]))
    points = [
        {
            "run": f"{bias}-n{n}",
            "bias": bias,
            "n": n,
            "seeds": plan["seeds"],
            "oversample": level.oversample,
            "response_rate": level.response_rate,
            "population": str(pop_dir),
            "config": spec.pipeline,
            "out": str(out_dir / f"{bias}-n{n}-s{tag}.parquet"),
        }
        for bias, level in spec.study.biases.items()
        for n in plan["n"]
    ]
    todo = [p for p in points if not Path(p["out"]).exists()]
    print(f"[sample-size {name}] data layer: {len(todo)} of {len(points)} trials to do", flush=True)
    results = run_grid(
        data_trial,
        todo,
        storage_path=exp / ".tune",
        name=f"{name}-data-{time.strftime('%Y%m%d-%H%M%S')}",
        max_concurrent=spec.study.data_concurrent,
        ray_config=spec.pipeline.ray,
        env_vars={"WANDB_RUN_GROUP": name},
    )
    failed = [(p["run"], r["error"]) for p, r in zip(todo, results, strict=True) if r["error"]]
    if failed:
        raise RuntimeError(f"data-layer trials failed: {failed}")
    table = pl.concat([pl.read_parquet(p["out"]) for p in points], how="diagonal_relaxed").sort(
        "bias", "n", "seed"
    )
    table.write_csv(exp / "data.csv", float_precision=5)
    return table


def run_sample_size_study(
    config_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    output_dir: str | Path | None = None,
    *,
    smoke: bool = False,
) -> dict[str, Any]:
    """The whole study (module docstring); returns the data, model and recommendation tables.
    Outputs in the experiment folder (default ``pipeline.output_dir/pipeline.name``, with a
    ``-smoke`` suffix for ``smoke``): ``data.csv``, ``models.csv``, ``recommendation.csv`` and
    ``.md``, ``plots/*.png``."""
    from valign_ray.eval.sample_size_models import run_model_layer
    from valign_ray.eval.sample_size_report import write_report

    spec = load_study(config_path, overrides)
    name = spec.pipeline.name + ("-smoke" if smoke else "")
    exp = Path(output_dir or Path(spec.pipeline.output_dir) / name).resolve()
    exp.mkdir(parents=True, exist_ok=True)
    plan = study_plan(spec.study, smoke)
    data = run_data_layer(spec, exp, plan, name)
    models = run_model_layer(spec, exp, plan, name)
    recommendation = write_report(spec.study, data, models, exp)
    return {"data": data, "models": models, "recommendation": recommendation, "dir": exp}
