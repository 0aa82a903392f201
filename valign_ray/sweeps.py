"""Hyper-parameter sweeps: strict sweep files, the trial table, and the sweep as a whole.

The expensive, sweep-independent work (survey, weights, datasets, base model, reference
log-probs) runs once (:func:`valign_ray.pipeline.prepare_training_inputs`); the Ray Tune edge
(:mod:`valign_ray.distributed.tune`) is handed the prepared inputs and runs one trial per point:
a policy training run plus a held-out evaluation.

A sweep file has two sections: ``sweep`` (:class:`SweepConfig`) and ``pipeline`` (any
:class:`~valign_ray.config.PipelineConfig` keys). Both are loaded strictly: a typo is an error.
Which ``loss.*`` keys may be swept is the method's (``Method.sweepable``).

The objective (``sweep.metric``) is any number a trial reports (``OBJECTIVES``). With
``sweep.scheduler: asha`` Tune stops weak trials early on a training metric reported mid-run
(``TRAINING_METRICS``; see :class:`AshaConfig`). An interrupted sweep resumes with
:func:`resume_sweep` (``valign sweep --resume <run_dir>/sweep``) from the ``sweep.yaml`` stored
there: finished trials are kept.

Outputs under ``<run_dir>/sweep/``: ``results.csv`` and ``results.md`` (every trial, best
first), ``objective.png`` (:mod:`valign_ray.sweep_summary`), ``best.json``
(the best point, its metrics and model folder, the base model's scores), ``trials/<id>/`` (Ray
Train checkpoints with the ``hf_model/`` export, ``train_metrics.jsonl``) and ``tune-<time>/``
(Tune's experiment; each trial folder holds its offline W&B run: upload them with
``wandb sync <run_dir>/sweep/tune-<time>/*/wandb/offline-run-*``).
"""

from __future__ import annotations

import json
import math
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field
from pydantic.dataclasses import dataclass

from valign_ray.config import PipelineConfig
from valign_ray.config_loader import (
    STRICT,
    ConfigError,
    Float,
    Int,
    apply_overrides,
    from_dict,
    load_yaml,
    to_dict,
)
from valign_ray.methods import get_method
from valign_ray.sweep_summary import EVAL_METRICS, LOSS_COLUMNS, format_table, rank_trials

# The objectives a sweep can rank by, each with the direction that is better: what a trial
# reports after training (sweep_summary.EVAL_METRICS, all higher-is-better) and its final loss.
OBJECTIVES = {**dict.fromkeys(EVAL_METRICS, "max"), "loss": "min"}
# What the training loop reports every train.report_every steps, which ASHA compares mid-run.
TRAINING_METRICS = {"loss": "min", "rewards/margin": "max", "rewards/accuracy": "max"}
# rewards/accuracy (DPO: the share of pairs whose implicit reward ranks the chosen one first)
# is a sign, not a size: the same scale whatever beta. The loss and margins scale with beta
# and the lambdas, so comparing them across trials that sweep loss.* ranks the settings, not
# the progress.
SCALE_FREE = ("rewards/accuracy",)
SWEEP_FILE = "sweep.yaml"  # the sweep's own config, stored in its folder for --resume


@dataclass(frozen=True, config=STRICT)
class ParamSpace:
    """The values one key takes; exactly one of the three is set."""

    choice: tuple[Any, ...] | None = None  # tune.choice: one value drawn uniformly per trial
    loguniform: tuple[Float, ...] | None = None  # [lo, hi]: log(value) uniform on [log lo, log hi]
    grid: tuple[Any, ...] | None = None  # tune.grid_search: every value, num_samples times each


@dataclass(frozen=True, config=STRICT)
class AshaConfig:
    """ASHA (asynchronous successive halving) over Tune's ``training_iteration``, i.e. the
    training reports (one per ``train.report_every`` steps and per checkpoint): at
    grace_period x reduction_factor^k reports a trial goes on only if its ``metric`` is in the
    best 1/reduction_factor of the trials that reached that rung."""

    metric: str = "loss"  # a training metric (loss | rewards/margin | rewards/accuracy)
    mode: Literal["max", "min"] = "min"  # loss: min; rewards/*: max
    grace_period: Int = Field(1, ge=1)  # training reports before a trial can be stopped
    reduction_factor: Float = Field(2.0, gt=1)  # each rung keeps the best 1/reduction_factor
    max_t: Int = Field(100, ge=1)  # rungs lie below it; a trial that reaches it still finishes


@dataclass(frozen=True, config=STRICT)
class SweepConfig:
    space: dict[str, ParamSpace] = field(default_factory=dict)  # dotted pipeline key -> values
    num_samples: Int = Field(4, ge=1)  # trials drawn (times the size of any grid)
    metric: str = "eval_preference_accuracy"  # the objective: a key of OBJECTIVES
    mode: Literal["max", "min"] = "max"  # must be the objective's better direction
    max_concurrent_trials: Int = Field(1, ge=1)  # each trial holds 1 + train.num_workers CPUs
    seed: Int = Field(0, ge=0)  # seeds the random search: a sweep file draws the same points again
    scheduler: Literal["none", "asha"] = "none"  # none: every trial trains to the end
    asha: AshaConfig = field(default_factory=AshaConfig)  # read when scheduler is asha


@dataclass(frozen=True, config=STRICT)
class SweepFile:
    sweep: SweepConfig = field(default_factory=SweepConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


def _set_dotted(data: dict, key: str, value: Any) -> dict:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"sweep.space: '{key}': '{part}' is not a config section")
    node[parts[-1]] = value
    return data


def trial_config(base: PipelineConfig, point: dict[str, Any]) -> PipelineConfig:
    """``base`` with the sampled ``point`` ({"loss.beta": 0.1, ...}) applied and re-validated, so
    a value of the wrong type or an unknown key fails like it would in a config file."""
    data = to_dict(base)
    for key, value in point.items():
        _set_dotted(data, key, value)
    return from_dict(PipelineConfig, data)


def _validate_objectives(sweep: SweepConfig) -> None:
    """The objective is one a trial reports, ranked in its better direction; ASHA's metric is
    one the training loop reports mid-run, comparable across the trials it stops."""
    if sweep.metric not in OBJECTIVES:
        raise ConfigError(
            f"sweep.metric: '{sweep.metric}' is not reported by a trial; valid: "
            + ", ".join(OBJECTIVES)
        )
    if sweep.mode != OBJECTIVES[sweep.metric]:
        raise ConfigError(
            f"sweep.mode: {sweep.metric} is better when "
            f"{'higher' if OBJECTIVES[sweep.metric] == 'max' else 'lower'}; use mode "
            f"{OBJECTIVES[sweep.metric]}"
        )
    if sweep.scheduler != "asha":
        return
    asha = sweep.asha
    if asha.metric not in TRAINING_METRICS:
        raise ConfigError(
            f"sweep.asha.metric: '{asha.metric}' is not reported during training (held-out "
            f"metrics come only at the end of a trial); valid: {', '.join(TRAINING_METRICS)}"
        )
    if asha.mode != TRAINING_METRICS[asha.metric]:
        raise ConfigError(f"sweep.asha.mode: use {TRAINING_METRICS[asha.metric]} for {asha.metric}")
    if asha.grace_period > asha.max_t:
        raise ConfigError("sweep.asha.grace_period: must be <= sweep.asha.max_t")
    swept_loss = [k for k in sweep.space if k.startswith("loss.")]
    if swept_loss and asha.metric not in SCALE_FREE:
        raise ConfigError(
            f"sweep.asha.metric: {asha.metric} is on the scale of {', '.join(swept_loss)}, "
            "which the sweep varies: ASHA would stop trials for their setting, not their "
            f"progress; use {', '.join(SCALE_FREE)} (DPO) or sweep only train.* keys with ASHA"
        )


def _validate(sweep: SweepConfig, pipeline: PipelineConfig) -> None:
    _validate_objectives(sweep)
    if not sweep.space:
        raise ConfigError("sweep.space: empty; name at least one key, e.g. loss.beta")
    method = get_method(pipeline.loss.name)
    if not method.sweepable:
        raise ConfigError(
            f"pipeline.loss.name: {method.name} has no loss keys to sweep; use a method that has"
        )
    if pipeline.data.answers != "ratings":
        raise ConfigError(
            "pipeline.data.answers: sweeps evaluate held-out rating pairs; use ratings"
        )
    for key, space in sweep.space.items():
        where = f"sweep.space.{key}"
        section, _, name = key.partition(".")
        if section != "train" and not (section == "loss" and name in method.sweepable):
            raise ConfigError(
                f"{where}: only loss.* and train.* keys can be swept, and of loss.* only the "
                f"method's sweepable ones ({', '.join(method.sweepable)}): the others change the "
                "prepared data every trial shares"
            )
        given = [n for n in ("choice", "loguniform", "grid") if getattr(space, n) is not None]
        if len(given) != 1:
            raise ConfigError(f"{where}: give exactly one of choice, loguniform, grid; got {given}")
        values = getattr(space, given[0])
        if not values:
            raise ConfigError(f"{where}.{given[0]}: empty list")
        if space.loguniform is not None:
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            if len(values) != 2 or not numbers or not 0 < values[0] < values[1]:
                raise ConfigError(f"{where}.loguniform: expected [lo, hi] with 0 < lo < hi")
        for value in values:
            try:
                trial_config(pipeline, {key: value})
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepFile:
    """Load a sweep file strictly. An override ``sweep.x=v`` or ``pipeline.x=v`` names its
    section; any other key (``train.epochs=1``, ``output_dir=...``) is a pipeline key, as with
    ``valign run``."""
    routed = [
        o if o.split(".", 1)[0].split("=", 1)[0] in ("sweep", "pipeline") else f"pipeline.{o}"
        for o in overrides
    ]
    try:
        sweep_file = from_dict(SweepFile, apply_overrides(load_yaml(path), routed))
        _validate(sweep_file.sweep, sweep_file.pipeline)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return sweep_file


def _stored_form(spec: SweepFile) -> dict[str, Any]:
    """The sweep file as stored for ``--resume``: plain data, ``output_dir`` made absolute so
    the resumed sweep finds its run directory from any working directory."""
    data = to_dict(spec)
    data["pipeline"]["output_dir"] = str(Path(spec.pipeline.output_dir).resolve())
    return data


def run_sweep(
    cfg_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    num_samples: int | None = None,
    trial_hook: Any = None,
) -> dict[str, Any]:
    """Prepare once, run the Tune sweep, write the summary (``results.csv``, ``results.md``,
    ``objective.png``) and ``best.json`` under ``<run_dir>/sweep/``.

    Returns ``best`` (trial id, point, metrics, model folder, ``--set`` overrides to rerun it),
    ``trials`` (the ranked table as dicts), the output paths, and the offline W&B run folders
    (upload them later with ``wandb sync <folder>``). ``trial_hook(point)`` runs in each trial
    before it trains (tests raise there to leave an errored trial to resume).
    """
    if num_samples is not None:
        overrides = [*overrides, f"sweep.num_samples={num_samples}"]
    return _sweep(load_sweep(cfg_path, overrides), restore=None, trial_hook=trial_hook)


def resume_sweep(
    sweep_dir: str | Path,
    cfg_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    trial_hook: Any = None,
) -> dict[str, Any]:
    """Resume the sweep in ``sweep_dir`` (``<run_dir>/sweep``) with ``Tuner.restore``: finished
    trials are kept, unfinished and errored ones run (again); then the summary as
    :func:`run_sweep`. The config is the one stored there; a ``cfg_path`` given as well must
    load to the same sweep."""
    sweep_dir = Path(sweep_dir).resolve()
    stored = sweep_dir / SWEEP_FILE
    if not stored.is_file():
        raise ConfigError(f"{sweep_dir}: no {SWEEP_FILE}; not a sweep folder (<run_dir>/sweep)")
    spec = load_sweep(stored)
    if cfg_path is not None and _stored_form(load_sweep(cfg_path, overrides)) != _stored_form(spec):
        raise ConfigError(
            f"{cfg_path}: differs from the sweep stored in {stored}; resume without CONFIG, "
            "or start a new sweep"
        )
    if spec.pipeline.run_dir.resolve() / "sweep" != sweep_dir:
        raise ConfigError(f"{stored}: its run directory is not {sweep_dir.parent} (moved?)")
    experiments = sorted(p for p in sweep_dir.glob("tune-*") if p.is_dir())
    if not experiments:
        raise ConfigError(f"{sweep_dir}: no Tune experiment (tune-*) to resume")
    return _sweep(spec, restore=experiments[-1], trial_hook=trial_hook)


def _sweep(spec: SweepFile, *, restore: Path | None, trial_hook: Any) -> dict[str, Any]:
    from valign_ray.distributed.session import init_ray
    from valign_ray.distributed.tune import run_tune
    from valign_ray.eval.heldout import evaluate_model_dir
    from valign_ray.pipeline import prepare_training_inputs

    sweep, cfg = spec.sweep, spec.pipeline
    init_ray(cfg.ray)
    prepared = prepare_training_inputs(cfg)  # stages done before are skipped by fingerprint
    if prepared.eval_pairs is None:
        raise ConfigError("pipeline.data.answers: sweeps evaluate held-out rating pairs")
    base_eval = evaluate_model_dir(
        prepared.base_model,
        prepared.eval_pairs,
        max_length=cfg.data.max_length,
        batch_size=cfg.eval.batch_size,
    )
    hidden = _small_heldout_groups(prepared)  # report.min_group_n
    if "groups" in base_eval:
        base_eval["groups"] = {g: a for g, a in base_eval["groups"].items() if g not in hidden}
    out = prepared.layout.sweep_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if restore is None:
        (out / SWEEP_FILE).write_text(yaml.safe_dump(_stored_form(spec), sort_keys=False))
    outcome = run_tune(
        prepared,
        sweep,
        out,
        loss_columns=LOSS_COLUMNS,
        restore=restore,
        trial_hook=trial_hook,
        hidden_groups=hidden,
    )
    return _summarise(sweep, out, outcome, base_eval)


def _small_heldout_groups(prepared: Any) -> tuple[str, ...]:
    """Groups with fewer held-out respondents than ``report.min_group_n``."""
    import polars as pl

    from valign_ray.eval.small_groups import group_sizes

    layout, cfg = prepared.layout, prepared.config
    sizes = group_sizes(
        pl.read_parquet(layout.answers_split("heldout_respondents")),
        pl.read_parquet(layout.survey_table("respondents")),
        cfg.data.group_column,
    )
    return tuple(g for g, n in sizes.items() if n < cfg.report.min_group_n)


def _summarise(sweep: SweepConfig, out: Path, outcome: Any, base_eval: dict) -> dict[str, Any]:
    """The table, its CSV / Markdown / plot, and ``best.json``."""
    from valign_ray.sweep_summary import write_summary

    records, experiment_dir = outcome.records, outcome.experiment_dir
    keys = list(sweep.space)
    table = rank_trials(records, keys, sweep.metric, sweep.mode)
    log_keys = tuple(k for k, s in sweep.space.items() if s.loguniform is not None)
    paths = write_summary(
        table, out, keys=keys, metric=sweep.metric, mode=sweep.mode, log_keys=log_keys
    )
    print(format_table(table, sweep.metric), flush=True)
    outputs = {k: str(v) for k, v in paths.items()} | {"trials": table.to_dicts()}
    if outcome.interrupted:
        print(f"sweep interrupted; resume with: valign sweep --resume {out}", flush=True)
        return {"interrupted": True, "experiment_path": str(experiment_dir), **outputs}
    best_id = table["trial_id"][0]
    best_rec = next(r for r in records if r["trial_id"] == best_id)
    best_value = best_rec.get(sweep.metric)
    if best_rec["status"] != "ok" or best_value is None or not math.isfinite(best_value):
        raise RuntimeError(f"no trial of the sweep finished; errors in {out / 'results.csv'}")
    wandb_dirs = sorted(str(p) for p in experiment_dir.glob("*/wandb/offline-run-*"))
    reported = (*LOSS_COLUMNS, *EVAL_METRICS, "eval_n_pairs", "loss")
    best = {
        "trial_id": best_id,
        "point": {k: best_rec[k] for k in keys},
        "overrides": [f"{k}={best_rec[k]}" for k in keys],
        "metrics": {k: best_rec.get(k) for k in reported},
        "model_dir": best_rec["model_dir"],
    }
    report = {
        "metric": sweep.metric,
        "mode": sweep.mode,
        "best": best,
        "base_eval": base_eval,
        "n_trials": table.height,
        "n_failed": int((table["status"] == "error").sum()),
        "n_stopped": int((table["status"] == "stopped").sum()),  # by ASHA
        "experiment_path": str(experiment_dir),
        "wandb_dirs": wandb_dirs,
        "wandb_sync": f"wandb sync {experiment_dir}/*/wandb/offline-run-*",
    }
    (out / "best.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"best {sweep.metric} {best_value:.4f}: {' '.join(best['overrides'])}", flush=True)
    return {**report, **outputs, "best_json": str(out / "best.json")}
