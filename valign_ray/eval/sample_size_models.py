"""The model layer of the sample-size study: soft-label DPO on samples of n respondents.

Each (bias, n, seed) cell draws the very sample the data layer scored at that point
(:func:`~valign_ray.eval.sample_size.draw_sample`), writes it as survey files and trains two
variants on it through the experiment runner (one Ray Tune trial each, W&B group = the study's
name): ``weighted-*`` (raked, as the pipeline does) and ``unweighted-*``. The ``oracle`` variant
trains on the whole population (everyone answers, no weights): its soft labels are the
population's own shares, so it is the model the data cannot beat. Every model is then scored
against the population truth with the representation experiment's measures on the implicit-
reward preference (``p_implicit``, the quantity soft-label DPO fits): A(population), worst-group
A and majority agreement (:func:`valign_ray.eval.representation.representation_table`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import yaml

from valign_ray.config_loader import to_dict
from valign_ray.eval import representation as rep
from valign_ray.eval import representation_runs as runs
from valign_ray.eval.sample_size import bias_factors, draw_sample, load_population

SALT = "synthetic-sample-size"  # synthetic files: the salt need not be secret
MODEL_COLUMNS = ("variant", "arm", "bias", "n", "seed")


def write_sample_files(pop: dict[str, pl.DataFrame], sample: pl.DataFrame, out: Path) -> list[str]:
    """``instrument.yaml``, ``respondents.csv`` and ``answers.csv`` of ``sample`` (rows of the
    population's respondents) in ``out``; returns the ``survey.files.*`` overrides."""
    from valign_ray.survey.instrument import Instrument, save_instrument

    out.mkdir(parents=True, exist_ok=True)
    resp = pop["respondents"]
    demographics = {c: sorted(resp[c].unique().to_list()) for c in resp.columns[1:]}
    inst = Instrument.from_tables("synthetic", demographics, pop["items"], pop["candidates"])
    save_instrument(inst, out / "instrument.yaml")
    sample.write_csv(out / "respondents.csv")
    ids = sample["respondent_id"]
    pop["answers"].filter(pl.col("respondent_id").is_in(ids)).write_csv(out / "answers.csv")
    return [
        "survey.source=files",
        *(f"survey.files.{k}={out / f'{k}.{ext}'}" for k, ext in _FILES.items()),
        f"survey.salt={SALT}",
    ]


_FILES = {"instrument": "yaml", "respondents": "csv", "answers": "csv"}


def model_variants(
    spec: Any, exp: Path, plan: dict[str, Any], pop: dict[str, pl.DataFrame]
) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """The variants to train and, per variant, its ``arm, bias, n, seed`` (oracle: n is the
    population's size, bias ``population``, seed the train seed)."""
    from valign_ray.experiment import Variant
    from valign_ray.survey.margins import load_margins, select_margins

    cfg = spec.pipeline
    soft = tuple(runs.variant_overrides(cfg)["dpo_soft"])
    if not plan["full"]:
        # the smoke's one run: short, and no W&B start-up (test_experiment covers the grouping)
        soft += (f"train.max_steps={spec.study.smoke_max_steps}", "wandb.enabled=false")
    margins = select_margins(load_margins(cfg.weighting.margins), list(cfg.weighting.variables))
    variants, meta = [], {}
    arms = ("weighted", "unweighted") if plan["full"] else ("weighted",)
    for bias, n, seed in plan["cells"]:
        level = spec.study.biases[bias]
        factors = bias_factors(level.oversample, level.response_rate, margins)
        sample = draw_sample(pop["respondents"], factors, n, seed, stream=bias)
        files = write_sample_files(pop, sample, exp / "samples" / f"{bias}-n{n}-s{seed}")
        for arm in arms:
            name = f"{arm}-{bias}-n{n}-s{seed}"
            enabled = f"weighting.enabled={str(arm == 'weighted').lower()}"
            variants.append(Variant(name, (*soft, *files, enabled)))
            meta[name] = {"arm": arm, "bias": bias, "n": n, "seed": seed}
    if plan["full"]:
        files = write_sample_files(pop, pop["respondents"], exp / "samples" / "oracle")
        variants.append(Variant("oracle", (*soft, *files, "weighting.enabled=false")))
        n_pop = pop["respondents"].height
        meta["oracle"] = {"arm": "oracle", "bias": "population", "n": n_pop, "seed": -1}
    return variants, meta


def run_model_layer(spec: Any, exp: Path, plan: dict[str, Any], name: str) -> pl.DataFrame:
    """Train the variants (finished ones are skipped), score them; ``EXP/models.csv``."""
    from valign_ray.experiment import plan_runs, run_experiment

    pop = load_population(exp / "population")
    variants, meta = model_variants(spec, exp, plan, pop)
    config_path = exp / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(to_dict(spec.pipeline), sort_keys=False))
    args = dict(
        config_path=config_path,
        variants=variants,
        seeds=[spec.pipeline.train.seed],
        output_dir=exp / "models",
    )
    table = run_experiment(**args, name=name, max_concurrent=spec.study.max_concurrent)
    failed = table.filter(pl.col("status") == "failed")
    if failed.height:
        raise RuntimeError(f"model runs failed (see {exp / 'models' / 'runs.csv'}): {failed}")
    planned = {r.name: r for r in plan_runs(**args)}
    rows = score_runs(planned, pop, spec.pipeline)
    out = pl.DataFrame(
        [{"variant": v, **meta[v], **rows[v]} for v in planned], infer_schema_length=None
    )
    out.write_csv(exp / "models.csv", float_precision=5)
    return out


def score_runs(
    planned: dict[str, Any], pop: dict[str, pl.DataFrame], cfg: Any
) -> dict[str, dict[str, Any]]:
    """Per run: ``a_population``, ``worst_group_a`` (and ``worst_group``) and
    ``majority_agreement`` of its model's ``p_implicit`` against the population truth."""
    models = {
        n: (r.config.run_dir / "model", r.config.run_dir / "base_model", r.config.loss.beta)
        for n, r in planned.items()
    }
    prefs = runs.score_models(
        models,
        pop["items"],
        pop["candidates"],
        pop["truth"],
        max_length=cfg.data.max_length,
        batch_size=cfg.eval.batch_size,
    )
    out = {}
    for name in planned:
        table = rep.representation_table(
            prefs.filter(pl.col("model") == name),
            pop["truth"],
            variables=cfg.weighting.variables,
            column="p_implicit",
            n_boot=200,
        )
        out[name] = {
            "a_population": table["population"]["estimate"],
            "worst_group_a": table["worst_group"]["estimate"],
            "worst_group": table["worst_group"]["group"],
            "majority_agreement": table["majority_agreement"]["estimate"],
        }
    return out
