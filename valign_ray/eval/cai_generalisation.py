"""Does a survey-trained model carry the population's preferences to prompts the survey never
asked? The CAI generalisation experiment on the synthetic ground-truth population.

Per seed ``s`` (``train.seed``, ``data.split_seed`` and ``cai.sampling.seed`` all ``s``, so
each seed draws another set of never-asked items S2 = the items ``data.holdout_items`` keeps
out of training, and trains anew), two runs through the experiment runner
(:func:`valign_ray.experiment.run_experiment`, one Ray Tune trial each) in ``EXP/s<s>/``:

- ``cai`` (``valign cai``): the survey's weighted answers to the asked items train a DPO model
  (its train stage: **dpo_weighted**); SL-CAI; then **rl_cai**: soft-label DPO from the SL-CAI
  model on the S2 items' own candidate pairs (``cai.rl_candidates: survey_items``) labelled by
  dpo_weighted's implicit reward against the base model (``cai.feedback.mode:
  implicit_reward``, label ``sigmoid(beta * (r(a) - r(b)))``);
- ``dpo_oracle`` (``valign run``): DPO, unweighted, on a simple random sample's answers to the
  S2 items only (the population's S2 truth up to sampling noise; survey files written here).

**base** is the cai run's base model (every run rebuilds the same one; checked). Every model is
scored on S2 alone against the population truth with the headline's scoring
(:func:`~valign_ray.eval.representation_runs.score_models`,
:func:`~valign_ray.eval.representation.representation_table`); rl_cai's implicit reward is read
against the SL-CAI model it was trained from. The seeds' numbers are combined in
:mod:`valign_ray.eval.cai_generalisation_report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.config import PipelineConfig, load_config
from valign_ray.eval import representation as rep
from valign_ray.eval import representation_runs as runs
from valign_ray.experiment import Variant, plan_runs, run_experiment
from valign_ray.run_layout import RunLayout

SEED_KEYS = ("train.seed", "data.split_seed", "cai.sampling.seed")
CAI_RUN, ORACLE_RUN = "cai", "dpo_oracle"
MODELS = ("base", "dpo_weighted", "rl_cai", "dpo_oracle")
FORMS = {"implicit": "p_implicit", "logprob": "p_logprob"}
CAI_OVERRIDES = (
    "loss.name=dpo",
    "weighting.enabled=true",
    "cai.feedback.mode=implicit_reward",
    "cai.rl_candidates=survey_items",
    "cai.rl_loss=dpo",
)
SMOKE_OVERRIDES = (
    "survey.synthetic.n_population=1500",
    "survey.synthetic.n_sample=120",
    "train.max_steps=2",
    "cai.sampling.max_new_tokens=4",
)


def generalisation_trial(point: dict[str, Any]) -> dict[str, Any]:
    """One run of the experiment (in a Ray task): ``valign cai`` for the cai run, else
    ``valign run``."""
    if point["variant"] == CAI_RUN:
        from valign_ray.cai_pipeline import run_cai

        return {"run_dir": run_cai(point["config"]).run_dir}
    from valign_ray.pipeline import run_pipeline

    return {"run_dir": run_pipeline(point["config"]).run_dir}


def run_is_finished(cfg: PipelineConfig) -> bool:
    """Every stage of the run's command (cai or run) is recorded and current."""
    from valign_ray.cai_pipeline import cai_stages
    from valign_ray.pipeline import run_is_current

    if cfg.name == CAI_RUN:
        return run_is_current(cfg, cai_stages(cfg))
    return run_is_current(cfg)


def never_asked_items(base: PipelineConfig, seed: int) -> list[str]:
    """S2 for ``seed``: the prompt items a run with ``data.split_seed = seed`` keeps out."""
    from valign_ray.data.splits import heldout_item_ids
    from valign_ray.eval.representation_experiment import biased_survey

    items = biased_survey(base).items.filter(pl.col("kind") == "prompt")["item_id"]
    ids = heldout_item_ids(items, base.data.holdout_items, seed)
    if not ids:
        raise ValueError(
            f"data.holdout_items={base.data.holdout_items} keeps none of the {items.len()} "
            f"prompt items out with data.split_seed={seed}: raise data.holdout_items"
        )
    return ids


def write_s2_oracle(base: PipelineConfig, out_dir: Path, s2: list[str], seed: int) -> dict:
    """Survey files of a simple random sample (:func:`~valign_ray.eval.representation_runs.
    write_oracle_survey`, drawn with ``seed``) whose answers keep only the S2 prompt items
    (and the Likert statements the constitution stage reads). The instrument keeps every
    item, so the oracle run builds the same tiny model."""
    paths, everyone = runs.write_oracle_survey(base, out_dir, seed=seed)
    chosen = pl.read_csv(paths["respondents"], infer_schema=False)["respondent_id"]
    prompts = everyone.items.filter(pl.col("kind") == "prompt")["item_id"]
    keep = pl.col("item_id").is_in(s2) | ~pl.col("item_id").is_in(prompts.implode())
    answers = everyone.answers.filter(
        pl.col("respondent_id").cast(pl.String).is_in(chosen.implode()), keep
    )
    answers.write_csv(paths["answers"])
    return paths


def generalisation_variants(oracle_files: dict[str, Path]) -> list[Variant]:
    """The two runs of a seed: ``cai`` (dpo_weighted, SL-CAI, rl_cai) and ``dpo_oracle``."""
    files = tuple(f"survey.files.{k}={v}" for k, v in oracle_files.items())
    oracle = (
        "loss.name=dpo",
        "weighting.enabled=false",
        "data.holdout_items=0",  # the files hold S2 answers only: train on all of them
        "survey.source=files",
        *files,
        "survey.salt=synthetic-oracle",
    )
    return [Variant(CAI_RUN, CAI_OVERRIDES), Variant(ORACLE_RUN, oracle)]


def model_folders(cai_run: PipelineConfig, oracle_run: PipelineConfig) -> dict[str, tuple]:
    """Model name -> (model, the reference its implicit reward is read against, beta)."""
    cai = RunLayout.of(cai_run.output_dir, cai_run.name)
    oracle = RunLayout.of(oracle_run.output_dir, oracle_run.name)
    beta = cai_run.loss.beta
    sl = cai.cai_dir("sl") / "model"
    return {
        "base": (cai.base_model, cai.base_model, beta),
        "dpo_weighted": (cai.model, cai.base_model, beta),
        "rl_cai": (cai.cai_dir("rl") / "model", sl, beta),
        "dpo_oracle": (oracle.model, oracle.base_model, beta),
    }


def run_seed(
    config_path: str | Path,
    overrides: tuple[str, ...],
    exp: Path,
    seed: int,
    *,
    max_concurrent: int = 1,
) -> dict[str, Any]:
    """Both runs of ``seed`` (finished ones skipped) and their scores on S2."""
    base = load_config(config_path, [*overrides, f"data.split_seed={seed}"])
    s2 = never_asked_items(base, seed)
    out = exp / f"s{seed}"
    files = write_s2_oracle(base, out / "oracle_survey", s2, seed)
    args = dict(
        config_path=config_path,
        variants=generalisation_variants(files),
        seeds=[seed],
        output_dir=out,
        seed_keys=SEED_KEYS,
        base_overrides=overrides,
    )
    table = run_experiment(
        **args,
        name=f"{base.name}-s{seed}",
        is_finished=run_is_finished,
        max_concurrent=max_concurrent,
        trial=generalisation_trial,
    )
    failed = table.filter(pl.col("status") == "failed")
    if failed.height:
        raise RuntimeError(f"runs failed (see {out / 'runs.csv'}): {failed['error'].to_list()}")
    planned = {r.name: r.config for r in plan_runs(**args)}
    return score_seed(planned[CAI_RUN], planned[ORACLE_RUN], s2, seed)


def score_seed(
    cai: PipelineConfig, oracle: PipelineConfig, s2: list[str], seed: int
) -> dict[str, Any]:
    """Preferences of the four models on S2 and their representation tables per form."""
    from valign_ray.eval.representation_experiment import biased_survey

    biased = biased_survey(cai)
    truth = pl.read_parquet(cai.run_dir / "survey" / "truth.parquet")
    if not truth.equals(biased.truth):
        raise RuntimeError("the cai run's population truth is not the regenerated one")
    on_s2 = pl.col("item_id").is_in(s2)
    models = model_folders(cai, oracle)
    same_base = runs.same_weights([m[1] for k, m in models.items() if k != "rl_cai"])
    prefs = runs.score_models(
        models,
        biased.items.filter(on_s2),
        biased.candidates.filter(on_s2),
        truth.filter(on_s2),
        max_length=cai.data.max_length,
        batch_size=cai.eval.batch_size,
    )
    flipped = biased.flips.filter("flipped", on_s2)["item_id"].to_list()
    tables = {
        form: {
            m: rep.representation_table(
                prefs.filter(pl.col("model") == m),
                truth.filter(on_s2),
                variables=cai.weighting.variables,
                column=col,
                flipped=flipped,
            )
            for m in MODELS
        }
        for form, col in FORMS.items()
    }
    labels = pl.read_parquet(models["rl_cai"][0].parent / "pairs.parquet")
    return {
        "seed": seed,
        "s2_items": s2,
        "flipped_s2_items": flipped,
        "base_models_identical": same_base,
        "rl_labels": labels.select("pair_id", "reward_a", "reward_b", "label").to_dicts(),
        "tables": tables,
        "preferences": prefs.with_columns(pl.lit(seed).alias("seed")),
    }


def run_cai_generalisation(
    config_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    output_dir: str | Path | None = None,
    *,
    seeds: list[int] | None = None,
    smoke: bool = False,
    max_concurrent: int = 1,
) -> dict[str, Any]:
    """Every seed's runs and scores, then ``results.json``, ``results.md``,
    ``preferences.parquet`` and ``generalisation.png`` in the experiment folder. ``smoke``:
    one seed, a small population and sample, 2 training steps."""
    from valign_ray.eval import cai_generalisation_report as report

    sets = (*(SMOKE_OVERRIDES if smoke else ()), *overrides)
    base = load_config(config_path, sets)
    if base.data.holdout_items <= 0:
        raise ValueError("data.holdout_items must be > 0: the never-asked items are held out")
    name = f"{base.name}-smoke" if smoke else base.name
    exp = Path(output_dir or Path(base.output_dir) / name).resolve()
    seeds = seeds or ([0] if smoke else [0, 1, 2])
    per_seed = [run_seed(config_path, sets, exp, s, max_concurrent=max_concurrent) for s in seeds]
    pl.concat([r.pop("preferences") for r in per_seed]).write_parquet(exp / "preferences.parquet")
    summary = report.combine_seeds(per_seed)
    (exp / "results.json").write_text(
        json.dumps({"summary": summary, "seeds": per_seed}, indent=2, default=str) + "\n"
    )
    text = report.results_markdown(summary, per_seed, overrides=sets)
    (exp / "results.md").write_text(text + "\n")
    report.plot_generalisation(summary, per_seed, exp / "generalisation.png")
    print(text, flush=True)
    return summary
